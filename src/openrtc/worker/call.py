"""The entrypoint every job runs: build the session for the routed agent and run it.

Against a real LiveKit server the call connects to its room. A dispatch that carries a
simulated caller (job metadata key "simulated_call") runs the same AgentSession on
simulated media instead; that switch is explicit in the dispatch and logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from livekit.agents import AgentSession, JobContext
from livekit.agents.voice.events import CloseEvent, CloseReason
from livekit.agents.voice.room_io import AudioInputOptions, RoomOptions

from .. import _lk, log_context, routing, sessions
from ..ops import call_stats
from ..sessions import SessionInfo
from ..simulation.script import SIMULATED_CALL_KEY
from .models import shared_models, shared_turn_detector, shared_vad

if TYPE_CHECKING:
    from ..pool import AgentPool

logger = logging.getLogger("openrtc.call")

OUTCOME_LOGGER = "openrtc.call.outcome"
"""Carries each call's outcome to the worker; not printed (see PoolServer)."""
outcome_logger = logging.getLogger(OUTCOME_LOGGER)
FAILED_JOB_FIELD = "openrtc_outcome_job"
FAILED_ERROR_FIELD = "openrtc_outcome_error"


class CallFailed(RuntimeError):
    """The call's agent or session failed; the job is reported JS_FAILED."""


LEGACY_TURN_KWARGS = (
    "min_endpointing_delay",
    "max_endpointing_delay",
    "false_interruption_timeout",
    "resume_false_interruption",
    "allow_interruptions",
    "discard_audio_if_uninterruptible",
    "min_interruption_duration",
    "min_interruption_words",
    "preemptive_generation",
    "agent_false_interruption_timeout",
    "turn_detection",
)
"""AgentSession's older turn keywords: given any, it builds turn_handling from them alone."""


def _share_turn_detector(opts: dict[str, Any], detector: Any) -> None:
    """Give the session the worker's one turn detector, keeping every turn setting given.

    AgentSession reads either `turn_handling` or the older keywords, never both, so the
    detector goes wherever the agent's own settings are.
    """
    handling = opts.get("turn_handling")
    if isinstance(handling, dict):
        opts["turn_handling"] = {"turn_detection": detector, **handling}
    elif handling is None and any(k in opts for k in LEGACY_TURN_KWARGS):
        opts.setdefault("turn_detection", detector)
    elif handling is None:
        opts["turn_handling"] = {"turn_detection": detector}


def _build_session(pool: AgentPool, spec: Any, info: SessionInfo) -> AgentSession[Any]:
    opts = pool.session_options(spec, info)
    for slot in ("stt", "llm", "tts"):
        if slot in opts:
            opts[slot] = _lk.per_call_provider(opts[slot])
    if pool.config.runtime.prewarm_models:
        models = shared_models()
        runtime = pool.config.runtime
        if "vad" not in opts:
            # one batched VAD for every call on this loop; a view each for its own metrics
            opts["vad"] = (
                shared_vad(runtime.vad_runtime).for_session()
                if runtime.uses_shared_vad
                else models.vad
            )
        detector = shared_turn_detector() if runtime.shared_turn_detector else models.turn_detector
        _share_turn_detector(opts, detector)
    if "vad" in opts:
        opts["vad"] = call_stats.watch_vad(opts["vad"])
    return AgentSession(**opts)


async def run_call(pool: AgentPool, ctx: JobContext, *, agent: str | None = None) -> None:
    """Run one call; `agent` is the one decided at admission, when handed over."""
    job = ctx.job
    try:
        info = pool.session_info(job, agent=agent or _lk.accepted_agent(ctx))
        if info is None:
            raise CallFailed(f"job {job.id} names no agent this worker runs")
        spec = pool.registry.get(info.agent)
        sessions.enter_call(info)
        script = routing.parse_metadata(job.metadata).get(SIMULATED_CALL_KEY)
        fields = {"job_id": job.id, "agent": spec.name, "tenant": info.tenant}
        log_context.bind(deployment_version=pool.deployment_version, **fields)
        ctx.log_context_fields = {**fields, "deployment_version": pool.deployment_version}
        session = _build_session(pool, spec, info)
        errors: list[str] = []
        session.on("error", lambda ev: errors.append(_describe_error(ev)))
        pool.session_started(info, session)
        instance = spec.agent_cls()  # type: ignore[call-arg]
        if script is not None:
            await _simulated(pool, ctx, session, instance, spec, script, errors)
        else:
            await _over_room(pool, ctx, session, instance, spec, errors)
    except BaseException as e:
        if not isinstance(e, asyncio.CancelledError):
            error = f"{type(e).__name__}: {e}"
            pool.record_crash(job.id, error)
            logger.error("call %s failed: %s", job.id, error)
            report_outcome(job.id, error)
        raise
    pool.record_clean_end(job.id)
    report_outcome(job.id, None)


def report_outcome(job_id: str, error: str | None) -> None:
    """Tell the worker how the call ended (None: its session closed normally).

    Under thread and process isolation this record is the parent's only evidence:
    livekit carries a job process's log records to the parent, which listens on
    OUTCOME_LOGGER.
    """
    extra = {FAILED_JOB_FIELD: job_id, FAILED_ERROR_FIELD: error}
    if error is None:
        outcome_logger.info("call %s ended normally", job_id, extra=extra)
    else:
        outcome_logger.info("call %s failed: %s", job_id, error, extra=extra)


async def _simulated(
    pool: AgentPool,
    ctx: JobContext,
    session: AgentSession[Any],
    agent: Any,
    spec: Any,
    script: Any,
    errors: list[str],
) -> None:
    from ..simulation import CallScript, run_simulated_call

    parsed = CallScript.from_dict(script)
    logger.info(
        "call %s uses simulated media: the dispatch carries a simulated caller (%s mode)",
        ctx.job.id,
        parsed.mode,
    )
    transcript = await run_simulated_call(
        session,
        agent,
        parsed,
        call_id=ctx.job.id,
        greeting=pool.greeting_for(spec),
        input_options=room_audio(pool),
    )
    pool.transcripts[ctx.job.id] = transcript
    if not transcript.completed:
        detail = transcript.error or (errors[-1] if errors else "the call did not complete")
        raise CallFailed(detail)
    ctx.shutdown("caller hung up")


async def _over_room(
    pool: AgentPool,
    ctx: JobContext,
    session: AgentSession[Any],
    agent: Any,
    spec: Any,
    errors: list[str],
) -> None:
    closed: asyncio.Future[CloseEvent] = asyncio.get_running_loop().create_future()

    def on_close(ev: CloseEvent) -> None:
        if not closed.done():
            closed.set_result(ev)

    session.on("close", on_close)
    await ctx.connect()
    await session.start(
        agent=agent, room=ctx.room, room_options=RoomOptions(audio_input=room_audio(pool))
    )
    greeting = pool.greeting_for(spec)
    if greeting:
        session.say(greeting)
    ev = await closed
    if ev.reason == CloseReason.ERROR:
        raise CallFailed(_describe_error(ev) if ev.error else (errors[-1] if errors else "error"))
    ctx.shutdown(f"session closed: {ev.reason.value}")


def room_audio(pool: AgentPool) -> AudioInputOptions:
    """How a call's audio reaches its session: livekit's defaults at the pool's rate."""
    return AudioInputOptions(sample_rate=pool.config.runtime.audio_input_rate)


def _describe_error(ev: Any) -> str:
    err = getattr(ev, "error", None)
    return f"{type(err).__name__}: {err}" if err is not None else str(ev)
