"""Signed membership documents: the platform says which versions may take new calls.

A membership document (the "manifest" a worker follows) is made by `sign_membership`
and checked by `MembershipVerifier`. It is one line of text::

    openrtc-membership/2.<kid>.<payload>.<hmac>

where `<payload>` is base64url (no padding) of a JSON object
``{"active_versions": [...], "serial": N, "issued_at": T, "expires_at": T | null}`` and
`<hmac>` is the hex HMAC-SHA256, under the key named `<kid>`, of everything before the
last dot. The verifier checks the size, the shape of the line and the HMAC over the
raw bytes before it decodes or interprets any field, so nothing an outsider writes is
parsed unless it was signed. Then: expiry and clock skew, and replay by a monotonic
`serial` (an older serial than the one in force is refused; a rollback is a new
document with a higher serial naming the old version). Keys are `kid:secret` lines:
the first signs, all verify, so the key rotates without downtime.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..keys import KeyRing, check_key_id, hmac_hex, same_digest

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MEMBERSHIP_FORMAT",
    "KeyRing",
    "Membership",
    "MembershipError",
    "MembershipVerifier",
    "SecretSet",
    "Secrets",
    "as_key_ring",
    "check_key_id",
    "load_secrets",
    "sign_membership",
]

MEMBERSHIP_FORMAT = "openrtc-membership/2"
"""First field of every document; bumped if the signed encoding ever changes."""

MAX_DOCUMENT_BYTES = 64 * 1024
"""Largest document read or checked; anything bigger is refused unread."""

MAX_VERSIONS = 256
MAX_NESTING = 4
_MAX_SERIAL = 2**63 - 1
_MAX_TIME = 1e11
"""Timestamps past the year 5000 are refused rather than computed with."""

_LINE = re.compile(
    r"^openrtc-membership/2\.([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{1,90000})\.([0-9a-f]{64})$"
)

Secrets = Sequence[str | bytes] | Mapping[str, str | bytes] | KeyRing
"""Accepted key configurations: a list (named k1, k2, ...), kid -> secret, or a KeyRing."""

SecretSet = list[str] | dict[str, str]
"""What `load_secrets` returns: a list, or a dict when the source names key ids."""


class MembershipError(Exception):
    """A membership document was refused; `reason` says why and never holds a secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def as_key_ring(secrets: Secrets | str | bytes) -> KeyRing:
    """`secrets` as a KeyRing; raises ValueError naming what is wrong (never the secret)."""
    return secrets if isinstance(secrets, KeyRing) else KeyRing(secrets)


@dataclasses.dataclass(frozen=True)
class Membership:
    """A verified membership document; `digest` identifies its exact bytes."""

    active_versions: tuple[str, ...]
    serial: int
    issued_at: float
    expires_at: float | None
    key_id: str
    signature: str
    digest: str

    def is_member(self, version: str) -> bool:
        """True when `version` may take new calls under this document."""
        return version in self.active_versions

    def is_expired(self, now: float | None = None) -> bool:
        """True when the document has an expiry and it has passed."""
        current = time.time() if now is None else now
        return self.expires_at is not None and current >= self.expires_at

    def to_dict(self) -> dict[str, Any]:
        """The verified fields, for reports (`openrtc manifest verify`)."""
        return {
            "format": MEMBERSHIP_FORMAT,
            "active_versions": list(self.active_versions),
            "serial": self.serial,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "key_id": self.key_id,
        }


