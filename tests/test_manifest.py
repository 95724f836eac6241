"""Signed manifest: verification rules and the watcher's operator story on a file and a URL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from openrtc.deploy.manifest import (
    Manifest,
    ManifestError,
    ManifestSource,
    ManifestWatcher,
    sign_manifest,
    verify_manifest,
)

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
    return sign_manifest(versions, secret=SECRET, issued_at=issued_at, **kwargs)


def test_round_trip_and_membership() -> None:
    text = _signed(["v2.0.0", "v2.0.1", "v2.0.0"], ttl_seconds=600, key_id="k2")
    manifest = verify_manifest(text, secrets={"k2": SECRET}, now=NOW + 1)
    assert manifest.active_versions == ("v2.0.0", "v2.0.1")
    assert manifest.issued_at == NOW
    assert manifest.expires_at == NOW + 600
    assert manifest.key_id == "k2"
    assert manifest.is_member("v2.0.1")
    assert not manifest.is_member("v1.0.0")
    again = verify_manifest(json.dumps(manifest.to_dict()), secrets=[SECRET], now=NOW)
    assert again == manifest


def test_rotation_and_key_ids() -> None:
    old = sign_manifest(["v1"], secret=OLD_SECRET, issued_at=NOW)
    assert verify_manifest(old, secrets=[SECRET, OLD_SECRET], now=NOW).is_member("v1")
    keyed = sign_manifest(["v1"], secret=OLD_SECRET, key_id="k1", issued_at=NOW)
    verify_manifest(keyed, secrets={"k1": OLD_SECRET, "k2": SECRET}, now=NOW)
    with pytest.raises(ManifestError, match="key id"):
        verify_manifest(keyed, secrets={"k2": SECRET}, now=NOW)


@pytest.mark.parametrize(
    "kwargs",
    [{"active_versions": []}, {"active_versions": ["v1", ""]}, {"ttl_seconds": 0}],
)
def test_sign_rejects_bad_input(kwargs: dict[str, Any]) -> None:
    options: dict[str, Any] = {"active_versions": ["v1"], "secret": SECRET}
    options.update(kwargs)
    with pytest.raises(ValueError):
        sign_manifest(**options)
    with pytest.raises(ValueError):
        sign_manifest(["v1"], secret="")


def test_forged_manifest_rejected() -> None:
    document = json.loads(_signed(["v2.0.0"]))
    document["active_versions"] = ["v1.0.0"]
    with pytest.raises(ManifestError, match="signature is invalid") as info:
        verify_manifest(json.dumps(document), secrets=[SECRET], now=NOW)
    assert SECRET not in info.value.reason
    forged = sign_manifest(["v1.0.0"], secret="attacker-key", issued_at=NOW)
    with pytest.raises(ManifestError, match="signature is invalid"):
        verify_manifest(forged, secrets=[SECRET], now=NOW)


def test_expired_future_and_stale_rejected() -> None:
    short = _signed(["v2"], ttl_seconds=60)
    verify_manifest(short, secrets=[SECRET], now=NOW + 59)
    with pytest.raises(ManifestError, match="expired"):
        verify_manifest(short, secrets=[SECRET], now=NOW + 61)

    ahead = _signed(["v2"], issued_at=NOW + 10)
    with pytest.raises(ManifestError, match="future"):
        verify_manifest(ahead, secrets=[SECRET], now=NOW)
    verify_manifest(_signed(["v2"], issued_at=NOW + 4), secrets=[SECRET], now=NOW)

    older = _signed(["v1"], issued_at=NOW - 100)
    with pytest.raises(ManifestError, match="older than the one in force"):
        verify_manifest(older, secrets=[SECRET], now=NOW, not_before_issued_at=NOW - 50)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"format": "openrtc-manifest/1", "active_', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("[1, 2]", "not a JSON object"),
        ('{"active_versions": ["v1"]}', "missing field"),
    ],
)
def test_garbled_manifest_rejected(text: str | bytes, reason: str) -> None:
    with pytest.raises(ManifestError, match=reason):
        verify_manifest(text, secrets=[SECRET], now=NOW)


def test_wrongly_typed_fields_rejected() -> None:
    document = json.loads(_signed(["v2"]))
    document["issued_at"] = "yesterday"
    with pytest.raises(ManifestError, match="issued_at"):
        verify_manifest(json.dumps(document), secrets=[SECRET], now=NOW)
    document = json.loads(_signed(["v2"]))
    document["extra"] = True
    with pytest.raises(ManifestError, match="unexpected field"):
        verify_manifest(json.dumps(document), secrets=[SECRET], now=NOW)


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
    assert "not valid JSON" in seen.rejections[-1]

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
    assert seen.rejections == ["manifest signature is invalid"]
    assert watcher.current == valid

    path.write_text(_signed(["v2.0.0", "v2.1.0"], issued_at=NOW), "utf-8")
    await watcher.poll_once()
    assert "same issued_at" in seen.rejections[-1]
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
