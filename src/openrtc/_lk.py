"""Every private livekit-agents touch point OpenRTC relies on, in one place.

livekit-agents has no public way to run a job as an asyncio task on the worker's own
loop, to decide admission exactly when an offer arrives, or to report a cancelled job;
livekit-plugins-silero has none to reach the model a loaded VAD holds, and livekit's
turn detector none to run its stream over another transport. Those need
private names; each one is used only here, behind a version check, and
`check_internals()` (run when a worker is built, and by the test suite) fails loudly
with the name that moved when upstream changes shape.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import dataclasses
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from livekit import rtc
from livekit.agents import AgentServer, JobContext, JobExecutorType, JobProcess
from livekit.agents import __version__ as LK_AGENTS_VERSION
from livekit.agents import job as lk_job
from livekit.agents import utils as lk_utils
from livekit.agents import worker as lk_worker
from livekit.agents.ipc import job_executor as lk_job_executor
from livekit.agents.job import JobAcceptArguments, RunningJobInfo
from livekit.agents.types import ATTRIBUTE_AGENT_NAME
from livekit.agents.utils.aio import channel as lk_channel
from livekit.protocol import agent as lk_proto
from livekit.protocol import models as lk_models

_logger = logging.getLogger("openrtc.worker")

TESTED_SERIES = (1, 8)
"""The livekit-agents minor series these touch points were written and tested against."""


class UnsupportedLiveKitVersion(RuntimeError):
    """The installed livekit-agents is outside the series OpenRTC was tested with."""


def _series(version: str) -> tuple[int, int]:
    major, minor, *_ = version.split(".")
    return int(major), int(minor)


def check_version(version: str = LK_AGENTS_VERSION) -> None:
    """Refuse to run on a livekit-agents series whose internals were never checked."""
    if _series(version) != TESTED_SERIES:
        want = ".".join(map(str, TESTED_SERIES))
        raise UnsupportedLiveKitVersion(
            f"openrtc supports livekit-agents {want}.x but {version} is installed; "
            f'install a supported one with: pip install "livekit-agents~={want}.0"'
        )


_SERVER_METHODS: dict[str, tuple[str, ...]] = {
    "_connection_task": ("self",),
    "_handle_register": ("self", "reg"),
    "_report_active_jobs": ("self",),
    "_run_ws": ("self", "ws"),
    "_handle_availability": ("self", "msg"),
    "_handle_assignment": ("self", "assignment"),
    "_handle_termination": ("self", "msg"),
    "_is_available": ("self",),
    "_get_effective_load": ("self",),
    "_update_worker_status": ("self",),
    "_update_job_status": ("self", "proc"),
    "_queue_msg": ("self", "msg"),
}
_SERVER_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "__init__": (
        "_ws_url",
        "_closed",
        "_draining",
        "_connecting",
        "_api_key",
        "_api_secret",
        "_worker_token",
        "_deployment",
        "_permissions",
        "_http_proxy",
        "_server_type",
        "_agent_name",
    ),
    "run": (
        "_job_lifecycle_tasks",
        "_msg_chan",
        "_closed",
        "_worker_load",
        "_pending_assignments",
        "_http_session",
        "_conn_task",
    ),
}
"""AgentServer attributes read or set below, by the method that creates them."""
_CONNECTION_STEPS = (
    'urljoin(base, "agent")',
    "self._http_session.ws_connect(",
    "req.register.agent_name = self._agent_name",
    'msg.HasField("register")',
    "self._handle_register(msg.register)",
    "self._connecting = False",
    "await self._report_active_jobs()",
    "await self._run_ws(ws)",
)
"""What AgentServer._connection_task does per attempt; `ServerInternals` repeats these steps
with its own retry policy, so each one must still be there upstream."""
_JOB_CONTEXT_PRIVATE = (
    "_info",
    "_primary_agent_session",
    "_shutdown_callbacks",
    "_pending_tasks",
    "_on_setup",
    "_on_session_end",
    "_on_cleanup",
)


def _link_problems() -> list[str]:
    problems: list[str] = []
    conn_src = inspect.getsource(AgentServer._connection_task)
    problems.extend(
        f"AgentServer._connection_task no longer does {step}"
        for step in _CONNECTION_STEPS
        if step not in conn_src
    )
    for name in ("HEARTBEAT_INTERVAL", "ASSIGNMENT_TIMEOUT"):
        if not hasattr(lk_worker, name):
            problems.append(f"livekit.agents.worker.{name} is gone")
    if "self._pending_assignments" not in inspect.getsource(AgentServer._handle_assignment):
        problems.append("AgentServer._handle_assignment no longer reads _pending_assignments")
    if "get_by_job_id" not in inspect.getsource(AgentServer._handle_termination):
        problems.append("AgentServer._handle_termination no longer looks the job up")
    problems.extend(_offer_problems())
    return problems


def _offer_problems() -> list[str]:
    """What `ServerInternals._handle_availability` relies on to answer on receipt."""
    problems: list[str] = []

    def source(name: str) -> str:
        fn = getattr(AgentServer, name, None)
        return inspect.getsource(fn) if fn is not None else ""

    if "msg = await ws.receive()" not in source("_run_ws"):
        problems.append("AgentServer._run_ws no longer reads the socket with ws.receive()")
    if "await ws.send_bytes(msg.SerializeToString())" not in source("_run_ws"):
        problems.append("AgentServer._run_ws no longer writes its outbox with ws.send_bytes()")
    if "self._handle_availability(server_msg.availability)" not in source("_run_ws"):
        problems.append("AgentServer._run_ws no longer hands offers to _handle_availability")
    if "self._proc_pool.launch_job(running_info)" not in source("_answer_availability"):
        problems.append("AgentServer._answer_availability no longer launches the assigned job")
    if "self._id = " not in source("_handle_register"):
        problems.append("AgentServer._id is no longer set on register")
    fields = {f.name for f in dataclasses.fields(RunningJobInfo)}
    problems.extend(
        f"RunningJobInfo.{name} is gone"
        for name in ("received_at", "accepted_at", "assigned_at")
        if name not in fields
    )
    if not callable(getattr(lk_utils.aio.Chan, "send_nowait", None)):
        problems.append("livekit.agents.utils.aio.Chan.send_nowait is gone")
    if not hasattr(lk_channel, "ChanFull"):
        problems.append("livekit.agents.utils.aio.channel.ChanFull is gone")
    return problems


def check_internals() -> None:
    """Verify every private name below still exists with the shape we use."""
    check_version()
    problems: list[str] = []
    for name, params in _SERVER_METHODS.items():
        fn = getattr(AgentServer, name, None)
        if fn is None:
            problems.append(f"AgentServer.{name} is gone")
            continue
        got = tuple(inspect.signature(fn).parameters)[: len(params)]
        if got != params:
            problems.append(f"AgentServer.{name} takes {got}, expected {params}")
    for method, attrs in _SERVER_ATTRIBUTES.items():
        src = inspect.getsource(getattr(AgentServer, method))
        problems.extend(
            f"AgentServer.{attr} is no longer set in {method}()"
            for attr in attrs
            if f"self.{attr}" not in src
        )
    run_src = inspect.getsource(AgentServer.run)
    if "self._proc_pool = ipc.proc_pool.ProcPool(" not in run_src:
        problems.append("AgentServer.run no longer builds self._proc_pool")
    if "self._connection_task()" not in run_src:
        problems.append("AgentServer.run no longer starts self._connection_task()")
    problems.extend(_link_problems())
    ctx_params = set(inspect.signature(JobContext.__init__).parameters)
    for p in ("proc", "info", "room", "on_connect", "on_shutdown", "inference_executor"):
        if p not in ctx_params:
            problems.append(f"JobContext.__init__ lost parameter {p!r}")
    for attr in _JOB_CONTEXT_PRIVATE:
        if attr not in JobContext.__dict__ and attr not in inspect.getsource(JobContext.__init__):
            problems.append(f"JobContext.{attr} is gone")
    if not hasattr(lk_job, "_JobContextVar"):
        problems.append("livekit.agents.job._JobContextVar is gone")
    from livekit.rtc.event_emitter import EventEmitter

    if "self._events" not in inspect.getsource(EventEmitter.__init__):
        problems.append("EventEmitter._events is gone")
    room_init = inspect.getsource(rtc.Room.__init__)
    problems.extend(
        f"rtc.Room.{a} is gone" for a in ("_info", "_room_queue") if f"self.{a}" not in room_init
    )
    if not hasattr(lk_proto.JobStatus, "JS_CANCELLED"):
        problems.append("JobStatus.JS_CANCELLED is gone")
    try:
        detached_participant("check", "check", {"k": "v"})
    except Exception as e:
        problems.append(f"livekit-rtc participants can no longer be built detached: {e!r}")
    problems.extend(_agent_hook_problems())
    if problems:
        raise UnsupportedLiveKitVersion(
            f"livekit-agents {LK_AGENTS_VERSION} changed internals openrtc relies on: "
            + "; ".join(problems)
        )


_SILERO_VAD_PRIVATE = ("_onnx_session", "_opts")
SILERO_OPTION_FIELDS = (
    "min_speech_duration",
    "min_silence_duration",
    "prefix_padding_duration",
    "max_buffered_speech",
    "activation_threshold",
    "deactivation_threshold",
    "sample_rate",
)
"""The fields of a loaded `silero.VAD`'s options that `silero_model` reads."""


