"""The Kubernetes manifests keep the drain promises: checked on the YAML itself.

`problems()` lists every broken promise; it must find none in deploy/kubernetes, and it
must find each one when a copy of the Deployment is broken on purpose.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from openrtc.deploy.manifest import MANIFEST_FORMAT

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|API_KEY", re.IGNORECASE)
VERSION_LABEL = re.compile(r"^metadata\.labels\['([^']+)'\]$")
MARGIN_S = 30


def load(name: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]
    assert docs, f"{name} holds no YAML document"
    return docs


def all_docs() -> dict[str, list[dict[str, Any]]]:
    return {p.name: load(p.name) for p in sorted(DEPLOY.glob("*.yaml"))}


def one(kind: str) -> dict[str, Any]:
    found = [d for docs in all_docs().values() for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def resolve_port(container: dict[str, Any], port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    return named.get(port)


def mount_for(pod: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume a file path lives on (by its mount), or {} when none covers it."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(root) and "subPath" not in mount:
            return {"file": path[len(root) :], **volumes.get(mount["name"], {})}
    return {}


def problems(deployment: dict[str, Any]) -> list[str]:
    """Every drain promise the Deployment breaks, one line each."""
    out: list[str] = []
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    env = env_of(container)

    drain = float(env.get("OPENRTC_DRAIN_TIMEOUT", {}).get("value", "nan"))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not grace >= drain + MARGIN_S:
        out.append(f"grace period {grace}s does not exceed drain timeout {drain}s by {MARGIN_S}s")

    strategy = spec.get("strategy", {})
    rolling = strategy.get("rollingUpdate", {})
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        out.append("strategy is not RollingUpdate")
    if rolling.get("maxUnavailable") not in (0, "0%"):
        out.append(f"maxUnavailable is {rolling.get('maxUnavailable')!r}, not 0")
    surge = rolling.get("maxSurge")
    if not (isinstance(surge, int) and surge >= 1) and not (
        isinstance(surge, str) and surge.endswith("%") and int(surge[:-1]) > 0
    ):
        out.append(f"maxSurge is {surge!r}, not at least 1")

    port = int(env.get("OPENRTC_HTTP_PORT", {}).get("value", "0"))
    if env.get("OPENRTC_HTTP_HOST", {}).get("value") != "0.0.0.0":
        out.append("OPENRTC_HTTP_HOST is not 0.0.0.0: the kubelet cannot reach the probes")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or resolve_port(container, get.get("port", "")) != port:
            out.append(f"{probe} does not GET {path} on port {port}")

    for name, entry in env.items():
        if "value" in entry and SECRET_NAME.search(name) and not name.endswith("_FILE"):
            out.append(f"{name} is inline in the Deployment; use a secretKeyRef or a file")
        from_elsewhere = "valueFrom" in entry and "secretKeyRef" not in entry["valueFrom"]
        if from_elsewhere and SECRET_NAME.search(name):
            out.append(f"{name} does not come from a Secret")
    for name in ("OPENRTC_MEMBERSHIP_SECRET_FILE", "OPENRTC_ADMIN_TOKEN_FILE"):
        path = env.get(name, {}).get("value", "")
        volume = mount_for(pod, container, path)
        items = {i["path"] for i in volume.get("secret", {}).get("items", [])}
        if "secret" not in volume or (items and volume["file"] not in items):
            out.append(f"{name}={path!r} is not a file of a mounted Secret")
    if "LIVEKIT_API_SECRET" not in env:
        out.append("LIVEKIT_API_SECRET is not set")

    manifest = mount_for(pod, container, env.get("OPENRTC_MANIFEST", {}).get("value", ""))
    if "configMap" not in manifest:
        out.append("OPENRTC_MANIFEST is not a file of a mounted ConfigMap (without subPath)")
    out.extend(restricted_problems(pod, container, env))
    out.extend(probe_problems(pod, container, deployment["spec"]["template"]["metadata"]))
    return out


def restricted_problems(
    pod: dict[str, Any], container: dict[str, Any], env: dict[str, dict[str, Any]]
) -> list[str]:
    """Pod Security "restricted", and a writable emptyDir wherever the worker writes."""
    out: list[str] = []
    pod_sc = pod.get("securityContext", {})
    sc = container.get("securityContext", {})
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
        out.append("runAsNonRoot is not true")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) in (None, 0):
        out.append("no non-root runAsUser")
    seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
    if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
        out.append("seccompProfile is not RuntimeDefault")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append("allowPrivilegeEscalation is not false")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        out.append("capabilities are not dropped (drop: [ALL])")
    if sc.get("readOnlyRootFilesystem") is not True:
        out.append("the root filesystem is writable")
    written = ["/tmp/x"] + [
        env[name]["value"]
        for name in ("OPENRTC_AUDIT_PATH", "OPENRTC_METRICS_JSONL")
        if "value" in env.get(name, {})
    ]
    for path in written:
        if "emptyDir" not in mount_for(pod, container, path):
            out.append(f"{path} is not on a writable emptyDir")
    return out


def probe_problems(
    pod: dict[str, Any], container: dict[str, Any], template_meta: dict[str, Any]
) -> list[str]:
    """Startup covers slow starts; liveness restarts a hung pod, never a busy one."""
    out: list[str] = []
    startup = container.get("startupProbe", {})
    if startup.get("httpGet", {}).get("path") != "/healthz":
        out.append("startupProbe does not GET /healthz")
    elif startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) < 60:
        out.append("startupProbe allows less than 60 s to start")
    live = container.get("livenessProbe", {})
    window = live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
    if live.get("timeoutSeconds", 1) < 5 or window < 60:
        out.append(
            f"livenessProbe restarts after {window}s unanswered (timeout "
            f"{live.get('timeoutSeconds', 1)}s): a busy pod with live calls could be killed"
        )
    annotations = template_meta.get("annotations", {})
    if annotations.get("cluster-autoscaler.kubernetes.io/safe-to-evict") != "false":
        out.append("pods are not protected from cluster-autoscaler scale-down (safe-to-evict)")
    return out


def test_the_deployment_keeps_every_drain_promise() -> None:
    assert problems(one("Deployment")) == []


def _set_grace(pod: dict[str, Any]) -> None:
    pod["terminationGracePeriodSeconds"] = 1800


def _set_drain(pod: dict[str, Any]) -> None:
    env_of(pod["containers"][0])["OPENRTC_DRAIN_TIMEOUT"]["value"] = "1850"


def _no_grace(pod: dict[str, Any]) -> None:
    del pod["terminationGracePeriodSeconds"]


def _readiness_on_healthz(pod: dict[str, Any]) -> None:
    pod["containers"][0]["readinessProbe"]["httpGet"]["path"] = "/healthz"


def _liveness_on_other_port(pod: dict[str, Any]) -> None:
    pod["containers"][0]["livenessProbe"]["httpGet"]["port"] = 9000


def _loopback(pod: dict[str, Any]) -> None:
    del env_of(pod["containers"][0])["OPENRTC_HTTP_HOST"]["value"]


def _inline_secret(pod: dict[str, Any]) -> None:
    entry = env_of(pod["containers"][0])["LIVEKIT_API_SECRET"]
    entry.pop("valueFrom")
    entry["value"] = "hunter2"


def _token_file_outside_secret(pod: dict[str, Any]) -> None:
    env_of(pod["containers"][0])["OPENRTC_ADMIN_TOKEN_FILE"]["value"] = "/tmp/admin-token"


def _manifest_by_subpath(pod: dict[str, Any]) -> None:
    for mount in pod["containers"][0]["volumeMounts"]:
        if mount["name"] == "manifest":
            mount["subPath"] = "manifest.json"


def _root_writable(pod: dict[str, Any]) -> None:
    pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False


def _as_root(pod: dict[str, Any]) -> None:
    pod["securityContext"]["runAsUser"] = 0
    del pod["securityContext"]["runAsNonRoot"]
    del pod["containers"][0]["securityContext"]["runAsNonRoot"]


def _no_seccomp(pod: dict[str, Any]) -> None:
    del pod["securityContext"]["seccompProfile"]


def _audit_on_root(pod: dict[str, Any]) -> None:
    env_of(pod["containers"][0])["OPENRTC_AUDIT_PATH"]["value"] = "/app/audit.jsonl"


def _no_tmp(pod: dict[str, Any]) -> None:
    mounts = pod["containers"][0]["volumeMounts"]
    mounts[:] = [m for m in mounts if m["mountPath"] != "/tmp"]


def _no_startup(pod: dict[str, Any]) -> None:
    del pod["containers"][0]["startupProbe"]


def _impatient_liveness(pod: dict[str, Any]) -> None:
    pod["containers"][0]["livenessProbe"].update(timeoutSeconds=1, failureThreshold=3)


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (_root_writable, "the root filesystem is writable"),
        (_as_root, "runAsNonRoot is not true"),
        (_no_seccomp, "seccompProfile is not RuntimeDefault"),
        (_audit_on_root, "/app/audit.jsonl is not on a writable emptyDir"),
        (_no_tmp, "/tmp/x is not on a writable emptyDir"),
        (_no_startup, "startupProbe does not GET /healthz"),
        (_impatient_liveness, "livenessProbe restarts after 30s unanswered"),
        (_set_grace, "grace period 1800s does not exceed"),
        (_set_drain, "does not exceed drain timeout 1850.0s"),
        (_no_grace, "grace period 30s"),
        (_readiness_on_healthz, "readinessProbe does not GET /readyz"),
        (_liveness_on_other_port, "livenessProbe does not GET /healthz on port 8081"),
        (_loopback, "OPENRTC_HTTP_HOST is not 0.0.0.0"),
        (_inline_secret, "LIVEKIT_API_SECRET is inline"),
        (_token_file_outside_secret, "OPENRTC_ADMIN_TOKEN_FILE='/tmp/admin-token' is not"),
        (_manifest_by_subpath, "OPENRTC_MANIFEST is not a file of a mounted ConfigMap"),
    ],
)
def test_problems_finds_each_broken_pod_promise(
    breakage: Callable[[dict[str, Any]], None], expected: str
) -> None:
    broken = copy.deepcopy(one("Deployment"))
    breakage(broken["spec"]["template"]["spec"])
    assert any(expected in p for p in problems(broken)), problems(broken)


@pytest.mark.parametrize(("surge", "unavailable"), [(1, 1), (0, 0), (1, "25%")])
def test_problems_finds_a_rollout_that_drops_capacity(surge: Any, unavailable: Any) -> None:
    broken = copy.deepcopy(one("Deployment"))
    broken["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    assert problems(broken)


def test_problems_finds_pods_the_autoscaler_may_evict_mid_drain() -> None:
    broken = copy.deepcopy(one("Deployment"))
    del broken["spec"]["template"]["metadata"]["annotations"]
    assert any("safe-to-evict" in p for p in problems(broken)), problems(broken)


def test_the_disruption_budget_lets_node_drains_take_one_pod_at_a_time() -> None:
    pdb = one("PodDisruptionBudget")
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable") == 1 and "minAvailable" not in pdb["spec"]


def test_kustomization_sets_one_version_for_image_and_label() -> None:
    (kustomization,) = load("kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (DEPLOY / resource).is_file(), resource
    assert "secret.example.yaml" not in kustomization["resources"]  # never overwrite the real one

    deployment = one("Deployment")
    template = deployment["spec"]["template"]
    container = template["spec"]["containers"][0]
    assert container["command"] == ["openrtc", "start", "/app/agents"]
    image_name, _, tag = container["image"].rpartition(":")
    assert (image_name, tag) == ("ghcr.io/your-org/your-agents", "TAG")

    source = env_of(container)["OPENRTC_DEPLOYMENT_VERSION"]["valueFrom"]["fieldRef"]["fieldPath"]
    match = VERSION_LABEL.match(source)
    assert match, source
    label = match.group(1)
    assert label in template["metadata"]["labels"]
    assert label not in deployment["spec"]["selector"]["matchLabels"]  # selectors are immutable

    (image,) = kustomization["images"]
    (labels,) = kustomization["labels"]
    assert image["name"] == image_name
    assert labels["includeTemplates"] is True and labels["includeSelectors"] is False
    assert labels["pairs"][label] == image["newTag"]


def test_secret_example_holds_every_key_the_deployment_reads() -> None:
    secret = one("Secret")
    deployment = one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    wanted = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in pod["containers"][0]["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    for volume in pod["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["secretName"] == secret["metadata"]["name"]
            wanted |= {i["key"] for i in volume["secret"]["items"]}
    assert wanted == set(secret["stringData"])
    assert all(v == "REPLACE_ME" for v in secret["stringData"].values())


def test_manifest_configmap_holds_the_file_the_worker_reads() -> None:
    configmap = one("ConfigMap")
    pod = one("Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volume = mount_for(pod, container, env_of(container)["OPENRTC_MANIFEST"]["value"])
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    document = configmap["data"][volume["file"]].strip()
    assert document.startswith(MANIFEST_FORMAT + "."), "a membership document, one line"


def test_metrics_service_selects_the_pods_on_the_ops_port() -> None:
    service = one("Service")
    template = one("Deployment")["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    container = template["spec"]["containers"][0]
    assert resolve_port(container, port["targetPort"]) == 8081
