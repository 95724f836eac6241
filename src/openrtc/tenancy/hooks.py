"""Plugging tenancy into a pool through its admission, session-option and end hooks.

The pool is only seen through `PoolHooks`, so tenancy sits below the pool and never
imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .. import routing
from ..admission import AdmissionCheck, Refuse
from ..config import Isolation, Tenancy
from ..errors import ConfigError
from .breaker import TenantBreaker
from .claims import ClaimVerifier, Verdict
from .directory import PROVIDER_SLOTS, TenantDirectory, TenantSlots

if TYPE_CHECKING:
    from livekit.agents import JobRequest

    from ..registry import AgentSpec
    from ..sessions import SessionInfo, SessionOutcome

logger = logging.getLogger("openrtc.tenancy")


class PoolHooks(Protocol):
    """What tenancy needs of a pool: its hooks and whether a job is admitted."""

    def add_admission_check(self, check: AdmissionCheck) -> None: ...

    def add_session_option_hook(
        self, hook: Callable[[AgentSpec, SessionInfo, dict[str, Any]], None]
    ) -> None: ...

    def add_end_listener(self, listener: Callable[[SessionInfo, SessionOutcome], None]) -> None: ...

    def is_admitted(self, job_id: str) -> bool: ...


def _check_isolation(settings: Tenancy, isolation: Isolation) -> None:
    """Job processes rebuild the pool without tenant settings: providers would be dropped."""
    config = settings.settings
    if isolation != "process" or config is None:
        return
    if callable(config) or any(
        s in raw for raw in config.values() if isinstance(raw, Mapping) for s in PROVIDER_SLOTS
    ):
        raise ConfigError(
            "per-tenant providers in tenant_config need isolation='coroutine' or 'thread'; "
            "with process isolation give tenant_config only max_sessions"
        )


def _refusal(verdict: Verdict) -> Refuse | None:
    return None if verdict is None else Refuse(*verdict)


def install(
    pool: PoolHooks,
    settings: Tenancy,
    *,
    isolation: Isolation,
    emit: Callable[..., Any] | None,
) -> TenantBreaker | None:
    """Register the tenant checks and hooks that `settings` asks for.

    Order at offer time: signed claim, known tenant and its cap, circuit breaker. Returns
    the breaker (exposed as `pool.tenant_breaker`), or None when it is not enabled.
    """
    keys = settings.claim_keys()
    if keys is not None:
        verifier = ClaimVerifier(keys)

        def check_claim(request: JobRequest, _agent: str, tenant: str) -> Refuse | None:
            job = request.job
            metadata = routing.parse_metadata(job.metadata)
            return _refusal(verifier.check(metadata, tenant, room=job.room.name, job_id=job.id))

        pool.add_admission_check(check_claim)

    if settings.settings is not None:
        _check_isolation(settings, isolation)
        directory = TenantDirectory(settings.settings, refuse_unknown=settings.unknown == "refuse")
        slots = TenantSlots(pool.is_admitted)
        if settings.unknown == "defaults":
            logger.info(
                "tenants missing from tenant_config use the pool's default providers "
                "(unknown tenant: defaults)"
            )

        def check_tenant(request: JobRequest, _agent: str, tenant: str) -> Refuse | None:
            verdict = directory.check(tenant, slots.count(tenant))
            if verdict is None:
                slots.add(tenant, request.job.id)
            return _refusal(verdict)

        def providers(_spec: AgentSpec, info: SessionInfo, options: dict[str, Any]) -> None:
            directory.apply(info, options)

        pool.add_admission_check(check_tenant)
        pool.add_session_option_hook(providers)

    if not settings.breaker:
        return None
    breaker = TenantBreaker(
        failures=settings.breaker_failures,
        window_s=settings.breaker_window_s,
        cooldown_s=settings.breaker_cooldown_s,
        emit=emit,
        is_admitted=pool.is_admitted,
    )

    def check_breaker(request: JobRequest, _agent: str, tenant: str) -> Refuse | None:
        return _refusal(breaker.check(tenant, request.job.id))

    def on_end(info: SessionInfo, outcome: SessionOutcome) -> None:
        breaker.record(info.tenant, info.job_id, outcome.status)

    pool.add_admission_check(check_breaker)
    pool.add_end_listener(on_end)
    return breaker
