"""An audit record and its hash: the canonical form every sink writes and every check reads."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

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
    }
)
"""Top-level keys of a flat record; extra fields may not use these names."""


def _canonical(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def record_hash(record: Mapping[str, Any]) -> str:
    """Return the sha256 hex digest of a flat record, ignoring its own `hash` key."""
    unsigned = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(_canonical(unsigned)).hexdigest()


def _check_field_names(names: Iterable[object]) -> None:
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"audit field name {name!r} is not a non-empty string; rename it")
        if name in RESERVED_KEYS:
            raise ValueError(
                f"audit field {name!r} would shadow a built-in record key; rename the field"
            )


def _json_safe(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Return `fields` as JSON would read them back, so hashes verify from the file alone."""
    loaded = json.loads(json.dumps(dict(fields), default=str, ensure_ascii=False))
    assert isinstance(loaded, dict)
    return loaded


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
    for key in ("prev_hash", "hash"):
        value = record.get(key)
        if not isinstance(value, str) or len(value) != 64:
            return f"has no 64-character {key!r}"
    return None
