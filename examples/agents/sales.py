"""A sales agent: a plain LiveKit Agent, registered as "sales" (its file name)."""

from livekit.agents import Agent

from openrtc import agent_config
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS


@agent_config(stt=FakeSTT(), llm=FakeLLM(latency=0.05), tts=FakeTTS())
class SalesAgent(Agent):
    def __init__(self) -> None:
        super().__init__(
            instructions="You are Sales at Example Co.\nHelp the caller choose a plan."
        )
