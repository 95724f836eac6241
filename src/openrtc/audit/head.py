"""The head file next to an audit file: its last seq and hash, so a cut tail shows.

With an audit key the head is sealed too (`mac` under `kid`), so whoever cuts records
from the end cannot write a head that agrees with the shorter log; they can only put
back an older head they kept, which `verify` reports as a head behind the log.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..keys import KeyRing, hmac_hex, same_digest

HEAD_SUFFIX = ".head"
"""Appended to an audit file's name to name its head file."""


class AuditFileError(ValueError):
    """The audit file cannot be continued safely (damaged tail or head, or another writer)."""


def head_path(path: str | os.PathLike[str]) -> Path:
    """Return the head file kept next to audit file `path`; move both when rotating."""
    file = Path(path)
    return file.with_name(file.name + HEAD_SUFFIX)


@dataclasses.dataclass(frozen=True)
class _Head:
    """The seq and hash of a log's last record, as its writer last recorded them."""

    seq: int
    hash: str
    kid: str | None = None
    mac: str | None = None

    def document(self) -> dict[str, Any]:
        """The head as written: seq and hash, plus kid and mac when sealed."""
        out: dict[str, Any] = {"seq": self.seq, "hash": self.hash}
        if self.kid is not None:
            out["kid"] = self.kid
            out["mac"] = self.mac
        return out


def _head_message(seq: int, digest: str, kid: str) -> bytes:
    return json.dumps(["openrtc-audit-head/1", seq, digest, kid], separators=(",", ":")).encode()


def seal_head(seq: int, digest: str, keys: KeyRing | None) -> _Head:
    """The head for a log ending at (`seq`, `digest`), sealed with the signing key if any."""
    if keys is None:
        return _Head(seq, digest)
    kid, key = keys.signing
    return _Head(seq, digest, kid, hmac_hex(key, _head_message(seq, digest, kid)))


def head_seal_problem(head: _Head, keys: KeyRing | None) -> str | None:
    """Why a head's seal does not hold under `keys`, or None when it does (or none is used)."""
    if keys is None:
        return None
    if head.kid is None:
        return "it is not sealed with an audit key"
    key = keys.get(head.kid)
    if key is None:
        return f"it names audit key {head.kid!r}, which is not in the key file"
    if not same_digest(hmac_hex(key, _head_message(head.seq, head.hash, head.kid)), head.mac):
        return "its seal is invalid: it was edited or written without the key"
    return None


def _read_head(log: Path) -> _Head | None:
    """Return the head of audit file `log`, None when it has none.

    Raises AuditFileError naming what is wrong when the head file exists but cannot
    be used.
    """
    file = head_path(log)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditFileError(exc.strerror or type(exc).__name__) from None
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise AuditFileError("it is not valid JSON") from None
    seq = document.get("seq") if isinstance(document, dict) else None
    digest = document.get("hash") if isinstance(document, dict) else None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise AuditFileError("it has no positive integer seq")
    if not isinstance(digest, str) or len(digest) != 64:
        raise AuditFileError("it has no 64-character hash")
    assert isinstance(document, dict)
    kid, mac = document.get("kid"), document.get("mac")
    if kid is None and mac is None:
        return _Head(seq, digest)
    if not isinstance(kid, str) or not isinstance(mac, str) or len(kid) > 64:
        raise AuditFileError("its kid or mac is malformed")
    return _Head(seq, digest, kid, mac)


def _records(first: int, last: int) -> str:
    return f"record {first} was" if first == last else f"records {first}..{last} were"


def _tail_problem(last_seq: int, known: Mapping[int, str], head: _Head) -> tuple[int, str] | None:
    """Compare the end of a log with its head; return (first bad seq, reason) or None.

    A head ahead of the log means records were cut from the end; a head whose record
    reads differently means the end was rewritten. A head behind the log is not a
    problem here (see `_lagging_head`). `known` maps the seqs whose hashes the caller
    read to those hashes.
    """
    if head.seq > last_seq:
        return last_seq + 1, (
            f"the log ends at seq {last_seq} but its head file says it runs to seq "
            f"{head.seq}: {_records(last_seq + 1, head.seq)} deleted from the end"
        )
    written = known.get(head.seq)
    if written is not None and written != head.hash:
        return head.seq, (
            f"record seq {head.seq} is not the one its head file recorded: "
            "the end of the log was rewritten"
        )
    return None


def _lagging_head(last_seq: int, head: _Head) -> str | None:
    """Why a head that trails the log fails the check, or None when it does not trail.

    The writer replaces the head after every batch it writes, and once more when it
    closes, so a head behind the log means the writer died before catching up, or
    records were cut from the end and an older head put back: either way the records
    past the head are not covered by it.
    """
    if last_seq <= head.seq:
        return None
    return (
        f"head file stops at seq {head.seq} but the log runs to seq {last_seq}: "
        f"{_records(head.seq + 1, last_seq)} not covered by the head (the writer stopped "
        "before updating it, or the tail was cut and an older head put back)"
    )
