"""Building the runtime image (and its envoy image), from a base that can be bootstrapped without a registry."""

from images.base import BOOTSTRAPPED, DEFAULT_BASE, bootstrap, ensure_base
from images.build import (
    IMAGE_PYTHON,
    REPOSITORY,
    Built,
    assemble_context,
    build,
    build_reaper,
    cache_dir,
    docker_client,
    envoy_image,
    image_ref,
    wheelhouse_dir,
)
from images.exceptions import BaseUnavailable, BuildFailed, ImageError, WheelsUnavailable
from images.tag import content_tag, image_inputs

__all__ = [
    "BOOTSTRAPPED",
    "DEFAULT_BASE",
    "IMAGE_PYTHON",
    "REPOSITORY",
    "BaseUnavailable",
    "BuildFailed",
    "Built",
    "ImageError",
    "WheelsUnavailable",
    "assemble_context",
    "bootstrap",
    "build",
    "build_reaper",
    "cache_dir",
    "content_tag",
    "docker_client",
    "ensure_base",
    "envoy_image",
    "image_inputs",
    "image_ref",
    "wheelhouse_dir",
]
