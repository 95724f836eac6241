"""Signed tenant claims: the dispatcher vouches for whose call this is."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from ..admission import RejectReason
from ..errors import ConfigError

SIGNATURE_KEY = "tenant_sig"
"""Job metadata key of the tenant claim's signature: hex HMAC-SHA256 of the tenant name."""

Verdict = tuple[RejectReason, str] | None
"""None to let the call through, or the reason and a one-line detail to refuse it."""


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ConfigError("tenant_secret is empty; pass the secret the dispatcher signs with")
    return key


def sign_tenant(tenant: str, secret: str | bytes) -> str:
    """The `tenant_sig` a dispatcher puts next to `tenant` in the job metadata."""
    return hmac.new(_key(secret), tenant.encode("utf-8"), hashlib.sha256).hexdigest()


def verify_tenant(tenant: str, signature: str, secret: str | bytes) -> bool:
    """True when `signature` is `sign_tenant(tenant, secret)` (constant-time compare)."""
    expected = sign_tenant(tenant, secret).encode("ascii")
    return hmac.compare_digest(expected, signature.strip().lower().encode("utf-8", "replace"))


class ClaimVerifier:
    """Refuses a call whose tenant claim is unsigned or signed with another key."""

    def __init__(self, secret: str | bytes) -> None:
        self._secret = _key(secret)

    def __repr__(self) -> str:
        return "ClaimVerifier(secret=<hidden>)"

    def check(self, metadata: Mapping[str, Any], tenant: str) -> Verdict:
        signature = metadata.get(SIGNATURE_KEY)
        if not isinstance(signature, str) or not signature.strip():
            return (
                RejectReason.TENANT_UNSIGNED,
                f"tenant {tenant!r} is claimed without {SIGNATURE_KEY!r} in the job metadata",
            )
        if not verify_tenant(tenant, signature, self._secret):
            return (
                RejectReason.TENANT_FORGED,
                f"the {SIGNATURE_KEY!r} in the job metadata is not valid for tenant {tenant!r}",
            )
        return None
