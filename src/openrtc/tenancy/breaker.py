"""The per-tenant circuit breaker: a tenant whose calls keep failing is refused a while."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..admission import RejectReason
from ..errors import ConfigError
from ..sessions import Outcome
from .claims import Verdict

logger = logging.getLogger("openrtc.tenancy")


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
