"""Signed manifest: verification rules and the watcher's operator story on a file and a URL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from openrtc.deploy.manifest import (
    MANIFEST_FORMAT,
    Manifest,
    ManifestError,
    ManifestSource,
    ManifestWatcher,
    sign_manifest,
    verify_manifest,
)
from openrtc.deploy.membership import MembershipError, MembershipVerifier, sign_membership

NOW = 1_700_000_000.0
SECRET = "manifest-signing-key-2024"
OLD_SECRET = "manifest-signing-key-2023"


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Collects watcher callbacks so tests can assert what the operator would see."""

    def __init__(self) -> None:
        self.changes: list[Manifest] = []
        self.rejections: list[str] = []

    def watcher(self, source: ManifestSource | Path, clock: FakeClock) -> ManifestWatcher:
        return ManifestWatcher(
            source,
            [SECRET],
            interval=0.05,
            on_change=self.changes.append,
            on_rejected=self.rejections.append,
            clock=clock,
        )


def _signed(versions: list[str], issued_at: float = NOW, **kwargs: Any) -> str:
    secret: Any = {kwargs.pop("key_id"): SECRET} if "key_id" in kwargs else SECRET
    return sign_manifest(versions, secret=secret, issued_at=issued_at, **kwargs)


def _forge(payload: dict[str, Any] | bytes, *, kid: str = "k1", key: str = SECRET) -> str:
    """A document signed the real way around any payload, as only a key holder can."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    body = f"{MANIFEST_FORMAT}.{kid}." + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    mac = hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


def _payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "active_versions": ["v1"], "serial": 1, "issued_at": NOW, "expires_at": None,
    }  # fmt: skip
    payload.update(changes)
    return payload


def test_round_trip_and_membership() -> None:
    text = _signed(["v2.0.0", "v2.0.1", "v2.0.0"], ttl_seconds=600, key_id="k2")
    assert text.startswith("openrtc-membership/2.k2.")
    manifest = verify_manifest(text, secrets={"k2": SECRET}, now=NOW + 1)
    assert manifest.active_versions == ("v2.0.0", "v2.0.1")
    assert manifest.is_member("v2.0.1") and not manifest.is_member("v1")
    assert manifest.expires_at == NOW + 600 and manifest.key_id == "k2"
    assert manifest.serial == int(NOW * 1_000_000)
    assert manifest.to_dict()["active_versions"] == ["v2.0.0", "v2.0.1"]


def test_rotation_and_key_ids() -> None:
    old = sign_manifest(["v1"], secret={"k1": OLD_SECRET}, issued_at=NOW)
    assert verify_manifest(old, secrets={"k2": SECRET, "k1": OLD_SECRET}, now=NOW).is_member("v1")
    new = sign_manifest(["v1"], secret={"k2": SECRET, "k1": OLD_SECRET}, issued_at=NOW)
    assert verify_manifest(new, secrets={"k2": SECRET}, now=NOW).key_id == "k2"
    with pytest.raises(ManifestError, match="key id that is not configured"):
        verify_manifest(old, secrets={"k2": SECRET}, now=NOW)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"active_versions": []},
        {"active_versions": "v1"},
        {"active_versions": [""]},
        {"active_versions": ["v1"], "ttl_seconds": 0},
        {"active_versions": ["v1"], "key_id": "bad id"},
        {"active_versions": ["v1"], "serial": 0},
    ],
)
def test_sign_rejects_bad_input(kwargs: dict[str, Any]) -> None:
    options = {"secret": SECRET, **kwargs}
    with pytest.raises(ValueError):
        sign_manifest(**options)
    with pytest.raises(ValueError):
        sign_manifest(["v1"], secret="")


def test_forged_manifest_rejected() -> None:
    text = _signed(["v1.0.0"])
    body, _, mac = text.rpartition(".")
    prefix, kid, _payload_b64 = body.split(".")
    swapped = (
        base64.urlsafe_b64encode(json.dumps(_payload(active_versions=["v9"])).encode())
        .rstrip(b"=")
        .decode()
    )
    with pytest.raises(ManifestError, match="signature is invalid"):
        verify_manifest(f"{prefix}.{kid}.{swapped}.{mac}", secrets=[SECRET], now=NOW)
    forged = sign_manifest(["v1.0.0"], secret="attacker-key", issued_at=NOW)
    with pytest.raises(ManifestError, match="signature is invalid"):
        verify_manifest(forged, secrets=[SECRET], now=NOW)


def test_expired_and_future_rejected() -> None:
    short = _signed(["v1"], ttl_seconds=60)
    verify_manifest(short, secrets=[SECRET], now=NOW + 59)
    with pytest.raises(ManifestError, match="expired"):
        verify_manifest(short, secrets=[SECRET], now=NOW + 66)
    ahead = _signed(["v2"], issued_at=NOW + 60)
    with pytest.raises(ManifestError, match="in the future"):
        verify_manifest(ahead, secrets=[SECRET], now=NOW)
    verify_manifest(_signed(["v2"], issued_at=NOW + 4), secrets=[SECRET], now=NOW)


def test_replay_by_serial_is_refused_and_the_same_document_is_no_change() -> None:
    verifier = MembershipVerifier({"k1": SECRET}, clock=FakeClock())
    first = sign_membership(["v1"], secret={"k1": SECRET}, serial=5, issued_at=NOW)
    assert verifier.verify(first).serial == 5
    assert verifier.verify(first).serial == 5
    older = sign_membership(["v0"], secret={"k1": SECRET}, serial=4, issued_at=NOW)
    with pytest.raises(MembershipError, match="older than the one in force"):
        verifier.verify(older)
    twin = sign_membership(["v2"], secret={"k1": SECRET}, serial=5, issued_at=NOW)
    with pytest.raises(MembershipError, match="same serial 5"):
        verifier.verify(twin)
    rollback = sign_membership(["v0"], secret={"k1": SECRET}, serial=6, issued_at=NOW)
    assert verifier.verify(rollback).is_member("v0")
    assert SECRET not in repr(verifier)


HOSTILE = {
    "old-json-400-digit-issued-at": (
        '{"format": "openrtc-manifest/1", "active_versions": ["v1"], "issued_at": '
        + "9" * 400
        + ', "expires_at": null, "key_id": null, "signature": "'
        + "0" * 64
        + '"}',
        "is not an openrtc-membership/2 document",
    ),
    "non-ascii-signature": (
        _signed(["v1"]).rpartition(".")[0] + "." + "é" * 64,
        "non-ASCII",
    ),
    "deeply-nested-unsigned": ("[" * 100_000 + "]" * 100_000, "larger than"),
    "nested-in-the-envelope": (
        f"{MANIFEST_FORMAT}.k1."
        + base64.urlsafe_b64encode(b"[" * 5000).rstrip(b"=").decode()
        + "."
        + "a" * 64,
        "signature is invalid",
    ),
    "huge": ("x" * (2 << 20), "larger than 65536 bytes"),
    "garbled": ("openrtc-membership/2.k1.@@@.zz", "malformed"),
    "empty": ("", "is not an openrtc-membership/2 document"),
    "signed-400-digit-issued-at": (
        _forge(
            b'{"active_versions":["v1"],"serial":1,"issued_at":'
            + b"9" * 400
            + b',"expires_at":null}'
        ),
        "issued_at must be a unix time",
    ),
    "signed-deep-nesting": (
        _forge(b'{"active_versions":' + b"[" * 3000 + b"]" * 3000 + b"}"),
        "nests deeper",
    ),
    "signed-wrong-types": (_forge(_payload(serial="1")), "serial must be"),
    "signed-extra-field": (_forge({**_payload(), "admin": True}), "must have exactly"),
    "signed-not-an-object": (_forge(b"[1, 2]"), "not a JSON object"),
}


@pytest.mark.parametrize(("text", "reason"), list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_manifests_are_refused_with_a_reason_never_an_exception(
    text: str, reason: str
) -> None:
    with pytest.raises(ManifestError) as refused:
        verify_manifest(text, secrets={"k1": SECRET}, now=NOW)
    assert reason in refused.value.reason
    assert SECRET not in refused.value.reason


async def test_watcher_on_file_tracks_changes_rejections_and_rollback(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    clock = FakeClock()
    seen = Recorder()
    watcher = seen.watcher(path, clock)

    assert await watcher.poll_once() is None
    assert len(seen.rejections) == 1 and "cannot read manifest file" in seen.rejections[0]

    path.write_text(_signed(["v1.0.0", "v2.0.0"], issued_at=NOW), encoding="utf-8")
    first = await watcher.poll_once()
    assert first is not None and first.active_versions == ("v1.0.0", "v2.0.0")
    assert seen.changes == [first]

    await watcher.poll_once()
    assert len(seen.changes) == 1, "the same manifest read again is no change"

    clock.now = NOW + 10
    path.write_text(_signed(["v2.0.0"], issued_at=NOW + 10), encoding="utf-8")
    second = await watcher.poll_once()
    assert second is not None and not second.is_member("v1.0.0")
    assert seen.changes == [first, second]

    rejections_before = len(seen.rejections)
    path.write_text('{"garbled', encoding="utf-8")
    for _ in range(3):
        assert await watcher.poll_once() == second
    assert len(seen.rejections) == rejections_before + 1
    assert "is not an openrtc-membership/2 document" in seen.rejections[-1]

    path.write_text(_signed(["v1.0.0", "v2.0.0"], issued_at=NOW), encoding="utf-8")
    for _ in range(2):
        assert await watcher.poll_once() == second
    assert len(seen.rejections) == rejections_before + 2
    assert "older than the one in force" in seen.rejections[-1]

    clock.now = NOW + 20
    path.write_text(_signed(["v1.0.0"], issued_at=NOW + 20), encoding="utf-8")
    rolled_back = await watcher.poll_once()
    assert rolled_back is not None and rolled_back.is_member("v1.0.0")
    assert seen.changes == [first, second, rolled_back]
    assert watcher.current == rolled_back


async def test_watcher_rejects_forged_manifest_and_keeps_last_valid(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    clock = FakeClock()
    seen = Recorder()
    watcher = seen.watcher(path, clock)
    path.write_text(_signed(["v2.0.0"]), encoding="utf-8")
    valid = await watcher.poll_once()

    clock.now = NOW + 5
    path.write_text(sign_manifest(["v1.0.0"], secret="guess", issued_at=NOW + 5), "utf-8")
    await watcher.poll_once()
    await watcher.poll_once()
    assert seen.rejections == ["membership document signature is invalid"]
    assert watcher.current == valid

    path.write_text(_signed(["v2.0.0", "v2.1.0"], issued_at=NOW), "utf-8")
    await watcher.poll_once()
    assert "under the same serial" in seen.rejections[-1]
    assert watcher.current == valid


async def test_watcher_background_task_picks_up_changes(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(_signed(["v1"]), encoding="utf-8")
    clock = FakeClock()
    seen = Recorder()
    watcher = seen.watcher(path, clock)
    await watcher.start()
    try:
        assert watcher.current is not None and watcher.current.is_member("v1")
        clock.now = NOW + 1
        path.write_text(_signed(["v2"], issued_at=NOW + 1), encoding="utf-8")
        for _ in range(100):
            if len(seen.changes) == 2:
                break
            await asyncio.sleep(0.02)
        assert [m.active_versions for m in seen.changes] == [("v1",), ("v2",)]
    finally:
        await watcher.aclose()


async def test_url_source_against_local_server() -> None:
    served: dict[str, Any] = {"status": 200, "body": _signed(["v2.0.0"])}

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=served["status"], text=str(served["body"]))

    app = web.Application()
    app.router.add_get("/manifest.json", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/manifest.json?token=do-not-log-me"
        source = ManifestSource(url, timeout=2.0)
        clock = FakeClock()
        seen = Recorder()
        watcher = seen.watcher(source, clock)

        manifest = await watcher.poll_once()
        assert manifest is not None and manifest.is_member("v2.0.0")

        served["status"] = 503
        await watcher.poll_once()
        await watcher.poll_once()
        assert len(seen.rejections) == 1
        assert "HTTP 503" in seen.rejections[0]
        assert "do-not-log-me" not in seen.rejections[0]
        assert watcher.current == manifest

        served["status"] = 200
        clock.now = NOW + 30
        served["body"] = _signed(["v1.0.0"], issued_at=NOW + 30)
        rolled_back = await watcher.poll_once()
        assert rolled_back is not None and rolled_back.is_member("v1.0.0")
        assert len(seen.changes) == 2
    finally:
        await runner.cleanup()


async def test_url_source_unreachable_is_a_rejection() -> None:
    source = ManifestSource("http://127.0.0.1:9/manifest.json", timeout=1.0)
    with pytest.raises(ManifestError, match="cannot fetch manifest URL"):
        await source.read()
