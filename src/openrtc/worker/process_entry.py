"""Process isolation: what a job process needs to rebuild the pool's agents by itself.

livekit-agents pickles the entrypoint into each job process. The pool itself holds
locks, the loop and the server, so what crosses is a blueprint: each agent's file (or
importable class) and its provider settings, rebuilt once per job process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livekit.agents import JobContext

from ..config import Deployment, OpsEndpoint, PoolConfig
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..pool import AgentPool


@dataclass(frozen=True)
class AgentBlueprint:
    name: str
    source: Path | None
    module: str
    qualname: str
    stt: Any
    llm: Any
    tts: Any
    greeting: str | None
    session_kwargs: dict[str, Any]


@dataclass(frozen=True)
class PoolBlueprint:
    agents: tuple[AgentBlueprint, ...]
    config: PoolConfig


def blueprint_of(pool: AgentPool) -> PoolBlueprint:
    agents = tuple(
        AgentBlueprint(
            name=s.name,
            source=s.source,
            module=s.agent_cls.__module__,
            qualname=s.agent_cls.__qualname__,
            stt=None if s.source else s.stt,
            llm=None if s.source else s.llm,
            tts=None if s.source else s.tts,
            greeting=s.greeting,
            session_kwargs=dict(s.session_kwargs),
        )
        for s in pool.registry
    )
    blueprint = PoolBlueprint(
        agents=agents,
        config=_for_job_process(pool.config),
    )
    try:
        pickle.dumps(blueprint)
    except Exception as e:
        raise ConfigError(
            "isolation='process' needs agents and providers that can be sent to a job "
            f"process (pickled): {e}; use agents discovered from files, or coroutine isolation"
        ) from None
    return blueprint


def _for_job_process(config: PoolConfig) -> PoolConfig:
    """The settings a job process runs a call with: providers, models, version.

    Everything the parent alone does (admission, tenancy, audit, the endpoint, the
    manifest) is left at its default, so a job process neither serves nor audits.
    """
    return PoolConfig(
        providers=config.providers,
        deployment=Deployment(version=config.deployment.version),
        drain=config.drain,
        runtime=dataclasses.replace(config.runtime, hot_reload=False, watch_paths=()),
        ops=OpsEndpoint(port=None),
    )


_built: dict[bytes, AgentPool] = {}


def _pool_in_this_process(blueprint: PoolBlueprint) -> AgentPool:
    key = hashlib.sha256(pickle.dumps(blueprint)).digest()
    if key not in _built:
        _built[key] = _build(blueprint)
    return _built[key]


def _build(blueprint: PoolBlueprint) -> AgentPool:
    from ..pool import AgentPool
    from ..registry import spec_from_file

    pool = AgentPool(config=blueprint.config)
    for a in blueprint.agents:
        if a.source is not None:
            spec = spec_from_file(a.source)
            pool.registry.add(spec)
            continue
        cls = importlib.import_module(a.module)
        for part in a.qualname.split("."):
            cls = getattr(cls, part)
        pool.add(
            a.name,
            cls,  # type: ignore[arg-type]
            stt=a.stt,
            llm=a.llm,
            tts=a.tts,
            greeting=a.greeting,
            session_kwargs=a.session_kwargs,
        )
    return pool


async def process_entrypoint(blueprint: PoolBlueprint, ctx: JobContext) -> None:
    from .. import _lk
    from .call import run_call

    # the parent decided the agent at admission; it accepted with that name
    agent = _lk.accepted_agent(ctx, from_name=True)
    await run_call(_pool_in_this_process(blueprint), ctx, agent=agent)
