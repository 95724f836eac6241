"""A support agent with its own greeting."""

from livekit.agents import Agent

from openrtc import agent_config
from openrtc.testing import FakeLLM, FakeSTT, FakeTTS


@agent_config(
    stt=FakeSTT(),
    llm=FakeLLM(latency=0.05),
    tts=FakeTTS(),
    greeting="Support here, what went wrong?",
)
class SupportAgent(Agent):
    def __init__(self) -> None:
        super().__init__(
            instructions="You are Support at Example Co.\nTroubleshoot the caller's problem."
        )
