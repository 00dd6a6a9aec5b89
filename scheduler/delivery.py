"""Delivering the reminder outbox: to the ``crm.reminders`` topic and to webhooks (the
``reminder.*`` events), and to the channels that reach people (the ``notice.*`` messages:
WeCom, DingTalk, e-mail; scheduler/channels/).

Each ``reminder.*`` event gets one delivery row per machine target (``kafka``, or a webhook
URL), each ``notice.*`` message one per channel its ``routes`` name, when a scheduler first
sees it; each row is sent, retried with exponential backoff, and marked
``delivered`` or, after ``max_attempts``, ``failed`` (kept, listed by the API, never
dropped). A lease (``locked_until``) stops two scheduler instances sending a row at the
same moment; delivery is at least once, so receivers dedupe on the envelope's ``event_id``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from models.tables import DeliveryRow, OutboxRow
from scheduler.metrics import DELIVERY_FAILURES, WEBHOOK_FAILURES

log = logging.getLogger("crmtracker.scheduler.delivery")

SIGNATURE_HEADER = "X-CRM-Signature"


def sign(secret: str, body: bytes) -> str:
    """The signature header value: ``sha256=`` + hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


MACHINE_KINDS = ("kafka", "webhook")
"""Targets that receive the ``reminder.*`` envelopes; the others (channels) the notices."""


def target_kind(target: Any) -> str:
    """``kafka``, ``webhook``, ``wecom``, ``dingtalk`` or ``email``."""
    kind = getattr(target, "kind", None)
    return kind or ("kafka" if target.name == "kafka" else "webhook")


def is_notice(event_type: str) -> bool:
    return event_type.startswith("notice.")


class Target(Protocol):
    name: str

    async def send(self, key: str, body: bytes, headers: dict[str, str]) -> None: ...

    async def close(self) -> None: ...


class KafkaTarget:
    """The ``crm.reminders`` topic, keyed by manager id."""

    name = "kafka"
    kind = "kafka"

    def __init__(self, bootstrap: str, topic: str, client_args: dict[str, Any]) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.client_args = client_args
        self._producer: Any = None
        self._lock = asyncio.Lock()  # concurrent sends share one producer

    async def _started(self) -> Any:
        async with self._lock:
            if self._producer is None:
                from aiokafka import AIOKafkaProducer

                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap, acks="all", linger_ms=5, **self.client_args
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
        return self._producer

    async def send(self, key: str, body: bytes, headers: dict[str, str]) -> None:
        producer = await self._started()
        await producer.send_and_wait(self.topic, key=key.encode(), value=body)

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class WebhookTarget:
    """An HTTP endpoint receiving each envelope as a signed JSON POST."""

    kind = "webhook"

    def __init__(self, url: str, secret: str | None, timeout: float = 10.0) -> None:
        self.name = url
        self.url = url
        self.secret = secret
        self._client = httpx.AsyncClient(timeout=timeout)

    async def send(self, key: str, body: bytes, headers: dict[str, str]) -> None:
        h = {"Content-Type": "application/json", **headers}
        if self.secret:
            h[SIGNATURE_HEADER] = sign(self.secret, body)
        r = await self._client.post(self.url, content=body, headers=h)
        if r.status_code >= 300:
            raise RuntimeError(f"HTTP {r.status_code}")

    async def close(self) -> None:
        await self._client.aclose()


@dataclass
class DeliveryResult:
    dispatched: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0


