"""Building a worker's audit outlets from its settings (`--audit-stdout`, `--audit-url`)."""

from __future__ import annotations

from ..config import AuditSettings
from ..errors import ConfigError
from .head import AuditFileError
from .http_sink import HttpSink
from .sinks import AuditSinks, QueuedOutlet, SpooledOutlet
from .spool import Spool
from .stdout_sink import StdoutSink
from .writer import AuditLog


def open_sinks(log: AuditLog, settings: AuditSettings) -> AuditSinks | None:
    """The outlets the settings ask for, fed by `log`; None when they ask for none.

    Raises ConfigError (one line naming the flag) when the token file or the spool
    directory cannot be used.
    """
    if not settings.stdout and settings.url is None:
        return None
    sinks = AuditSinks()
    timing = {"timeout": settings.sink_timeout, "retry_max": settings.retry_max}
    if settings.stdout:
        sinks.add(QueuedOutlet(StdoutSink(), log, **timing))
    if settings.url is not None:
        assert settings.spool_dir is not None  # checked by AuditSettings
        token = settings.bearer_token()
        try:
            spool = Spool(settings.spool_dir)
        except AuditFileError as e:
            raise ConfigError(f"--audit-spool-dir: {e}") from None
        sink = HttpSink(settings.url, token=token, timeout=settings.sink_timeout)
        sinks.add(
            SpooledOutlet(
                sink,
                log,
                spool,
                max_bytes=max(1, int(settings.spool_max_mb * 2**20)),
                keep_when_full=settings.spool_full == "refuse",
                **timing,
            )
        )
    sinks.attach(log.add_fanout)
    return sinks
