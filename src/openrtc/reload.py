"""Hot reload: a saved agent file takes over its live calls on their next turn.

In coroutine (or thread) isolation every call's agent lives in this process, so a saved
file can be imported afresh, checked and swapped in without dropping a call. New calls
start on the new class at once; each live call of that agent moves to it once its turn
in progress is over (the reply in flight finishes on the old code), keeping its history.
A save that does not compile, import or still define the agent changes nothing and is
reported with its file and line.

A reload continues the call rather than handing it off: the new agent's `on_enter` and
the old one's `on_exit` do not run (they would greet or say goodbye again). Per-call
state kept on the agent instance starts fresh; state in `session.userdata` carries over.
`pin_reload(session)` keeps one call on its class while a block runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from livekit.agents import Agent
from livekit.agents.llm import AgentHandoff
from watchfiles import Change, DefaultFilter, awatch

from . import _lk
from .errors import AgentLoadError
from .registry import agent_class_in, config_of, failing_line, import_agent_file

if TYPE_CHECKING:
    from .pool import AgentPool
    from .sessions import SessionInfo, SessionOutcome

logger = logging.getLogger("openrtc.reload")

IDLE_AGENT_STATES = frozenset({"listening", "idle"})
"""Agent states between turns: a call in one of them can change agent class."""
HANDOFF_TIMEOUT = 5.0
"""Seconds a moved call may take to start its new agent before the move is logged late."""


# --- pins ---------------------------------------------------------------------------------
class _PinBoard:
    """How many pins each session holds, and who to tell when the last one goes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holds: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._listeners: weakref.WeakKeyDictionary[Any, list[Callable[[], None]]] = (
            weakref.WeakKeyDictionary()
        )

    def hold(self, session: Any) -> None:
        with self._lock:
            self._holds[session] = self._holds.get(session, 0) + 1

    def release(self, session: Any) -> None:
        with self._lock:
            left = self._holds.get(session, 0) - 1
            if left > 0:
                self._holds[session] = left
                return
            self._holds.pop(session, None)
            listeners = list(self._listeners.get(session, ()))
        for listener in listeners:
            listener()

    def pinned(self, session: Any) -> bool:
        with self._lock:
            return self._holds.get(session, 0) > 0

    def listen(self, session: Any, listener: Callable[[], None]) -> Callable[[], None]:
        """Call listener() whenever the session's last pin is released; returns an undo."""
        with self._lock:
            self._listeners.setdefault(session, []).append(listener)

        def undo() -> None:
            with self._lock:
                listeners = self._listeners.get(session, [])
                if listener in listeners:
                    listeners.remove(listener)

        return undo


_PINS = _PinBoard()


class ReloadPin:
    """Keeps one call on its current agent class while held; see `pin_reload`."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._holds = 0

    def __enter__(self) -> ReloadPin:
        _PINS.hold(self._session)
        self._holds += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> ReloadPin:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def release(self) -> None:
        """Let go of one hold; when the call's last pin goes, a pending reload applies."""
        if self._holds > 0:
            self._holds -= 1
            _PINS.release(self._session)


def pin_reload(session: Any) -> ReloadPin:
    """Keep this call's agent class across reloads until the block exits.

    Use `with pin_reload(session): ...` or `async with`; a reload saved meanwhile moves
    the call once the last pin on it is released and its turn is over.
    """
    return ReloadPin(session)


def is_reload_pinned(session: Any) -> bool:
    return _PINS.pinned(session)


# --- loading ------------------------------------------------------------------------------
def _new_instance(cls: type[Agent]) -> Agent:
    return cast(Callable[[], Agent], cls)()


