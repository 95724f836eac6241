"""OpenRTC: many LiveKit voice agents in one worker, deployed without dropping a call."""

from __future__ import annotations

from typing import Any

from .admission import RejectReason
from .errors import AgentLoadError, ConfigError, OpenRTCError, RegistrationError
from .lifecycle import WorkerState
from .pool import AgentPool, install_program
from .registry import AgentSpec, agent_config
from .sessions import Outcome, SessionInfo, SessionObserver, SessionOutcome
from .snapshot import RuntimeSnapshot

__version__ = "0.1.0"


def _run_program(pool: AgentPool, argv: list[str] | None) -> None:
    """`pool.run()`: the pool's own program, the `openrtc` commands for one pool."""
    from .cli.pool_app import run_pool

    run_pool(pool, argv)


install_program(_run_program)

_LAZY = {
    "AuditEvent": "openrtc.audit",
    "AuditLog": "openrtc.audit",
    "verify_chain": "openrtc.audit",
    "sign_membership": "openrtc.deploy.membership",
    "MembershipVerifier": "openrtc.deploy.membership",
    "MembershipError": "openrtc.deploy.membership",
    "sign_manifest": "openrtc.deploy.manifest",
    "verify_manifest": "openrtc.deploy.manifest",
    "Manifest": "openrtc.deploy.manifest",
    "ManifestError": "openrtc.deploy.manifest",
    "current_tenant_id": "openrtc.tenancy",
    "pin_reload": "openrtc.reload",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'openrtc' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "AgentLoadError",
    "AgentPool",
    "AgentSpec",
    "ConfigError",
    "OpenRTCError",
    "Outcome",
    "RegistrationError",
    "RejectReason",
    "RuntimeSnapshot",
    "SessionInfo",
    "SessionObserver",
    "SessionOutcome",
    "WorkerState",
    "agent_config",
    *_LAZY,
]
