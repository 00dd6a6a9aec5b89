"""Which event loop the long-running processes (API, worker) run on."""

from __future__ import annotations

import asyncio
from typing import Literal

EventLoop = Literal["auto", "asyncio", "uvloop"]
LoopName = Literal["asyncio", "uvloop"]


def loop_name(choice: EventLoop, auto: LoopName) -> LoopName:
    """The loop a process runs on: ``auto`` is the process's measured better one (``auto``
    argument), falling back to asyncio's when uvloop is not installed. ``uvloop`` when it is
    missing stops start-up with a message rather than falling back.

    Measured here (README "Performance"): the API with uvloop and httptools serves ~20 %
    more requests at its floor; the worker (faust, aiokafka, asyncpg) spent 10-20 % *more*
    CPU per event on uvloop, so its ``auto`` is asyncio.
    """
    want = auto if choice == "auto" else choice
    if want == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("CRM_EVENT_LOOP=uvloop, but uvloop is not installed") from None
        return "asyncio"
    return "uvloop"


def use_event_loop(choice: EventLoop, auto: LoopName) -> LoopName:
    """Make the loops created from here on the chosen kind (for processes that create their
    own loop, like the faust worker); returns the kind."""
    name = loop_name(choice, auto)
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return name