def _silero_problems() -> list[str]:
    from livekit.plugins import silero

    problems = []
    version = getattr(silero, "__version__", "0.0")
    if _series(version) != TESTED_SERIES:
        problems.append(f"livekit-plugins-silero is {version}")
    init_src = inspect.getsource(silero.VAD.__init__)
    for attr in _SILERO_VAD_PRIVATE:
        if f"self.{attr} =" not in init_src:
            problems.append(f"silero.VAD.{attr} is gone")
    from livekit.plugins.silero import vad as silero_vad

    fields = {f.name for f in dataclasses.fields(silero_vad._VADOptions)}
    problems.extend(
        f"silero _VADOptions.{name} is gone" for name in SILERO_OPTION_FIELDS if name not in fields
    )
    return problems


def check_silero() -> None:
    """Verify the livekit-plugins-silero internals `silero_model` reads still exist."""
    from livekit.plugins import silero

    problems = _silero_problems()
    if problems:
        raise UnsupportedLiveKitVersion(
            f"livekit-plugins-silero {getattr(silero, '__version__', '?')} changed internals "
            "openrtc's shared VAD relies on: " + "; ".join(problems) + "; run with "
            "--no-shared-vad, or install livekit-plugins-silero~=1.8.0"
        )


def silero_model(vad: Any) -> tuple[Any, dict[str, Any]] | None:
    """The ONNX session and options of a loaded `silero.VAD`, or None for anything else.

    The plugin has no public accessor for either; reading them lets a batched VAD reuse
    the model the worker already loaded instead of loading it a second time.
    """
    check_silero()
    session = getattr(vad, "_onnx_session", None)
    opts = getattr(vad, "_opts", None)
    if session is None or opts is None:
        return None
    return session, {name: getattr(opts, name) for name in SILERO_OPTION_FIELDS}


