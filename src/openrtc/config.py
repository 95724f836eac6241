"""A worker's settings, in one typed group per concern.

Each group is a frozen dataclass that validates itself and holds the only copy of its
defaults. A field that an operator may set carries a `Setting`: its `OPENRTC_*`
variable, its command-line flag and its help. `PoolConfig.from_env()` reads every
variable in one place; the CLI derives its flags from the same fields
(`openrtc.cli.pool_options`), so `AgentPool(...)`, `openrtc start` and `openrtc dev`
cannot disagree on a default. `docs/configuration.md` is generated from these groups.

Precedence: a flag on the command line, then the variable, then the default here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from .errors import ConfigError
from .keys import KeyRing, parse_key_text

Isolation = Literal["coroutine", "thread", "process"]
ISOLATIONS: tuple[Isolation, ...] = get_args(Isolation)
UnknownTenant = Literal["refuse", "defaults"]
AuditDurability = Literal["batch", "os"]
EventLoop = Literal["asyncio", "uvloop"]
VADRuntime = Literal["auto", "native", "onnx"]
AUDIO_INPUT_RATES = (8000, 16000, 24000, 32000, 44100, 48000)
DEFAULT_VERSION = "unversioned"


@dataclass(frozen=True)
class Setting:
    """How one field is set from outside: its variable(s), its flag, its help."""

    env: tuple[str, ...]
    flag: str | None
    help: str
    min: float | None = None

    @property
    def variable(self) -> str:
        return self.env[0]

    @property
    def option_name(self) -> str | None:
        """The flag's long name without its negative form (`--shared-vad`)."""
        return None if self.flag is None else self.flag.split("/")[0]


def setting(
    default: Any,
    env: str | tuple[str, ...],
    help: str,
    *,
    flag: str | None = None,
    min: float | None = None,
) -> Any:
    """A dataclass field an operator sets by variable and (unless flag is '') by flag."""
    envs = (env,) if isinstance(env, str) else env
    name = envs[0].removeprefix("OPENRTC_").lower().replace("_", "-")
    decl = f"--{name}" if flag is None else (flag or None)
    return field(default=default, metadata={"setting": Setting(envs, decl, help, min)})


def in_code(default: Any, help: str, *, repr: bool = True) -> Any:
    """A dataclass field set only from Python (an object, a callable or a secret)."""
    return field(default=default, repr=repr, metadata={"doc": help})


def doc_of(f: dataclasses.Field[Any]) -> str:
    meta = setting_of(f)
    return meta.help if meta is not None else str(f.metadata.get("doc", ""))


def setting_of(f: dataclasses.Field[Any]) -> Setting | None:
    value = f.metadata.get("setting")
    return value if isinstance(value, Setting) else None


# --- parsing one variable -----------------------------------------------------------------
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def base_type(hint: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else hint), True
    return hint, False


def parse_value(raw: str, hint: Any, where: str) -> Any:
    """Turn a variable's text into the field's type; errors name `where`."""
    base, _ = base_type(hint)
    text = raw.strip()
    if get_origin(base) is Literal:
        choices = get_args(base)
        if text not in choices:
            raise ConfigError(f"{where}={raw!r} is not one of {', '.join(map(str, choices))}")
        return text
    if base is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(f"{where}={raw!r} is not a boolean; use 1/true/on or 0/false/off")
    if base is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{where}={raw!r} is not a whole number") from None
    if base is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{where}={raw!r} is not a number") from None
    if base is Path:
        return Path(text)
    return text


G = TypeVar("G")


def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def group_from_env(cls: type[G], environ: Mapping[str, str], **given: Any) -> G:
    """An instance of a group: `given` values, else its variables, else its defaults."""
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in given:
            values[f.name] = given[f.name]
            continue
        meta = setting_of(f)
        if meta is None:
            continue
        for var in meta.env:
            raw = environ.get(var)
            if raw is not None and raw.strip():
                values[f.name] = parse_value(raw, hints[f.name], var)
                break
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        meta = setting_of(f)
        value = values.get(f.name)
        if meta is None or meta.min is None or value is None or isinstance(value, bool):
            continue
        if isinstance(value, int | float) and value < meta.min:
            raise ConfigError(f"{_where(cls, f.name)} must be at least {meta.min:g}, got {value!r}")
    return cls(**values)


