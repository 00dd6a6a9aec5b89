"""The faust app: batches of messages applied through ``Pipeline``, which never raises.

Two ways to read the input topics (``CRM_CONSUMER``), the same guarantee: an offset is
committed only after its batch's database transaction committed, so a crash means
redelivery, which the idempotent apply makes harmless.

- ``direct`` (default): ``DirectConsumer``, one aiokafka batch consumer run as a service of
  the faust app; it skips faust's per-message stream machinery, which costs as much CPU as
  the apply itself.
- ``agents``: one faust agent per input topic; faust acks (and later commits) a batch only
  after the agent's loop body returns.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import ConsumerStoppedError, KafkaError
from faust.app.base import BootStrategy
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

from config import KafkaConfig, TopicSpec, WorkerConfig
from models.db import upsert_positions
from models.events import InvalidEvent
from streams import metrics
from streams.apply import Applier, BatchResult, Incoming

log = logging.getLogger("crmtracker.worker")

# SQLSTATE classes that mean "the database, not the data": wait and retry, never skip.
# connection (08), rollback/serialisation (40), resources (53), operator action (57), system
# (58), read-only transaction (25006), lock not available (55P03), database not accepting
# connections (55000), internal (XX)
_TRANSIENT_SQLSTATE_PREFIXES = (
    "08",
    "40",
    "53",
    "57",
    "58",
    "25006",
    "55P03",
    "55000",
    "XX",
)


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same batch later can succeed (connection, lock, disk, ...)."""
    if isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # SQLAlchemy's wrapper carries the driver's error in .orig; a statement run on the raw
    # asyncpg connection (the PostgreSQL claim) raises the driver's error itself
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code and str(code).startswith(_TRANSIENT_SQLSTATE_PREFIXES):
        return True
    if isinstance(exc, DBAPIError) and (
        "read-only" in str(exc).lower() or "readonly" in str(exc).lower()
    ):
        return True
    return False


DeadLetter = Callable[[Incoming, str], Awaitable[None]]


