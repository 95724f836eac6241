"""Every Kubernetes manifest in deploy/ is valid against Kubernetes' own schemas, offline.

`kubernetes-validate` ships the OpenAPI schemas of each Kubernetes release in its wheel;
strict mode also rejects fields Kubernetes does not know (a typo that `kubectl apply`
would drop with only a warning). Kustomizations are checked the way kubectl builds them.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
KUSTOMIZE_KINDS = {"Kustomization", "Component"}
VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
"""The oldest Kubernetes minor we support and the newest the package knows."""


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((str(path.relative_to(DEPLOY)), doc))
    return found


def validate(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("name", "doc"),
    [(n, d) for n, d in documents() if d.get("kind") not in KUSTOMIZE_KINDS],
    ids=lambda v: v if isinstance(v, str) else v.get("kind", "?"),
)
def test_every_manifest_is_valid(name: str, doc: dict[str, Any], version: str) -> None:
    validate(doc, version)


def test_the_manifests_cover_every_kind_the_guide_names() -> None:
    kinds = {d["kind"] for _, d in documents()}
    assert {
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Service",
        "ConfigMap",
        "Secret",
        "Kustomization",
        "Component",
    } <= kinds


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "template", "spec", "terminationGracePeriodSecond"), 1860),  # a typo
        (("spec", "template", "spec", "securityContext", "runAsNonRoot"), "yes"),
        (("spec", "strategy", "rollingUpdate", "maxSurge"), [1]),
    ],
)
def test_validation_catches_a_broken_deployment(path: tuple[str, ...], value: Any) -> None:
    (deployment,) = [d for _, d in documents() if d["kind"] == "Deployment"]
    broken = copy.deepcopy(deployment)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, VERSIONS[-1])


def test_every_file_a_kustomization_names_exists() -> None:
    for name, doc in documents():
        if doc.get("kind") in KUSTOMIZE_KINDS:
            folder = (DEPLOY / name).parent
            for entry in doc.get("resources", []) + doc.get("components", []):
                assert (folder / entry).exists(), f"{name} names {entry}, which is missing"


def kustomize(folder: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("autoscaling", [False, True])
def test_what_kubectl_apply_k_would_apply_is_valid(tmp_path: Path, autoscaling: bool) -> None:
    base = tmp_path / "kubernetes"
    shutil.copytree(DEPLOY, base)
    if autoscaling:  # what the guide says to do: turn the component on
        kustomization = base / "kustomization.yaml"
        doc = yaml.safe_load(kustomization.read_text())
        doc["components"] = ["autoscaling"]
        kustomization.write_text(yaml.safe_dump(doc))
    docs = kustomize(base)
    for doc in docs:
        validate(doc, VERSIONS[-1])
    kinds = {d["kind"]: d for d in docs}
    assert "Secret" not in kinds  # the example secret is never applied
    deployment = kinds["Deployment"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == (
        "v1.0.0"
    )
    if autoscaling:
        hpa = kinds["HorizontalPodAutoscaler"]
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert "replicas" not in deployment["spec"]  # the HPA owns the count
    else:
        assert "HorizontalPodAutoscaler" not in kinds
        assert deployment["spec"]["replicas"] >= 2