def _where(cls: type[Any], name: str) -> str:
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    meta = setting_of(f)
    if meta is None:
        return name
    if meta.option_name is None:
        return f"{name} ({meta.variable})"
    return f"{name} ({meta.option_name}, {meta.variable})"


def _check_positive(cls: type[Any], name: str, value: float | None, *, whole: bool) -> None:
    if value is None:
        return
    if whole:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"{_where(cls, name)} must be a whole number of at least 1, got {value!r}"
            )
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{_where(cls, name)} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"{_where(cls, name)} must be a finite number greater than 0, got {value!r}"
        )


def _check_choice(cls: type[Any], name: str, value: object, choices: Iterable[str]) -> None:
    allowed = tuple(choices)
    if value not in allowed:
        raise ConfigError(f"{_where(cls, name)} must be one of {', '.join(allowed)}, got {value!r}")


# --- the groups -------------------------------------------------------------------------
@dataclass(frozen=True)
class Providers:
    """What an agent without its own providers or greeting uses."""

    stt: Any = in_code(
        None, "Speech-to-text for agents without their own (object or 'provider/model')."
    )
    llm: Any = in_code(None, "LLM for agents without their own (object or 'provider/model').")
    tts: Any = in_code(
        None, "Text-to-speech for agents without their own (object or 'provider/model')."
    )
    greeting: str | None = setting(
        None,
        "OPENRTC_DEFAULT_GREETING",
        "What an agent without its own greeting says when a call starts (default: "
        "nothing; the caller speaks first).",
    )


DEFAULT_LOAD_THRESHOLD = 0.7
"""See `Limits.load_threshold`; docs/performance.md says how it was chosen."""


@dataclass(frozen=True)
class Limits:
    """When offers are refused: exact caps on live calls, and the measured load."""

    max_sessions: int | None = setting(
        None,
        "OPENRTC_MAX_CONCURRENT_SESSIONS",
        "Exact cap on live calls; offers past it are refused at once. Default: no cap.",
        min=1,
    )
    per_agent: int | None = setting(
        None,
        "OPENRTC_MAX_SESSIONS_PER_AGENT",
        "Exact cap on live calls of any one agent.",
        min=1,
    )
    per_tenant: int | None = setting(
        None,
        "OPENRTC_MAX_SESSIONS_PER_TENANT",
        "Exact cap on live calls of any one tenant (dispatch metadata 'tenant').",
        min=1,
    )
    load_threshold: float = setting(
        DEFAULT_LOAD_THRESHOLD,
        "OPENRTC_LOAD_THRESHOLD",
        "Measured load (0-1, from event-loop lag, the loop thread's CPU, VAD and "
        "end-of-turn backlogs and process CPU, smoothed) at which "
        "the worker reports itself full and refuses offers (reason overloaded); applies "
        "with or without a cap. 1: refuse only when a measure stays saturated.",
        min=0.01,
    )

    def __post_init__(self) -> None:
        for name in ("max_sessions", "per_agent", "per_tenant"):
            _check_positive(Limits, name, getattr(self, name), whole=True)
        threshold = self.load_threshold
        _check_positive(Limits, "load_threshold", threshold, whole=False)
        if threshold > 1:
            raise ConfigError(
                f"{_where(Limits, 'load_threshold')} must be greater than 0 and at most 1, "
                f"got {threshold!r}"
            )


@dataclass(frozen=True)
class DrainPolicy:
    """How long a drain waits for live calls, and a hung-up call for its session."""

    timeout: float = setting(
        1800.0,
        "OPENRTC_DRAIN_TIMEOUT",
        "Seconds a drain waits for live calls before cutting them (exit code 3).",
        min=0.001,
    )
    session_close_timeout: float = setting(
        15.0,
        "OPENRTC_SESSION_CLOSE_TIMEOUT",
        "Seconds a hung-up call may take to close its session before it is cut.",
        min=0.1,
    )
    observer_flush_timeout: float = setting(
        10.0,
        "OPENRTC_OBSERVER_FLUSH_TIMEOUT",
        "Seconds a stopping worker waits for session observers to finish their pending "
        "on_session_end calls; any still running then is abandoned and audited.",
        min=0.001,
    )

    def __post_init__(self) -> None:
        for name in ("timeout", "session_close_timeout", "observer_flush_timeout"):
            _check_positive(DrainPolicy, name, getattr(self, name), whole=False)


