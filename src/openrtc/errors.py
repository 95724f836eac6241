"""Errors a user can hit; each message says what was wrong and what to do."""

from __future__ import annotations


class OpenRTCError(Exception):
    """Base class for every error OpenRTC raises on purpose."""


class RegistrationError(OpenRTCError, ValueError):
    """An agent could not be registered on the pool."""


class ConfigError(OpenRTCError, ValueError):
    """A pool or CLI option has a value that cannot work."""


class AgentLoadError(OpenRTCError):
    """An agent file could not be imported or does not define an agent."""
