"""Audit events for deploys, drains and refusals, in a sealed, tamper-evident chain.

Every event gets a sequence number that is never reused and the seal of the event
before it, so an operator can prove after the fact that no record of a deploy, drain
or refusal was deleted, edited, reordered or inserted. With an audit key
(`OPENRTC_AUDIT_KEY_FILE`) the seals are HMACs, so whoever can write the file but does
not hold the key cannot rebuild the chain. A file log also keeps a head file
(`<log>.head`) holding its last seq and hash, because a chain alone cannot show that
records were cut from its end.
"""

from .event import GENESIS_HASH, RESERVED_KEYS, AuditEvent, record_hash, record_mac
from .head import HEAD_SUFFIX, AuditFileError, head_path
from .verify import ChainReport, verify_chain, verify_records
from .writer import DURABILITIES, AuditLog, Durability, Output

__all__ = [
    "DURABILITIES",
    "GENESIS_HASH",
    "HEAD_SUFFIX",
    "RESERVED_KEYS",
    "AuditEvent",
    "AuditFileError",
    "AuditLog",
    "ChainReport",
    "Durability",
    "Output",
    "head_path",
    "record_hash",
    "record_mac",
    "verify_chain",
    "verify_records",
]
