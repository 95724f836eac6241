"""Signed membership tokens: prove a worker runs a version the platform vouches for.

A deployment platform signs (version, worker_id, timestamp) with a shared secret; a
coordinator verifies the token before routing new calls to that worker, so a leftover
old-version worker cannot claim traffic meant for the new one. Several secrets may be
configured at once, which lets an operator rotate the secret without downtime.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "TOKEN_PREFIX",
    "KeyRing",
    "MembershipError",
    "MembershipVerifier",
    "SecretSet",
    "Secrets",
    "check_key_id",
    "load_secrets",
    "sign_membership",
]

TOKEN_PREFIX = "v1"
"""Format tag at the start of every token; bumped if the signed encoding ever changes."""

_DOMAIN = "openrtc-membership"
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")

Secrets = Sequence[str | bytes] | Mapping[str, str | bytes]
"""Accepted secret configurations: a list (tried in turn) or key id -> secret."""

SecretSet = list[str] | dict[str, str]
"""What `load_secrets` returns: a list, or a dict when the source names key ids."""


class MembershipError(Exception):
    """A membership token was rejected; the message never contains a secret."""


def _as_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def check_key_id(key_id: str) -> None:
    """Raise ValueError unless `key_id` is 1-64 letters, digits, '_' or '-'."""
    if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
        raise ValueError(f"key id {key_id!r} is invalid; use 1-64 letters, digits, '_' or '-'")


class KeyRing:
    """Normalised secrets: every candidate key, and a by-id index when ids are given."""

    def __init__(self, secrets: Secrets) -> None:
        keys: list[tuple[str | None, bytes]] = []
        if isinstance(secrets, str | bytes):
            secrets = [secrets]
        if isinstance(secrets, Mapping):
            for key_id, secret in secrets.items():
                check_key_id(key_id)
                keys.append((key_id, self.checked(secret)))
            self.by_id: dict[str, bytes] | None = {k: v for k, v in keys if k is not None}
        else:
            keys = [(None, self.checked(secret)) for secret in secrets]
            self.by_id = None
        if not keys:
            raise ValueError("no secrets configured; pass at least one non-empty secret")
        self.keys: tuple[bytes, ...] = tuple(secret for _, secret in keys)

    @staticmethod
    def checked(secret: str | bytes) -> bytes:
        """Return one secret as bytes; raise ValueError if it is empty or not str/bytes."""
        if not isinstance(secret, str | bytes):
            raise ValueError("every secret must be str or bytes; check the secret configuration")
        raw = _as_bytes(secret)
        if not raw:
            raise ValueError("a configured secret is empty; remove it or set a value")
        return raw

    def candidates(self, key_id: str | None) -> tuple[bytes, ...] | None:
        """Return the keys to try for `key_id`, or None when that id is not configured."""
        if key_id is None or self.by_id is None:
            return self.keys
        key = self.by_id.get(key_id)
        return None if key is None else (key,)

    @staticmethod
    def matches(keys: tuple[bytes, ...], message: bytes, digest: str) -> bool:
        """Constant-time check of `digest` against HMAC-SHA256 of `message` under each key."""
        found = False
        for key in keys:
            expected = hmac.new(key, message, hashlib.sha256).hexdigest()
            found |= hmac.compare_digest(expected, digest)
        return found


def _timestamp_text(timestamp: float) -> str:
    return repr(float(timestamp))


def _message(key_id: str | None, version: str, worker_id: str, timestamp: float) -> bytes:
    payload = [_DOMAIN, TOKEN_PREFIX, key_id or "", version, worker_id, _timestamp_text(timestamp)]
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def sign_membership(
    *,
    version: str,
    worker_id: str,
    timestamp: float,
    secret: str | bytes,
    key_id: str | None = None,
) -> str:
    """Return a token vouching that `worker_id` runs `version` at `timestamp`.

    Token format: ``v1.<hex>`` or, with a key id, ``v1.<key_id>.<hex>``, where ``<hex>``
    is HMAC-SHA256 over the compact JSON array
    ``["openrtc-membership", "v1", key_id or "", version, worker_id, repr(float(timestamp))]``.
    JSON keeps the fields unambiguous; the key id is signed so it cannot be swapped.
    """
    if not isinstance(version, str) or not version:
        raise ValueError("version must be a non-empty string like 'v2.0.0'")
    if not isinstance(worker_id, str):
        raise ValueError("worker_id must be a string")
    if not _is_number(timestamp) or not math.isfinite(timestamp):
        raise ValueError("timestamp must be a finite unix time in seconds, like time.time()")
    if key_id is not None:
        check_key_id(key_id)
    key = KeyRing.checked(secret)
    digest = hmac.new(key, _message(key_id, version, worker_id, timestamp), hashlib.sha256)
    parts = [TOKEN_PREFIX] if key_id is None else [TOKEN_PREFIX, key_id]
    return ".".join([*parts, digest.hexdigest()])


def _parse_token(token: object) -> tuple[str | None, str]:
    if not isinstance(token, str):
        raise MembershipError("membership token must be a string")
    parts = token.split(".")
    if len(parts) not in (2, 3) or parts[0] != TOKEN_PREFIX or not _HEX_DIGEST.match(parts[-1]):
        raise MembershipError(
            "membership token is malformed; expected 'v1.<hex>' or 'v1.<kid>.<hex>'"
        )
    key_id = parts[1] if len(parts) == 3 else None
    if key_id is not None and not _KEY_ID.match(key_id):
        raise MembershipError("membership token has an invalid key id")
    return key_id, parts[-1]


class MembershipVerifier:
    """Verify membership tokens: signature, version, freshness and single use.

    Accepted tokens are remembered until they would be stale anyway, so memory is
    bounded by the number of valid tokens issued within `max_age_seconds`.
    Thread-safe.
    """

    def __init__(
        self,
        secrets: Secrets,
        expected_version: str | None = None,
        max_age_seconds: float = 300,
        clock: Callable[[], float] = time.time,
        max_future_seconds: float = 5.0,
    ) -> None:
        if not (_is_number(max_age_seconds) and math.isfinite(max_age_seconds)):
            raise ValueError("max_age_seconds must be a finite number of seconds")
        if max_age_seconds <= 0:
            raise ValueError(f"max_age_seconds must be positive, got {max_age_seconds}")
        if not (_is_number(max_future_seconds) and math.isfinite(max_future_seconds)):
            raise ValueError("max_future_seconds must be a finite number of seconds")
        if max_future_seconds < 0:
            raise ValueError(f"max_future_seconds must be >= 0, got {max_future_seconds}")
        self._keys = KeyRing(secrets)
        self._expected_version = expected_version
        self._max_age = float(max_age_seconds)
        self._max_future = float(max_future_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []

    @property
    def tracked_tokens(self) -> int:
        """Number of accepted tokens remembered for replay detection."""
        with self._lock:
            return len(self._seen)

    def verify(self, *, token: str, version: str, worker_id: str, timestamp: float) -> None:
        """Return if the token is valid and unused; raise MembershipError otherwise."""
        key_id, digest = _parse_token(token)
        if not isinstance(version, str) or not isinstance(worker_id, str):
            raise MembershipError("membership version and worker_id must be strings")
        if not _is_number(timestamp):
            raise MembershipError("membership timestamp is not a number")
        if not math.isfinite(timestamp):
            raise MembershipError("membership timestamp is not finite")
        keys = self._keys.candidates(key_id)
        if keys is None:
            raise MembershipError("membership token names a key id that is not configured")
        if not KeyRing.matches(keys, _message(key_id, version, worker_id, timestamp), digest):
            raise MembershipError("membership token signature is invalid")
        if self._expected_version is not None and not hmac.compare_digest(
            version.encode("utf-8"), self._expected_version.encode("utf-8")
        ):
            raise MembershipError("membership version is not the expected one")
        now = self._clock()
        if now - timestamp > self._max_age:
            raise MembershipError("membership token is too old; sign a fresh one")
        if timestamp - now > self._max_future:
            raise MembershipError("membership timestamp is in the future; check the clocks")
        with self._lock:
            self._evict(now)
            if digest in self._seen:
                raise MembershipError("membership token was already used")
            expires = float(timestamp) + self._max_age
            self._seen[digest] = expires
            heapq.heappush(self._expiry, (expires, digest))

    def _evict(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, digest = heapq.heappop(self._expiry)
            self._seen.pop(digest, None)


def _parse_secret_text(text: str, origin: str) -> SecretSet:
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"{origin} holds no secret; put one secret per line")
    keyed = [bool(re.match(r"^[A-Za-z0-9_-]{1,64}:.", line)) for line in lines]
    if not any(keyed):
        return lines
    if not all(keyed):
        raise ValueError(
            f"{origin} mixes 'kid:secret' lines with plain secrets; use one form on every line"
        )
    result: dict[str, str] = {}
    for line in lines:
        key_id, secret = line.split(":", 1)
        if key_id in result:
            raise ValueError(f"{origin} lists key id {key_id!r} twice; keep one line per key id")
        result[key_id] = secret
    return result


def _read_secret_file(path: Path, origin: str) -> SecretSet:
    """Secrets from one file; every error names the file (and where its name came from)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ValueError(f"cannot read secret file {path}{origin}: {reason}") from None
    return _parse_secret_text(text, f"secret file {path}")


def load_secrets(
    value: str | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    env: str = "OPENRTC_MEMBERSHIP_SECRET",
    file_env: str = "OPENRTC_MEMBERSHIP_SECRET_FILE",
) -> SecretSet:
    """Load signing secrets from `value`, else the file at `path`, else the file named by
    `file_env`, else `env`.

    The text holds one secret per line (blank lines ignored, surrounding whitespace
    stripped). If every line reads ``kid:secret`` (kid: 1-64 letters, digits, '_', '-')
    the result is a dict of key id -> secret, otherwise a list; a plain secret that
    itself contains ':' after such a prefix must therefore be given a key id.
    """
    if value is not None:
        return _parse_secret_text(value, "the secret value")
    if path is not None:
        return _read_secret_file(Path(path), "")
    file_name = os.environ.get(file_env, "").strip()
    inline = os.environ.get(env, "")
    if file_name and inline.strip():
        raise ValueError(f"both {env} and {file_env} are set; set only one of them")
    if file_name:
        return _read_secret_file(Path(file_name), f" ({file_env})")
    if inline.strip():
        return _parse_secret_text(inline, f"${env}")
    raise ValueError(f"no membership secret configured; set {env} or {file_env}")