@dataclass(frozen=True)
class Deployment:
    """Which version this worker is, and the signed manifest that says if it is wanted."""

    version: str = setting(
        DEFAULT_VERSION,
        "OPENRTC_DEPLOYMENT_VERSION",
        "Version tag of this build, shown in snapshots, logs, metrics and audit events.",
    )
    manifest: str | None = setting(
        None,
        "OPENRTC_MANIFEST",
        "Signed manifest of active versions (file path or http(s) URL), polled; the "
        "secret comes from OPENRTC_MEMBERSHIP_SECRET(_FILE).",
    )
    membership_secret_file: Path | None = setting(
        None,
        "OPENRTC_MEMBERSHIP_SECRET_FILE",
        "File with the manifest's signing secret(s), one per line, or kid:secret lines "
        "(also OPENRTC_MEMBERSHIP_SECRET).",
    )
    membership_secrets: Any = in_code(
        None, "The manifest's signing secrets themselves (never logged).", repr=False
    )
    manifest_poll_interval: float = setting(
        5.0,
        "OPENRTC_MANIFEST_POLL_INTERVAL",
        "Seconds between manifest reads.",
        min=0.05,
    )
    drain_when_not_member: bool = setting(
        False,
        "OPENRTC_DRAIN_WHEN_NOT_MEMBER",
        "When the manifest drops this version: drain and exit, or wait for a rollback.",
        flag="--drain-when-not-member/--wait-when-not-member",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "version", (self.version or "").strip() or DEFAULT_VERSION)
        if self.manifest is not None and not str(self.manifest).strip():
            object.__setattr__(self, "manifest", None)
        _check_positive(
            Deployment, "manifest_poll_interval", self.manifest_poll_interval, whole=False
        )


@dataclass(frozen=True)
class Dispatch:
    """Which offers this worker answers, and who picks the agent for a call."""

    agent_name: str = setting(
        "",
        ("OPENRTC_AGENT_NAME", "LIVEKIT_AGENT_NAME"),
        "Register for explicit dispatch under this name (empty: automatic dispatch).",
    )
    accept_only_registered_rooms: bool = setting(
        False,
        "OPENRTC_ACCEPT_ONLY_REGISTERED_ROOMS",
        "Accept only jobs that name one of this pool's agents (no fallback agent).",
        flag="--accept-only-registered-rooms/--accept-any-room",
    )
    retry_budget: float = setting(
        130.0,
        "OPENRTC_DISPATCH_RETRY_BUDGET",
        "Seconds a worker with no live calls keeps retrying a lost dispatch server before "
        "it exits 1 (with live calls it retries until they end).",
        min=0.001,
    )
    router: Any = in_code(None, "router(job, agent_names) -> the agent that takes the call.")
    request_fnc: Any = in_code(
        None, "livekit's request_fnc(JobRequest): accept or reject after the pool admitted."
    )

    def __post_init__(self) -> None:
        _check_positive(Dispatch, "retry_budget", self.retry_budget, whole=False)


@dataclass(frozen=True)
class OpsEndpoint:
    """The operations endpoint (/healthz, /readyz, /metrics, /snapshot, POST /drain)."""

    host: str = setting(
        "127.0.0.1",
        "OPENRTC_HTTP_HOST",
        "Bind address of the operations endpoint (loopback unless you need more).",
    )
    port: int | None = setting(
        8081,
        "OPENRTC_HTTP_PORT",
        "Port of /healthz, /readyz, /metrics, /snapshot and POST /drain (0: any free).",
    )
    metrics_jsonl: Path | None = setting(
        None,
        "OPENRTC_METRICS_JSONL",
        "Append snapshots (every --metrics-jsonl-interval) and call start/end events here, "
        "one JSON a line.",
    )
    metrics_jsonl_interval: float = setting(
        5.0,
        "OPENRTC_METRICS_JSONL_INTERVAL",
        "Seconds between snapshots in the --metrics-jsonl file.",
        min=0.05,
    )

    def __post_init__(self) -> None:
        port = self.port
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535
        ):
            raise ConfigError(f"{_where(OpsEndpoint, 'port')} must be 0 to 65535, got {port!r}")
        _check_positive(
            OpsEndpoint, "metrics_jsonl_interval", self.metrics_jsonl_interval, whole=False
        )


