"""An audit record and its seal: the canonical form every sink writes and every check reads.

A record's `hash` seals its canonical form, which includes `prev_hash`, the seal of the
record before it. With an audit key the seal is HMAC-SHA256 under the key named by
the record's `kid`, so a chain edited and recomputed without the key does not verify;
without a key it is a plain sha256, which shows accidents but not forgery.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..keys import KeyRing, hmac_hex, same_digest

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first record of a chain."""

RESERVED_KEYS = frozenset(
    {
        "seq",
        "timestamp",
        "event",
        "actor",
        "target",
        "result",
        "version",
        "worker_id",
        "host",
        "prev_hash",
        "hash",
        "kid",
    }
)
"""Top-level keys of a flat record; extra fields may not use these names."""


def _canonical(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


MAX_TEXT = 512
"""Longest string kept in a record field; longer ones are cut and say by how much."""
MAX_ITEMS = 32
"""Most items kept from a list or mapping in a record field."""
_MAX_DEPTH = 4


def record_hash(record: Mapping[str, Any]) -> str:
    """Return the plain sha256 hex digest of a flat record, ignoring its own `hash` key."""
    unsigned = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(_canonical(unsigned)).hexdigest()


def record_mac(record: Mapping[str, Any], key: bytes) -> str:
    """Return the HMAC-SHA256 of a flat record under `key`, ignoring its own `hash` key."""
    unsigned = {name: value for name, value in record.items() if name != "hash"}
    return hmac_hex(key, b"openrtc-audit/1\n" + _canonical(unsigned))


def seal_problem(record: Mapping[str, Any], keys: KeyRing | None) -> str | None:
    """Why a parsed record's `hash` does not seal it, or None when it does.

    With `keys`, every record must carry a configured `kid` and its HMAC: a plain
    record in a keyed check is a chain rebuilt without the key. Without keys, a keyed
    record cannot be checked and says so.
    """
    kid = record.get("kid")
    if keys is None:
        if kid is not None:
            return f"is sealed with audit key {str(kid)[:64]!r}; verify with the audit key file"
        return None if same_digest(record_hash(record), record.get("hash")) else "was modified"
    if kid is None:
        return "is not sealed with an audit key (a plain chain where a keyed one was expected)"
    key = keys.get(kid)
    if key is None:
        return f"names audit key {str(kid)[:64]!r}, which is not in the key file"
    if not same_digest(record_mac(record, key), record.get("hash")):
        return "does not carry a valid HMAC: it was modified, or forged without the key"
    return None


def cap_value(value: Any, depth: int = 0) -> Any:
    """`value` with strings, lists and mappings cut to a bounded size (JSON types only)."""
    if isinstance(value, str):
        if len(value) <= MAX_TEXT:
            return value
        return f"{value[:MAX_TEXT]}...(+{len(value) - MAX_TEXT} chars)"
    if depth >= _MAX_DEPTH and isinstance(value, list | dict):
        return "...(nested too deep)"
    if isinstance(value, list):
        kept = [cap_value(item, depth + 1) for item in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            kept.append(f"...(+{len(value) - MAX_ITEMS} items)")
        return kept
    if isinstance(value, dict):
        items = list(value.items())
        capped = {str(k)[:64]: cap_value(v, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            capped["..."] = f"+{len(items) - MAX_ITEMS} keys"
        return capped
    return value


def _check_field_names(names: Iterable[object]) -> None:
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"audit field name {name!r} is not a non-empty string; rename it")
        if name in RESERVED_KEYS:
            raise ValueError(
                f"audit field {name!r} would shadow a built-in record key; rename the field"
            )


def _json_safe(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Return `fields` as JSON would read them back, so seals verify from the file alone.

    Values are capped (`cap_value`) so an outsider-controlled value cannot grow a record.
    """
    loaded = json.loads(json.dumps(dict(fields), default=str, ensure_ascii=False))
    assert isinstance(loaded, dict)
    capped = cap_value(loaded, depth=-1)
    assert isinstance(capped, dict)
    return capped


@dataclasses.dataclass(frozen=True)
class AuditEvent:
    """One audit record; `to_dict()` is the flat form written to every sink."""

    seq: int
    timestamp: float
    event: str
    actor: str
    target: str
    result: str
    version: str
    worker_id: str
    host: str
    fields: dict[str, Any]
    prev_hash: str
    hash: str
    kid: str | None = None
    """The audit key that sealed this record; None for a plain (unkeyed) chain."""

    def __post_init__(self) -> None:
        _check_field_names(self.fields)

    def to_dict(self) -> dict[str, Any]:
        """Return the flat record: named keys, extra fields at top level, both hashes."""
        record: dict[str, Any] = {
            "seq": self.seq,
            "timestamp": self.timestamp,
            "event": self.event,
            "actor": self.actor,
            "target": self.target,
            "result": self.result,
            "version": self.version,
            "worker_id": self.worker_id,
            "host": self.host,
        }
        record.update(self.fields)
        if self.kid is not None:
            record["kid"] = self.kid
        record["prev_hash"] = self.prev_hash
        record["hash"] = self.hash
        return record

    def to_json(self) -> str:
        """Return the record as one compact JSON line (no trailing newline)."""
        return _canonical(self.to_dict()).decode("utf-8")


_STRING_KEYS = ("event", "actor", "target", "result", "version", "worker_id", "host")


def record_problem(record: Mapping[str, Any]) -> str | None:
    """Return what is structurally wrong with a parsed record, or None."""
    seq = record.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return "has no integer seq"
    timestamp = record.get("timestamp")
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        return "has no numeric timestamp"
    for key in _STRING_KEYS:
        if not isinstance(record.get(key), str):
            return f"has no string {key!r}"
    if "kid" in record and not isinstance(record["kid"], str):
        return "has a 'kid' that is not a string"
    for key in ("prev_hash", "hash"):
        value = record.get(key)
        if not isinstance(value, str) or len(value) != 64:
            return f"has no 64-character {key!r}"
    return None
