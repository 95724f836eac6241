"""The manifest a worker follows: a signed membership document, read from a file or URL.

The platform publishes a membership document (`sign_membership`, `openrtc manifest
sign`) naming the versions that may take new calls. A worker polls it and stops
accepting when its own version is no longer named, so a leftover old-version worker
cannot take new traffic. The worker checks it with `MembershipVerifier`: size and
HMAC over the raw bytes first, then the fields, expiry, clock skew and the serial
(an older document cannot undo a deploy; a rollback is a newer document naming the
old version again). Whatever is refused is reported once per reason and content, and
the last valid document stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from .membership import (
    MAX_DOCUMENT_BYTES,
    MEMBERSHIP_FORMAT,
    KeyRing,
    Membership,
    MembershipError,
    MembershipVerifier,
    Secrets,
    SecretSet,
    load_secrets,
    sign_membership,
)

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

MANIFEST_FORMAT = MEMBERSHIP_FORMAT
MAX_MANIFEST_BYTES = MAX_DOCUMENT_BYTES
"""Largest manifest a source will read; anything bigger is refused, not buffered."""

Manifest = Membership
"""A verified manifest is a verified membership document."""

ManifestError = MembershipError
"""A manifest could not be read or was refused; `reason` says why, without secrets."""

_log = logging.getLogger("openrtc")


def _ring(secrets: Secrets | str | bytes, key_id: str | None) -> KeyRing | Secrets | str | bytes:
    """Sign with `key_id`: a single secret gets that id; a key set is narrowed to it."""
    if key_id is None:
        return secrets
    if isinstance(secrets, str | bytes):
        return KeyRing({key_id: secrets})
    ring = secrets if isinstance(secrets, KeyRing) else KeyRing(secrets)
    key = ring.get(key_id)
    if key is None:
        raise ValueError(f"key id {key_id!r} is not configured")
    return KeyRing({key_id: key})


def sign_manifest(
    active_versions: Sequence[str],
    *,
    secret: Secrets | str | bytes,
    key_id: str | None = None,
    issued_at: float | None = None,
    ttl_seconds: float | None = None,
    serial: int | None = None,
) -> str:
    """Return a signed manifest naming `active_versions` (see `sign_membership`)."""
    return sign_membership(
        active_versions,
        secret=_ring(secret, key_id),
        serial=serial,
        issued_at=issued_at,
        ttl_seconds=ttl_seconds,
    )


def verify_manifest(
    text: str | bytes,
    *,
    secrets: Secrets | str | bytes,
    now: float | None = None,
    max_future_seconds: float = 5.0,
) -> Manifest:
    """Verify one manifest on its own (no serial in force); raise ManifestError if refused."""
    clock = time.time if now is None else (lambda: now)
    try:
        verifier = MembershipVerifier(secrets, clock=clock, max_skew_seconds=max_future_seconds)
    except ValueError as e:
        raise ManifestError(str(e)) from None
    return verifier.verify(text)


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
            raise ManifestError(
                f"manifest file {self.display} is larger than {MAX_MANIFEST_BYTES} bytes"
            )
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
            raise ManifestError(
                f"manifest URL {self.display} returned more than {MAX_MANIFEST_BYTES} bytes"
            )
        return bytes(data)


class ManifestWatcher:
    """Poll a manifest source and report changes and refusals.

    A valid manifest with new content replaces the one in force and goes to
    `on_change`. An unreadable or refused one goes to `on_rejected` once per distinct
    reason and content (until a valid read happens again); the last valid manifest
    stays in force. No input makes a poll raise: an unexpected error is a refusal too.
    Callbacks run on the event loop; an exception in one is logged.
    """

    def __init__(
        self,
        source: ManifestSource | str | os.PathLike[str],
        secrets: Secrets | str | bytes,
        *,
        interval: float = 5.0,
        on_change: Callable[[Manifest], None],
        on_rejected: Callable[[str], None],
        clock: Callable[[], float] = time.time,
        max_future_seconds: float = 5.0,
    ) -> None:
        if not isinstance(interval, int | float) or not 0 < interval < 1e9:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        self.source = source if isinstance(source, ManifestSource) else ManifestSource(source)
        self.interval = float(interval)
        self._verifier = MembershipVerifier(
            secrets, clock=clock, max_skew_seconds=max_future_seconds
        )
        self._on_change = on_change
        self._on_rejected = on_rejected
        self._last_rejection: tuple[str, str | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def current(self) -> Manifest | None:
        """The manifest in force, or None before the first valid read."""
        return self._verifier.current

    async def poll_once(self) -> Manifest | None:
        """Read and verify the source once; return the manifest in force afterwards."""
        async with self._lock:
            before = self._verifier.current
            content: bytes | None = None
            try:
                content = await self.source.read()
                manifest = self._verifier.verify(content)
            except ManifestError as exc:
                self._reject(exc.reason, content)
                return self._verifier.current
            except Exception as exc:
                self._reject(f"manifest could not be checked ({type(exc).__name__})", content)
                return self._verifier.current
            self._last_rejection = None
            if before is None or manifest.digest != before.digest:
                self._call(self._on_change, manifest)
            return manifest

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