@dataclass(frozen=True)
class Tenancy:
    """Whose calls these are: signed tenant claims, per-tenant settings, the breaker."""

    secret_file: Path | None = setting(
        None,
        "OPENRTC_TENANT_SECRET_FILE",
        "Accept only calls whose metadata carries a valid room-bound tenant claim "
        "(tenant_sig) signed with a key from this file of kid:secret lines (also "
        "OPENRTC_TENANT_SECRET).",
    )
    secret: str | bytes | Mapping[str, str | bytes] | None = in_code(
        None,
        "The claim key(s) themselves: a secret or kid -> secret (else OPENRTC_TENANT_SECRET; "
        "never logged).",
        repr=False,
    )
    settings: Mapping[str, Mapping[str, Any]] | Callable[[str], Any] | None = in_code(
        None, "Per-tenant providers (stt/llm/tts) and max_sessions: a mapping or tenant -> mapping."
    )
    unknown: UnknownTenant = setting(
        "refuse",
        "OPENRTC_UNKNOWN_TENANT",
        "A tenant missing from the tenant settings: refuse its calls, or use the defaults.",
    )
    breaker: bool = setting(
        False,
        "OPENRTC_TENANT_CIRCUIT_BREAKER",
        "Refuse a tenant's new calls for a cooldown after repeated failed calls.",
        flag="--tenant-circuit-breaker/--no-tenant-circuit-breaker",
    )
    breaker_failures: int = setting(
        5,
        "OPENRTC_BREAKER_FAILURES",
        "Failed calls within the window that open a tenant's breaker.",
        min=1,
    )
    breaker_window_s: float = setting(
        60.0,
        "OPENRTC_BREAKER_WINDOW_S",
        "Seconds over which failures are counted.",
        flag="--breaker-window",
        min=0.1,
    )
    breaker_cooldown_s: float = setting(
        30.0,
        "OPENRTC_BREAKER_COOLDOWN_S",
        "Seconds an open breaker refuses the tenant before one trial call.",
        flag="--breaker-cooldown",
        min=0.1,
    )

    def __post_init__(self) -> None:
        _check_choice(Tenancy, "unknown", self.unknown, get_args(UnknownTenant))
        _check_positive(Tenancy, "breaker_failures", self.breaker_failures, whole=True)
        for name in ("breaker_window_s", "breaker_cooldown_s"):
            _check_positive(Tenancy, name, getattr(self, name), whole=False)

    def claim_keys(self, environ: Mapping[str, str] | None = None) -> KeyRing | None:
        """The keys tenant claims are signed with: given, from the file, or the variable."""
        try:
            if self.secret is not None:
                return KeyRing(self.secret)
            if self.secret_file is not None:
                return KeyRing.from_file(self.secret_file, what="--tenant-secret-file")
            env = os.environ if environ is None else environ
            inline = env.get("OPENRTC_TENANT_SECRET", "")
            if not inline.strip():
                return None
            return KeyRing(parse_key_text(inline, "OPENRTC_TENANT_SECRET"))
        except ValueError as e:
            raise ConfigError(str(e)) from None


@dataclass(frozen=True)
class SelfProtection:
    """What the worker does when it is itself in trouble (memory, failures, slow code)."""

    memory_warn_mb: float | None = setting(
        None,
        "OPENRTC_MEMORY_WARN_MB",
        "Log a warning when the worker's USS crosses this many MiB.",
        min=1,
    )
    memory_limit_mb: float | None = setting(
        None,
        "OPENRTC_MEMORY_LIMIT_MB",
        "Drain (never cut calls) when the worker's USS crosses this many MiB.",
        min=1,
    )
    consecutive_failure_limit: int | None = setting(
        None,
        "OPENRTC_CONSECUTIVE_FAILURE_LIMIT",
        "Drain after this many failed calls in a row.",
        min=1,
    )
    slow_call_threshold_ms: float | None = setting(
        None,
        "OPENRTC_SLOW_CALL_THRESHOLD_MS",
        "Log the call whose code blocks the event loop longer than this.",
        min=1,
    )

    def __post_init__(self) -> None:
        for name in ("memory_warn_mb", "memory_limit_mb", "slow_call_threshold_ms"):
            _check_positive(SelfProtection, name, getattr(self, name), whole=False)
        _check_positive(
            SelfProtection, "consecutive_failure_limit", self.consecutive_failure_limit, whole=True
        )

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f.name) is not None for f in dataclasses.fields(self))


