"""Prometheus metrics for one worker, read from the pool at scrape time.

Each pool gets its own CollectorRegistry, so several pools in one process (tests,
benchmarks) never collide. Gauges and totals come from the pool's own counters, so the
numbers on /metrics, /snapshot and `openrtc top` always agree.

Which version a worker runs is in one series, `openrtc_build_info{version=...} 1`.
Three series carry a `version` label as well, because a deploy dashboard splits them by
version while old and new workers overlap: `openrtc_active_sessions` (live calls by
version), `openrtc_draining` (workers draining, by version) and `openrtc_sessions_ended`
(call outcomes by version). Any other series joins `openrtc_build_info` on its instance.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Iterator, Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ..lifecycle import WorkerState
from ..sessions import DEFAULT_TENANT, SessionInfo, SessionOutcome
from ..turn import shared_predictor_stats
from .memory import process_memory
from .turn_latency import TURN_LATENCY_BUCKETS, TurnLatencyObserver

if TYPE_CHECKING:
    from ..pool import AgentPool
    from .headroom import Headroom
    from .loop_lag import LoopLagMonitor

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
LOOP_LAG_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
)  # fmt: skip
"""Seconds; 0.04 and 0.05 bracket the 50 ms p99 a worker needs to keep up with its calls."""


def _by_label(name: str, doc: str, label: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    """A counter family with one sample per key of `counts`."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, n in sorted(counts.items()):
        family.add_metric([key], n)
    return family


def _installed(name: str) -> str:
    try:
        return package_version(name)
    except PackageNotFoundError:
        return "unknown"


def build_labels(deployment_version: str) -> dict[str, str]:
    """The labels of openrtc_build_info: what this worker runs."""
    return {
        "version": deployment_version,
        "openrtc": _installed("openrtc"),
        "livekit_agents": _installed("livekit-agents"),
        "python": platform.python_version(),
    }


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


def _offer_answers(pool: AgentPool) -> HistogramMetricFamily:
    times = pool.answer_times
    return HistogramMetricFamily(
        "openrtc_offer_answer_seconds",
        "How long this worker took to answer an offer: from the socket data holding it "
        "reaching the read loop to the answer written back.",
        buckets=[
            (bound if bound == "+Inf" else str(float(bound) / 1000), n)
            for bound, n in times.cumulative()
        ],
        sum_value=times.total_s,
    )


