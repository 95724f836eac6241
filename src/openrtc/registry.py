"""The agents a pool can run: their names, classes and per-agent providers."""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, TypeVar

from livekit.agents import Agent

from .errors import AgentLoadError, RegistrationError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_CONFIG_ATTR = "__openrtc_config__"

A = TypeVar("A", bound=type[Agent])


@dataclass(frozen=True)
class AgentConfig:
    """What `@agent_config` attaches to a class; every field is optional."""

    name: str | None = None
    stt: Any = None
    llm: Any = None
    tts: Any = None
    greeting: str | None = None
    session_kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentSpec:
    """One registered agent. Provider slots left None fall back to the pool defaults."""

    name: str
    agent_cls: type[Agent]
    stt: Any = None
    llm: Any = None
    tts: Any = None
    greeting: str | None = None
    session_kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    source: Path | None = None


def agent_config(
    *,
    name: str | None = None,
    stt: Any = None,
    llm: Any = None,
    tts: Any = None,
    greeting: str | None = None,
    session_kwargs: Mapping[str, Any] | None = None,
) -> Callable[[A], A]:
    """Attach registration settings to an Agent subclass found by `AgentPool.discover`."""

    def decorate(cls: A) -> A:
        setattr(
            cls,
            _CONFIG_ATTR,
            AgentConfig(name, stt, llm, tts, greeting, dict(session_kwargs or {})),
        )
        return cls

    return decorate


def config_of(cls: type[Agent]) -> AgentConfig:
    cfg = cls.__dict__.get(_CONFIG_ATTR)
    return cfg if isinstance(cfg, AgentConfig) else AgentConfig()


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise RegistrationError("agent name must be a non-empty string")
    if not _NAME_RE.match(name):
        raise RegistrationError(
            f"agent name {name!r} may only hold letters, digits, '_', '-' and '.', "
            "and must start with a letter or digit"
        )
    return name


def validate_agent_class(name: str, cls: object) -> type[Agent]:
    if not (inspect.isclass(cls) and issubclass(cls, Agent)):
        raise RegistrationError(
            f"agent {name!r} must be a subclass of livekit.agents.Agent, got {cls!r}"
        )
    return cls


class Registry:
    """Ordered name -> AgentSpec map; the first registered agent is the fallback route."""

    def __init__(self) -> None:
        self._specs: dict[str, AgentSpec] = {}

    def add(self, spec: AgentSpec) -> AgentSpec:
        validate_name(spec.name)
        validate_agent_class(spec.name, spec.agent_cls)
        if spec.name in self._specs:
            raise RegistrationError(
                f"an agent named {spec.name!r} is already registered; pick another name"
            )
        self._specs[spec.name] = spec
        return spec

    def replace_class(self, name: str, cls: type[Agent]) -> AgentSpec:
        """Swap the class behind a name (hot reload); the name keeps its settings."""
        spec = replace(self.get(name), agent_cls=validate_agent_class(name, cls))
        self._specs[name] = spec
        return spec

    def remove(self, name: str) -> AgentSpec:
        try:
            return self._specs.pop(name)
        except KeyError:
            raise RegistrationError(f"no agent named {name!r} is registered") from None

    def get(self, name: str) -> AgentSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise RegistrationError(f"no agent named {name!r} is registered") from None

    def names(self) -> list[str]:
        return list(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[AgentSpec]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)


def import_agent_file(path: Path, *, module_name: str | None = None) -> ModuleType:
    """Import one agent file into a fresh module object (not left in sys.modules).

    Compiled from the source every time, never from a cached .pyc: an edit saved within
    the same second as the last import (hot reload) must not load the old bytecode.
    """
    name = module_name or f"openrtc_agents.{path.stem}"
    module = ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    try:
        try:
            source = path.read_bytes()
        except OSError as e:
            raise AgentLoadError(f"{path} cannot be read: {e.strerror}") from None
        exec(compile(source, str(path), "exec"), module.__dict__)
    except SyntaxError as e:
        raise AgentLoadError(f"{e.filename}:{e.lineno}: syntax error: {e.msg}") from e
    except Exception as e:
        line = failing_line(e, path)
        raise AgentLoadError(f"{path}{line}: importing failed: {type(e).__name__}: {e}") from e
    finally:
        sys.modules.pop(name, None)
    return module


def failing_line(exc: BaseException, path: Path) -> str:
    """The suffix ":N" for the last line of `path` in exc's traceback, or "" if it is absent."""
    tb = exc.__traceback__
    line = ""
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename) == path:
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    return line


def agent_class_in(module: ModuleType, path: Path) -> type[Agent]:
    """The one Agent subclass a file defines (a decorated one wins over the others)."""
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Agent)
        and obj is not Agent
        and obj.__module__ == module.__name__
    ]
    decorated = [c for c in found if _CONFIG_ATTR in c.__dict__]
    candidates = decorated or found
    if not candidates:
        raise AgentLoadError(f"{path} defines no livekit.agents.Agent subclass")
    if len(candidates) > 1:
        names = ", ".join(c.__name__ for c in candidates)
        raise AgentLoadError(
            f"{path} defines several agents ({names}); mark the one to register "
            "with @agent_config or keep one agent per file"
        )
    return candidates[0]


def agent_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise AgentLoadError(f"{directory} is not a directory of agent files")
    return sorted(
        p for p in directory.glob("*.py") if not p.name.startswith(("_", ".")) and p.is_file()
    )


def spec_from_file(path: Path) -> AgentSpec:
    module = import_agent_file(path)
    cls = agent_class_in(module, path)
    cfg = config_of(cls)
    return AgentSpec(
        name=cfg.name or path.stem,
        agent_cls=cls,
        stt=cfg.stt,
        llm=cfg.llm,
        tts=cfg.tts,
        greeting=cfg.greeting,
        session_kwargs=MappingProxyType(dict(cfg.session_kwargs)),
        source=path.resolve(),
    )