@dataclass(frozen=True)
class Runtime:
    """How calls run in this process: isolation, shared models, hot reload."""

    isolation: Isolation = setting(
        "coroutine",
        "OPENRTC_ISOLATION",
        "How calls run: coroutine (asyncio tasks in this process, shared models), "
        "thread or process (livekit-agents' own executors).",
    )
    shared_vad: bool | None = setting(
        None,
        "OPENRTC_SHARED_VAD",
        "One batched Silero VAD for every call in the process (much less CPU per call). "
        "Default: on with --isolation coroutine, off otherwise.",
        flag="--shared-vad/--no-shared-vad",
    )
    vad_runtime: VADRuntime = setting(
        "auto",
        "OPENRTC_VAD_RUNTIME",
        "Where the shared VAD runs Silero: auto (livekit's native runtime, about a third "
        "of the CPU, wherever it answers like the loaded model; else ONNX), native, or "
        "onnx (one batched ONNX call per tick, the model file's own runtime).",
    )
    shared_turn_detector: bool = setting(
        True,
        "OPENRTC_SHARED_TURN_DETECTOR",
        "One thread runs the end-of-turn model for every call in the process and skips "
        "predictions the caller made stale by speaking again. Off: livekit's own local "
        "turn detector, one thread-pool task per prediction.",
        flag="--shared-turn-detector/--no-shared-turn-detector",
    )
    prewarm_models: bool = setting(
        True,
        "OPENRTC_PREWARM_MODELS",
        "Load the VAD and end-of-turn models at start, once, for every call. Off: each "
        "agent brings its own (its session_kwargs), and none are loaded.",
        flag="--prewarm-models/--no-prewarm-models",
    )
    audio_input_rate: int = setting(
        16000,
        "OPENRTC_AUDIO_INPUT_RATE",
        "The sample rate (Hz) a call's audio reaches its session at from the room. 16000, "
        "the rate the VAD and the end-of-turn model run at, spares every frame a resampling "
        "on the event loop; livekit's own default is 24000. Raise it for an STT that wants "
        f"more (one of {', '.join(map(str, AUDIO_INPUT_RATES))}).",
    )
    processes: int | str = setting(
        1,
        "OPENRTC_PROCESSES",
        "`openrtc start` only: run this many worker processes (one event loop each, "
        "'auto': one per core), forked from one copy of the loaded models and "
        "supervised by one parent that serves the operations endpoint for all of them.",
    )
    event_loop: EventLoop = setting(
        "asyncio",
        "OPENRTC_EVENT_LOOP",
        "The event loop each worker process runs its calls on: asyncio (the standard "
        "library's) or uvloop (needs the uvloop package: pip install 'openrtc[uvloop]').",
    )
    cpu_sharing: int = in_code(
        1,
        "Worker processes sharing this box's cores (set for each child of a --processes "
        "worker): the measured load counts this process's CPU against its even share.",
    )
    hot_reload: bool = in_code(
        False, "Reload a saved agent file into live calls (`openrtc dev --watch`)."
    )
    watch_paths: tuple[Path, ...] = in_code(
        (), "More files or folders whose changes reload the agents (`--watch-path`)."
    )

    def __post_init__(self) -> None:
        _check_choice(Runtime, "isolation", self.isolation, ISOLATIONS)
        _check_choice(Runtime, "event_loop", self.event_loop, get_args(EventLoop))
        _check_choice(Runtime, "vad_runtime", self.vad_runtime, get_args(VADRuntime))
        rate = self.audio_input_rate
        if isinstance(rate, str) and rate.strip().isdigit():
            rate = int(rate)
        if isinstance(rate, bool) or rate not in AUDIO_INPUT_RATES:
            raise ConfigError(
                f"{_where(Runtime, 'audio_input_rate')} must be one of "
                f"{', '.join(map(str, AUDIO_INPUT_RATES))} (Hz), got {self.audio_input_rate!r}"
            )
        object.__setattr__(self, "audio_input_rate", rate)
        if self.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
            raise ConfigError(
                f"{_where(Runtime, 'event_loop')} uvloop needs the uvloop package, which is "
                "not installed: pip install 'openrtc[uvloop]'"
            )
        object.__setattr__(self, "processes", _processes(self.processes))
        if self.processes != 1 and self.isolation != "coroutine":
            raise ConfigError(
                f"{_where(Runtime, 'processes')} needs --isolation coroutine, "
                f"got {self.isolation!r}"
            )
        object.__setattr__(self, "watch_paths", tuple(Path(p) for p in self.watch_paths))

    @property
    def process_count(self) -> int:
        """How many worker processes `processes` asks for ('auto': the usable cores)."""
        if self.processes == "auto":
            return _usable_cores()
        assert isinstance(self.processes, int)
        return self.processes

    @property
    def uses_shared_vad(self) -> bool:
        """One batched VAD serves every call; default: with coroutine isolation."""
        return self.isolation == "coroutine" if self.shared_vad is None else self.shared_vad


