"""The stdout sink: audit lines on the worker's standard output, for a log shipper."""

from __future__ import annotations

import errno
import os

from .sinks import SinkError


class StdoutSink:
    """Writes whole lines to file descriptor 1 with one `write()` each where it can.

    Ordinary logs go to stderr, so a shipper reading the container's output sees audit
    lines whole; it routes them by their `openrtc_audit` key.
    """

    name = "stdout"

    def __init__(self, fd: int = 1) -> None:
        self.fd = fd

    def send(self, data: bytes, count: int) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            reason = errno.errorcode.get(exc.errno or 0, "error").lower()
            raise SinkError(reason, exc.strerror or reason) from None
