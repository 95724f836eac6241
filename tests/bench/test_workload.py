"""The density benchmark's workload: varied calls from a seed, kept at N over the wire."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics

import pytest
from density import Traffic
from workload import AGENTS, PHRASES, Workload

from openrtc.devserver import DispatchServer
from openrtc.simulation import CallScript
from tests.harness import wait_until


def _take(workload: Workload, n: int) -> list[object]:
    return list(itertools.islice(workload.calls(), n))


def test_the_same_seed_places_the_same_calls_and_another_seed_others() -> None:
    assert _take(Workload(seed=3), 20) == _take(Workload(seed=3), 20)
    assert _take(Workload(seed=3), 20) != _take(Workload(seed=4), 20)


def test_calls_vary_in_agent_turns_words_pauses_and_arrival() -> None:
    w = Workload(seed=11, turns=(2, 6), pause_s=(0.5, 1.5), hold_s=(1.0, 2.0), pace_s=0.2)
    calls = list(itertools.islice(w.calls(), 400))
    scripts = [CallScript.from_dict(c.script) for c in calls]
    assert {c.agent for c in calls} == set(AGENTS)
    assert {len(s.turns) for s in scripts} == {2, 3, 4, 5, 6}
    assert {t for s in scripts for t in s.turns} == set(PHRASES)
    assert all(s.mode == "audio" for s in scripts)
    assert all(0.5 <= s.pause_s <= 1.5 and 1.0 <= s.hold_s <= 2.0 for s in scripts)
    assert len({s.pause_s for s in scripts}) > 50
    gaps = [c.gap_s for c in calls]
    assert statistics.mean(gaps) == pytest.approx(0.2, rel=0.2)
    assert min(gaps) < 0.02 and max(gaps) > 0.6, "bursts and lulls, not a metronome"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"turns": (0, 3)}, "at least one turn"),
        ({"turns": (5, 2)}, "turns must be a range"),
        ({"pause_s": (-1.0, 1.0)}, "pause_s must be a range"),
        ({"pace_s": -0.1}, "pace_s"),
        ({"agents": ()}, "at least one agent"),
    ],
)
def test_a_workload_that_makes_no_sense_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Workload(**kwargs)  # type: ignore[arg-type]


async def test_traffic_replaces_every_call_that_ends_and_counts_how_it_ended() -> None:
    # no worker: each call goes unserved when its short dispatch deadline passes
    async with DispatchServer(dispatch_deadline=0.2, offer_timeout=0.1) as server:
        traffic = Traffic(server, 3, Workload(seed=2, pace_s=0.01))
        keeper = asyncio.create_task(traffic.keep(interval=0.05))
        await traffic.ramp()
        await wait_until(lambda: traffic.outcomes.get("unserved", 0) >= 6, timeout=10.0)
        keeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await keeper
        ended = traffic.outcomes["unserved"]
        assert len(traffic.slots) == 3
        assert len(traffic.jobs) == 3 + ended, "each ended call was replaced once"
        assert traffic.ramped, "every slot has had a call that ran or ended"
        assert traffic.failed == {"unserved": ended} and traffic.live == 0
        placed = [json.loads(server.job(j).metadata) for j in traffic.jobs]
        first = list(itertools.islice(Workload(seed=2, pace_s=0.01).calls(), len(placed)))
        assert [m["agent"] for m in placed] == [c.agent for c in first]
        assert [m["simulated_call"] for m in placed] == [c.script for c in first]


def test_the_callers_frame_size_is_carried_in_every_script() -> None:
    assert {CallScript.from_dict(c.script).frame_ms for c in _take(Workload(), 20)} == {20}
    room = {CallScript.from_dict(c.script).frame_ms for c in _take(Workload(frame_ms=50), 20)}
    assert room == {50}
    assert Workload(frame_ms=50).describe()["frame_ms"] == 50
    with pytest.raises(ValueError, match="frame_ms"):
        Workload(frame_ms=3)
