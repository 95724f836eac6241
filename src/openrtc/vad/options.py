"""The VAD's tunables, with the stock Silero plugin's defaults and meaning."""

from __future__ import annotations

from dataclasses import dataclass

from livekit.agents.utils import is_given

SAMPLE_RATES = (8000, 16000)


@dataclass
class VADOptions:
    """Same fields and defaults as `silero.VAD.load()`, so results match it.

    deactivation_threshold None means max(activation_threshold - 0.15, 0.01), as stock.
    """

    min_speech_duration: float = 0.05
    min_silence_duration: float = 0.55
    prefix_padding_duration: float = 0.5
    max_buffered_speech: float = 60.0
    activation_threshold: float = 0.5
    deactivation_threshold: float | None = None
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        if self.sample_rate not in SAMPLE_RATES:
            raise ValueError(
                f"the VAD runs at 8000 or 16000 Hz, not {self.sample_rate}; pick one of those."
            )
        if self.deactivation_threshold is None:
            self.deactivation_threshold = max(self.activation_threshold - 0.15, 0.01)
        elif self.deactivation_threshold <= 0:
            raise ValueError(
                f"deactivation_threshold must be greater than 0, got {self.deactivation_threshold}."
            )

    def apply(self, **given: object) -> float:
        """Set the options that were given (not NOT_GIVEN); returns max_buffered_speech before."""
        before = self.max_buffered_speech
        for name, value in given.items():
            if is_given(value):
                setattr(self, name, value)
        return before

    @property
    def exit_threshold(self) -> float:
        """The deactivation threshold, always resolved to a number."""
        assert self.deactivation_threshold is not None
        return self.deactivation_threshold
