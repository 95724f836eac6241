"""The shared predictor: superseded requests are skipped, many streams share one thread,
failures answer 1.0, and a closing stream's queued requests are dropped."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from typing import Any

import numpy as np
import pytest
from livekit.agents import inference

from openrtc.turn import SharedTurnDetector, TurnPredictor

from .conftest import (
    CountedModel,
    conversation,
    frames,
    probability,
    settle,
    silence,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)


async def _fed(detector: Any, samples: np.ndarray) -> Any:
    stream = detector.stream()
    for frame in frames(samples):
        stream.push_audio(frame)
    await settle()
    return stream


async def _result(fut: asyncio.Future[Any]) -> float:
    return probability(await asyncio.wait_for(fut, 10))


async def test_requests_superseded_or_cancelled_before_their_turn_never_run(
    predictor: TurnPredictor, model: CountedModel
) -> None:
    stream = await _fed(SharedTurnDetector(predictor=predictor), conversation()[:32000])
    try:
        model.hold()
        running = stream.predict()
        await wait_for(model.entered)
        superseded = [stream.predict() for _ in range(4)]
        stream.cancel_inference()  # speech resumed: the last one is not wanted either
        model.release()
        assert await _result(running) == 0.0, "livekit answers a superseded request 0.0"
        assert [await _result(f) for f in superseded] == [0.0] * 4
        last = stream.predict()
        assert 0.0 < await _result(last) <= 1.0
    finally:
        await stream.aclose()
    assert model.calls == 2, "only the one already running and the last one ran"
    assert (predictor.runs, predictor.skipped, predictor.stale) == (2, 4, 1)


async def test_many_streams_on_one_loop_share_one_thread_and_keep_their_answers(
    model: CountedModel,
) -> None:
    predictor = TurnPredictor(model, hold_s=60.0, name="openrtc-turn-many")
    clip = conversation()
    inputs = [np.concatenate([silence(0.05 * i), clip])[: 16000 + 1600 * i] for i in range(12)]
    ours = [await _fed(SharedTurnDetector(predictor=predictor), x) for x in inputs]
    stock = [await _fed(inference.TurnDetector(version="v1-mini"), x) for x in inputs]
    try:
        model.hold()
        futures = [s.predict() for s in ours]
        model.release()
        got = [await _result(f) for f in futures]
        threads = [t for t in threading.enumerate() if t.name == "openrtc-turn-many"]
        expected = [await _result(s.predict()) for s in stock]
    finally:
        for s in ours + stock:
            await s.aclose()
        predictor.close()
    assert np.allclose(got, expected, atol=1e-3), list(zip(expected, got, strict=True))
    assert len(set(np.round(got, 4))) > 3, "each stream got its own answer"
    assert len(threads) == 1, "one thread served twelve calls"
    assert predictor.runs == model.calls == 12
    assert predictor.deliveries == 1, "twelve results reached the loop in one hand-over"


class _Fatal(BaseException):
    pass


@pytest.mark.parametrize("error", [ValueError("bad pcm"), _Fatal("native abort")])
async def test_a_failing_model_answers_one_and_warns_once_and_the_thread_carries_on(
    error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    model = CountedModel(fail_with=error)
    predictor = TurnPredictor(model)
    stream = await _fed(SharedTurnDetector(predictor=predictor), conversation()[:24000])
    try:
        with caplog.at_level(logging.WARNING, logger="openrtc.turn"):
            assert await _result(stream.predict()) == 1.0
            assert await _result(stream.predict()) == 1.0
        warnings = [r for r in caplog.records if r.name == "openrtc.turn"]
        assert len(warnings) == 1 and str(error) in warnings[0].getMessage()
        model.fail_with = None
        healthy = await _result(stream.predict())
        assert healthy != 1.0 and 0.0 <= healthy < 1.0
    finally:
        await stream.aclose()
        predictor.close()
    assert (predictor.failures, predictor.runs) == (2, 3)


async def test_closing_a_stream_drops_its_queued_requests(
    predictor: TurnPredictor, model: CountedModel
) -> None:
    detector = SharedTurnDetector(predictor=predictor)
    busy, closing, waiting = [await _fed(detector, conversation()[:20000]) for _ in range(3)]
    try:
        model.hold()
        first = busy.predict()
        await wait_for(model.entered)
        dropped = closing.predict()
        kept = waiting.predict()
        assert predictor.queued == 2
        await closing.aclose()
        assert await _result(dropped) == 0.0, "the closing stream answered its own waiter"
        assert (predictor.queued, predictor.dropped) == (1, 1)
        model.release()
        assert 0.0 < await _result(first) <= 1.0
        assert 0.0 < await _result(kept) <= 1.0
    finally:
        await busy.aclose()
        await waiting.aclose()
    assert model.calls == 2 and predictor.runs == 2


async def test_behind_counts_the_oldest_request_not_yet_answered_running_or_queued(
    predictor: TurnPredictor, model: CountedModel
) -> None:
    detector = SharedTurnDetector(predictor=predictor)
    one, two = [await _fed(detector, conversation()[:20000]) for _ in range(2)]
    try:
        assert predictor.behind_s() == 0.0
        model.hold()
        first = one.predict()
        await wait_for(model.entered)
        queued = two.predict()
        await asyncio.sleep(0.2)
        assert predictor.queued == 1
        assert predictor.behind_s() >= 0.2, "the running request is the oldest"
        model.release()
        await _result(first)
        await _result(queued)
        assert predictor.behind_s() == 0.0
    finally:
        await one.aclose()
        await two.aclose()


async def test_streams_on_other_event_loops_get_their_answers_on_their_own_loop(
    predictor: TurnPredictor,
) -> None:
    detector = SharedTurnDetector(predictor=predictor)
    samples = conversation()[:30000]

    async def one_call() -> tuple[float, int]:
        stream = await _fed(detector, samples)
        try:
            fut = stream.predict()
            loop_thread = threading.get_ident()
            seen: list[int] = []
            fut.add_done_callback(lambda _: seen.append(threading.get_ident()))
            p = await _result(fut)
            await asyncio.sleep(0)
            assert seen == [loop_thread]
            return p, loop_thread
        finally:
            await stream.aclose()

    results = await asyncio.gather(*(asyncio.to_thread(asyncio.run, one_call()) for _ in range(3)))
    assert len({t for _, t in results}) == 3, "three loops in three threads"
    assert len({round(p, 5) for p, _ in results}) == 1, "same audio, same answer"
    assert predictor.runs == 3


async def test_a_request_that_waited_too_long_is_logged(
    predictor: TurnPredictor, model: CountedModel, caplog: pytest.LogCaptureFixture
) -> None:
    detector = SharedTurnDetector(predictor=predictor)
    first, second = [await _fed(detector, conversation()[:20000]) for _ in range(2)]
    try:
        model.hold()
        running = first.predict()
        await wait_for(model.entered)
        waiting = second.predict()
        await asyncio.sleep(0.4)
        with caplog.at_level(logging.WARNING, logger="openrtc.turn"):
            model.release()
            await _result(running)
            await _result(waiting)
    finally:
        await first.aclose()
        await second.aclose()
    (warning,) = [r for r in caplog.records if r.name == "openrtc.turn"]
    assert "end-of-turn model is" in warning.getMessage() and "behind" in warning.getMessage()


def _predict_in_child(predictor: TurnPredictor, conn: Any) -> None:
    async def one() -> float:
        stream = await _fed(SharedTurnDetector(predictor=predictor), conversation()[:20000])
        try:
            return await _result(stream.predict())
        finally:
            await stream.aclose()

    conn.send((asyncio.run(one()), predictor.runs))
    conn.close()


async def test_a_forked_worker_gets_its_own_predictor_thread(predictor: TurnPredictor) -> None:
    import multiprocessing

    stream = await _fed(SharedTurnDetector(predictor=predictor), conversation()[:20000])
    try:
        in_parent = await _result(stream.predict())
    finally:
        await stream.aclose()
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_predict_in_child, args=(predictor, theirs))
    child.start()
    try:
        assert await asyncio.to_thread(ours.poll, 30), "the child got no answer"
        in_child, child_runs = ours.recv()
    finally:
        await asyncio.to_thread(child.join, 10)
    assert child.exitcode == 0
    assert in_child == pytest.approx(in_parent, abs=1e-6), "same audio, same answer"
    assert child_runs == 2, "the child's thread ran it (the parent's did not follow the fork)"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
async def test_the_model_and_the_threads_it_starts_run_nicer_than_the_event_loop() -> None:
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    seen: list[int] = []

    def model(pcm: np.ndarray) -> float:
        inner = threading.Thread(target=lambda: seen.append(niceness()))
        inner.start()  # as the native model starts its own workers
        inner.join()
        seen.append(niceness())
        return 0.5

    predictor = TurnPredictor(model, nice=5)
    stream = await _fed(SharedTurnDetector(predictor=predictor), conversation()[:20000])
    try:
        assert await _result(stream.predict()) == 0.5
    finally:
        await stream.aclose()
        predictor.close()
    loop_nice = niceness()
    assert seen == [min(19, loop_nice + 5)] * 2, "the model thread and its workers are nicer"
