"""Keeps a worker's membership in step with the signed manifest of active versions.

Fail closed: until a manifest verifies, the worker is not a member (it takes no new
calls); a refused manifest is logged and audited and the last valid one stays in force.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..config import Deployment
from ..errors import ConfigError
from .membership import load_secrets

if TYPE_CHECKING:
    from ..pool import AgentPool

logger = logging.getLogger("openrtc.deploy.membership")


def manifest_secrets(deployment: Deployment, environ: Mapping[str, str] | None = None) -> Any:
    """The secrets the manifest is signed with: given in Python, a file, or the variable."""
    if deployment.membership_secrets is not None:
        return deployment.membership_secrets
    env = os.environ if environ is None else environ
    path = deployment.membership_secret_file
    if path is not None:
        if env.get("OPENRTC_MEMBERSHIP_SECRET", "").strip():
            raise ConfigError(
                "both OPENRTC_MEMBERSHIP_SECRET and a membership secret file "
                "(--membership-secret-file or OPENRTC_MEMBERSHIP_SECRET_FILE) are set; "
                "set only one of them"
            )
        try:
            return load_secrets(path=path)
        except ValueError as e:
            raise ConfigError(f"--membership-secret-file: {e}") from None
    try:
        return load_secrets()
    except ValueError as e:
        raise ConfigError(
            "a membership manifest is configured but no secret: set "
            f"OPENRTC_MEMBERSHIP_SECRET or OPENRTC_MEMBERSHIP_SECRET_FILE ({e})"
        ) from None


def membership_watcher(pool: AgentPool) -> Any:
    """A ManifestWatcher that keeps the pool's membership in step with the manifest."""
    from .manifest import Manifest, ManifestWatcher

    deployment = pool.config.deployment
    if deployment.manifest is None:
        return None
    secrets = manifest_secrets(deployment)

    def on_change(manifest: Manifest) -> None:
        member = manifest.is_member(pool.deployment_version)
        active = ", ".join(manifest.active_versions)
        pool.set_membership(member, reason=f"manifest names {active}")
        if not member and deployment.drain_when_not_member:
            pool.begin_drain(reason="version left the manifest", actor="manifest")

    def on_rejected(reason: str) -> None:
        logger.warning("membership manifest rejected, the last valid one stays: %s", reason)
        pool.audit_log.emit_refusal(
            "membership.manifest_rejected",
            reason=reason,
            source=watcher.source.display,
            actor="manifest",
        )
        if watcher.current is None and pool.member is not False:
            pool.set_membership(False, reason=f"no valid manifest ({reason})")

    try:
        watcher = ManifestWatcher(
            deployment.manifest,
            secrets,
            interval=deployment.manifest_poll_interval,
            on_change=on_change,
            on_rejected=on_rejected,
        )
    except ValueError as e:
        raise ConfigError(f"membership secret: {e}") from None
    return watcher