SpoolFull = Literal["refuse", "drop"]


def _processes(value: object) -> int | str:
    """A process count as given (int or text): a whole number >= 1, or 'auto'."""
    text = value.strip().lower() if isinstance(value, str) else value
    if text == "auto":
        return "auto"
    if isinstance(text, str) and text.isdigit():
        text = int(text)
    if isinstance(text, bool) or not isinstance(text, int) or text < 1:
        raise ConfigError(
            f"{_where(Runtime, 'processes')} must be a whole number of at least 1 or 'auto', "
            f"got {value!r}"
        )
    return text


def _usable_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class AuditSettings:
    """Where audit events go: a sealed, hash-chained file, stdout for a log shipper, an
    HTTP collector (through an on-disk spool) and a callable; how durably."""

    path: Path | None = setting(
        None,
        "OPENRTC_AUDIT_PATH",
        "Append audit events to this chained JSON Lines file.",
    )
    key_file: Path | None = setting(
        None,
        "OPENRTC_AUDIT_KEY_FILE",
        "File of kid:secret lines sealing each audit record with HMAC-SHA256 (the first "
        "key signs, all verify); without it the chain shows accidents, not forgery.",
    )
    durability: AuditDurability = setting(
        "batch",
        "OPENRTC_AUDIT_DURABILITY",
        "batch: the writer thread syncs each batch of records to disk before moving the "
        "head; os: leave syncing to the operating system.",
    )
    refusal_interval_s: float = setting(
        10.0,
        "OPENRTC_AUDIT_REFUSAL_INTERVAL_S",
        "Identical refusals (same reason and source) within this many seconds are one "
        "audit record plus a count.",
        flag="--audit-refusal-interval",
        min=0.1,
    )
    sink: Any = in_code(
        None, "sink(AuditEvent) for every event (a failing sink is counted, never fatal)."
    )
    stdout: bool = setting(
        False,
        "OPENRTC_AUDIT_STDOUT",
        "Write every audit record as one marked JSON line on stdout, for a log shipper.",
        flag="--audit-stdout/--no-audit-stdout",
    )
    url: str | None = setting(
        None,
        "OPENRTC_AUDIT_URL",
        "POST audit records in order, in batches, to this http(s) collector; unacknowledged "
        "records wait in --audit-spool-dir.",
    )
    token_file: Path | None = setting(
        None,
        "OPENRTC_AUDIT_TOKEN_FILE",
        "File holding the bearer token sent to --audit-url (never logged).",
    )
    spool_dir: Path | None = setting(
        None,
        "OPENRTC_AUDIT_SPOOL_DIR",
        "Directory of the on-disk spool for --audit-url; each worker takes a free slot in it "
        "and resends what a stopped worker left there.",
    )
    spool_max_mb: float = setting(
        64.0,
        "OPENRTC_AUDIT_SPOOL_MAX_MB",
        "MiB of unacknowledged records the spool holds before it counts as full.",
        min=0.001,
    )
    spool_full: SpoolFull = setting(
        "refuse",
        "OPENRTC_AUDIT_SPOOL_FULL",
        "A full spool: refuse new calls (reason audit_backlog) and keep every record, or "
        "keep taking calls and drop new records (counted).",
    )
    retry_max: float = setting(
        10.0,
        "OPENRTC_AUDIT_RETRY_MAX",
        "Longest pause in seconds between retries of an unacknowledged batch.",
        min=0.05,
    )
    sink_timeout: float = setting(
        5.0,
        "OPENRTC_AUDIT_SINK_TIMEOUT",
        "Seconds one delivery to a sink may take before it counts as timed out.",
        min=0.05,
    )
    flush_timeout: float = setting(
        10.0,
        "OPENRTC_AUDIT_FLUSH_TIMEOUT",
        "Seconds a stopping worker waits for the collector to acknowledge its spool.",
        min=0.0,
    )

    def __post_init__(self) -> None:
        if self.url is not None and not str(self.url).strip():
            object.__setattr__(self, "url", None)
        url = self.url
        if url is not None:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{_where(AuditSettings, 'url')} must be an http(s) URL")
            if self.spool_dir is None:
                raise ConfigError(
                    f"{_where(AuditSettings, 'url')} needs {_where(AuditSettings, 'spool_dir')}"
                    " to keep records until the collector acknowledges them"
                )
        _check_choice(AuditSettings, "spool_full", self.spool_full, get_args(SpoolFull))
        _check_choice(AuditSettings, "durability", self.durability, get_args(AuditDurability))
        _check_positive(AuditSettings, "refusal_interval_s", self.refusal_interval_s, whole=False)
        for name in ("spool_max_mb", "retry_max", "sink_timeout"):
            _check_positive(AuditSettings, name, getattr(self, name), whole=False)
        flush = self.flush_timeout
        if (
            isinstance(flush, bool)
            or not isinstance(flush, int | float)
            or not (math.isfinite(flush) and flush >= 0)
        ):
            raise ConfigError(
                f"{_where(AuditSettings, 'flush_timeout')} must be a number of at least 0, "
                f"got {flush!r}"
            )

    def bearer_token(self) -> str | None:
        """The collector's bearer token, read from its file (None without one)."""
        if self.token_file is None:
            return None
        try:
            token = self.token_file.read_text().strip()
        except OSError as e:
            raise ConfigError(
                f"cannot read --audit-token-file {self.token_file}: {e.strerror}"
            ) from None
        if not token:
            raise ConfigError(f"--audit-token-file {self.token_file} is empty")
        return token

    def keys(self) -> KeyRing | None:
        """The audit keys from `key_file`, or None (a plain chain)."""
        if self.key_file is None:
            return None
        try:
            return KeyRing.from_file(self.key_file, what="--audit-key-file")
        except ValueError as e:
            raise ConfigError(str(e)) from None