def load_replacement(path: Path, running: type[Agent]) -> type[Agent]:
    """Import `path` afresh and return its agent class, checked to replace `running`.

    Raises AgentLoadError ("file:line: what") when the file does not compile or import,
    defines no agent (or a differently named one), or its class cannot be constructed.
    """
    cls = agent_class_in(import_agent_file(path), path)
    was = config_of(running).name or path.stem
    now = config_of(cls).name or path.stem
    if now != was:
        raise AgentLoadError(
            f"{path}: the file now defines agent {now!r} instead of {was!r}; "
            "restart the worker to rename an agent"
        )
    try:
        _new_instance(cls)
    except Exception as e:
        raise AgentLoadError(
            f"{path}{failing_line(e, path)}: {cls.__name__}() raised {type(e).__name__}: {e}"
        ) from None
    return cls


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


# --- moving one live call -----------------------------------------------------------------
def _current_agent(session: Any) -> Agent | None:
    try:
        agent = session.current_agent
    except RuntimeError:
        return None
    return agent if isinstance(agent, Agent) else None


def _between_turns(session: Any) -> bool:
    return (
        session.agent_state in IDLE_AGENT_STATES
        and session.user_state != "speaking"
        and session.current_speech is None
    )


class _CallMove:
    """Moves one live call to the latest class of its agent at its next turn boundary.

    Runs on the call's own loop; retarget() and poke() are safe from any thread.
    """

    def __init__(
        self,
        job_id: str,
        session: Any,
        loop: asyncio.AbstractEventLoop,
        lineage: set[type[Agent]],
        target: type[Agent],
    ) -> None:
        self.job_id = job_id
        self.session = session
        self.loop = loop
        self.lineage = lineage
        self.target = target
        self.pinned = False
        self.ended = False
        self.moves = 0
        self.done: asyncio.Future[str] | None = None
        self._wake: asyncio.Event | None = None

    def retarget(self, cls: type[Agent]) -> None:
        self.target = cls
        self.poke()

    def poke(self) -> None:
        wake = self._wake
        if wake is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(wake.set)

    def end(self) -> None:
        self.ended = True
        self.poke()

    async def run(self) -> str:
        """Returns "moved", "current" (already on it), "other", "ended" or "failed"."""
        session = self.session
        wake = self._wake = asyncio.Event()

        def on_change(_ev: Any) -> None:
            wake.set()

        def on_close(_ev: Any) -> None:
            self.ended = True
            wake.set()

        events = ("agent_state_changed", "user_state_changed", "speech_created")
        for name in events:
            session.on(name, on_change)
        session.on("close", on_close)
        unlisten = _PINS.listen(session, self.poke)
        try:
            while not self.ended:
                wake.clear()
                self.pinned = _PINS.pinned(session)
                agent = None if self.pinned else _current_agent(session)
                if agent is not None:
                    if type(agent) is self.target:
                        return "moved" if self.moves else "current"
                    if type(agent) not in self.lineage:
                        return "other"
                    if _between_turns(session):
                        try:
                            await self._swap(agent, self.target)
                        except Exception as e:
                            logger.warning(
                                "hot reload could not move call %s, it stays on its agent: %s: %s",
                                self.job_id,
                                type(e).__name__,
                                e,
                            )
                            return "failed"
                        continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 0.25)
            return "ended"
        finally:
            unlisten()
            for name in events:
                session.off(name, on_change)
            session.off("close", on_close)

    async def _swap(self, old: Agent, cls: type[Agent]) -> None:
        session = self.session
        new = _new_instance(cls)
        # with no activity yet this only copies the history; it never suspends
        await new.update_chat_ctx(old.chat_ctx.copy())
        if _current_agent(session) is not old or not _between_turns(session) or self.ended:
            return
        if _PINS.pinned(session):
            return
        _lk.skip_agent_hooks(old, new)
        handed = asyncio.Event()

        def on_item(ev: Any) -> None:
            if isinstance(getattr(ev, "item", None), AgentHandoff):
                handed.set()

        session.on("conversation_item_added", on_item)
        try:
            session.update_agent(new)
            self.moves += 1
            logger.debug("call %s moves to the reloaded %s", self.job_id, cls.__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(handed.wait(), HANDOFF_TIMEOUT)
        finally:
            session.off("conversation_item_added", on_item)


# --- the reloader -------------------------------------------------------------------------
@dataclass(frozen=True)
class ReloadEvent:
    """One save of one file: what was swapped and how many live calls moved.

    swap_ms is the import, check and swap; duration_ms runs until every live call moved,
    ended or was found pinned (pinned calls move later, when unpinned).
    """

    path: str
    ok: bool
    agents: tuple[str, ...] = ()
    moved: int = 0
    pinned: int = 0
    waiting: int = 0
    error: str | None = None
    swap_ms: float = 0.0
    duration_ms: float = 0.0
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "agents": list(self.agents),
            "moved": self.moved,
            "pinned": self.pinned,
            "waiting": self.waiting,
            "error": self.error,
            "swap_ms": round(self.swap_ms, 1),
            "duration_ms": round(self.duration_ms, 1),
            "at": self.at,
        }