# --- the end-of-turn stream, run over OpenRTC's batched transport -----------------------------
TURN_STREAM_PARAMS = ("self", "detector", "opts", "transport", "model", "local_fallback")
"""What `_BaseStreamingTurnDetectorStream.__init__` takes; `turn_detector_stream` passes them."""
TURN_TRANSPORT_MEMBERS = (
    "session_id",
    "run",
    "run_inference",
    "push_frame",
    "flush",
    "attach",
    "detach",
)
"""The transport Protocol livekit's turn stream drives; `openrtc.turn` implements each."""
_TURN_STREAM_STEPS = {
    "predict": ("self._request_fut = ", "self._transport.run_inference(self._request_id)"),
    "_resolve_prediction": ("if request_id != self._request_id:",),
    "aclose": ("self._transport.detach()",),
}
"""The order the batched transport relies on: the future exists before the transport is
asked, a stale answer is ignored, and aclose detaches the transport."""
TURN_BUFFER_SECONDS = 1.2
"""The audio livekit's local transport hands the model: the last 1.2 s since a flush."""


def _turn_problems() -> list[str]:
    from livekit.agents import inference
    from livekit.agents.inference.eot import base as eot_base
    from livekit.agents.inference.eot import transports as eot_transports

    problems: list[str] = []
    stream_cls = getattr(eot_base, "_BaseStreamingTurnDetectorStream", None)
    proto = getattr(eot_base, "_StreamingTurnDetectionTransport", None)
    if stream_cls is None or proto is None:
        return ["livekit.agents.inference.eot.base lost its turn stream or transport Protocol"]
    got = tuple(inspect.signature(stream_cls.__init__).parameters)
    if got != TURN_STREAM_PARAMS:
        problems.append(
            f"_BaseStreamingTurnDetectorStream takes {got}, expected {TURN_STREAM_PARAMS}"
        )
    members = {m for m in vars(proto) if not m.startswith("_")}
    if members != set(TURN_TRANSPORT_MEMBERS):
        problems.append(
            f"the turn transport Protocol has {sorted(members)}, "
            f"expected {sorted(TURN_TRANSPORT_MEMBERS)}"
        )
    for method, steps in _TURN_STREAM_STEPS.items():
        fn = getattr(stream_cls, method, None)
        src = inspect.getsource(fn) if fn is not None else ""
        problems.extend(
            f"_BaseStreamingTurnDetectorStream.{method} no longer does {step!r}"
            for step in steps
            if step not in src
        )
    if not hasattr(stream_cls, "_drain_audio_channel"):
        problems.append("_BaseStreamingTurnDetectorStream._drain_audio_channel is gone")
    if getattr(eot_transports, "_CLIENT_BUFFER_SECONDS", None) != TURN_BUFFER_SECONDS:
        problems.append(
            f"livekit's local turn transport no longer keeps {TURN_BUFFER_SECONDS} s of audio"
        )
    if "self._opts = opts" not in inspect.getsource(eot_base._BaseStreamingTurnDetector.__init__):
        problems.append("_BaseStreamingTurnDetector._opts is gone")
    if not issubclass(inference.TurnDetector, eot_base._BaseStreamingTurnDetector):
        problems.append("inference.TurnDetector is no longer a _BaseStreamingTurnDetector")
    return problems


def check_turn_detector() -> None:
    """Verify the livekit-agents turn-stream internals `openrtc.turn` relies on still exist."""
    check_version()
    problems = _turn_problems()
    if problems:
        raise UnsupportedLiveKitVersion(
            f"livekit-agents {LK_AGENTS_VERSION} changed the end-of-turn internals openrtc's "
            "shared turn detector relies on: " + "; ".join(problems) + "; run with "
            "--no-shared-turn-detector, or install livekit-agents~=1.8.0"
        )


