"""A booking agent registered under an explicit name."""

from livekit.agents import Agent

from openrtc import agent_config
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS


@agent_config(name="booking", stt=FakeSTT(), llm=FakeLLM(latency=0.05), tts=FakeTTS())
class BookingAgent(Agent):
    def __init__(self) -> None:
        super().__init__(
            instructions="You are Booking at Example Co.\nBook a table for the caller."
        )