GROUPS: dict[str, type[Any]] = {
    "providers": Providers,
    "limits": Limits,
    "drain": DrainPolicy,
    "deployment": Deployment,
    "dispatch": Dispatch,
    "ops": OpsEndpoint,
    "tenancy": Tenancy,
    "protection": SelfProtection,
    "runtime": Runtime,
    "audit": AuditSettings,
}


@dataclass(frozen=True)
class PoolConfig:
    """Every setting of a pool, one group per concern."""

    providers: Providers = field(default_factory=Providers)
    limits: Limits = field(default_factory=Limits)
    drain: DrainPolicy = field(default_factory=DrainPolicy)
    deployment: Deployment = field(default_factory=Deployment)
    dispatch: Dispatch = field(default_factory=Dispatch)
    ops: OpsEndpoint = field(default_factory=OpsEndpoint)
    tenancy: Tenancy = field(default_factory=Tenancy)
    protection: SelfProtection = field(default_factory=SelfProtection)
    runtime: Runtime = field(default_factory=Runtime)
    audit: AuditSettings = field(default_factory=AuditSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **groups: Any) -> PoolConfig:
        """Every group from its `OPENRTC_*` variables, except the groups given here."""
        env = os.environ if environ is None else environ
        unknown = set(groups) - set(GROUPS)
        if unknown:
            raise TypeError(f"not config groups: {', '.join(sorted(unknown))}")
        return cls(
            **{
                name: groups[name] if name in groups else group_from_env(group, env)
                for name, group in GROUPS.items()
            }
        )

    def replace(self, group: str, **changes: Any) -> PoolConfig:
        """A copy with some fields of one group changed (validated again)."""
        current = getattr(self, group)
        return dataclasses.replace(self, **{group: dataclasses.replace(current, **changes)})


def settings() -> Iterator[tuple[str, dataclasses.Field[Any], Setting]]:
    """Every (group name, field, setting) an operator can set, in declaration order."""
    for name, group in GROUPS.items():
        for f in dataclasses.fields(group):
            meta = setting_of(f)
            if meta is not None:
                yield name, f, meta


def field_type(group: str, name: str) -> Any:
    return _hints(GROUPS[group])[name]