@dataclass
class _Swapped:
    path: Path
    names: list[str]
    moves: list[_CallMove]
    swap_ms: float


class _Observer:
    """Learns each call's event loop (thread isolation runs calls on their own loops)."""

    def __init__(self, reloader: HotReloader) -> None:
        self._reloader = reloader

    async def on_session_start(self, info: SessionInfo, session: Any) -> None:
        self._reloader.loops[info.job_id] = asyncio.get_running_loop()

    async def on_session_end(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        return None


class HotReloader:
    """Watches a pool's agent files and swaps saved ones into new and live calls.

    Watched: every registered agent's source file, plus `pool.config.runtime.watch_paths` (files or
    directories; a change there re-imports every agent file). `events` keeps the recent
    reloads and `last_error` the latest rejected save (None once a save loads again).
    """

    def __init__(
        self,
        pool: AgentPool,
        *,
        debounce_ms: int = 200,
        move_timeout: float = 10.0,
        history: int = 100,
    ) -> None:
        self.pool = pool
        self.debounce_ms = debounce_ms
        self.move_timeout = move_timeout
        self.events: deque[ReloadEvent] = deque(maxlen=history)
        self.last_error: str | None = None
        self.loops: dict[str, asyncio.AbstractEventLoop] = {}
        self.watching = False
        self._lineage: dict[str, set[type[Agent]]] = {}
        self._digests: dict[Path, bytes | None] = {}
        self._moves: dict[str, _CallMove] = {}
        self._observer = _Observer(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    # --- what is watched ------------------------------------------------------------
    def agent_files(self) -> dict[Path, list[str]]:
        """Each watched agent file and the registered agents it defines."""
        files: dict[Path, list[str]] = {}
        for spec in self.pool.registry:
            if spec.source is not None:
                files.setdefault(Path(spec.source).resolve(), []).append(spec.name)
        return files

    def _extra_paths(self) -> list[Path]:
        return [Path(p).resolve() for p in self.pool.config.runtime.watch_paths]

    def _roots(self) -> list[Path]:
        roots = {p.parent for p in self.agent_files()}
        roots.update(p for p in self._extra_paths() if p.exists())
        return sorted(roots)

    def _is_extra(self, path: Path) -> bool:
        return any(path == p or p in path.parents for p in self._extra_paths())

    # --- running ------------------------------------------------------------------------
    async def start(self) -> None:
        """Begin watching; with process isolation, warn and do nothing."""
        if self._watch_task is not None:
            return
        if self.pool.isolation == "process":
            logger.warning(
                "hot reload is off: with isolation 'process' each call runs in its own "
                "process, which a reload cannot reach; use isolation 'coroutine' for it"
            )
            return
        self._loop = asyncio.get_running_loop()
        for spec in self.pool.registry:
            self._lineage.setdefault(spec.name, set()).add(spec.agent_cls)
        for path in self.agent_files():
            self._digests[path] = _digest(path)
        if self._observer not in self.pool.observers:
            self.pool.add_observer(self._observer)
        self.pool.add_end_listener(self._on_call_end)
        roots = self._roots()
        if not roots:
            logger.warning(
                "hot reload has nothing to watch: register agents with pool.discover() "
                "or set watch_paths"
            )
            return
        self._watch_task = asyncio.create_task(self._watch(roots), name="openrtc_hot_reload")
        await asyncio.sleep(0)  # awatch sets its watches up before its first await
        self.watching = True
        extra = self._extra_paths()
        logger.info(
            "hot reload watching %d agent file(s)%s",
            len(self._digests),
            f" and {len(extra)} extra path(s)" if extra else "",
        )

    async def aclose(self) -> None:
        self._closed = True
        self._stop.set()
        if self._watch_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._watch_task, 2.0)
            if not self._watch_task.done():
                self._watch_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        for move in list(self._moves.values()):
            move.end()
        if self._observer in self.pool.observers:
            self.pool.observers.remove(self._observer)
        self.watching = False

    async def __aenter__(self) -> HotReloader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _on_call_end(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        self.loops.pop(info.job_id, None)
        move = self._moves.pop(info.job_id, None)
        if move is not None:
            move.end()

    def status(self) -> dict[str, Any]:
        """What the reloader watches and how its recent reloads went (for dashboards)."""
        return {
            "watching": self.watching,
            "files": [str(p) for p in self.agent_files()],
            "last_error": self.last_error,
            "reloads": [e.to_dict() for e in self.events],
        }

    async def _watch(self, roots: list[Path]) -> None:
        base = DefaultFilter()

        def wanted(change: Change, raw: str) -> bool:
            path = Path(raw).resolve()
            return base(change, raw) and (path in self.agent_files() or self._is_extra(path))

        try:
            async for changes in awatch(
                *roots,
                watch_filter=wanted,
                debounce=self.debounce_ms,
                step=50,
                stop_event=self._stop,
            ):
                self._spawn(self.apply_changes(changes))
        except Exception as e:
            logger.error("hot reload stopped watching: %s: %s", type(e).__name__, e)
            self.watching = False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def apply_changes(self, changes: Iterable[tuple[Change, str]]) -> list[ReloadEvent]:
        """Reload what one batch of file changes touched."""
        touched, extra = self._sort_changes(changes)
        if extra:
            self._forget_modules(extra)
            return await self.reload(self.agent_files(), force=True)
        return await self.reload(touched)

    def _sort_changes(self, changes: Iterable[tuple[Change, str]]) -> tuple[set[Path], set[Path]]:
        files = self.agent_files()
        touched: set[Path] = set()
        extra: set[Path] = set()
        for change, raw in changes:
            path = Path(raw).resolve()
            if path in files:
                if change == Change.deleted and not path.exists():
                    self._reject(path, f"{path}: the file was deleted; the running agent stays")
                else:
                    touched.add(path)
            elif self._is_extra(path):
                extra.add(path)
        return touched, extra

    def _forget_modules(self, paths: set[Path]) -> None:
        """Drop imported helper modules that changed, so agent files import them afresh."""
        for name, module in list(sys.modules.items()):
            origin = getattr(module, "__file__", None)
            if origin and Path(origin).resolve() in paths:
                sys.modules.pop(name, None)

    async def reload(self, paths: Iterable[Path], *, force: bool = False) -> list[ReloadEvent]:
        """Validate and swap each agent file, then wait (bounded) for live calls to move.

        Unchanged files are skipped unless `force`; one event and log line per file.
        """
        started = time.monotonic()
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        swapped = self._swap_files(paths, force)
        return [await self._settle(item, started) for item in swapped]

    def _swap_files(self, paths: Iterable[Path], force: bool) -> list[_Swapped]:
        """Import, check and swap each file in one go, with no await in between."""
        files = self.agent_files()
        swapped: list[_Swapped] = []
        for raw in paths:
            began = time.monotonic()
            path = Path(raw).resolve()
            names = files.get(path)
            if not names:
                continue
            digest = _digest(path)
            if not force and digest is not None and digest == self._digests.get(path):
                continue
            try:
                classes = {
                    n: load_replacement(path, self.pool.registry.get(n).agent_cls) for n in names
                }
            except AgentLoadError as e:
                self._reject(path, str(e))
                continue
            except Exception as e:
                self._reject(path, f"{path}{failing_line(e, path)}: {type(e).__name__}: {e}")
                continue
            self._digests[path] = digest
            moves: list[_CallMove] = []
            for name, cls in classes.items():
                lineage = self._lineage.setdefault(name, set())
                lineage.update((self.pool.registry.get(name).agent_cls, cls))
                self.pool.registry.replace_class(name, cls)
                moves.extend(self._schedule_moves(name, cls))
            self.last_error = None
            swapped.append(_Swapped(path, names, moves, (time.monotonic() - began) * 1000.0))
        return swapped

    def _reject(self, path: Path, error: str) -> None:
        self.last_error = error
        self.events.append(ReloadEvent(path=str(path), ok=False, error=error))
        logger.error("hot reload rejected, the running agent stays: %s", error)

    def _schedule_moves(self, name: str, cls: type[Agent]) -> list[_CallMove]:
        lineage = self._lineage[name]
        moves = []
        for live in self.pool.live_sessions():
            session = live.session
            if session is None:
                continue  # not built yet: it reads the registry when it starts
            agent = _current_agent(session)
            if agent is None and live.info.agent != name:
                continue
            if agent is not None and type(agent) not in lineage:
                continue
            move = self._moves.get(live.info.job_id)
            if move is not None and move.done is not None and not move.done.done():
                if move.lineage is lineage:
                    move.retarget(cls)
                    moves.append(move)
                continue
            loop = self.loops.get(live.info.job_id)
            if loop is None and self.pool.isolation == "coroutine":
                loop = self._loop
            if loop is None or loop.is_closed():
                logger.debug("hot reload cannot reach call %s yet", live.info.job_id)
                continue
            move = _CallMove(live.info.job_id, session, loop, lineage, cls)
            if not self._launch(move):
                continue
            self._moves[live.info.job_id] = move
            moves.append(move)
        return moves

    def _launch(self, move: _CallMove) -> bool:
        if move.loop is self._loop:
            move.done = asyncio.ensure_future(move.run())
            return True
        try:
            future = asyncio.run_coroutine_threadsafe(move.run(), move.loop)
        except RuntimeError:
            return False
        move.done = asyncio.wrap_future(future)
        return True

    async def _settle(self, swapped: _Swapped, started: float) -> ReloadEvent:
        """Wait until every call moved, ended or is pinned (at most move_timeout)."""
        moves = swapped.moves
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.move_timeout
        while True:
            pending = [m.done for m in moves if m.done is not None and not m.done.done()]
            unpinned = [m.done for m in moves if m.done in pending and not m.pinned]
            remaining = deadline - loop.time()
            if not unpinned or remaining <= 0:
                break
            await asyncio.wait(unpinned, timeout=min(0.1, remaining))
        moved = sum(1 for m in moves if m.moves)
        pinned = sum(1 for m in moves if m.done is not None and not m.done.done() and m.pinned)
        waiting = sum(1 for m in moves if m.done is not None and not m.done.done()) - pinned
        event = ReloadEvent(
            path=str(swapped.path),
            ok=True,
            agents=tuple(swapped.names),
            moved=moved,
            pinned=pinned,
            waiting=waiting,
            swap_ms=swapped.swap_ms,
            duration_ms=(time.monotonic() - started) * 1000.0,
        )
        self.events.append(event)
        logger.info(
            "hot reload %s: agent(s) %s swapped in %.0f ms; %d live call(s) moved at their "
            "next turn%s%s, %.0f ms after the save",
            swapped.path,
            ", ".join(swapped.names),
            event.swap_ms,
            moved,
            f", {pinned} pinned (they move when unpinned)" if pinned else "",
            f", {waiting} still mid-turn" if waiting else "",
            event.duration_ms,
        )
        return event