class Pipeline:
    """Applies a batch exactly once in effect, whatever goes wrong. Never raises.

    - Database unavailable (connection, lock, disk full, read-only): wait and retry the same
      batch with backoff, forever; nothing is acked meanwhile.
    - Any other error: split the batch to find the message that causes it; that one message
      is rejected (dead-letter topic and rejected list, with the error as the reason) and the
      rest are applied. No good message is skipped, no bad one stops the worker.
    """

    def __init__(
        self,
        applier: Applier,
        deadletter: DeadLetter,
        *,
        max_backoff: float = 30.0,
        on_result: Callable[[BatchResult, float], None] | None = None,
    ) -> None:
        self.applier = applier
        self.deadletter = deadletter
        self.max_backoff = max_backoff
        self.on_result = on_result
        self.healthy = True
        self.last_error: str | None = None

    async def handle(self, msgs: Sequence[Incoming]) -> None:
        if not msgs:
            return
        try:
            await self._apply_isolating(list(msgs))
        except asyncio.CancelledError:
            raise
        except BaseException:  # pragma: no cover - the last line of defence
            log.exception("unexpected failure applying a batch; stopping the worker unacked")
            os._exit(70)

    def _forever(self, on_retry: Callable[[BaseException, float], None]) -> AsyncRetrying:
        """Retry any ``Exception`` but ``_NotTransient``, forever, waiting 0.2 s doubling up
        to ``max_backoff``; ``on_retry(error, seconds)`` before each wait."""

        def before_sleep(state: RetryCallState) -> None:
            assert state.outcome is not None and state.next_action is not None
            error = state.outcome.exception()
            assert error is not None
            on_retry(error, state.next_action.sleep)

        return AsyncRetrying(
            # never a cancellation (the worker stopping) nor the message's own fault
            retry=retry_if_exception(
                lambda exc: isinstance(exc, Exception) and not isinstance(exc, _NotTransient)
            ),
            wait=wait_exponential(multiplier=0.2, max=self.max_backoff),
            before_sleep=before_sleep,
        )

    async def _apply_with_retry(self, msgs: list[Incoming]) -> BatchResult:
        def unavailable(exc: BaseException, delay: float) -> None:
            self.healthy = False
            metrics.DB_HEALTHY.set(0)
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning(
                "database unavailable (%s); retrying %d messages from %s in %.1fs",
                type(exc).__name__,
                len(msgs),
                msgs[0].position,
                delay,
            )

        fault: Exception | None = None
        try:
            async for attempt in self._forever(unavailable):
                with attempt:
                    loop = asyncio.get_running_loop()
                    started = loop.time()
                    try:
                        result = await self.applier.apply(msgs)
                    except Exception as exc:
                        # an error no rule names is the message's fault only if the database
                        # itself answers; otherwise it is an outage, and nothing may be
                        # rejected for it
                        if not is_transient(exc) and await self._database_answers():
                            raise _NotTransient(exc) from exc
                        raise
        except _NotTransient as stop:
            fault = stop.error
        if fault is not None:
            raise fault  # the message's own error, for the caller to isolate
        self.healthy = True
        self.last_error = None
        if self.on_result is not None:
            self.on_result(result, loop.time() - started)
        return result

    async def _database_answers(self) -> bool:
        try:
            async with self.applier.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def _apply_isolating(self, msgs: list[Incoming]) -> None:
        try:
            result = await self._apply_with_retry(msgs)
        except Exception as exc:
            if len(msgs) > 1:
                mid = len(msgs) // 2
                log.warning("batch from %s failed (%s); splitting it", msgs[0].position, exc)
                await self._apply_isolating(msgs[:mid])
                await self._apply_isolating(msgs[mid:])
                return
            reason = f"could not be applied: {type(exc).__name__}: {exc}"[:2000]
            log.error("%s %s", msgs[0].position, reason)
            await self._reject_unappliable(msgs[0], reason)
            return
        # all at once: the producer sends them in one batch instead of a round trip each;
        # the batch counts as done (and its offsets may be committed) only when all are out
        await asyncio.gather(*(self._send_deadletter(m, r) for m, r in result.rejected))

    async def _reject_unappliable(self, msg: Incoming, reason: str) -> None:
        # Record it like any rejected message, so it stays visible and can be re-driven; the
        # database may be the problem: wait for it
        async for attempt in self._forever(
            lambda exc, _: log.warning("cannot record rejected %s yet: %s", msg.position, exc)
        ):
            with attempt:
                await self.applier.record_rejected([(msg, InvalidEvent(reason))])
        metrics.count_rejected(msg)
        await self._send_deadletter(msg, f"{msg.position}: {reason}")

    async def _send_deadletter(self, msg: Incoming, reason: str) -> None:
        async for attempt in self._forever(
            lambda exc, _: log.warning("dead-letter publish failed (%s); retrying", exc)
        ):
            with attempt:
                await self.deadletter(msg, reason)


class _NotTransient(Exception):
    """Stops the retrying: the message, not the database, is at fault (``error``)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def deadletter_value(msg: Incoming, reason: str) -> bytes:
    """The dead-letter record: the original bytes (base64), where they came from, and why."""
    return json.dumps(
        {
            "topic": msg.topic,
            "partition": msg.partition,
            "offset": msg.offset,
            "reason": reason,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "key": msg.key.decode("utf-8", "replace") if msg.key is not None else None,
            "value_base64": base64.b64encode(msg.value).decode() if msg.value else None,
        },
        ensure_ascii=False,
    ).encode()


def broker_credentials(kafka: KafkaConfig) -> Any:
    """faust's form of the security settings (same TLS context as every other client)."""
    args = kafka.client_args()
    ssl_context = args.get("ssl_context")
    if kafka.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        return faust.SASLCredentials(
            username=cast(str | None, args["sasl_plain_username"]),
            password=cast(str | None, args["sasl_plain_password"]),
            ssl_context=cast(ssl.SSLContext | None, ssl_context),
            mechanism=kafka.sasl_mechanism,
        )
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(cast(ssl.SSLContext | None, ssl_context))
    return None


