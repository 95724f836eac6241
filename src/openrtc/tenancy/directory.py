"""Per-tenant settings: each tenant's providers and cap, looked up at offer time."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..admission import RejectReason
from ..errors import ConfigError
from .claims import Verdict

if TYPE_CHECKING:
    from ..sessions import SessionInfo

logger = logging.getLogger("openrtc.tenancy")

PROVIDER_SLOTS = ("stt", "llm", "tts")


def shown(tenant: str) -> str:
    """A tenant id as messages show it: caller-supplied, so cut to a readable length."""
    return repr(tenant) if len(tenant) <= 64 else f"{tenant[:64]!r}...(+{len(tenant) - 64} chars)"


SETTING_KEYS = frozenset({*PROVIDER_SLOTS, "max_sessions"})


@dataclass(frozen=True)
class TenantSettings:
    """One tenant's providers (stt/llm/tts objects) and optional cap on its live calls."""

    providers: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    max_sessions: int | None = None

    @classmethod
    def parse(cls, tenant: str, raw: Any) -> TenantSettings:
        if isinstance(raw, TenantSettings):
            return raw
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"tenant_config for {tenant!r} must be a dict like {{'llm': ..., "
                f"'max_sessions': 2}}, got {type(raw).__name__}"
            )
        unknown = sorted(str(k) for k in raw if k not in SETTING_KEYS)
        if unknown:
            raise ConfigError(
                f"tenant_config for {tenant!r} has unknown key(s) {', '.join(unknown)}; "
                f"use {', '.join(sorted(SETTING_KEYS))}"
            )
        cap = raw.get("max_sessions")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ConfigError(
                f"tenant_config max_sessions for {tenant!r} must be a whole number of at "
                f"least 1, got {cap!r}"
            )
        providers = {s: raw[s] for s in PROVIDER_SLOTS if raw.get(s) is not None}
        return cls(MappingProxyType(providers), cap)


class _ProviderOwners:
    """Remembers which tenant each provider object served, to catch one shared by two."""

    def __init__(self) -> None:
        self._owners: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def claim(self, tenant: str, slot: str, provider: Any) -> None:
        with self._lock:
            try:
                owner = self._owners.setdefault(provider, tenant)
            except TypeError:  # not weak-referenceable: nothing to remember it by
                return
        if owner != tenant:
            raise ConfigError(
                f"tenant_config gives the same {slot} object to tenants {owner!r} and "
                f"{tenant!r}; give each tenant its own provider instance"
            )


class TenantDirectory:
    """Looks up tenants in `tenant_config` (a mapping, or a callable tenant -> dict|None).

    A callable is asked at offer time and again when the call starts; it may build new
    provider objects each time, but must not hand one tenant's objects to another.
    """

    def __init__(
        self, config: Mapping[str, Any] | Callable[[str], Any], *, refuse_unknown: bool = True
    ) -> None:
        self.refuse_unknown = refuse_unknown
        self._owners = _ProviderOwners()
        self._fixed: dict[str, TenantSettings] | None = None
        self._lookup: Callable[[str], Any] | None = None
        if isinstance(config, Mapping):
            self._fixed = {str(t): TenantSettings.parse(str(t), raw) for t, raw in config.items()}
            for tenant, settings in self._fixed.items():
                for slot, provider in settings.providers.items():
                    self._owners.claim(tenant, slot, provider)
        elif callable(config):
            self._lookup = config
        else:
            raise ConfigError(
                "tenant_config must be a dict of tenant -> settings or a function "
                f"tenant -> settings, got {type(config).__name__}"
            )

    def settings_for(self, tenant: str) -> TenantSettings | None:
        """The tenant's settings, or None when it is not configured."""
        if self._fixed is not None:
            return self._fixed.get(tenant)
        assert self._lookup is not None
        raw = self._lookup(tenant)
        return None if raw is None else TenantSettings.parse(tenant, raw)

    def check(self, tenant: str, admitted: int) -> Verdict:
        """Offer time: unknown tenants (when refused) and the tenant's own cap."""
        try:
            settings = self.settings_for(tenant)
        except Exception as e:
            logger.exception("tenant_config failed for tenant %s", shown(tenant))
            return (
                RejectReason.TENANT_CONFIG_ERROR,
                f"tenant_config failed for {shown(tenant)}: {str(e)[:200]}",
            )
        if settings is None:
            if self.refuse_unknown:
                return (
                    RejectReason.TENANT_UNKNOWN,
                    f"tenant {shown(tenant)} is not in tenant_config (unknown_tenant='refuse')",
                )
            return None
        if settings.max_sessions is not None and admitted >= settings.max_sessions:
            return (
                RejectReason.TENANT_AT_CAPACITY,
                f"tenant {shown(tenant)} has {admitted} of its {settings.max_sessions} calls",
            )
        return None

    def apply(self, info: SessionInfo, options: dict[str, Any]) -> None:
        """Call start: put the tenant's providers into the call's AgentSession options."""
        settings = self.settings_for(info.tenant)
        if settings is None:
            logger.info(
                "call %s: tenant %s is not in tenant_config; it uses the pool's default "
                "providers (unknown_tenant='defaults')",
                info.job_id,
                shown(info.tenant),
            )
            return
        for slot, provider in settings.providers.items():
            self._owners.claim(info.tenant, slot, provider)
            options[slot] = provider


class TenantSlots:
    """Admitted calls per tenant, exact at offer time.

    A job passed here counts until the pool forgets its route: that happens when a later
    cap refuses it, when its assignment falls through, and when the call ends.
    """

    def __init__(self, is_admitted: Callable[[str], bool]) -> None:
        self._is_admitted = is_admitted
        self._jobs: dict[str, set[str]] = {}

    def count(self, tenant: str) -> int:
        jobs = {j for j in self._jobs.pop(tenant, ()) if self._is_admitted(j)}
        if jobs:
            self._jobs[tenant] = jobs
        return len(jobs)

    def add(self, tenant: str, job_id: str) -> None:
        self._jobs.setdefault(tenant, set()).add(job_id)


# --- circuit breaker ------------------------------------------------------------------
