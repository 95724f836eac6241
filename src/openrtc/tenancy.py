"""Tenants: whose call this is, whether they may claim it, whose providers it uses.

A call's tenant comes from its dispatch metadata (`"tenant"`, default `"default"`).
With `tenant_secret`, the dispatcher must also sign that claim (`"tenant_sig"`, see
`sign_tenant`), so whoever can create rooms cannot run calls on another client's keys.
With a secret, every call must be signed, including those that name no tenant (they
claim "default"). `tenant_config` gives each tenant its own providers and, optionally,
its own cap; a tenant missing from it is refused (`unknown_tenant="refuse"`) or served
with the pool defaults (`"defaults"`), and the choice is logged. The per-tenant circuit
breaker refuses a tenant whose calls keep failing, for a cool-down, without touching
the others.

Every check here runs at offer time on the worker's loop, synchronously, so a refused
call is never accepted and then dropped.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from . import routing
from .admission import RejectReason
from .errors import ConfigError
from .sessions import Outcome

if TYPE_CHECKING:
    from livekit.agents import JobRequest

    from .pool import AgentPool
    from .registry import AgentSpec
    from .sessions import SessionInfo, SessionOutcome

logger = logging.getLogger("openrtc.tenancy")

DEFAULT_TENANT = "default"
SIGNATURE_KEY = "tenant_sig"
"""Job metadata key of the tenant claim's signature: hex HMAC-SHA256 of the tenant name."""
PROVIDER_SLOTS = ("stt", "llm", "tts")
SETTING_KEYS = frozenset({*PROVIDER_SLOTS, "max_sessions"})

Verdict = tuple[RejectReason, str] | None
"""None to let the call through, or the reason and a one-line detail to refuse it."""

# --- the tenant of the running call ---------------------------------------------------


@dataclass(frozen=True)
class CallTag:
    """Which call the running code belongs to; inherited by every task the call spawns."""

    job_id: str
    agent: str
    tenant: str


_current_call: contextvars.ContextVar[CallTag | None] = contextvars.ContextVar(
    "openrtc_current_call", default=None
)


def enter_call(info: SessionInfo) -> None:
    """Bind the call to the current task's context (the call's entrypoint task)."""
    _current_call.set(CallTag(info.job_id, info.agent, info.tenant))


def current_call() -> CallTag | None:
    """The call whose code is running, or None outside a call."""
    return _current_call.get()


def call_in(context: contextvars.Context) -> CallTag | None:
    """The call a context (a task's) belongs to, or None."""
    return context.get(_current_call)


def current_tenant_id() -> str:
    """The tenant of the call whose code is running ("default" outside a call)."""
    tag = _current_call.get()
    return tag.tenant if tag is not None else DEFAULT_TENANT


# --- signed tenant claims -------------------------------------------------------------


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


