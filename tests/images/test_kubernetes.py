"""The Kubernetes component build's inputs: one release everywhere, and a content digest."""

from __future__ import annotations

import re

import pytest

from images import kubernetes
from images.exceptions import ImageError
from topologies.cli import main


def test_kubernetes_and_every_staging_module_are_pinned_to_the_same_release() -> None:
    mod = (kubernetes.SOURCE / "go.mod").read_text()
    assert f"require k8s.io/kubernetes {kubernetes.VERSION}" in mod
    pinned = re.findall(r"^\s+(k8s\.io/[a-z-]+) => (k8s\.io/[a-z-]+) (v\S+)$", mod, re.M)
    assert len(pinned) >= 30, "every staging module of Kubernetes' own go.mod"
    staging = "v0." + kubernetes.VERSION.split(".", 1)[1]  # v1.34.4 -> v0.34.4
    assert {(a == b, v) for a, b, v in pinned} == {(True, staging)}
    assert "k8s.io/kubernetes" in (kubernetes.SOURCE / "go.sum").read_text()


def test_the_digest_names_the_inputs() -> None:
    assert kubernetes.digest("go1.26.8") == kubernetes.digest("go1.26.8")
    assert kubernetes.digest("go1.26.8") != kubernetes.digest("go1.26.9")
    assert kubernetes.digest("go1.26.8") != kubernetes.digest("go1.26.8", ("kubectl",))


def test_an_unknown_component_is_refused_before_any_build() -> None:
    with pytest.raises(ImageError, match=r"unknown component.*kube-nope"):
        kubernetes.build(("kubectl", "kube-nope"))


def test_bad_jobs_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["k8s", "build", "--jobs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "modematrix: k8s build: --jobs: expected 1 or more, got 0"


def test_the_digest_does_not_depend_on_the_order_components_are_named_in() -> None:
    assert kubernetes.digest("go1", ("kubectl", "kubelet")) == kubernetes.digest("go1", ("kubelet", "kubectl"))