def faust_app(cfg: WorkerConfig) -> faust.App:
    """The faust app of the worker, reading nothing yet (``serve_direct``/``serve_agents``
    give it its way to read); nothing connects until it starts."""
    app = faust.App(
        cfg.kafka.group_id,
        broker=[f"kafka://{h.strip()}" for h in cfg.kafka.bootstrap.split(",")],
        broker_credentials=broker_credentials(cfg.kafka),
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=cfg.topics.partitions,
        topic_replication_factor=cfg.topics.replication,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=cfg.kafka.session_timeout,
        broker_heartbeat_interval=cfg.kafka.heartbeat_interval,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        producer_acks=-1,
    )
    if cfg.consumer == "direct":
        # faust's own consumer reads nothing here: it is not started, and with it neither its
        # leader assignor (which would join a group and declare a leader topic of its own),
        # its topic conductor nor its tables. The producer (dead letters), timers and
        # services start as before; the batch consumer is the group's only member.
        app.boot_strategy = BootStrategy(app, enable_kafka_consumer=False)
    return app


def faust_topic(app: faust.App, spec: TopicSpec, **kwargs: Any) -> Any:
    """A raw-bytes faust topic declared (if missing) as ``spec`` says: the same partitions,
    replication and config (compaction) as ``crm-tracker up`` creates it with."""
    return app.topic(
        spec.name,
        key_serializer="raw",
        value_serializer="raw",
        partitions=spec.partitions,
        replicas=spec.replication,
        config=dict(spec.config),
        **kwargs,
    )


def deadletter_sender(app: faust.App, dlt: Any) -> DeadLetter:
    """Publishes a rejected message's dead-letter record with the app's producer."""

    async def send_deadletter(msg: Incoming, reason: str) -> None:
        await app.producer.send_and_wait(
            dlt.get_topic_name(),
            msg.key,
            deadletter_value(msg, reason),
            partition=None,
            timestamp=None,
            headers=None,
        )

    return send_deadletter


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def serve_direct(app: faust.App, direct: DirectConsumer, engine: Any, group: str) -> None:
    """Run the batch consumer as a service of the app (``CRM_CONSUMER=direct``), recording
    its positions for /readyz and the lag view."""
    app.service(direct)  # type: ignore[arg-type]  # faust's stub wants a class; an instance works too
    worker_name = _worker_name()

    @app.timer(interval=2.0)
    async def record_direct_positions() -> None:
        await _save_positions(engine, group, worker_name, direct.positions())


def serve_agents(
    app: faust.App, inputs: list[Any], pipeline: Pipeline, engine: Any, cfg: WorkerConfig
) -> None:
    """One faust agent per input topic (``CRM_CONSUMER=agents``)."""
    for topic in inputs:
        app.agent(topic, name=f"apply.{topic.get_topic_name()}", concurrency=1)(
            _make_agent(pipeline, cfg.batch_size, cfg.batch_within)
        )

    @app.on_partitions_assigned.connect
    async def count_rebalance(*args: Any, **kwargs: Any) -> None:
        metrics.REBALANCES.inc()
        assigned = next((a for a in args if isinstance(a, set | frozenset)), None)
        if assigned is not None:
            metrics.ASSIGNED_PARTITIONS.set(len(assigned))

    worker_name = _worker_name()

    @app.timer(interval=2.0)
    async def record_positions() -> None:
        await _record_positions(app, engine, cfg.kafka.group_id, worker_name)


