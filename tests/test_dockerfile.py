"""The container image recipe keeps the drain and security promises: checked statically.

The Dockerfile is parsed with Docker's own parser (the `dockerfile` package wraps
BuildKit's); `problems()` lists every broken promise, finds none in the real file, and
finds each one in a copy broken on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import dockerfile
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
SECRETISH = re.compile(r"SECRET|TOKEN|PASSWORD|API_KEY|CREDENTIAL", re.IGNORECASE)


def stages(text: str) -> list[list[dockerfile.Command]]:
    """The commands of each build stage, in order (the global ARGs before FROM dropped)."""
    out: list[list[dockerfile.Command]] = []
    for cmd in dockerfile.parse_string(text):
        if cmd.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(cmd)
    return out


def deployment_pod() -> dict[str, object]:
    docs = yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    (deployment,) = [d for d in docs if d and d["kind"] == "Deployment"]
    return dict(deployment["spec"]["template"]["spec"])


def problems(text: str) -> list[str]:
    out: list[str] = []
    built = stages(text)
    if len(built) < 2:
        out.append("not multi-stage: build tools and caches end up in the image")
        return out
    final = built[-1]
    image = final[0].value[0]
    if not re.match(r"^python:\$\{PYTHON_VERSION\}-slim|^python:3\.\d+-slim", image):
        out.append(f"the final stage is not a slim Python image: {image}")

    users = [c for c in final if c.cmd == "USER"]
    if not users or users[-1].value[0].split(":")[0] in ("root", "0"):
        out.append("the final stage runs as root")
    pod = deployment_pod()
    run_as = pod["securityContext"]["runAsUser"]  # type: ignore[index]
    if users and users[-1].value[0].split(":")[0] != str(run_as):
        out.append(f"USER {users[-1].value[0]} is not the Deployment's runAsUser {run_as}")

    runs = [" ".join(c.value) for c in final if c.cmd == "RUN"]
    if not any(re.search(r"\bopenrtc download-files\b", r) for r in runs):
        out.append("the final stage does not run `openrtc download-files`: pods would download")

    signals = [c.value[0] for c in final if c.cmd == "STOPSIGNAL"]
    if signals != ["SIGTERM"]:
        out.append(f"STOPSIGNAL is {signals}, not SIGTERM")
    entry = [c for c in final if c.cmd == "ENTRYPOINT"]
    cmd = [c for c in final if c.cmd == "CMD"]
    if not entry or not entry[-1].json:
        out.append("ENTRYPOINT is not in exec form: a shell would be PID 1 and eat SIGTERM")
    if cmd and not cmd[-1].json:
        out.append("CMD is not in exec form")
    if entry and cmd:
        container = pod["containers"][0]  # type: ignore[index]
        if list(entry[-1].value) + list(cmd[-1].value) != container["command"]:
            out.append("ENTRYPOINT + CMD differ from the Deployment's command")

    for stage in built:
        for c in stage:
            if c.cmd in ("ARG", "ENV"):
                names = [v.split("=", 1)[0] for v in c.value] if c.cmd == "ARG" else c.value[::2]
                out.extend(
                    f"{c.cmd} {n} puts a secret in the image's history"
                    for n in names
                    if SECRETISH.search(n)
                )
            if c.cmd in ("COPY", "ADD") and not any(f.startswith("--from") for f in c.flags):
                for source in c.value[:-1]:
                    if re.search(r"\.env\b|secret|\.key$|\.pem$", source, re.IGNORECASE):
                        out.append(f"{c.cmd} {source} copies a secret into a layer")
    return out


def test_the_dockerfile_keeps_every_promise() -> None:
    assert problems(DOCKERFILE.read_text()) == []


def _single_stage(text: str) -> str:
    head, _, tail = text.partition("FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime")
    return head.split("FROM ", 1)[0] + "FROM python:3.12-slim" + tail.replace("--from=build ", "")


def _root(text: str) -> str:
    return text.replace("USER 10001:10001", "USER root")


def _no_download(text: str) -> str:
    return text.replace("RUN openrtc download-files /app/agents", "RUN true")


def _shell_entrypoint(text: str) -> str:
    return text.replace('ENTRYPOINT ["openrtc"]', "ENTRYPOINT openrtc")


def _sigkill(text: str) -> str:
    return text.replace("STOPSIGNAL SIGTERM", "STOPSIGNAL SIGKILL")


def _full_image(text: str) -> str:
    return text.replace(
        "FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime", "FROM python:3.12 AS runtime"
    )


def _secret_arg(text: str) -> str:
    return text.replace("ARG AGENTS=examples/agents", "ARG LIVEKIT_API_SECRET\nARG AGENTS=x")


def _dotenv(text: str) -> str:
    return text.replace("COPY src ./src", "COPY src ./src\nCOPY .env /app/.env")


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (_single_stage, "not multi-stage"),
        (_root, "runs as root"),
        (_no_download, "does not run `openrtc download-files`"),
        (_shell_entrypoint, "ENTRYPOINT is not in exec form"),
        (_sigkill, "STOPSIGNAL is ['SIGKILL']"),
        (_full_image, "not a slim Python image"),
        (_secret_arg, "ARG LIVEKIT_API_SECRET puts a secret"),
        (_dotenv, "COPY .env copies a secret"),
    ],
)
def test_problems_finds_each_broken_promise(breakage: Callable[[str], str], expected: str) -> None:
    broken = breakage(DOCKERFILE.read_text())
    assert any(expected in p for p in problems(broken)), problems(broken)


def test_dockerignore_sends_only_what_the_image_needs() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"  # deny everything, then allow: a new secret file is never sent
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    assert not any(SECRETISH.search(a) or ".env" in a for a in allowed)
    for c in stages(DOCKERFILE.read_text())[0]:
        if c.cmd == "COPY":
            for source in c.value[:-1]:
                source = source.replace("${AGENTS}", "examples/agents").rstrip("/")
                assert any(source == a or source.startswith(a + "/") for a in allowed), source
                assert (ROOT / source).exists(), source
