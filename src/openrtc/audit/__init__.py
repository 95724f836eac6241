"""Audit events for deploys, drains and rejections, with a tamper-evident hash chain.

Every event gets a sequence number that is never reused and the hash of the event
before it, so an operator can prove after the fact that no record of a deploy,
drain or rejection was deleted, edited, reordered or inserted. A file log also keeps
a small head file (`<log>.head`) holding its last seq and hash, because a chain alone
cannot show that records were cut from its end.
"""

from .event import GENESIS_HASH, RESERVED_KEYS, AuditEvent, record_hash
from .head import HEAD_SUFFIX, AuditFileError, head_path
from .verify import ChainReport, verify_chain, verify_records
from .writer import AuditLog

__all__ = [
    "GENESIS_HASH",
    "HEAD_SUFFIX",
    "RESERVED_KEYS",
    "AuditEvent",
    "AuditFileError",
    "AuditLog",
    "ChainReport",
    "head_path",
    "record_hash",
    "verify_chain",
    "verify_records",
]
