"""Keeps a worker's membership in step with the signed manifest of active versions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
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


MANIFEST_EXPIRED = "manifest_expired"
"""The membership reason (and /readyz reason) while the manifest in force has expired."""


class Follower:
    """Follows the signed manifest for one pool: membership, expiry and deploy events.

    - membership: the pool is a member while the manifest in force names its version;
    - expiry fails closed: when the manifest in force expires, the worker stops taking
      calls (reason `manifest_expired`, audited) until a fresh valid one names it;
    - the deploy is recorded: `deployment.cutover` when an accepted manifest drops this
      version, `deployment.rolled_back` when it names it again after a drop.
    """

    def __init__(self, pool: AgentPool, check_every: float = 1.0) -> None:
        from .manifest import ManifestWatcher

        deployment = pool.config.deployment
        assert deployment.manifest is not None
        self.pool = pool
        self.expired = False
        self._active: tuple[str, ...] | None = None
        self._dropped = False
        self._check_every = min(check_every, deployment.manifest_poll_interval)
        self._task: asyncio.Task[None] | None = None
        try:
            self.watcher = ManifestWatcher(
                deployment.manifest,
                manifest_secrets(deployment),
                interval=deployment.manifest_poll_interval,
                on_change=self._on_change,
                on_rejected=self._on_rejected,
            )
        except ValueError as e:
            raise ConfigError(f"membership secret: {e}") from None

    @property
    def current(self) -> Any:
        return self.watcher.current

    async def start(self) -> None:
        await self.watcher.start()
        self._check_expiry()
        self._task = asyncio.create_task(self._watch_expiry(), name="openrtc-manifest-expiry")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.watcher.aclose()

    async def _watch_expiry(self) -> None:
        while True:
            await asyncio.sleep(self._check_every)
            self._check_expiry()

    def _check_expiry(self) -> None:
        manifest = self.watcher.current
        if manifest is None or self.expired or not manifest.is_expired(time.time()):
            return
        self.expired = True
        logger.warning("the manifest in force expired; taking no new calls until a fresh one")
        self.pool.audit_log.emit(
            "membership.manifest_expired",
            actor="manifest",
            target=self.pool.deployment_version,
            result="refusing",
            expires_at=manifest.expires_at,
            active_versions=list(manifest.active_versions),
        )
        self.pool.set_membership(False, reason=MANIFEST_EXPIRED)

    def _on_change(self, manifest: Any) -> None:
        pool, version = self.pool, self.pool.deployment_version
        member = manifest.is_member(version)
        active = tuple(manifest.active_versions)
        previous, self._active = self._active, active
        if previous is not None and active != previous:
            was = version in previous
            if was and not member:
                self._dropped = True
                self._record("deployment.cutover", previous, active)
            elif member and not was and self._dropped:
                self._dropped = False
                self._record("deployment.rolled_back", previous, active)
        self.expired = False
        pool.set_membership(member, reason=f"manifest names {', '.join(active)}")
        if not member and pool.config.deployment.drain_when_not_member:
            pool.begin_drain(reason="version left the manifest", actor="manifest")

    def _record(self, event: str, previous: tuple[str, ...], active: tuple[str, ...]) -> None:
        self.pool.audit_log.emit(
            event,
            actor="manifest",
            target=self.pool.deployment_version,
            previous_active=list(previous),
            active=list(active),
        )

    def _on_rejected(self, reason: str) -> None:
        logger.warning("membership manifest rejected, the last valid one stays: %s", reason)
        self.pool.audit_log.emit_refusal(
            "membership.manifest_rejected",
            reason=reason,
            source=self.watcher.source.display,
            actor="manifest",
        )
        if self.watcher.current is not None:
            return
        if "expired" in reason and not self.expired:
            # a worker started on an expired manifest: say so, not "not in the manifest"
            self.expired = True
            self.pool.set_membership(False, reason=MANIFEST_EXPIRED)
        elif self.pool.member is not False:
            self.pool.set_membership(False, reason=f"no valid manifest ({reason})")


def membership_watcher(pool: AgentPool) -> Follower | None:
    """The manifest follower of the pool, or None when no manifest is configured."""
    if pool.config.deployment.manifest is None:
        return None
    return Follower(pool)
