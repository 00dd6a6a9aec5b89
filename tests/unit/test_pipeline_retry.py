"""The worker's retry-forever loops (``Pipeline``) without a database: the wait doubles from
0.2 s up to ``max_backoff``, every retry is logged, a stop cancels the wait, and a dead letter
is published however often the producer fails first."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from streams.apply import BatchResult, Incoming
from streams.worker import Pipeline

MSG = Incoming("bank.transactions", 0, 7, b"c1", b"{}")


class Outage:
    """An applier whose database is away for ``failures`` calls."""

    engine: Any = None

    def __init__(self, failures: int, hang: bool = False) -> None:
        self.failures = failures
        self.hang = hang
        self.calls = 0

    async def apply(self, msgs: list[Incoming]) -> BatchResult:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(60)
        if self.failures:
            self.failures -= 1
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("down"))
        return BatchResult()


async def test_outage_retries_double_their_wait_up_to_the_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    applier = Outage(failures=4)
    results: list[BatchResult] = []
    pipeline = Pipeline(
        applier,  # type: ignore[arg-type]
        lambda m, r: asyncio.sleep(0),
        max_backoff=0.5,
        on_result=lambda r, _: results.append(r),
    )
    with caplog.at_level(logging.WARNING, "crmtracker.worker"):
        await pipeline.handle([MSG])
    waits = [
        float(m.group(1))
        for r in caplog.records
        if (
            m := re.search(
                r"database unavailable \(OperationalError\); retrying 1 messages "
                r"from bank\.transactions\[0\]@7 in ([\d.]+)s",
                r.getMessage(),
            )
        )
    ]
    assert waits == [0.2, 0.4, 0.5, 0.5]
    assert applier.calls == 5 and len(results) == 1
    assert pipeline.healthy and pipeline.last_error is None


async def test_a_stop_cancels_the_retrying() -> None:
    applier = Outage(failures=0, hang=True)
    pipeline = Pipeline(applier, lambda m, r: asyncio.sleep(0), max_backoff=0.05)  # type: ignore[arg-type]
    task = asyncio.create_task(pipeline.handle([MSG]))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert applier.calls == 1


async def test_a_dead_letter_is_published_after_the_producer_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[tuple[Incoming, str]] = []
    fails = [3]

    async def deadletter(msg: Incoming, reason: str) -> None:
        if fails[0]:
            fails[0] -= 1
            raise ConnectionError("broker away")
        sent.append((msg, reason))

    pipeline = Pipeline(Outage(0), deadletter, max_backoff=0.05)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, "crmtracker.worker"):
        await pipeline._send_deadletter(MSG, "why")
    assert sent == [(MSG, "why")]
    assert [r.getMessage() for r in caplog.records] == [
        "dead-letter publish failed (broker away); retrying"
    ] * 3