class DirectConsumer(faust.Service):
    """The worker's batch path without faust's per-message machinery (``CRM_CONSUMER=direct``).

    A service of the faust app (started and stopped with it, next to its producer and timers)
    that runs one aiokafka consumer in the worker's group: ``getmany`` up to ``batch_size``
    records per lane over every assigned partition, ``Pipeline.handle`` (which returns only
    once the batch is committed to the database, or rejected with a reason), then a commit of
    the next offsets. Exactly once in effect, as on the agent path: an offset is committed
    only after its event's database transaction; a crash or a failed commit means
    redelivery, which the idempotent apply drops.

    Given several pipelines (``apply_concurrency``), each is a lane: a task that applies its
    partitions' sub-batches in order, each in its own transaction on its own connection (as
    several workers would; the named locks keep them exact), and commits exactly that
    sub-batch's next offsets after its database commit. A partition keeps its lane for as
    long as it stays assigned, so its batches are applied and committed in order by one lane.
    The fetch loop fetches for each lane with room its own partitions' records: what a busy
    lane is handed waits, merged, up to about ``batch_size`` records, and the loop waits only
    when every lane has that much waiting. No lane waits for another one, and a lane that
    waits (the database away) holds back only its own partitions. A fetch with clients' or
    managers' records is applied as one group, after every lane has drained. A rebalance and
    a stop wait for every lane (no new sub-batch meanwhile), so a revoked partition's applied
    offsets are committed first; at a stop, what waits and is not applied yet is dropped,
    uncommitted: it is read again.
    """

    def __init__(
        self,
        settings: WorkerConfig,
        pipeline: Pipeline | Sequence[Pipeline],
        topics: list[Any],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.pipelines: list[Pipeline] = (
            list(pipeline) if isinstance(pipeline, Sequence) else [pipeline]
        )
        self.pipeline = self.pipelines[0]
        self.topics = topics  # declared (created if missing) before the consumer starts
        self.consumer: Any = None
        self.committed: dict[Any, int | None] = {}
        # held while a fetch is handed to the lanes (or applied as one group): a rebalance or
        # a stop takes it, so nothing new is dispatched while it waits for the lanes
        self._lock = asyncio.Lock()
        self._closing = False
        self._lanes: list[_Lane] = []
        self._lane_of: dict[Any, int] = {}  # partition -> its lane, while it stays assigned
        self._failure: BaseException | None = None
        self._taken = asyncio.Event()  # a lane took what waited for it

    async def on_start(self) -> None:
        for topic in self.topics:
            await topic.maybe_declare()
        s = self.settings
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka.bootstrap,
            group_id=s.kafka.group_id,
            client_id=f"crm-tracker-worker-{os.getpid()}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.kafka.session_timeout * 1000),
            heartbeat_interval_ms=int(s.kafka.heartbeat_interval * 1000),
            max_poll_records=s.batch_size * len(self.pipelines),
            # an idle partition's fetch waits at most this long for new records: events that
            # trickle in become visible within about this, instead of aiokafka's 0.5 s
            fetch_max_wait_ms=min(100, int(s.batch_within * 1000)),
            **s.kafka.client_args(),
        )
        self.consumer.subscribe(topics=list(s.topics.inputs), listener=_Rebalance(self))
        await self.consumer.start()

    async def on_stop(self) -> None:
        async with self._lock:  # nothing new dispatched; what waits in a lane is dropped
            self._closing = True
            await self._drain()  # the sub-batches being applied finish and commit first
        if self.consumer is not None:
            await self.consumer.stop()  # leaves the group: its partitions move at once

    async def _drain(self) -> None:
        """Until every lane has applied and committed (or, closing, dropped) what it got."""
        for lane in self._lanes:
            await lane.drain()

    @faust.Service.task
    async def _consume(self) -> None:
        # each lane's sub-batch about ``batch_size`` records
        size = self.settings.batch_size * len(self.pipelines)
        self._lanes = [_Lane(self, p, self.settings.batch_size) for p in self.pipelines]
        try:
            while not self.should_stop:
                self._raise_failure()
                try:
                    records = await self._fetch(size)
                except ConsumerStoppedError:
                    if self._closing or self.should_stop:
                        return  # on_stop stopped the consumer under this fetch: a clean stop
                    raise
                if records:
                    await self._dispatch(records)
            self._raise_failure()
        finally:
            lanes, self._lanes = self._lanes, []
            for lane in lanes:  # idle by now unless the loop failed: then nothing commits
                lane.task.cancel()
            await asyncio.gather(*(lane.task for lane in lanes), return_exceptions=True)

    async def _fetch(self, size: int) -> dict[Any, list[Any]]:
        """The next records to hand to the lanes (nothing if none came within a while)."""
        consumer = self.consumer
        assigned = consumer.assignment()
        # reference data first: what is already fetched of the clients and managers topics
        # goes before the facts that need it (fewer facts held back to wait)
        reference = self.settings.topics.reference
        ref = [tp for tp in assigned if tp.topic in reference]
        if ref:
            records = await consumer.getmany(*ref, timeout_ms=0, max_records=size)
            if records:
                return cast(dict[Any, list[Any]], records)
        wait_ms = int(self.settings.batch_within * 1000)
        if len(self._lanes) == 1:
            return cast(
                dict[Any, list[Any]], await consumer.getmany(timeout_ms=wait_ms, max_records=size)
            )
        # each lane with room (its waiting batch under ``batch_size`` records) fetches its
        # own partitions' records, up to that: aiokafka returns what it has buffered, often
        # one partition's records, which handed out as they come would leave other lanes idle
        self._taken.clear()
        batch = self.settings.batch_size
        free = [
            (batch - lane.count, tps)
            for lane, tps in zip(self._lanes, self._partitions_by_lane(assigned), strict=True)
            if lane.count < batch
        ]
        if not free:
            await self._taken.wait()  # every lane has a whole batch waiting: until one takes it
            return {}
        out: dict[Any, list[Any]] = {}
        for room, tps in free:
            if tps:
                out.update(await consumer.getmany(*tps, timeout_ms=0, max_records=room))
        if out:
            return out
        # nothing buffered for the lanes with room: wait for it (or reference data), not long
        # while a lane is busy (it may take its waiting batch meanwhile, and have room then;
        # it has that batch to apply first); no more than fits in any of them
        polled = [*ref, *(tp for _room, tps in free for tp in tps)]
        if any(lane.applying or lane.count for lane in self._lanes):
            wait_ms = min(wait_ms, 50)
        if not polled:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._taken.wait(), wait_ms / 1000)
            return {}
        most = min(room for room, _tps in free)
        return cast(
            dict[Any, list[Any]],
            await consumer.getmany(*polled, timeout_ms=wait_ms, max_records=most),
        )

    def _partitions_by_lane(self, assigned: Any) -> list[list[Any]]:
        """The assigned partitions (but the reference ones) of each lane."""
        reference = self.settings.topics.reference
        out: list[list[Any]] = [[] for _ in self._lanes]
        lane_of = self._lane_of
        for tp in sorted(assigned):
            if tp.topic in reference:
                continue
            i = lane_of.get(tp)
            if i is None:
                i = lane_of[tp] = self._new_lane(tp)
            out[i].append(tp)
        return out

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure  # a lane failed: the consumer stops (faust logs the crash)

    async def _dispatch(self, records: dict[Any, list[Any]]) -> None:
        async with self._lock:
            if self._closing:
                return  # not applied, not committed: read again after the restart
            reference = self.settings.topics.reference
            if len(self._lanes) == 1:
                await self._hand(self._lanes[0], records)
                return
            if any(tp.topic in reference for tp in records):
                # records (clients, managers) go in one transaction ahead of the facts that
                # need them, as with one group: split apart, a fact applied beside its
                # client's record would be held and released for nothing. Every lane is
                # idle meanwhile (drained, nothing dispatched), so the first lane's pipeline
                # is free; its partitions' earlier batches are all committed.
                await self._drain()
                self._raise_failure()
                await self._apply_group(self.pipeline, records)
                return
            full = []
            for lane, sub in zip(self._lanes, self._split(records), strict=True):
                if not sub:
                    continue
                n = sum(len(rs) for rs in sub.values())
                if lane.fits(n):
                    lane.put(sub, n)  # a lane with room is not kept waiting
                else:
                    full.append((lane, sub, n))
            for lane, sub, n in full:
                await lane.room(n)  # wait for that lane to take what waits
                lane.put(sub, n)

    @staticmethod
    async def _hand(lane: _Lane, records: dict[Any, list[Any]]) -> None:
        n = sum(len(rs) for rs in records.values())
        await lane.room(n)
        lane.put(records, n)

    def _split(self, records: dict[Any, list[Any]]) -> list[dict[Any, list[Any]]]:
        """The fetch by lane; a partition new to the lanes joins the one with the fewest
        partitions of its topic (then the fewest in all), and keeps it until revoked."""
        out: list[dict[Any, list[Any]]] = [{} for _ in self._lanes]
        lane_of = self._lane_of
        for tp, rs in records.items():
            i = lane_of.get(tp)
            if i is None:
                i = lane_of[tp] = self._new_lane(tp)
            out[i][tp] = rs
        return out

    def _new_lane(self, tp: Any) -> int:
        same_topic = [0] * len(self._lanes)
        every = [0] * len(self._lanes)
        for other, i in self._lane_of.items():
            every[i] += 1
            if other.topic == tp.topic:
                same_topic[i] += 1
        return min(range(len(self._lanes)), key=lambda i: (same_topic[i], every[i], i))

    async def _apply_group(self, pipeline: Pipeline, records: dict[Any, list[Any]]) -> None:
        """Apply one group's records, then commit its partitions' next offsets."""
        await pipeline.handle(
            [
                Incoming(r.topic, r.partition, r.offset, r.key, r.value)
                for batch in records.values()
                for r in batch
            ]
        )
        assigned = self.consumer.assignment()
        offsets = {tp: rs[-1].offset + 1 for tp, rs in records.items() if tp in assigned}
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            # e.g. the group rebalanced meanwhile: the partitions' new owner reads these
            # again and the apply drops them as duplicates
            log.warning("offset commit failed (%s): the batch will be read again", exc)
        else:
            self.committed.update(offsets)

    def positions(self) -> list[tuple[str, int, int | None, int | None]]:
        """(topic, partition, committed offset, high watermark) of the assigned partitions."""
        if self.consumer is None:
            return []
        return [
            (tp.topic, tp.partition, self.committed.get(tp), self.consumer.highwater(tp))
            for tp in sorted(self.consumer.assignment())
        ]


