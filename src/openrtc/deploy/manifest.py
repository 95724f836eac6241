"""Signed manifest of active versions: lets the platform retire a version fleet-wide.

The platform publishes a signed JSON manifest naming the versions that may take new
calls. A worker watches it (file or URL) and stops accepting when its own version is
no longer listed, so a leftover old-version worker cannot take new traffic. Older
manifests are refused once a newer one is in force, so a replayed manifest cannot undo
a deploy; a rollback is simply a newer manifest naming the old version again.

Document format (JSON object)::

    {"format": "openrtc-manifest/1", "active_versions": ["v2.0.0"],
     "issued_at": 1700000000.0, "expires_at": 1700003600.0 | null,
     "key_id": "k2" | null, "signature": "<hex>"}

``signature`` is HMAC-SHA256 over the canonical JSON (sorted keys, compact separators,
UTF-8, timestamps as JSON floats) of every other field.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import math
import os
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from .membership import KeyRing, Secrets, SecretSet, check_key_id, load_secrets

__all__ = [
    "MANIFEST_FORMAT",
    "Manifest",
    "ManifestError",
    "ManifestSource",
    "ManifestWatcher",
    "SecretSet",
    "Secrets",
    "load_secrets",
    "sign_manifest",
    "verify_manifest",
]

MANIFEST_FORMAT = "openrtc-manifest/1"
MAX_MANIFEST_BYTES = 1 << 20
"""Largest manifest a source will read; anything bigger is refused, not buffered."""

_FIELDS = ("format", "active_versions", "issued_at", "expires_at", "key_id", "signature")
_log = logging.getLogger("openrtc")


class ManifestError(Exception):
    """A manifest could not be read or was refused; `reason` says why, without secrets."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A verified manifest; `to_dict()` is the signed document, ready for `json.dumps`."""

    active_versions: tuple[str, ...]
    issued_at: float
    expires_at: float | None
    key_id: str | None
    signature: str

    def is_member(self, version: str) -> bool:
        """True when `version` may take new calls under this manifest."""
        return version in self.active_versions

    def is_expired(self, now: float | None = None) -> bool:
        """True when the manifest has an expiry and it has passed."""
        current = time.time() if now is None else now
        return self.expires_at is not None and current >= self.expires_at

    def to_dict(self) -> dict[str, Any]:
        """Return the document as published, including `format` and `signature`."""
        unsigned = _unsigned(self.active_versions, self.issued_at, self.expires_at, self.key_id)
        return {**unsigned, "signature": self.signature}


def _unsigned(
    active_versions: Sequence[str], issued_at: float, expires_at: float | None, key_id: str | None
) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "active_versions": list(active_versions),
        "issued_at": float(issued_at),
        "expires_at": None if expires_at is None else float(expires_at),
        "key_id": key_id,
    }


def _canonical(unsigned: dict[str, Any]) -> bytes:
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def _is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def sign_manifest(
    active_versions: Sequence[str],
    *,
    secret: str | bytes,
    key_id: str | None = None,
    issued_at: float | None = None,
    ttl_seconds: float | None = None,
) -> str:
    """Return the signed manifest JSON text naming `active_versions` (duplicates dropped)."""
    if isinstance(active_versions, str):
        raise ValueError("active_versions must be a list of versions, not a single string")
    versions: list[str] = []
    for version in active_versions:
        if not isinstance(version, str) or not version:
            raise ValueError("every active version must be a non-empty string like 'v2.0.0'")
        if version not in versions:
            versions.append(version)
    if not versions:
        raise ValueError("a manifest must name at least one active version")
    if key_id is not None:
        check_key_id(key_id)
    issued = time.time() if issued_at is None else issued_at
    if not _is_finite_number(issued):
        raise ValueError("issued_at must be a finite unix time in seconds")
    expires: float | None = None
    if ttl_seconds is not None:
        if not _is_finite_number(ttl_seconds) or ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be a positive number of seconds, or None")
        expires = float(issued) + float(ttl_seconds)
    unsigned = _unsigned(versions, issued, expires, key_id)
    key = KeyRing.checked(secret)
    signature = hmac.new(key, _canonical(unsigned), hashlib.sha256).hexdigest()
    return json.dumps({**unsigned, "signature": signature}, ensure_ascii=False)


