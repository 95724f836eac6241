"""Errors the dispatch server's Python and HTTP APIs raise; each maps to one HTTP status."""

from __future__ import annotations

from ..errors import OpenRTCError


class DevServerError(OpenRTCError):
    """Base class for dispatch server errors; `status` is the HTTP status it maps to."""

    status = 500


class InvalidDispatchError(DevServerError, ValueError):
    """A dispatch request had a field of the wrong type or shape."""

    status = 400


class UnknownJobError(DevServerError, LookupError):
    """No job with that id was ever dispatched on this server."""

    status = 404


class JobNotActiveError(DevServerError):
    """The job has already ended, so it cannot be ended again."""

    status = 409


class DevServerClientError(DevServerError):
    """The control API answered a request with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"dispatch server answered {status}: {message}")
        self.status = status
        self.message = message