class _Lane:
    """One pipeline of ``DirectConsumer`` and what waits for it, applied in order.

    What the fetch loop hands it while it applies is merged into one waiting sub-batch (each
    partition's records in order) of up to ``limit`` records (or one fetch's share, if
    larger); the loop waits when more would not fit. A lane that is busy thus takes one
    batch of about ``batch_size`` records next, not several small ones."""

    def __init__(self, owner: DirectConsumer, pipeline: Pipeline, limit: int) -> None:
        self.owner = owner
        self.pipeline = pipeline
        self.limit = limit
        self.waiting: dict[Any, list[Any]] = {}
        self.count = 0  # records waiting
        self.applying = False
        self._wake = asyncio.Event()  # something is waiting
        self._settled = asyncio.Event()  # the lane took what waited, or finished a batch
        self.task = asyncio.ensure_future(self._run())

    def fits(self, n: int) -> bool:
        return self.count == 0 or self.count + n <= self.limit

    def put(self, records: dict[Any, list[Any]], n: int) -> None:
        """Add ``n`` records (of this lane's partitions) after what waits already."""
        waiting = self.waiting
        for tp, rs in records.items():
            before = waiting.get(tp)
            waiting[tp] = rs if before is None else before + rs
        self.count += n
        self._wake.set()

    async def room(self, n: int) -> None:
        """Until ``n`` more records fit."""
        while not self.fits(n):
            self._settled.clear()
            await self._settled.wait()

    async def drain(self) -> None:
        """Until the lane has applied and committed (or, closing, dropped) what it got."""
        while self.count or self.applying:
            self._settled.clear()
            await self._settled.wait()

    async def _run(self) -> None:
        owner = self.owner
        while True:
            while not self.count:
                self._wake.clear()
                await self._wake.wait()
            records, self.waiting, self.count = self.waiting, {}, 0
            self.applying = True
            self._settled.set()
            owner._taken.set()
            try:
                # stopping, or another lane failed: not applied, not committed (read again)
                if not owner._closing and owner._failure is None:
                    await owner._apply_group(self.pipeline, records)
            except Exception as exc:
                # never swallowed: the fetch loop raises it and the consumer stops, with no
                # later offset of this lane's partitions committed
                log.exception("a lane of the batch consumer failed; stopping it")
                if owner._failure is None:
                    owner._failure = exc
            finally:
                self.applying = False
                self._settled.set()