# --- per-tenant settings --------------------------------------------------------------


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
            logger.exception("tenant_config failed for tenant %r", tenant)
            return RejectReason.TENANT_CONFIG_ERROR, f"tenant_config failed for {tenant!r}: {e}"
        if settings is None:
            if self.refuse_unknown:
                return (
                    RejectReason.TENANT_UNKNOWN,
                    f"tenant {tenant!r} is not in tenant_config (unknown_tenant='refuse')",
                )
            return None
        if settings.max_sessions is not None and admitted >= settings.max_sessions:
            return (
                RejectReason.TENANT_AT_CAPACITY,
                f"tenant {tenant!r} has {admitted} of its {settings.max_sessions} calls",
            )
        return None

    def apply(self, info: SessionInfo, options: dict[str, Any]) -> None:
        """Call start: put the tenant's providers into the call's AgentSession options."""
        settings = self.settings_for(info.tenant)
        if settings is None:
            logger.info(
                "call %s: tenant %r is not in tenant_config; it uses the pool's default "
                "providers (unknown_tenant='defaults')",
                info.job_id,
                info.tenant,
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


@dataclass
class _Circuit:
    failures: deque[float] = field(default_factory=deque)
    opened_at: float | None = None
    trial: str | None = None


class TenantBreaker:
    """Per tenant: `failures` failed calls within `window_s` open the circuit.

    Open: the tenant's new calls are refused for `cooldown_s`. Then half-open: one trial
    call is let through (the others are still refused); if it ends successfully the
    circuit closes, if it fails the circuit opens again for another cool-down, and if it
    never starts or is cut another call becomes the trial. Calls admitted before the trip
    that end later do not count. Other tenants are never affected.

    `is_admitted(job_id)` says whether the pool still holds a call (admitted or live): a
    trial that a later cap refused, or whose assignment fell through, frees the trial.
    """

    def __init__(
        self,
        *,
        failures: int = 5,
        window_s: float = 60.0,
        cooldown_s: float = 30.0,
        is_admitted: Callable[[str], bool],
        emit: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
            raise ConfigError(
                f"tenant_breaker_failures must be a whole number of at least 1, got {failures!r}"
            )
        for name, value in (
            ("tenant_breaker_window_s", window_s),
            ("tenant_breaker_cooldown_s", cooldown_s),
        ):
            if not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        self.failures = failures
        self.window_s = float(window_s)
        self.cooldown_s = float(cooldown_s)
        self._emit = emit
        self._is_admitted = is_admitted
        self._clock = clock
        self._lock = threading.Lock()
        self._circuits: dict[str, _Circuit] = {}
        self.breaker_trips: Counter[str] = Counter()
        """Times each tenant's circuit opened (a failed trial call counts again)."""
        self.breaker_recoveries: Counter[str] = Counter()
        """Times each tenant's circuit closed after a successful trial call."""

    def state(self, tenant: str) -> str:
        """The tenant's circuit: "closed", "open" or "half_open"."""
        with self._lock:
            return self._state(self._circuits.get(tenant), self._clock())

    def states(self) -> dict[str, str]:
        """Every tenant whose circuit is not closed."""
        now = self._clock()
        with self._lock:
            found = {t: self._state(c, now) for t, c in self._circuits.items()}
        return {t: s for t, s in found.items() if s != "closed"}

    def _state(self, circuit: _Circuit | None, now: float) -> str:
        if circuit is None or circuit.opened_at is None:
            return "closed"
        return "open" if now < circuit.opened_at + self.cooldown_s else "half_open"

    def check(self, tenant: str, job_id: str) -> Verdict:
        """Offer time: refuse while open; in half-open let one trial call through."""
        now = self._clock()
        with self._lock:
            circuit = self._circuits.get(tenant)
            state = self._state(circuit, now)
            if circuit is None or state == "closed":
                return None
            assert circuit.opened_at is not None
            if state == "open":
                left = circuit.opened_at + self.cooldown_s - now
                return (
                    RejectReason.TENANT_CIRCUIT_OPEN,
                    f"tenant {tenant!r} circuit is open after repeated failed calls; "
                    f"retry in {left:.1f}s",
                )
            trial = circuit.trial
            if trial == job_id:
                return None
            if trial is not None and self._is_admitted(trial):
                return (
                    RejectReason.TENANT_CIRCUIT_OPEN,
                    f"tenant {tenant!r} circuit is half-open; trial call {trial} is running",
                )
            circuit.trial = job_id
        logger.info("tenant %r circuit half-open: call %s is the trial call", tenant, job_id)
        return None

    def record(self, tenant: str, job_id: str, status: Outcome) -> None:
        """A call ended: count its failure, or settle a half-open circuit with it."""
        now = self._clock()
        with self._lock:
            circuit = self._circuits.get(tenant)
            if circuit is not None and circuit.opened_at is not None:
                if job_id != circuit.trial:
                    return
                if status is Outcome.FAILED:
                    event = self._trip(tenant, circuit, now, "its trial call failed")
                elif status is Outcome.SUCCESS:
                    event = self._close(tenant, circuit, now, job_id)
                else:
                    circuit.trial = None
                    return
            elif status is Outcome.FAILED:
                circuit = self._circuits.setdefault(tenant, _Circuit())
                circuit.failures.append(now)
                while circuit.failures and circuit.failures[0] < now - self.window_s:
                    circuit.failures.popleft()
                if len(circuit.failures) < self.failures:
                    return
                event = self._trip(
                    tenant,
                    circuit,
                    now,
                    f"{len(circuit.failures)} failed calls within {self.window_s:g}s",
                )
            else:
                return
        self._announce(*event)

    def _trip(
        self, tenant: str, circuit: _Circuit, now: float, why: str
    ) -> tuple[str, str, dict[str, Any]]:
        circuit.opened_at = now
        circuit.trial = None
        circuit.failures.clear()
        self.breaker_trips[tenant] += 1
        return "tenant.circuit_opened", tenant, {"reason": why, "cooldown_s": self.cooldown_s}

    def _close(
        self, tenant: str, circuit: _Circuit, now: float, job_id: str
    ) -> tuple[str, str, dict[str, Any]]:
        assert circuit.opened_at is not None
        open_for = now - circuit.opened_at
        del self._circuits[tenant]
        self.breaker_recoveries[tenant] += 1
        return (
            "tenant.circuit_closed",
            tenant,
            {"reason": f"trial call {job_id} succeeded", "open_for_s": round(open_for, 3)},
        )

    def _announce(self, event: str, tenant: str, fields: dict[str, Any]) -> None:
        if event == "tenant.circuit_opened":
            logger.warning(
                "tenant %r circuit opened (%s): its new calls are refused for %gs",
                tenant,
                fields["reason"],
                self.cooldown_s,
            )
        else:
            logger.info("tenant %r circuit closed: %s", tenant, fields["reason"])
        if self._emit is not None:
            try:
                self._emit(event, actor="circuit_breaker", target=tenant, tenant=tenant, **fields)
            except Exception:
                logger.exception("auditing %s for tenant %r failed", event, tenant)


# --- wiring ---------------------------------------------------------------------------


def _check_isolation(pool: AgentPool) -> None:
    """Job processes rebuild the pool without tenant_config: providers would be dropped."""
    config = pool.tenant_config
    if pool.isolation != "process" or config is None:
        return
    if callable(config) or any(
        s in raw for raw in config.values() if isinstance(raw, Mapping) for s in PROVIDER_SLOTS
    ):
        raise ConfigError(
            "per-tenant providers in tenant_config need isolation='coroutine' or 'thread'; "
            "with process isolation give tenant_config only max_sessions"
        )


def install(pool: AgentPool) -> TenantBreaker | None:
    """Register the pool's tenant checks and hooks for the options it was given.

    Order at offer time: signed claim, known tenant and its cap, circuit breaker. Returns
    the breaker (exposed as `pool.tenant_breaker`), or None when it is not enabled.
    """
    from .pool import Refuse

    def refusal(verdict: Verdict) -> Refuse | None:
        return None if verdict is None else Refuse(*verdict)

    def is_admitted(job_id: str) -> bool:
        return pool.route_of(job_id) is not None

    if pool.unknown_tenant not in ("refuse", "defaults"):
        raise ConfigError(
            f"unknown_tenant must be 'refuse' or 'defaults', got {pool.unknown_tenant!r}"
        )
    if pool.tenant_secret is not None:
        verifier = ClaimVerifier(pool.tenant_secret)

        def check_claim(request: JobRequest, _agent: str, tenant: str) -> Refuse | None:
            metadata = routing.parse_metadata(request.job.metadata)
            return refusal(verifier.check(metadata, tenant))

        pool.add_admission_check(check_claim)

    if pool.tenant_config is not None:
        _check_isolation(pool)
        directory = TenantDirectory(
            pool.tenant_config, refuse_unknown=pool.unknown_tenant == "refuse"
        )
        slots = TenantSlots(is_admitted)
        if pool.unknown_tenant == "defaults":
            logger.info(
                "tenants missing from tenant_config use the pool's default providers "
                "(unknown_tenant='defaults')"
            )

        def check_tenant(request: JobRequest, _agent: str, tenant: str) -> Refuse | None:
            verdict = directory.check(tenant, slots.count(tenant))
            if verdict is None:
                slots.add(tenant, request.job.id)
            return refusal(verdict)

        def providers(_spec: AgentSpec, info: SessionInfo, options: dict[str, Any]) -> None:
            directory.apply(info, options)

        pool.add_admission_check(check_tenant)
        pool.add_session_option_hook(providers)

    if not pool.enable_tenant_circuit_breaker:
        return None
    breaker = TenantBreaker(
        failures=pool.tenant_breaker_failures,
        window_s=pool.tenant_breaker_window_s,
        cooldown_s=pool.tenant_breaker_cooldown_s,
        emit=pool.audit_log.emit,
        is_admitted=is_admitted,
    )

    def check_breaker(request: JobRequest, _agent: str, tenant: str) -> Refuse | None:
        return refusal(breaker.check(tenant, request.job.id))

    def on_end(info: SessionInfo, outcome: SessionOutcome) -> None:
        breaker.record(info.tenant, info.job_id, outcome.status)

    pool.add_admission_check(check_breaker)
    pool.add_end_listener(on_end)
    return breaker
