"""The Grafana dashboard and the HPA ask only for series a real worker exports.

A worker runs one audio call (so turn latency has samples) and is scraped the way
Prometheus scrapes it; every PromQL query of deploy/grafana is parsed with a PromQL
parser, and each metric it selects and each label it groups or joins by must be there.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import promql_parser
import pytest
import yaml
from livekit.agents import Agent
from prometheus_client.parser import text_string_to_metric_families

from openrtc import AgentPool
from openrtc.devserver import DispatchServer
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS
from tests.harness import running

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
TARGET_LABELS = {"job", "instance", "namespace", "pod"}
"""Labels the scrape adds: Prometheus' own, and the Kubernetes discovery's."""
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.")


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, rows' panels included."""
    out = []
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        out.extend((panel["title"], t["expr"]) for t in panel.get("targets", []) if "expr" in t)
    return out


def parse(expr: str) -> Any:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return promql_parser.parse(expr)


def names_and_labels(expr: str) -> tuple[set[str], set[str]]:
    """Metric names the query selects, and the labels it groups, matches or joins by."""
    names: set[str] = set()
    labels: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)
            labels.update(m.name for m in node.matchers.matchers)
        modifier = getattr(node, "modifier", None)
        if isinstance(node, promql_parser.AggregateExpr) and modifier is not None:
            labels.update(modifier.labels)
        if isinstance(node, promql_parser.BinaryExpr) and modifier is not None:
            if modifier.matching is not None:
                labels.update(modifier.matching.labels)
            labels.update(getattr(modifier.card, "labels", None) or [])

    promql_parser.walk(parse(expr), visit)
    return names, labels


def exported(text: str) -> dict[str, set[str]]:
    """Sample name -> label names, as Prometheus stores them after a scrape."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


@pytest.fixture(scope="module")
def dashboard_files() -> list[Path]:
    assert DASHBOARDS, "no dashboard in deploy/grafana"
    return DASHBOARDS


async def scrape_a_worker_after_one_call(devserver: DispatchServer) -> str:
    pool = AgentPool(
        agents={"sales": Sales},
        deployment_version="v1.0.0",
        default_stt=FakeSTT(),
        default_llm=FakeLLM(),
        default_tts=FakeTTS(seconds_per_char=0.01),
    )
    script = {"turns": ["I would like to book a table"], "mode": "audio", "pause_s": 0.1}
    async with running(pool, devserver, http_port=0) as worker:
        assert worker.lifespan.ops is not None
        job = await devserver.dispatch(simulated_call=script)
        done = await devserver.wait_job(job.id, {"success", "failed"}, timeout=60)
        assert done.state.value == "success", done.to_dict()
        refused = await devserver.dispatch(metadata={"agent": "nobody"}, simulated_call=script)
        await devserver.wait_job(refused.id, {"unserved"}, timeout=15)
        pool.begin_drain(reason="test")
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{worker.lifespan.ops.url}/metrics") as resp,
        ):
            return await resp.text()


async def test_every_dashboard_query_names_series_the_worker_exports(
    devserver: DispatchServer, dashboard_files: list[Path]
) -> None:
    series = exported(await scrape_a_worker_after_one_call(devserver))
    # the panels the deploy dashboard promises, each fed by a real sample
    assert series["openrtc_turn_latency_seconds_count"] == {"agent"}
    assert "process_cpu_seconds_total" in series
    checked = 0
    every = [(p.name, q) for p in dashboard_files for q in queries(json.loads(p.read_text()))]
    for source, (title, expr) in every + [("autoscaling", q) for q in autoscaling_queries()]:
        names, labels = names_and_labels(expr)
        assert names, f"{source} / {title}: the query selects no metric: {expr}"
        missing = names - set(series)
        assert not missing, f"{source} / {title}: not exported: {sorted(missing)}"
        available = set().union(*(series[n] for n in names)) | TARGET_LABELS
        assert labels <= available, (
            f"{source} / {title}: labels {sorted(labels - available)} are on none of "
            f"{sorted(names)}"
        )
        checked += 1
    assert checked >= 9


def test_the_checker_catches_a_metric_or_label_that_is_not_exported() -> None:
    series = {"openrtc_active_sessions": {"agent", "tenant", "version"}}
    names, labels = names_and_labels("sum by (reason) (openrtc_active_session)")
    assert names - set(series) == {"openrtc_active_session"}
    names, labels = names_and_labels("sum by (reason) (openrtc_active_sessions)")
    assert labels - series["openrtc_active_sessions"] == {"reason"}
    with pytest.raises(ValueError):
        parse("sum by (version (openrtc_active_sessions)")


def test_every_dashboard_is_importable_grafana_json(dashboard_files: list[Path]) -> None:
    for path in dashboard_files:
        dash = json.loads(path.read_text())
        assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids))
        variables = {v["name"] for v in dash["templating"]["list"]}
        for panel in dash["panels"]:
            uid = panel["datasource"]["uid"]
            assert re.fullmatch(r"\$\{(\w+)\}", uid) and uid[2:-1] in variables, panel["title"]


def autoscaling_queries() -> list[tuple[str, str]]:
    """The HPA's metric, as the Prometheus adapter rule turns a series into it."""
    folder = ROOT / "deploy" / "kubernetes" / "autoscaling"
    hpa = yaml.safe_load((folder / "hpa.yaml").read_text())
    (metric,) = hpa["spec"]["metrics"]
    adapter = yaml.safe_load((folder / "prometheus-adapter-rules.yaml").read_text())
    (rule,) = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    return [("HPA " + metric["pods"]["metric"]["name"], rule["seriesQuery"])]
