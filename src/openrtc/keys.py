"""Named signing keys: `kid:secret` lines where the first key signs and every key verifies.

One format for every secret the worker signs or checks with (audit chain, tenant
claims, membership manifests), so an operator rotates each the same way: put the new
key first, keep the old one below it until nothing signed with it is still in use,
then remove it. A line without a `kid:` prefix gets the key id `k<line number>`.
Secrets never appear in a repr, a message or an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["KEY_ID", "KeyRing", "check_key_id", "hmac_hex", "parse_key_text", "same_digest"]

KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""A key id: 1-64 letters, digits, '_' or '-' (never anything a log could misread)."""

_KEYED_LINE = re.compile(r"^[A-Za-z0-9_-]{1,64}:.")


def check_key_id(key_id: object) -> None:
    """Raise ValueError unless `key_id` is 1-64 letters, digits, '_' or '-'."""
    if not isinstance(key_id, str) or not KEY_ID.match(key_id):
        raise ValueError("a key id must be 1-64 letters, digits, '_' or '-'")


def hmac_hex(key: bytes, message: bytes) -> str:
    """HMAC-SHA256 of `message` under `key`, as 64 lowercase hex characters."""
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def same_digest(expected: str, given: object) -> bool:
    """Constant-time equality of two hex digests; anything not ASCII text is simply unequal."""
    if not isinstance(given, str) or not given.isascii():
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.encode("ascii"))


def _as_bytes(secret: object) -> bytes:
    if isinstance(secret, str):
        raw = secret.encode("utf-8")
    elif isinstance(secret, bytes | bytearray):
        raw = bytes(secret)
    else:
        raise ValueError("every secret must be str or bytes; check the key configuration")
    if not raw:
        raise ValueError("a configured secret is empty; remove it or set a value")
    return raw


def parse_key_text(text: str, origin: str) -> dict[str, str]:
    """Key id -> secret from `kid:secret` lines (or plain lines, named k1, k2, ...)."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise ValueError(f"{origin} holds no key; put one kid:secret per line")
    keyed = [bool(_KEYED_LINE.match(line)) for line in lines]
    if any(keyed) and not all(keyed):
        raise ValueError(
            f"{origin} mixes 'kid:secret' lines with plain secrets; use one form on every line"
        )
    result: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if all(keyed):
            key_id, secret = line.split(":", 1)
        else:
            key_id, secret = f"k{number}", line
        if key_id in result:
            raise ValueError(f"{origin} lists key id {key_id!r} twice; keep one line per key id")
        result[key_id] = secret
    return result


class KeyRing:
    """Secrets by key id, in order: `signing` is the first, `get(kid)` finds any of them."""

    def __init__(self, keys: Mapping[str, str | bytes] | Sequence[str | bytes] | str | bytes):
        if isinstance(keys, str | bytes):
            keys = [keys]
        if isinstance(keys, Mapping):
            items = list(keys.items())
        else:
            items = [(f"k{n}", secret) for n, secret in enumerate(keys, start=1)]
        if not items:
            raise ValueError("no keys configured; pass at least one non-empty secret")
        self._keys: dict[str, bytes] = {}
        for key_id, secret in items:
            check_key_id(key_id)
            self._keys[key_id] = _as_bytes(secret)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, what: str) -> KeyRing:
        """Read a key file; errors name `what` (the flag or variable) and the file."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise ValueError(f"{what}: cannot read key file {file}: {reason}") from None
        try:
            return cls(parse_key_text(text, f"{what}: key file {file}"))
        except ValueError as exc:
            message = str(exc)
            raise ValueError(
                message if message.startswith(what) else f"{what}: {message}"
            ) from None

    def __repr__(self) -> str:
        return f"KeyRing(kids={list(self._keys)!r}, secrets=<hidden>)"

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    @property
    def signing(self) -> tuple[str, bytes]:
        """The key id and secret new signatures are made with (the first key)."""
        key_id = next(iter(self._keys))
        return key_id, self._keys[key_id]

    def get(self, key_id: object) -> bytes | None:
        """The secret of `key_id`, or None when it is not configured (or not a key id)."""
        if not isinstance(key_id, str):
            return None
        return self._keys.get(key_id)

    def secrets(self) -> tuple[bytes, ...]:
        """Every secret, for checks that must never see one in the clear (tests, scrubbing)."""
        return tuple(self._keys.values())
