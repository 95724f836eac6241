"""Keeps a worker's membership in step with the signed manifest of active versions."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..pool import AgentPool

logger = logging.getLogger("openrtc.membership")


def membership_watcher(pool: AgentPool) -> Any:
    """A ManifestWatcher that keeps the pool's membership in step with the manifest."""
    from ..manifest import Manifest, ManifestWatcher
    from ..membership import load_secrets

    if pool.manifest is None:
        return None
    secrets = pool.membership_secrets
    if secrets is None:
        try:
            secrets = load_secrets()
        except Exception as e:
            raise ConfigError(
                "a membership manifest is configured but no secret: set "
                f"OPENRTC_MEMBERSHIP_SECRET or OPENRTC_MEMBERSHIP_SECRET_FILE ({e})"
            ) from None

    def on_change(manifest: Manifest) -> None:
        member = manifest.is_member(pool.deployment_version)
        active = ", ".join(manifest.active_versions)
        pool.set_membership(member, reason=f"manifest names {active}")
        if not member and pool.drain_when_not_member:
            pool.begin_drain(reason="version left the manifest", actor="manifest")

    def on_rejected(reason: str) -> None:
        logger.warning("membership manifest rejected, the last valid one stays: %s", reason)
        pool.audit_log.emit(
            "membership.manifest_rejected", actor="manifest", result="rejected", reason=reason
        )

    return ManifestWatcher(
        pool.manifest,
        secrets,
        interval=pool.manifest_poll_interval,
        on_change=on_change,
        on_rejected=on_rejected,
    )