def turn_detector_stream(detector: Any, transport: Any) -> Any:
    """livekit's own end-of-turn stream for `detector`, fed through `transport`.

    The stream class is private; reusing it keeps predict/cancel/flush/timeout exactly
    as livekit does them, with only the model call replaced.
    """
    from livekit.agents.inference.eot import base as eot_base

    return eot_base._BaseStreamingTurnDetectorStream(
        detector=detector,
        opts=detector._opts,
        transport=transport,
        model=detector.model,
        local_fallback=True,
    )


def turn_detector_sample_rate(detector: Any) -> int:
    """The rate (Hz) the detector's streams resample their input audio to."""
    return int(detector._opts.sample_rate)


def turn_request_is_current(stream: Any, request_id: str) -> bool:
    """False once the stream superseded, cancelled or timed out that request."""
    return bool(stream._request_id == request_id)


def resolve_turn_request(
    stream: Any, request_id: str, probability: float, inference_duration: float
) -> None:
    """Hand a prediction to the stream; it ignores one it no longer waits for."""
    stream._resolve_prediction(request_id, probability, inference_duration=inference_duration)


async def drain_turn_audio(stream: Any) -> None:
    """Feed the stream's queued audio and flushes to its transport until input ends."""
    await stream._drain_audio_channel()


ExecutorStatus = lk_job_executor.JobStatus
"""RUNNING / SUCCESS / FAILED as AgentServer reads them from an executor."""


def room_for_job(info: RunningJobInfo) -> rtc.Room:
    """A room object carrying the job's room name and metadata before any connect."""
    return describe_room(rtc.Room(), info)


def describe_room(room: rtc.Room, info: RunningJobInfo) -> rtc.Room:
    """Give an unconnected room the job's room name, metadata and sid (set by connect)."""
    room._info.name = info.job.room.name
    room._info.metadata = info.job.room.metadata
    room._info.sid = info.job.room.sid
    return room


def room_sid(room: rtc.Room) -> str:
    return str(room._info.sid)


def detached_participant(
    identity: str, name: str, attributes: Mapping[str, str]
) -> rtc.RemoteParticipant:
    """A remote participant with no native handle (nothing to release, nothing to stream),
    for a simulated room; livekit-rtc builds them only from its native events."""
    kind = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
    return rtc.RemoteParticipant(_owned_participant(identity, name, kind, attributes))


L = TypeVar("L", bound=rtc.LocalParticipant)


def detached_local_participant(room: rtc.Room, identity: str, cls: type[L]) -> L:
    """The agent's own participant in a simulated room, as an instance of `cls`."""
    kind = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    return cls(room._room_queue, _owned_participant(identity, identity, kind, {}))


def _owned_participant(identity: str, name: str, kind: int, attributes: Mapping[str, str]) -> Any:
    from livekit.rtc._proto import handle_pb2, participant_pb2

    info = participant_pb2.ParticipantInfo(
        sid=f"PA_{identity}",
        identity=identity,
        name=name,
        kind=kind,  # type: ignore[arg-type]
        state=participant_pb2.ParticipantState.PARTICIPANT_STATE_ACTIVE,
        attributes=dict(attributes),
    )
    return participant_pb2.OwnedParticipant(handle=handle_pb2.FfiOwnedHandle(id=0), info=info)


def new_job_context(
    *,
    proc: JobProcess,
    info: RunningJobInfo,
    room: rtc.Room,
    on_connect: Callable[[], None],
    on_shutdown: Callable[[str], None],
) -> JobContext:
    """Build a JobContext the way livekit's own job runner does (the ctor is private)."""
    return JobContext(
        proc=proc,
        info=info,
        room=room,
        on_connect=on_connect,
        on_shutdown=on_shutdown,
        inference_executor=_NoInferenceExecutor(),
    )


AGENT_ATTRIBUTE = "openrtc.agent"
"""The agent participant attribute naming the agent decided at admission."""


def accepted_agent(ctx: JobContext, *, from_name: bool = False) -> str | None:
    """The agent the worker decided on when it accepted this job (None: not recorded).

    In the worker's process it rides in the accept arguments' attributes. livekit sends
    a job process only the accept name, identity and metadata, so under process
    isolation the worker accepts with the agent as the participant name (`from_name`).
    """
    info = getattr(ctx, "_info", None)
    args = getattr(info, "accept_arguments", None)
    if from_name:
        name = getattr(args, "name", None)
        return name if isinstance(name, str) and name else None
    attributes = getattr(args, "attributes", None) or {}
    agent = attributes.get(AGENT_ATTRIBUTE)
    return agent if isinstance(agent, str) and agent else None


def new_job_process(executor_type: JobExecutorType = JobExecutorType.THREAD) -> JobProcess:
    """The process object shared by every coroutine job: its userdata holds the models."""
    return JobProcess(executor_type=executor_type, user_arguments=None, http_proxy=None)


class _NoInferenceExecutor:
    """Coroutine jobs load their models in-process; there is no inference subprocess."""

    async def do_inference(self, method: str, data: bytes) -> bytes | None:
        raise RuntimeError(
            f"inference method {method!r} needs livekit's inference process, which "
            "coroutine isolation does not run; load the model in the worker instead"
        )


