"""What the write path takes in (Kafka messages) and hands back (what a batch did)."""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models import visit_ledger


@dataclass(frozen=True, slots=True)
class Incoming:
    """One Kafka message as the worker received it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def position(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass
class BatchResult:
    """What one batch did (the worker's metrics and logs read it)."""

    applied: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    rejected: list[tuple[Incoming, str]] = field(default_factory=list)
    held: int = 0
    released: int = 0
    latest_occurred: list[datetime] = field(default_factory=list)
    changed_managers: set[str] = field(default_factory=set)


def b64(value: bytes | None) -> str | None:
    return base64.b64encode(value).decode() if value is not None else None


def raw_text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", errors="replace")


def problem_row(
    m: Incoming,
    status: str,
    reason: str,
    event_id: str | None,
    event_type: str | None,
    now: datetime,
    *,
    wait_client: str | None = None,
    wait_manager: str | None = None,
) -> dict[str, Any]:
    """A ``rejected_events`` row: the raw message, where it came from, and why."""
    return {
        "topic": m.topic,
        "partition": m.partition,
        "offset": m.offset,
        "key": raw_text(m.key) if m.key is not None else None,
        # visit notes are removed from the stored raw message (models/visit_ledger.py)
        "value_b64": b64(visit_ledger.stored_raw(m.value)),
        "status": status,
        "reason": reason,
        "event_id": event_id,
        "event_type": event_type,
        "waiting_client_id": wait_client,
        "waiting_manager_id": wait_manager,
        "received_at": now,
        "released_at": None,
    }