def _is_time(value: object) -> bool:
    # compare before converting: float() of a 400-digit integer raises OverflowError
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and abs(value) < _MAX_TIME
        and math.isfinite(value)
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_membership(
    active_versions: Sequence[str],
    *,
    secret: Secrets | str | bytes,
    serial: int | None = None,
    issued_at: float | None = None,
    ttl_seconds: float | None = None,
) -> str:
    """Return a signed membership document naming `active_versions` (duplicates dropped).

    Signed with the first key of `secret`. `serial` must grow with every document the
    platform publishes; by default it is `issued_at` in microseconds.
    """
    if isinstance(active_versions, str):
        raise ValueError("active_versions must be a list of versions, not a single string")
    versions: list[str] = []
    for version in active_versions:
        if not isinstance(version, str) or not version or len(version) > 128:
            raise ValueError("every active version must be a string of 1-128 characters")
        if version not in versions:
            versions.append(version)
    if not versions:
        raise ValueError("a membership document must name at least one active version")
    if len(versions) > MAX_VERSIONS:
        raise ValueError(f"a membership document names at most {MAX_VERSIONS} versions")
    issued = time.time() if issued_at is None else issued_at
    if not _is_time(issued):
        raise ValueError("issued_at must be a finite unix time in seconds")
    expires: float | None = None
    if ttl_seconds is not None:
        if not _is_time(ttl_seconds) or ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be a positive number of seconds, or None")
        expires = float(issued) + float(ttl_seconds)
    number = int(float(issued) * 1_000_000) if serial is None else serial
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= _MAX_SERIAL:
        raise ValueError("serial must be a positive whole number that grows with each document")
    keys = as_key_ring(secret)
    kid, key = keys.signing
    payload = json.dumps(
        {
            "active_versions": versions,
            "serial": number,
            "issued_at": float(issued),
            "expires_at": expires,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode("utf-8")
    body = f"{MEMBERSHIP_FORMAT}.{kid}.{_b64(payload)}"
    return f"{body}.{hmac_hex(key, body.encode('ascii'))}"


def _nesting_too_deep(text: bytes) -> bool:
    """True when brackets nest deeper than `MAX_NESTING` (checked before json parses it)."""
    depth = 0
    in_string = escaped = False
    for byte in text:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_NESTING:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def _authenticated(raw: bytes | str, keys: KeyRing) -> tuple[str, str, bytes]:
    """Check size, shape and HMAC of the raw document; return (kid, signature, payload)."""
    data = raw.encode("utf-8", "replace") if isinstance(raw, str) else bytes(raw)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise MembershipError(f"membership document is larger than {MAX_DOCUMENT_BYTES} bytes")
    data = data.strip()
    if not data.isascii():
        raise MembershipError("membership document holds non-ASCII bytes; it was not signed")
    line = data.decode("ascii")
    if not line.startswith(f"{MEMBERSHIP_FORMAT}."):
        raise MembershipError(f"membership document is not an {MEMBERSHIP_FORMAT} document")
    match = _LINE.match(line)
    if match is None:
        raise MembershipError(
            f"membership document is malformed; expected {MEMBERSHIP_FORMAT}.<kid>.<payload>.<hex>"
        )
    kid, payload, signature = match.groups()
    key = keys.get(kid)
    if key is None:
        raise MembershipError("membership document names a key id that is not configured")
    body = line[: -len(signature) - 1]
    if not same_digest(hmac_hex(key, body.encode("ascii")), signature):
        raise MembershipError("membership document signature is invalid")
    try:
        decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    except ValueError:
        raise MembershipError("membership payload is not base64url") from None
    return kid, signature, decoded


def _fields(payload: bytes) -> dict[str, Any]:
    """The signed payload's fields, each checked for type and range."""
    if _nesting_too_deep(payload):
        raise MembershipError(f"membership payload nests deeper than {MAX_NESTING} levels")
    try:
        document = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MembershipError("membership payload is not valid JSON") from None
    if not isinstance(document, dict):
        raise MembershipError("membership payload is not a JSON object")
    expected = {"active_versions", "serial", "issued_at", "expires_at"}
    if set(document) != expected:
        names = ", ".join(sorted(expected))
        raise MembershipError(f"membership payload must have exactly: {names}")
    versions = document["active_versions"]
    if (
        not isinstance(versions, list)
        or not 0 < len(versions) <= MAX_VERSIONS
        or not all(isinstance(v, str) and 0 < len(v) <= 128 for v in versions)
    ):
        raise MembershipError("membership active_versions must be a list of 1-128 char strings")
    serial = document["serial"]
    if isinstance(serial, bool) or not isinstance(serial, int) or not 1 <= serial <= _MAX_SERIAL:
        raise MembershipError("membership serial must be a positive whole number")
    if not _is_time(document["issued_at"]):
        raise MembershipError("membership issued_at must be a unix time in seconds")
    expires = document["expires_at"]
    if expires is not None and not _is_time(expires):
        raise MembershipError("membership expires_at must be a unix time in seconds or null")
    return document


class MembershipVerifier:
    """Verify membership documents: HMAC first, then fields, expiry, skew and replay.

    Remembers the serial and digest of the last document it accepted, so an older
    document (a replay) and a different document under the same serial are refused,
    while the same document read again is accepted. Thread-safe.
    """

    def __init__(
        self,
        secrets: Secrets | str | bytes,
        *,
        clock: Callable[[], float] = time.time,
        max_skew_seconds: float = 5.0,
    ) -> None:
        if not _is_time(max_skew_seconds) or max_skew_seconds < 0:
            raise ValueError("max_skew_seconds must be a finite number of seconds >= 0")
        self._keys = as_key_ring(secrets)
        self._clock = clock
        self._skew = float(max_skew_seconds)
        self._lock = threading.Lock()
        self._last: Membership | None = None

    def __repr__(self) -> str:
        return f"MembershipVerifier(kids={list(self._keys.kids)!r}, secrets=<hidden>)"

    @property
    def current(self) -> Membership | None:
        """The last document accepted, or None."""
        return self._last

    def verify(self, raw: bytes | str) -> Membership:
        """Return the verified document; raise MembershipError with the reason otherwise."""
        kid, signature, payload = _authenticated(raw, self._keys)
        document = _fields(payload)
        data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        membership = Membership(
            active_versions=tuple(document["active_versions"]),
            serial=document["serial"],
            issued_at=float(document["issued_at"]),
            expires_at=None if document["expires_at"] is None else float(document["expires_at"]),
            key_id=kid,
            signature=signature,
            digest=hashlib.sha256(data.strip()).hexdigest(),
        )
        now = self._clock()
        if membership.expires_at is not None and now >= membership.expires_at + self._skew:
            raise MembershipError("membership document has expired; publish a fresh one")
        if membership.issued_at - now > self._skew:
            raise MembershipError("membership document is issued in the future; check the clocks")
        with self._lock:
            last = self._last
            if last is not None:
                if membership.serial < last.serial:
                    raise MembershipError(
                        f"membership serial {membership.serial} is older than the one in force "
                        f"({last.serial}): a replay or a stale copy"
                    )
                if membership.serial == last.serial and membership.signature != last.signature:
                    raise MembershipError(
                        f"membership document differs from the one in force under the same "
                        f"serial {membership.serial}; publish it with a higher serial"
                    )
            self._last = membership
        return membership


def _parse_secret_text(text: str, origin: str) -> SecretSet:
    """A list of plain secrets, or kid -> secret when every line reads `kid:secret`."""
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
