"""Small agents for the worker tests: each names itself in its instructions."""

from __future__ import annotations

from livekit.agents import Agent


class SalesAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Sales.\nSell things.")


class SupportAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Support.\nFix things.")


class BookingAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Booking.\nBook things.")


class BillingAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Billing.\nBill things.")


class CrashingAgent(Agent):
    """Raises when the call starts, the way a bug in agent code does."""

    def __init__(self) -> None:
        raise RuntimeError("agent bug: cannot start")
