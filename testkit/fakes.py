"""Stand-ins that fail on purpose."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import OperationalError

from streams.apply import Applier


class FlakyApplier(Applier):
    """A real applier whose database 'goes away' for the first few attempts."""

    def __init__(self, *args: Any, failures: int, poison: str | None = None) -> None:
        super().__init__(*args)
        self.failures = failures
        self.poison = poison

    async def apply(self, messages: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise OperationalError("INSERT", {}, Exception("connection refused"))
        if self.poison and any(self.poison.encode() in (m.value or b"") for m in messages):
            raise RuntimeError("unexpected state for this event")
        return await super().apply(messages)