class Deliverer:
    def __init__(
        self,
        engine: AsyncEngine,
        targets: Sequence[Target],
        now: Callable[[], datetime],
        *,
        max_attempts: int = 12,
        backoff: float = 1.0,
        backoff_max: float = 300.0,
        lease: float = 60.0,
        batch: int = 500,
        concurrency: int = 32,
        release: Callable[[str, datetime], datetime] | None = None,
    ) -> None:
        self.engine = engine
        self.targets = {t.name: t for t in targets}
        self.now = now
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.lease = timedelta(seconds=lease)
        self.batch = batch
        self._sem = asyncio.Semaphore(concurrency)
        # when a message of a type may go out (quiet hours hold digests; the rest goes at once)
        self.release = release or (lambda _event_type, t: t)
        self._kinds = {n: target_kind(t) for n, t in self.targets.items()}
        self._machine = sorted(n for n, k in self._kinds.items() if k in MACHINE_KINDS)
        self._channels = {n for n, k in self._kinds.items() if k not in MACHINE_KINDS}
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def retry_delay(self, attempts: int) -> float:
        """Exponential backoff after the n-th failed attempt: backoff × 2^(n-1), capped."""
        return float(min(self.backoff * 2 ** max(attempts - 1, 0), self.backoff_max))

    async def run_once(self) -> DeliveryResult:
        """Fan new outbox events out to the targets, then send what is due."""
        out = DeliveryResult()
        while n := await self.dispatch():
            out.dispatched += n
        while True:
            part = await self.deliver_batch()
            out.delivered += part.delivered
            out.retrying += part.retrying
            out.failed += part.failed
            if part.delivered + part.retrying + part.failed < self.batch:
                return out

    async def dispatch(self) -> int:
        """Delivery rows for new outbox events; returns events dispatched.

        A ``reminder.*`` event gets one row per machine target, a ``notice.*`` message one per
        channel of its ``routes`` configured here. Without machine targets the events wait
        (unmarked) for a scheduler that has some, and notices likewise for channels (every
        instance should be configured with the same targets)."""
        if not self.targets:
            return 0
        now = self.now()
        kinds = OutboxRow.event_type.like("notice.%")
        wanted = and_(OutboxRow.dispatched.is_(False))
        if not self._machine:
            wanted = and_(wanted, kinds)
        elif not self._channels:
            wanted = and_(wanted, ~kinds)
        async with self.engine.begin() as conn:
            events = (
                await conn.execute(
                    select(OutboxRow.id, OutboxRow.event_type, OutboxRow.body)
                    .where(wanted)
                    .order_by(OutboxRow.id)
                    .limit(self.batch)
                )
            ).all()
            if not events:
                return 0
            ids = [e.id for e in events]
            rows = [
                {
                    "outbox_id": e.id,
                    "target": t,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": self.release(e.event_type, now),
                    "created_at": now,
                    "updated_at": now,
                }
                for e in events
                for t in self._targets_of(e.event_type, e.body)
            ]
            if rows:
                await conn.execute(
                    self._insert(DeliveryRow).on_conflict_do_nothing(
                        index_elements=["outbox_id", "target"]
                    ),
                    rows,
                )
            await conn.execute(
                update(OutboxRow).where(OutboxRow.id.in_(ids)).values(dispatched=True)
            )
            return len(ids)

    def _targets_of(self, event_type: str, body: str) -> list[str]:
        if not is_notice(event_type):
            return self._machine
        routes = json.loads(body).get("routes") or []
        return sorted(set(routes) & self._channels)

    async def deliver_batch(self) -> DeliveryResult:
        now = self.now()
        out = DeliveryResult()
        if not self.targets:
            return out
        free = and_(
            DeliveryRow.status == "pending",
            DeliveryRow.next_attempt_at <= now,
            DeliveryRow.target.in_(sorted(self.targets)),
            or_(DeliveryRow.locked_until.is_(None), DeliveryRow.locked_until <= now),
        )
        pick = select(DeliveryRow.id).where(free).order_by(DeliveryRow.id).limit(self.batch)
        if self.engine.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        async with self.engine.begin() as conn:
            claimed = (
                await conn.execute(
                    update(DeliveryRow)
                    .where(DeliveryRow.id.in_(pick.scalar_subquery()), free)
                    .values(locked_until=now + self.lease)
                    .returning(
                        DeliveryRow.id,
                        DeliveryRow.outbox_id,
                        DeliveryRow.target,
                        DeliveryRow.attempts,
                    )
                )
            ).all()
            if not claimed:
                return out
            bodies = {
                r.id: r
                for r in (
                    await conn.execute(
                        select(
                            OutboxRow.id,
                            OutboxRow.key,
                            OutboxRow.body,
                            OutboxRow.event_id,
                            OutboxRow.event_type,
                        ).where(OutboxRow.id.in_(sorted({c.outbox_id for c in claimed})))
                    )
                ).all()
            }
        # per target and key, in outbox order (a fired event goes before its resolution);
        # different keys and targets go concurrently
        groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for c in sorted(claimed, key=lambda c: c.id):
            groups[(c.target, bodies[c.outbox_id].key)].append(c)
        results: list[tuple[Any, str, str | None]] = []

        async def run(rows: list[Any]) -> None:
            async with self._sem:
                for c in rows:
                    ob = bodies[c.outbox_id]
                    results.append((c, ob.event_type, await self._send(c, ob)))

        await asyncio.gather(*(run(rows) for rows in groups.values()))
        await self._record(results, out)
        return out

    async def _send(self, c: Any, ob: Any) -> str | None:
        target = self.targets[c.target]
        headers = {"X-CRM-Event-Id": ob.event_id, "X-CRM-Event-Type": ob.event_type}
        try:
            await target.send(ob.key, ob.body.encode(), headers)
            return None
        except Exception as exc:  # any failure is recorded and retried, never raised
            kind = self._kinds.get(c.target, "webhook")
            DELIVERY_FAILURES.labels(kind).inc()
            if kind == "webhook":
                WEBHOOK_FAILURES.inc()
            # channel errors are already free of secrets (scheduler/channels/common.py)
            reason = f"{type(exc).__name__}: {exc}"[:1000]
            log.warning(
                "delivery %s to %s failed (attempt %d): %s", c.id, kind, c.attempts + 1, reason
            )
            return reason

    async def _record(
        self, results: list[tuple[Any, str, str | None]], out: DeliveryResult
    ) -> None:
        now = self.now()
        ok, bad = [], []
        for c, event_type, error in results:
            attempts = c.attempts + 1
            if error is None:
                ok.append({"did": c.id, "n": attempts})
                out.delivered += 1
                continue
            gave_up = attempts >= self.max_attempts
            bad.append(
                {
                    "did": c.id,
                    "n": attempts,
                    "err": error,
                    "st": "failed" if gave_up else "pending",
                    "nxt": self.release(
                        event_type, now + timedelta(seconds=self.retry_delay(attempts))
                    ),
                }
            )
            if gave_up:
                out.failed += 1
            else:
                out.retrying += 1
        async with self.engine.begin() as conn:
            if ok:
                await conn.execute(
                    update(DeliveryRow)
                    .where(DeliveryRow.id == bindparam("did"))
                    .values(
                        status="delivered",
                        attempts=bindparam("n"),
                        delivered_at=now,
                        locked_until=None,
                        updated_at=now,
                    ),
                    ok,
                )
            if bad:
                await conn.execute(
                    update(DeliveryRow)
                    .where(DeliveryRow.id == bindparam("did"))
                    .values(
                        status=bindparam("st"),
                        attempts=bindparam("n"),
                        last_error=bindparam("err"),
                        next_attempt_at=bindparam("nxt"),
                        locked_until=None,
                        updated_at=now,
                    ),
                    bad,
                )

    async def close(self) -> None:
        for t in self.targets.values():
            try:
                await t.close()
            except Exception:  # closing is best effort
                log.debug("closing %s failed", t.name, exc_info=True)
