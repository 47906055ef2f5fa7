"""Errors of the image build.

ImageError
├── BaseUnavailable     the base is absent, cannot be pulled, and cannot be bootstrapped
├── WheelsUnavailable   the wheelhouse lacks a pinned wheel and PyPI could not supply it
├── LockError           a lock file is malformed, or refreshing it could not resolve
└── BuildFailed         docker build failed; ``log_path`` keeps the whole log
"""

from __future__ import annotations

from pathlib import Path


class ImageError(Exception):
    """Base of every image-build error."""


class BaseUnavailable(ImageError):
    pass


class WheelsUnavailable(ImageError):
    pass


class LockError(ImageError):
    pass


class BuildFailed(ImageError):
    def __init__(self, message: str, log_path: Path) -> None:
        self.log_path = log_path
        super().__init__(f"{message}\nfull build log: {log_path}")
