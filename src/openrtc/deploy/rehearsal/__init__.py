"""A blue-green deploy rehearsed on one machine: real worker processes, real signals."""

from .report import RehearsalReport
from .runner import Rehearsal, RehearsalConfig

__all__ = ["Rehearsal", "RehearsalConfig", "RehearsalReport"]