def _parse(text: str | bytes) -> dict[str, Any]:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError("manifest is not UTF-8 text") from None
    try:
        document = json.loads(text)
    except ValueError:
        raise ManifestError("manifest is not valid JSON (truncated or garbled)") from None
    if not isinstance(document, dict):
        raise ManifestError("manifest is not a JSON object")
    missing = [name for name in _FIELDS if name not in document]
    if missing:
        raise ManifestError(f"manifest is missing field(s): {', '.join(missing)}")
    unknown = sorted(set(document) - set(_FIELDS))
    if unknown:
        raise ManifestError(f"manifest has unexpected field(s): {', '.join(unknown)}")
    return document


def _check_types(document: dict[str, Any]) -> None:
    if document["format"] != MANIFEST_FORMAT:
        raise ManifestError(f"manifest format is not {MANIFEST_FORMAT!r}")
    versions = document["active_versions"]
    if (
        not isinstance(versions, list)
        or not versions
        or not all(isinstance(v, str) and v for v in versions)
    ):
        raise ManifestError("manifest active_versions must be a non-empty list of strings")
    if not _is_finite_number(document["issued_at"]):
        raise ManifestError("manifest issued_at must be a finite number")
    expires = document["expires_at"]
    if expires is not None and not _is_finite_number(expires):
        raise ManifestError("manifest expires_at must be a finite number or null")
    key_id = document["key_id"]
    if key_id is not None:
        try:
            check_key_id(key_id)
        except ValueError:
            raise ManifestError("manifest key_id is invalid") from None
    signature = document["signature"]
    if not isinstance(signature, str) or len(signature) != 64:
        raise ManifestError("manifest signature must be a 64-character hex string")


def verify_manifest(
    text: str | bytes,
    *,
    secrets: Secrets | KeyRing,
    now: float | None = None,
    not_before_issued_at: float | None = None,
    max_future_seconds: float = 5.0,
) -> Manifest:
    """Parse and verify a manifest; raise ManifestError with the reason if it is refused.

    Refused when garbled, missing fields, badly signed, expired, issued more than
    `max_future_seconds` ahead of `now`, or issued before `not_before_issued_at`
    (an older manifest than the one in force).
    """
    keys = secrets if isinstance(secrets, KeyRing) else KeyRing(secrets)
    document = _parse(text)
    _check_types(document)
    manifest = Manifest(
        active_versions=tuple(document["active_versions"]),
        issued_at=float(document["issued_at"]),
        expires_at=None if document["expires_at"] is None else float(document["expires_at"]),
        key_id=document["key_id"],
        signature=document["signature"],
    )
    candidates = keys.candidates(manifest.key_id)
    if candidates is None:
        raise ManifestError("manifest names a key id that is not configured")
    unsigned = _unsigned(
        manifest.active_versions, manifest.issued_at, manifest.expires_at, manifest.key_id
    )
    if not KeyRing.matches(candidates, _canonical(unsigned), manifest.signature):
        raise ManifestError("manifest signature is invalid")
    current = time.time() if now is None else now
    if manifest.is_expired(current):
        raise ManifestError("manifest has expired; publish a fresh one")
    if manifest.issued_at - current > max_future_seconds:
        raise ManifestError("manifest is issued in the future; check the publisher's clock")
    if not_before_issued_at is not None and manifest.issued_at < not_before_issued_at:
        raise ManifestError("manifest is older than the one in force (a replay or stale copy)")
    return manifest


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class ManifestSource:
    """Where the manifest text lives: a file path or an http(s) URL.

    Read errors raise ManifestError with a reason that names the location but never a
    URL's query string or credentials.
    """

    def __init__(self, location: str | os.PathLike[str], *, timeout: float = 3.0) -> None:
        self.timeout = timeout
        text = os.fspath(location)
        self.is_url = text.startswith(("http://", "https://"))
        self._location = text
        self.display = _redact(text) if self.is_url else text

    def __repr__(self) -> str:
        return f"ManifestSource({self.display!r})"

    async def read(self) -> bytes:
        """Return the raw manifest bytes."""
        if self.is_url:
            return await self._read_url()
        return await asyncio.to_thread(self._read_file)

    def _read_file(self) -> bytes:
        try:
            with open(self._location, "rb") as handle:
                data = handle.read(MAX_MANIFEST_BYTES + 1)
        except OSError as exc:
            raise ManifestError(
                f"cannot read manifest file {self.display}: {exc.strerror or type(exc).__name__}"
            ) from None
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"manifest file {self.display} is larger than 1 MiB")
        return data

    async def _read_url(self) -> bytes:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self._location, allow_redirects=False) as response,
            ):
                if response.status != 200:
                    raise ManifestError(
                        f"manifest URL {self.display} answered HTTP {response.status}"
                    )
                data = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > MAX_MANIFEST_BYTES:
                        break
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ManifestError(
                f"cannot fetch manifest URL {self.display}: {type(exc).__name__}"
            ) from None
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"manifest URL {self.display} returned more than 1 MiB")
        return bytes(data)


