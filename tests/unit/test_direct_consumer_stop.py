"""The direct consumer's stop: faust's service stops the aiokafka consumer (``on_stop``) before
it cancels the fetch loop, so a fetch in flight can end in ``ConsumerStoppedError``. That is a
clean stop (exit 0), not a crash; the same error while running still stops the worker loudly.

The race itself needs a rebalance at the moment of SIGTERM (it failed the three-worker kill
test once in CI); here the consumer's fetch is replaced so the order is deterministic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import ConsumerStoppedError

from config import Settings
from streams.worker import DirectConsumer


class _StoppedUnderFetch:
    def __init__(self, owner: DirectConsumer, *, closing: bool) -> None:
        self.owner = owner
        self.closing = closing

    def assignment(self) -> set[Any]:
        return set()

    async def getmany(self, *_tps: Any, **_kw: Any) -> dict[Any, Any]:
        self.owner._closing = self.closing  # what on_stop sets before consumer.stop()
        raise ConsumerStoppedError()


def _consumer(tmp_path: Path) -> DirectConsumer:
    settings = Settings(kafka_bootstrap="127.0.0.1:9", data_dir=tmp_path)
    return DirectConsumer(settings, pipeline=None, topics=[])  # type: ignore[arg-type]


async def test_a_fetch_cut_short_by_stop_ends_the_loop_cleanly(tmp_path: Path) -> None:
    dc = _consumer(tmp_path)
    dc.consumer = _StoppedUnderFetch(dc, closing=True)
    await dc._consume(dc)  # returns: nothing raised (a mode ServiceTask takes its service)


async def test_a_consumer_stopped_while_running_is_still_an_error(tmp_path: Path) -> None:
    dc = _consumer(tmp_path)
    dc.consumer = _StoppedUnderFetch(dc, closing=False)
    with pytest.raises(ConsumerStoppedError):
        await dc._consume(dc)