class PoolCollector(Collector):
    def __init__(self, pool: AgentPool, headroom: Headroom | None = None) -> None:
        self.pool = pool
        self.headroom = headroom

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

        accepted = CounterMetricFamily("openrtc_sessions_accepted", "Calls this worker took.")
        accepted.add_metric([], snap.accepted_total)
        yield accepted

        yield _by_label(
            "openrtc_sessions_rejected",
            "Offers this worker refused, by reason.",
            "reason",
            snap.rejected_total,
        )
        yield _offer_answers(pool)
        ended = CounterMetricFamily(
            "openrtc_sessions_ended",
            "Calls that ended, by outcome (success, failed, cancelled).",
            labels=["outcome", "version"],
        )
        for outcome, n in sorted(snap.outcomes_total.items()):
            ended.add_metric([outcome, version], n)
        yield ended

        draining = GaugeMetricFamily(
            "openrtc_draining", "1 while the worker drains.", labels=["version"]
        )
        draining.add_metric([version], 1.0 if snap.draining else 0.0)
        yield draining

        state = GaugeMetricFamily(
            "openrtc_worker_state",
            "1 for the worker's current lifecycle state.",
            labels=["state"],
        )
        for s in WorkerState:
            state.add_metric([s.value], 1.0 if s.value == snap.state else 0.0)
        yield state

        member = GaugeMetricFamily(
            "openrtc_membership",
            "1 when the active manifest names this worker's version, 0 when not.",
        )
        if snap.member is not None:
            member.add_metric([], 1.0 if snap.member else 0.0)
        yield member

        breaker = getattr(pool, "tenant_breaker", None)
        if breaker is not None:
            yield _by_label(
                "openrtc_tenant_circuit_trips",
                "Times a tenant's circuit breaker opened.",
                "tenant",
                _relabelled(pool, breaker.breaker_trips),
            )
            yield _by_label(
                "openrtc_tenant_circuit_recoveries",
                "Times a tenant's circuit breaker closed again after a good trial call.",
                "tenant",
                _relabelled(pool, breaker.breaker_recoveries),
            )
            open_now = GaugeMetricFamily(
                "openrtc_tenant_circuit_open",
                "1 while a tenant's new calls are refused by its breaker.",
                labels=["tenant"],
            )
            open_by_label: Counter[str] = Counter()
            for tenant, st in breaker.states().items():
                open_by_label[tenant_label(pool, tenant)] += 0 if st == "closed" else 1
            for label, n in sorted(open_by_label.items()):
                open_now.add_metric([label], float(n))
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

        by_reason = CounterMetricFamily(
            "openrtc_audit_sink_errors",
            "Audit sink failures by sink and reason (timeouts, refusals, a full spool...).",
            labels=["sink", "reason"],
        )
        for (sink, reason), n in sorted(pool.audit_log.failures.items()):
            by_reason.add_metric([sink, reason], n)
        yield by_reason

        sinks = pool.audit_sinks
        if sinks is not None:
            spool = GaugeMetricFamily(
                "openrtc_audit_spool_bytes",
                "Audit bytes waiting in the spool for the collector to acknowledge them.",
                labels=["sink"],
            )
            for name, st in sinks.status()["sinks"].items():
                if "spool_bytes" in st:
                    spool.add_metric([name], st["spool_bytes"])
            yield spool
        yield from self._turn_predictions()
        yield from self._load()

    def _turn_predictions(self) -> Iterator[Metric]:
        stats = shared_predictor_stats()
        if stats is None:
            return
        yield _by_label(
            "openrtc_turn_predictions",
            "End-of-turn requests by what became of them: run (the model ran; failed and "
            "stale ones too), skipped (superseded or cancelled before their turn), stale (ran, "
            "but the caller had spoken again before the answer), dropped (their call's "
            "stream closed first), failed (the model raised; answered 1.0).",
            "outcome",
            {
                "run": stats["runs"],
                "skipped": stats["skipped"],
                "dropped": stats["dropped"],
                "failed": stats["failures"],
                "stale": stats["stale"],
            },
        )
        queued = GaugeMetricFamily(
            "openrtc_turn_predictions_queued", "End-of-turn requests waiting for the model."
        )
        queued.add_metric([], stats["queued"])
        yield queued

    def _load(self) -> Iterator[Metric]:
        load = GaugeMetricFamily(
            "openrtc_load",
            "Load this worker reports to the server (0-1, 1 = full): the larger of "
            "admitted/cap and the measured load.",
        )
        load.add_metric([], self.pool.exact_load())
        yield load
        if self.headroom is None:
            return
        est = self.headroom.estimator
        components = GaugeMetricFamily(
            "openrtc_load_component",
            "Each smoothed measure of the load (1 = calls degrade now): loop_lag, loop_busy, "
            "vad_backlog, turn_backlog, cpu; the largest is the measured load.",
            labels=["component"],
        )
        for name, value in est.components.items():
            components.add_metric([name], value)
        yield components
        threshold = GaugeMetricFamily(
            "openrtc_load_threshold", "Measured load at which offers are refused (overloaded)."
        )
        threshold.add_metric([], est.threshold)
        yield threshold
        overloaded = GaugeMetricFamily(
            "openrtc_overloaded", "1 while the measured load keeps the worker full."
        )
        overloaded.add_metric([], 1.0 if est.overloaded else 0.0)
        yield overloaded


class PoolMetrics:
    """The registry behind /metrics for one pool, with prometheus_client's process metrics."""

    def __init__(
        self,
        pool: AgentPool,
        lag: LoopLagMonitor | None = None,
        headroom: Headroom | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PoolCollector(pool, headroom))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        Info("openrtc_build", "What this worker runs; always 1.", registry=self.registry).info(
            build_labels(pool.deployment_version)
        )
        self.duration = Histogram(
            "openrtc_session_duration_seconds",
            "Length of ended calls.",
            ["agent", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag: Histogram | None = None
        if lag is not None:
            self.loop_lag = Histogram(
                "openrtc_event_loop_lag_seconds",
                "How late the worker's event loop ran a 100 ms timer, per tick.",
                buckets=LOOP_LAG_BUCKETS,
                registry=self.registry,
            )
            lag.observers.append(self.loop_lag.observe)
        self.turn_latency = Histogram(
            "openrtc_turn_latency_seconds",
            "From the caller's last word to the agent's first, per turn (livekit's e2e_latency).",
            ["agent"],
            buckets=TURN_LATENCY_BUCKETS,
            registry=self.registry,
        )
        pool.add_end_listener(self._on_end)
        pool.add_observer(TurnLatencyObserver(self.turn_latency))

    def _on_end(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        self.duration.labels(info.agent, outcome.status.value).observe(outcome.duration_s)

    def render(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The body and its content type in the format a scraper's Accept header asks for
        (OpenMetrics or the Prometheus text format), both chosen by prometheus_client."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