class ManifestWatcher:
    """Poll a manifest source and report changes and rejections.

    A valid manifest with a new signature replaces the one in force and goes to
    `on_change`. An unreadable or refused one goes to `on_rejected` once per distinct
    reason and content (until a valid read happens again); the last valid manifest
    stays in force. Callbacks run on the event loop; an exception in one is logged.
    """

    def __init__(
        self,
        source: ManifestSource | str | os.PathLike[str],
        secrets: Secrets,
        *,
        interval: float = 5.0,
        on_change: Callable[[Manifest], None],
        on_rejected: Callable[[str], None],
        clock: Callable[[], float] = time.time,
        max_future_seconds: float = 5.0,
    ) -> None:
        if not _is_finite_number(interval) or interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        self.source = source if isinstance(source, ManifestSource) else ManifestSource(source)
        self.interval = float(interval)
        self._keys = KeyRing(secrets)
        self._on_change = on_change
        self._on_rejected = on_rejected
        self._clock = clock
        self._max_future = max_future_seconds
        self._current: Manifest | None = None
        self._last_rejection: tuple[str, str | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def current(self) -> Manifest | None:
        """The manifest in force, or None before the first valid read."""
        return self._current

    async def poll_once(self) -> Manifest | None:
        """Read and verify the source once; return the manifest in force afterwards."""
        async with self._lock:
            content: bytes | None = None
            try:
                content = await self.source.read()
                manifest = verify_manifest(
                    content,
                    secrets=self._keys,
                    now=self._clock(),
                    not_before_issued_at=(
                        None if self._current is None else self._current.issued_at
                    ),
                    max_future_seconds=self._max_future,
                )
                if (
                    self._current is not None
                    and manifest.signature != self._current.signature
                    and manifest.issued_at == self._current.issued_at
                ):
                    raise ManifestError(
                        "manifest differs from the one in force but has the same issued_at; "
                        "publish it with a newer issued_at"
                    )
            except ManifestError as exc:
                self._reject(exc.reason, content)
                return self._current
            self._last_rejection = None
            if self._current is None or manifest.signature != self._current.signature:
                self._current = manifest
                self._call(self._on_change, manifest)
            return self._current

    def _reject(self, reason: str, content: bytes | None) -> None:
        digest = None if content is None else hashlib.sha256(content).hexdigest()
        key = (reason, digest)
        if key == self._last_rejection:
            return
        self._last_rejection = key
        self._call(self._on_rejected, reason)

    @staticmethod
    def _call(callback: Callable[[Any], None], argument: Any) -> None:
        try:
            callback(argument)
        except Exception:
            _log.exception("manifest watcher callback %r failed", callback)

    async def start(self) -> None:
        """Poll once now, then keep polling every `interval` seconds in a task."""
        if self._task is not None:
            return
        await self.poll_once()
        self._task = asyncio.create_task(self._run(), name="openrtc-manifest-watcher")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll_once()
            except Exception:
                _log.exception("manifest poll of %s failed unexpectedly", self.source.display)

    async def aclose(self) -> None:
        """Stop polling; the manifest in force stays readable through `current`."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