class _Rebalance(ConsumerRebalanceListener):
    """aiokafka rebalance listener of ``DirectConsumer``."""

    def __init__(self, owner: DirectConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        owner = self.owner
        # nothing new dispatched; every lane applies and commits what it was given
        async with owner._lock:
            await owner._drain()
            for tp in revoked:
                owner.committed.pop(tp, None)
                owner._lane_of.pop(tp, None)  # each lane is idle: it may join another

    async def on_partitions_assigned(self, assigned: Any) -> None:
        metrics.REBALANCES.inc()
        metrics.ASSIGNED_PARTITIONS.set(len(assigned))
        for tp in assigned:
            try:
                self.owner.committed[tp] = await self.owner.consumer.committed(tp)
            except Exception as exc:  # only the lag view uses it: never block consuming
                log.debug("committed offset of %s unknown: %s", tp, exc)


def _make_agent(pipeline: Pipeline, size: int, within: float) -> Callable[[Any], Any]:
    async def apply_batches(stream: faust.StreamT) -> None:
        # faust.Stream has take_events; the StreamT protocol it is typed with does not
        async for events in stream.take_events(size, within=within):  # type: ignore[attr-defined]
            await pipeline.handle(
                [
                    Incoming(
                        e.message.topic,
                        e.message.partition,
                        e.message.offset,
                        e.message.key,
                        e.message.value,
                    )
                    for e in events
                ]
            )

    return apply_batches


async def _record_positions(app: faust.App, engine: Any, group: str, worker: str) -> None:
    """Save what this worker knows of its partitions (for /readyz and the lag view)."""
    consumer = app.consumer
    found = []
    for tp in sorted(consumer.assignment()):
        try:
            end = consumer.highwater(tp)
        except Exception:
            end = None
        # faust keeps Kafka's committed offset: the next offset to read
        # private: faust keeps it on its Consumer, not on the ConsumerT protocol
        committed = consumer._committed_offset.get(tp)  # type: ignore[attr-defined]
        found.append((tp.topic, tp.partition, committed, end))
    await _save_positions(engine, group, worker, found)


async def _save_positions(
    engine: Any, group: str, worker: str, found: list[tuple[str, int, int | None, int | None]]
) -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "group_id": group,
            "topic": topic,
            "partition": partition,
            "committed_offset": committed,
            "end_offset": end,
            "worker": worker,
            "updated_at": now,
        }
        for topic, partition, committed, end in found
    ]
    if rows:
        try:
            await upsert_positions(engine, rows)
        except Exception as exc:
            log.debug("could not record positions: %s", exc)


class _Worker(faust.Worker):
    """faust's worker, less a fixed second at exit."""

    async def _sentinel_task(self) -> None:
        # mode runs this last, before closing the loop, to let the final callbacks (sockets
        # closing) run: it sleeps a whole second, most of the worker's stop time. A few
        # turns of the loop do the same.
        await asyncio.sleep(0.05)


def run(app: faust.App) -> None:
    """Run the faust worker of ``app`` until signalled."""
    worker = _Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.spinner = None  # its terminal escape codes would mangle the output of `up`
    worker.execute_from_commandline()


__all__ = ["DirectConsumer", "Pipeline", "faust_app", "is_transient", "run"]