def set_current_job_context(ctx: JobContext) -> Any:
    """Make `get_job_context()` return ctx inside the current task; returns a reset token."""
    return lk_job._JobContextVar.set(ctx)


def reset_current_job_context(token: Any) -> None:
    lk_job._JobContextVar.reset(token)


def prepare_job_context(ctx: JobContext) -> None:
    """Per-job log fields, as livekit's runner sets them up before the entrypoint."""
    ctx._on_setup()


def primary_session(ctx: JobContext) -> Any:
    return ctx._primary_agent_session


def shutdown_callbacks(ctx: JobContext) -> list[Callable[[str], Any]]:
    return list(ctx._shutdown_callbacks)


async def finish_job_context(ctx: JobContext) -> None:
    """Session report, pending tasks and temp files: livekit's own end-of-job steps."""
    try:
        await ctx._on_session_end()
    finally:
        if tasks := list(ctx._pending_tasks):
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await ctx._on_cleanup()


class ServerInternals(AgentServer):
    """AgentServer with its admission, load and job-status hooks made overridable.

    Subclasses implement the three public-named hooks below; this class maps them onto
    the private methods AgentServer calls.
    """

    def admission_is_delegated(self) -> bool:
        """True: every offer reaches the request hook, which decides and records why."""
        return True

    def exact_load(self) -> float:
        """Load in [0, 1] reported to the server; 1.0 means full."""
        raise NotImplementedError

    def job_status_for(self, executor: Any) -> int | None:
        """Protocol JobStatus for an executor, or None to use AgentServer's mapping."""
        return None

    # --- private overrides -------------------------------------------------------
    def _is_available(self) -> bool:
        if self.admission_is_delegated():
            return True
        return bool(super()._is_available())

    def _get_effective_load(self) -> float:
        return self.exact_load()

    async def _update_job_status(self, proc: Any) -> None:
        status = self.job_status_for(proc)
        if status is None:
            await super()._update_job_status(proc)
            return
        info = proc.running_job
        if info is None:
            return
        error = getattr(proc, "error", "") or ""
        update = lk_proto.UpdateJobStatus(job_id=info.job.id, status=status, error=error)  # type: ignore[arg-type]
        await self._queue_msg(lk_proto.WorkerMessage(update_job=update))

    # --- the dispatch link ----------------------------------------------------------
    link_open_timeout: float = 4.0
    """Seconds one attempt may take to open the websocket and be registered."""

    def link_failed(self, error: Exception, attempt: int) -> float:
        """An attempt failed or the open link broke (attempt 0: it was up); return the
        seconds to wait before the next attempt. The link is retried until the worker
        closes: giving up is the caller's decision, never the connection loop's."""
        return float(min(2 * attempt, 10))

    async def link_restored(self) -> None:
        """Registered with the server (again); runs before the link serves messages."""

    def hold_final_status(self, update: lk_proto.UpdateJobStatus) -> bool:
        """A call's final status while the link is down: True to keep it (and send it
        later through `send_now`), False to queue it as AgentServer would."""
        return False

    @property
    def link_is_down(self) -> bool:
        return bool(getattr(self, "_connecting", False))

    async def send_now(self, msg: lk_proto.WorkerMessage) -> None:
        """Queue a message for the server, bypassing `hold_final_status`."""
        await super()._queue_msg(msg)

    async def _queue_msg(self, msg: lk_proto.WorkerMessage) -> None:
        if (
            self.link_is_down
            and msg.WhichOneof("message") == "update_job"
            and msg.update_job.status != lk_proto.JobStatus.JS_RUNNING
            and self.hold_final_status(msg.update_job)
        ):
            return
        await super()._queue_msg(msg)

    async def _connection_task(self) -> None:
        """AgentServer's connection loop with one change: it never gives up by itself.

        Upstream stops after a fixed number of attempts and then closes every job, though
        a call's media never depended on this link; here `link_failed` paces the attempts.
        """
        attempt = 0
        while not self._closed:
            ws: Any = None
            try:
                self._connecting = True
                ws = await asyncio.wait_for(self._open_link(), self.link_open_timeout)
                await asyncio.wait_for(self._register_on(ws), self.link_open_timeout)
                attempt = 0
                self._connecting = False
                await self.link_restored()
                await self._report_active_jobs()
                self._openrtc_socket = _TimedSocket(ws, self.offer_answered)
                await self._run_ws(self._openrtc_socket)  # type: ignore[arg-type]
                if not self._closed:
                    raise ConnectionError("the dispatch link closed")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._connecting = True
                if ws is not None:
                    with contextlib.suppress(Exception):
                        await ws.close()
                    ws = None
                if self._closed:
                    break
                delay = self.link_failed(e, attempt)
                attempt += 1
                await asyncio.sleep(delay)
            finally:
                if ws is not None:
                    with contextlib.suppress(Exception):
                        await ws.close()

    async def _open_link(self) -> Any:
        from livekit import api

        token = (
            api.AccessToken(self._api_key, self._api_secret)
            .with_grants(api.VideoGrants(agent=True))
            .to_jwt()
        )
        params = {"worker_token": self._worker_token} if self._worker_token else {}
        session = self._http_session
        assert session is not None, "AgentServer.run() opens the http session first"
        return await session.ws_connect(
            self.link_url,
            headers={"Authorization": f"Bearer {token}"},
            params=params,
            autoping=True,
            proxy=self._http_proxy or None,
            heartbeat=lk_worker.HEARTBEAT_INTERVAL,
        )

    @property
    def link_url(self) -> str:
        """The `/agent` websocket URL the worker dials."""
        from urllib.parse import urljoin, urlparse

        parsed = urlparse(str(self._ws_url))
        scheme = parsed.scheme.replace("http", "ws", 1)
        base = f"{scheme}://{parsed.netloc}{parsed.path}".rstrip("/") + "/"
        return urljoin(base, "agent")

    async def _register_on(self, ws: Any) -> None:
        req = lk_proto.WorkerMessage()
        perms = self._permissions
        req.register.type = self._server_type.value
        req.register.allowed_permissions.CopyFrom(
            lk_models.ParticipantPermission(
                can_publish=perms.can_publish,
                can_subscribe=perms.can_subscribe,
                can_publish_data=perms.can_publish_data,
                can_update_metadata=perms.can_update_metadata,
                can_publish_sources=perms.can_publish_sources,
                hidden=perms.hidden,
                agent=True,
            )
        )
        req.register.agent_name = self._agent_name
        req.register.deployment = self._deployment
        req.register.version = LK_AGENTS_VERSION
        await ws.send_bytes(req.SerializeToString())
        reply = lk_proto.ServerMessage()
        reply.ParseFromString(await ws.receive_bytes())
        if not reply.HasField("register"):
            raise ConnectionError("the server's first message was not a register reply")
        self._handle_register(reply.register)

    # --- offers, assignments and terminations from any server -------------------------
    def answer_held_offer(
        self, msg: lk_proto.AvailabilityRequest
    ) -> list[lk_proto.WorkerMessage] | None:
        """None: decide this offer as usual. Otherwise the job is already held and the
        messages returned (possibly none) are its whole answer."""
        return None

    async def unexpected_assignment(self, assignment: lk_proto.JobAssignment) -> None:
        """An assignment with no offer waiting for it (never offered, or timed out)."""

    def unknown_termination(self, job_id: str) -> None:
        """A termination for a job this worker does not run."""

    def offer_answered(self, seconds: float) -> None:
        """An availability answer was written, `seconds` after its offer reached the
        worker's read loop (see `_TimedSocket`)."""

    def answer_offer(
        self, msg: lk_proto.AvailabilityRequest
    ) -> lk_proto.AvailabilityResponse | None:
        """Decide an offer synchronously, the moment it is read off the socket: the answer
        is queued before anything else runs. None: AgentServer's own path decides it
        (the request_fnc runs in a task of its own and answers through a JobRequest).

        Only the decision belongs here; bookkeeping goes to `after_reply`.
        """
        return None

    def offer_fell_through(self, job_id: str, error: Exception) -> None:
        """An offer answered available whose assignment never came, or whose call could
        not be launched: the slot it reserved is free again."""

    after_reply_slice: float = 0.0005
    """Seconds of bookkeeping run per pass of the loop before it reads the socket again."""

    def after_reply(self, fn: Callable[..., Any], /, *args: Any) -> None:
        """Run fn(*args) on the loop once the replies queued so far have gone out.

        The bookkeeping waits while the outgoing queue holds messages (a few passes of
        the loop at most, so a congested socket cannot make it spin), then runs in the
        order it was asked for, a slice at a time (`after_reply_slice`), so offers read
        meanwhile are answered between slices. A failing callback is logged, never
        raised into the caller.
        """
        backlog = self.__dict__.get("_openrtc_after_reply")
        if backlog is None:
            backlog = self.__dict__["_openrtc_after_reply"] = _Backlog()
        backlog.items.append((fn, args))
        if not backlog.scheduled:
            backlog.scheduled = True
            asyncio.get_running_loop().call_soon(self._run_after_reply)

    def _run_after_reply(self) -> None:
        backlog: _Backlog = self.__dict__["_openrtc_after_reply"]
        loop = asyncio.get_running_loop()
        outbox = getattr(self, "_msg_chan", None)
        replies_waiting = outbox is not None and not outbox.empty() and not self.link_is_down
        if replies_waiting and backlog.waited < _MAX_PASSES_BEHIND_REPLIES:
            backlog.waited += 1
            loop.call_soon(self._run_after_reply)
            return
        backlog.waited = 0
        ends = time.perf_counter() + self.after_reply_slice
        while backlog.items:
            fn, args = backlog.items.popleft()
            _run_quietly(fn, args)
            if time.perf_counter() >= ends:
                break
        if backlog.items:
            loop.call_soon(self._run_after_reply)
        else:
            backlog.scheduled = False

    def _handle_availability(self, msg: lk_proto.AvailabilityRequest) -> None:
        held = self.answer_held_offer(msg)
        if held is not None:
            for reply in held:
                self._track(self.send_now(reply))
            return
        received_at = time.time()
        answer = self.answer_offer(msg)
        if answer is None:
            super()._handle_availability(msg)
            return
        waiter: asyncio.Future[lk_proto.JobAssignment] | None = None
        accept = None
        if answer.available:
            accept = JobAcceptArguments(
                name=answer.participant_name,
                identity=answer.participant_identity,
                metadata=answer.participant_metadata,
                attributes=dict(answer.participant_attributes),
            )
            # as AgentServer's own accept: the participant says which agent name it serves
            answer.participant_attributes[ATTRIBUTE_AGENT_NAME] = self._agent_name
            waiter = asyncio.get_running_loop().create_future()
            self._pending_assignments[msg.job.id] = waiter
        reply = lk_proto.WorkerMessage(availability=answer)
        socket = self.__dict__.get("_openrtc_socket")
        if socket is not None:
            socket.time_reply(reply)
        self._reply_now(reply)
        if waiter is not None and accept is not None:
            self._track(self._launch_when_assigned(msg.job, accept, waiter, received_at))

    def _reply_now(self, msg: lk_proto.WorkerMessage) -> None:
        """Queue a reply without yielding (a full outbox falls back to waiting for room)."""
        try:
            self._msg_chan.send_nowait(msg)
        except lk_channel.ChanFull:
            self._track(self._queue_msg(msg))
        except lk_utils.aio.ChanClosed:
            pass  # the worker is closing: the server hears nothing more from it

    async def _launch_when_assigned(
        self,
        job: lk_proto.Job,
        accept: JobAcceptArguments,
        waiter: asyncio.Future[lk_proto.JobAssignment],
        received_at: float,
    ) -> None:
        """What AgentServer does after an accept: wait for the assignment, launch the job."""
        accepted_at = time.time()
        try:
            try:
                assignment = await asyncio.wait_for(waiter, lk_worker.ASSIGNMENT_TIMEOUT)
            except TimeoutError:
                raise TimeoutError(
                    f"no assignment within {lk_worker.ASSIGNMENT_TIMEOUT:g}s"
                ) from None
            info = RunningJobInfo(
                accept_arguments=accept,
                job=job,
                url=assignment.url or self._ws_url,
                token=assignment.token,
                worker_id=self._id,
                fake_job=False,
                received_at=received_at,
                accepted_at=accepted_at,
                assigned_at=time.time(),
            )
            await self._proc_pool.launch_job(info)
        except asyncio.CancelledError:
            self._pending_assignments.pop(job.id, None)
            self.offer_fell_through(job.id, RuntimeError("the worker closed before launching"))
            raise
        except Exception as e:
            self._pending_assignments.pop(job.id, None)
            self.offer_fell_through(job.id, e)

    def _handle_assignment(self, assignment: lk_proto.JobAssignment) -> None:
        if assignment.job.id in self._pending_assignments:
            super()._handle_assignment(assignment)
            return
        self._track(self.unexpected_assignment(assignment))

    async def _handle_termination(self, msg: lk_proto.JobTermination) -> None:
        if self._proc_pool.get_by_job_id(msg.job_id) is None:
            self.unknown_termination(msg.job_id)
            return
        await super()._handle_termination(msg)

    def _track(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._job_lifecycle_tasks.add(task)
        task.add_done_callback(self._job_lifecycle_tasks.discard)

    async def push_worker_status(self) -> None:
        """Tell the server our status now instead of at the next 2.5 s tick."""
        if getattr(self, "_closed", True):
            return
        # AgentServer sends the load it last sampled (every 2.5 s); send the current one
        self._worker_load = self.exact_load()
        await self._update_worker_status()

    def mark_draining(self) -> None:
        """What AgentServer.drain() sets first; used where we wait for calls ourselves."""
        self._draining = True

    def job_executors(self) -> list[Any]:
        pool = self._proc_pool
        return list(pool.processes) if pool is not None else []

    def lifecycle_tasks(self) -> set[asyncio.Task[Any]]:
        return set(getattr(self, "_job_lifecycle_tasks", set()))

    # --- the job pool AgentServer.run() builds --------------------------------------
    def make_job_pool(self, stock_pool: Any) -> Any:
        """Return the pool AgentServer should run jobs on; the stock one by default."""
        return stock_pool

    @property  # type: ignore[override]
    def _proc_pool(self) -> Any:
        return self.__dict__.get("_openrtc_job_pool")

    @_proc_pool.setter
    def _proc_pool(self, value: Any) -> None:
        self.__dict__["_openrtc_job_pool"] = self.make_job_pool(value)

    async def flush_outbox(self, timeout: float = 2.0) -> None:
        """Let queued job statuses reach the server before the connection closes.

        AgentServer.aclose() cancels its connection first; a final JS_SUCCESS still in the
        outgoing queue would be lost and the server would count the call as dropped.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        pending = [t for t in self.lifecycle_tasks() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        chan = getattr(self, "_msg_chan", None)
        while chan is not None and not chan.empty():
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.01)


class _TimedSocket:
    """The dispatch socket as `AgentServer._run_ws` uses it, timing the worker's answers.

    An offer's clock starts when the read loop resumes with the socket data that holds
    it: messages handed over without the loop suspending came in the same data, so an
    offer read behind others of a burst counts its wait for them. It stops when the
    answer's frame is written (the outbox hands `send_bytes` the same serialised bytes).
    """

    MAX_PENDING = 4096

    def __init__(self, ws: Any, answered: Callable[[float], None]) -> None:
        self._ws = ws
        self._answered = answered
        self._arrived_at = time.perf_counter()
        self._pending: dict[bytes, float] = {}

    async def receive(self, *args: Any, **kwargs: Any) -> Any:
        suspended: list[bool] = []
        marker = asyncio.get_running_loop().call_soon(suspended.append, True)
        msg = await self._ws.receive(*args, **kwargs)
        if suspended:
            self._arrived_at = time.perf_counter()
        else:
            marker.cancel()
        return msg

    def time_reply(self, reply: lk_proto.WorkerMessage) -> None:
        """Start timing `reply` to the offer being handled now."""
        if len(self._pending) >= self.MAX_PENDING:
            self._pending.clear()  # answers the socket never wrote (it closed)
        self._pending[reply.SerializeToString()] = self._arrived_at

    async def send_bytes(self, data: bytes, *args: Any, **kwargs: Any) -> Any:
        arrived_at = self._pending.pop(data, None) if self._pending else None
        result = await self._ws.send_bytes(data, *args, **kwargs)
        if arrived_at is not None:
            self._answered(time.perf_counter() - arrived_at)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)


@dataclasses.dataclass
class _Backlog:
    """Bookkeeping waiting for its turn after the replies (see `after_reply`)."""

    items: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = dataclasses.field(
        default_factory=collections.deque
    )
    scheduled: bool = False
    waited: int = 0
    """Passes of the loop this slice has waited for the outgoing queue to empty."""


_MAX_PASSES_BEHIND_REPLIES = 8


def _run_quietly(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        fn(*args)
    except Exception:
        _logger.exception("bookkeeping after a reply failed")


async def launch_into_room(
    server: ServerInternals,
    *,
    room: str,
    metadata: dict[str, Any],
    api_key: str,
    api_secret: str,
) -> str:
    """Start a job in a named room directly, as livekit's own `connect` command does."""
    import json

    from livekit import api
    from livekit.agents import utils as lk_utils
    from livekit.agents.job import JobAcceptArguments
    from livekit.protocol import models

    job_id = lk_utils.shortuuid("AJ_")
    identity = f"agent-{job_id}"
    token = (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_kind("agent")
        .with_grants(api.VideoGrants(room_join=True, room=room, agent=True))
        .to_jwt()
    )
    job = lk_proto.Job(
        id=job_id,
        type=lk_proto.JobType.JT_ROOM,
        room=models.Room(name=room, sid=lk_utils.shortuuid("RM_")),
        metadata=json.dumps(metadata),
    )
    info = RunningJobInfo(
        accept_arguments=JobAcceptArguments(name="", identity=identity, metadata=""),
        job=job,
        url=str(getattr(server, "_ws_url", "")),
        token=token,
        worker_id=server.id,
        fake_job=False,
    )
    await server._proc_pool.launch_job(info)
    return job_id


def per_call_provider(provider: Any) -> Any:
    """A copy of a shared STT/LLM/TTS object with its own event listeners.

    Sessions subscribe to their providers' "error" and "metrics_collected" events; one
    object shared by every call in the process would tell every session about every
    call's errors (four failed replies in one call would close the others) and mix
    their usage. A shallow copy keeps the shared clients and options and gets a fresh
    emitter, and the streams it creates report to it alone.
    """
    from livekit.agents import llm, stt, tts

    if not isinstance(provider, (llm.LLM, stt.STT, tts.TTS)):
        return provider
    clone = copy.copy(provider)
    clone._events = {}
    return clone


# --- agent hooks skipped on a hot-reload swap ------------------------------------------------
_HOOK_CALLS = {"on_enter": "await self._agent.on_enter()", "on_exit": "await self._agent.on_exit()"}


def _agent_hook_problems() -> list[str]:
    """livekit's AgentActivity must call the hooks through the agent instance, so an
    instance attribute set by `skip_agent_hooks` is what runs."""
    from livekit.agents.voice import agent_activity

    # the module's text, read as lines: parsing it (getsource of the class) is slower and
    # trips a CPython 3.11 ast bug when the collector runs finalizers mid-parse
    src = inspect.getsource(agent_activity)
    return [
        f"AgentActivity no longer calls {call!r}"
        for call in _HOOK_CALLS.values()
        if call not in src
    ]


async def _skip_hook() -> None:
    return None


def skip_agent_hooks(leaving: Any, entering: Any) -> None:
    """A hot-reload swap: the old agent's on_exit and the new one's on_enter do not run,
    so the caller hears no goodbye and no second greeting mid-call."""
    vars(leaving)["on_exit"] = _skip_hook
    vars(entering)["on_enter"] = _skip_hook
