"""The HTTP sink: batches of audit lines POSTed to a collector, acknowledged by a 2xx.

The body is the batch's lines (`application/x-ndjson`), each the same marked envelope
the stdout sink writes, oldest first. Anything but a 2xx is a failure, and the batch is
sent again (after a capped backoff) until it is acknowledged; see docs/deployment.md
for what a collector must do.
"""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.request

from .sinks import SinkError

CONTENT_TYPE = "application/x-ndjson"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would resend records (and the token) somewhere not configured."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class HttpSink:
    """POSTs one batch per call; raises SinkError with a short reason when not acknowledged."""

    name = "http"

    def __init__(self, url: str, *, token: str | None, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._headers = {"Content-Type": CONTENT_TYPE}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._opener = urllib.request.build_opener(_NoRedirect())

    def __repr__(self) -> str:
        return f"HttpSink({self.url!r})"

    def send(self, data: bytes, count: int) -> None:
        headers = {**self._headers, "X-OpenRTC-Audit-Records": str(count)}
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(65536)
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise SinkError(f"http_{exc.code}", f"collector answered {exc.code}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError | socket.timeout):
                raise SinkError("timeout", f"no answer in {self.timeout:g}s") from None
            raise SinkError("unreachable", str(exc.reason)) from None
        except TimeoutError:
            raise SinkError("timeout", f"no answer in {self.timeout:g}s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise SinkError("connection", type(exc).__name__) from None
        if not 200 <= status < 300:
            raise SinkError(f"http_{status}", f"collector answered {status}")
