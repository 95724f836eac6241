"""Prometheus metrics for one worker, read from the pool at scrape time.

Each pool gets its own CollectorRegistry, so several pools in one process (tests,
benchmarks) never collide. Gauges and totals come from the pool's own counters, so the
numbers on /metrics, /snapshot and `openrtc top` always agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..lifecycle import WorkerState
from ..sessions import DEFAULT_TENANT, SessionInfo, SessionOutcome
from .memory import process_memory

if TYPE_CHECKING:
    from ..pool import AgentPool
    from .loop_lag import LoopLagMonitor

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)


def _by_label(
    name: str, doc: str, label: str, counts: Mapping[str, int], version: str
) -> CounterMetricFamily:
    """A counter family with one sample per key of `counts`, labelled with the version."""
    family = CounterMetricFamily(name, doc, labels=[label, "version"])
    for key, n in sorted(counts.items()):
        family.add_metric([key, version], n)
    return family


OTHER_TENANT = "other"
"""The `tenant` label of every tenant that is not configured: labels stay bounded."""


def tenant_label(pool: AgentPool, tenant: str) -> str:
    """`tenant` when it is configured (or the default), else "other".

    A tenant id comes from job metadata, which a caller controls; only configured
    tenants become label values, so the label's cardinality is what the operator set.
    """
    settings = pool.config.tenancy.settings
    if tenant == DEFAULT_TENANT or (isinstance(settings, Mapping) and tenant in settings):
        return tenant
    return OTHER_TENANT


def _relabelled(pool: AgentPool, counts: Mapping[str, int]) -> Counter[str]:
    out: Counter[str] = Counter()
    for tenant, n in counts.items():
        out[tenant_label(pool, tenant)] += n
    return out


class PoolCollector(Collector):
    def __init__(self, pool: AgentPool, lag: LoopLagMonitor | None) -> None:
        self.pool = pool
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        pool = self.pool
        snap = pool.runtime_snapshot()
        version = snap.deployment_version

        active = GaugeMetricFamily(
            "openrtc_active_sessions",
            "Live calls on this worker.",
            labels=["agent", "tenant", "version"],
        )
        counts = Counter((s["agent"], tenant_label(pool, s["tenant"])) for s in snap.sessions)
        for agent in snap.agents:
            if not any(a == agent for a, _ in counts):
                counts[(agent, "default")] += 0
        for (agent, tenant), n in sorted(counts.items()):
            active.add_metric([agent, tenant, version], n)
        yield active

        accepted = CounterMetricFamily(
            "openrtc_sessions_accepted", "Calls this worker took.", labels=["version"]
        )
        accepted.add_metric([version], snap.accepted_total)
        yield accepted

        yield _by_label(
            "openrtc_sessions_rejected",
            "Offers this worker refused, by reason.",
            "reason",
            snap.rejected_total,
            version,
        )
        yield _by_label(
            "openrtc_sessions_ended",
            "Calls that ended, by outcome (success, failed, cancelled).",
            "outcome",
            snap.outcomes_total,
            version,
        )

        draining = GaugeMetricFamily(
            "openrtc_draining", "1 while the worker drains.", labels=["version"]
        )
        draining.add_metric([version], 1.0 if snap.draining else 0.0)
        yield draining

        state = GaugeMetricFamily(
            "openrtc_worker_state",
            "1 for the worker's current lifecycle state.",
            labels=["state", "version"],
        )
        for s in WorkerState:
            state.add_metric([s.value, version], 1.0 if s.value == snap.state else 0.0)
        yield state

        member = GaugeMetricFamily(
            "openrtc_membership",
            "1 when the active manifest names this version, 0 when not.",
            labels=["version"],
        )
        if snap.member is not None:
            member.add_metric([version], 1.0 if snap.member else 0.0)
        yield member

        if self.lag is not None:
            lag = GaugeMetricFamily(
                "openrtc_event_loop_lag_seconds",
                "How late the event loop ran a timer, by quantile over the recent window.",
                labels=["quantile"],
            )
            for q in (0.5, 0.99, 1.0):
                lag.add_metric([str(q)], self.lag.percentile(q))
            yield lag

        breaker = getattr(pool, "tenant_breaker", None)
        if breaker is not None:
            yield _by_label(
                "openrtc_tenant_circuit_trips",
                "Times a tenant's circuit breaker opened.",
                "tenant",
                _relabelled(pool, breaker.breaker_trips),
                version,
            )
            yield _by_label(
                "openrtc_tenant_circuit_recoveries",
                "Times a tenant's circuit breaker closed again after a good trial call.",
                "tenant",
                _relabelled(pool, breaker.breaker_recoveries),
                version,
            )
            open_now = GaugeMetricFamily(
                "openrtc_tenant_circuit_open",
                "1 while a tenant's new calls are refused by its breaker.",
                labels=["tenant", "version"],
            )
            open_by_label: Counter[str] = Counter()
            for tenant, st in breaker.states().items():
                open_by_label[tenant_label(pool, tenant)] += 0 if st == "closed" else 1
            for label, n in sorted(open_by_label.items()):
                open_now.add_metric([label, version], float(n))
            yield open_now

        memory = GaugeMetricFamily(
            "openrtc_process_memory_bytes",
            "This worker process's memory: uss (its own pages) and rss (with shared ones).",
            labels=["kind"],
        )
        mem = process_memory()
        for kind in ("uss", "rss"):
            mb = mem.get(f"{kind}_mb")
            if mb is not None:
                memory.add_metric([kind], mb * 2**20)
        yield memory

        failures = CounterMetricFamily(
            "openrtc_audit_sink_failures", "Audit events a sink failed to record."
        )
        failures.add_metric([], pool.audit_log.sink_failures)
        yield failures


class PoolMetrics:
    """The registry behind /metrics for one pool."""

    def __init__(self, pool: AgentPool, lag: LoopLagMonitor | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PoolCollector(pool, lag))
        self.duration = Histogram(
            "openrtc_session_duration_seconds",
            "Length of ended calls.",
            ["agent", "version", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._version = pool.deployment_version
        pool.add_end_listener(self._on_end)

    def _on_end(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        self.duration.labels(info.agent, self._version, outcome.status.value).observe(
            outcome.duration_s
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
