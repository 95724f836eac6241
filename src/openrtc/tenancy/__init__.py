"""Tenants: whose call this is, whether they may claim it, whose providers it uses.

A call's tenant comes from its dispatch metadata (`"tenant"`, default `"default"`).
With a tenant key, the dispatcher must also put a claim next to it (`"tenant_sig"`, a
short-lived token bound to the room and/or job, see `sign_tenant`), so whoever can
create rooms cannot run calls on another client's keys, and a claim seen once cannot
be replayed on another call. With a key, every call must carry a claim, including
those that name no tenant (they claim "default"). `tenant_config` gives each tenant
its own providers and, optionally, its own cap; a tenant missing from it is refused
(`unknown_tenant="refuse"`) or served with the pool defaults (`"defaults"`), and the
choice is logged. The per-tenant circuit breaker refuses a tenant whose calls keep
failing, for a cool-down, without touching the others.

Every check here runs at offer time on the worker's loop, synchronously, so a refused
call is never accepted and then dropped.
"""

from __future__ import annotations

from ..sessions import DEFAULT_TENANT, CallTag, current_call, current_tenant_id
from .breaker import TenantBreaker
from .claims import (
    SIGNATURE_KEY,
    ClaimVerifier,
    Verdict,
    claim_keys,
    sign_tenant,
    verify_tenant,
)
from .directory import PROVIDER_SLOTS, SETTING_KEYS, TenantDirectory, TenantSettings, TenantSlots
from .hooks import install

__all__ = [
    "DEFAULT_TENANT",
    "PROVIDER_SLOTS",
    "SETTING_KEYS",
    "SIGNATURE_KEY",
    "CallTag",
    "ClaimVerifier",
    "TenantBreaker",
    "TenantDirectory",
    "TenantSettings",
    "TenantSlots",
    "Verdict",
    "claim_keys",
    "current_call",
    "current_tenant_id",
    "install",
    "sign_tenant",
    "verify_tenant",
]
