"""The reminder scheduler: scans due dates, fires, escalates and un-snoozes reminders, and
delivers the outbox (APScheduler 3 ``AsyncIOScheduler``).

Every scan step is a state query ("due and no reminder row yet", "open past the grace
period", "snooze ran out"), so a scan missed while the scheduler was down is made up by the
next one, and two instances over one database fire each reminder once (the unique key
(client, kind, due_at) and ON CONFLICT DO NOTHING decide who fires).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from config import SchedulerConfig
from models.digest import DIGEST, ESCALATION, NoticeRules, digest_day, release_at
from models.notices import write_digests, write_escalation_notices
from models.policy import Policy
from models.reminders import (
    RecomputeResult,
    escalate_due,
    fire_due,
    heads_up_due,
    recompute_all,
    unsnooze_due,
)
from models.visits import REMINDER_KINDS
from scheduler.channels import channel_targets
from scheduler.delivery import (
    MACHINE_KINDS,
    Deliverer,
    DeliveryResult,
    KafkaTarget,
    Target,
    WebhookTarget,
    target_kind,
)
from scheduler.metrics import NOTICES, REMINDERS_ESCALATED, REMINDERS_FIRED
from streams.balances import check_tiers

log = logging.getLogger("crmtracker.scheduler")

SOURCE = "crm-tracker-scheduler"


@dataclass
class ScanResult:
    fired: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REMINDER_KINDS, 0))
    escalated: int = 0
    woken: int = 0
    heads_up: int = 0
    escalation_notices: int = 0
    digests: int = 0
    tier_drops: int = 0

    @property
    def total_fired(self) -> int:
        return sum(self.fired.values())


def default_targets(settings: SchedulerConfig) -> list[Target]:
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    targets: list[Target] = [
        KafkaTarget(
            settings.kafka.bootstrap, settings.topics.reminders, settings.kafka.client_args()
        )
    ]
    targets += [WebhookTarget(u, secret, settings.webhook_timeout) for u in settings.webhook_urls]
    return targets + channel_targets(settings)


class ReminderScheduler:
    """Owns the scan and the delivery; ``start()``/``stop()`` run them on APScheduler."""

    def __init__(
        self,
        settings: SchedulerConfig,
        engine: AsyncEngine,
        *,
        policy: Policy | None = None,
        now: Callable[[], datetime] | None = None,
        targets: Sequence[Target] | None = None,
        chunk: int = 5000,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.policy = policy or settings.policy
        self.now = now or (lambda: datetime.now(UTC))
        self.chunk = chunk
        self.rules: NoticeRules = settings.notice_rules
        targets = default_targets(settings) if targets is None else targets
        # the channels that reach people, by target name (wecom:<branch>, dingtalk:..., email)
        self.channels = sorted(t.name for t in targets if target_kind(t) not in MACHINE_KINDS)
        self.deliverer = Deliverer(
            engine,
            targets,
            self.now,
            max_attempts=settings.webhook_max_attempts,
            backoff=settings.webhook_backoff_seconds,
            backoff_max=settings.webhook_backoff_max_seconds,
            release=lambda event_type, t: release_at(event_type, t, self.rules),
        )
        self._aps: Any = None

    # --- one pass of each job (tests call these directly) --------------------------------
    async def scan_once(self) -> ScanResult:
        """Wake expired snoozes, fire every reminder that is due, then escalate (a reminder
        fired late, e.g. after downtime, escalates in the same pass if its grace is over)."""
        now = self.now()
        out = ScanResult()
        while True:
            async with self.engine.begin() as conn:
                woken = await unsnooze_due(conn, now, self.policy, limit=self.chunk, source=SOURCE)
            out.woken += len(woken)
            if len(woken) < self.chunk:
                break
        for kind in REMINDER_KINDS:
            after = None
            while True:
                async with self.engine.begin() as conn:
                    created, after = await fire_due(
                        conn, kind, now, self.policy, after=after, limit=self.chunk, source=SOURCE
                    )
                if created:
                    out.fired[kind] += len(created)
                    REMINDERS_FIRED.labels(kind).inc(len(created))
                if after is None:
                    break
        if self.policy.heads_up_enabled:
            for kind in REMINDER_KINDS:
                after = None
                while True:
                    async with self.engine.begin() as conn:
                        sent, after = await heads_up_due(
                            conn,
                            kind,
                            now,
                            self.policy,
                            after=after,
                            limit=self.chunk,
                            source=SOURCE,
                        )
                    out.heads_up += len(sent)
                    if after is None:
                        break
        # --- balances (issue 19, streams/balances.py): 客户等级下降, one chunk per scan
        async with self.engine.begin() as conn:
            drops = await check_tiers(conn, self.policy, now, limit=self.chunk)
        out.tier_drops += len(drops)
        # --- end balances
        while True:
            async with self.engine.begin() as conn:
                escalated = await escalate_due(
                    conn, now, self.policy, limit=self.chunk, source=SOURCE
                )
                # pushed at once, quiet hours or not: one message per supervisor, same commit
                pushes = await write_escalation_notices(
                    conn, escalated, now, self.rules, self.channels, source=SOURCE
                )
            out.escalated += len(escalated)
            out.escalation_notices += pushes
            NOTICES.labels(ESCALATION).inc(pushes)
            for r in escalated:
                REMINDERS_ESCALATED.labels(r["kind"]).inc()
            if len(escalated) < self.chunk:
                break
        out.digests = await self.digest_once(now)
        return out

    async def digest_once(self, now: datetime | None = None) -> int:
        """The morning digests due at ``now`` (none outside the digest hours, none twice a
        day for one person); their contents are read from the state at this moment."""
        now = now or self.now()
        day = digest_day(now, self.rules)
        if day is None or not self.channels:
            return 0
        async with self.engine.begin() as conn:
            n = await write_digests(conn, day, now, self.rules, self.channels, source=SOURCE)
        NOTICES.labels(DIGEST).inc(n)
        return n

    async def deliver_once(self) -> DeliveryResult:
        return await self.deliverer.run_once()

    async def recompute_all(self) -> RecomputeResult:
        """Every client's due dates under the current policy (run at start; also the
        ``crm-tracker reminders recompute`` command)."""
        return await recompute_all(self.engine, self.policy, self.now(), source=SOURCE)

    # --- jobs ----------------------------------------------------------------------------
    async def _scan_job(self) -> None:
        try:
            r = await self.scan_once()
            if r.total_fired or r.escalated or r.woken or r.heads_up or r.digests:
                log.info(
                    "scan: fired %s, escalated %d, un-snoozed %d, heads-up %d, "
                    "escalation pushes %d, digests %d",
                    r.fired,
                    r.escalated,
                    r.woken,
                    r.heads_up,
                    r.escalation_notices,
                    r.digests,
                )
            await self._deliver_job()
        except Exception:  # a failed scan is retried by the next one; never kill the loop
            log.exception("reminder scan failed")

    async def _deliver_job(self) -> None:
        try:
            r = await self.deliver_once()
            if r.failed or r.retrying:
                log.warning(
                    "delivery: %d delivered, %d to retry, %d failed",
                    r.delivered,
                    r.retrying,
                    r.failed,
                )
        except Exception:
            log.exception("reminder delivery failed")

    async def start(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        if self.settings.reminder_recompute_on_start:
            r = await self.recompute_all()
            log.info("due dates recomputed: %d changed, %d resolved", r.changed, r.resolved)
        # coalesce: runs missed while the loop was busy or the host asleep collapse into one;
        # misfire_grace_time=None: a late run still runs. Either way the scan is a state query,
        # so nothing due in the gap is lost. max_instances=1: scans never overlap.
        aps = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        first = datetime.now(UTC)
        aps.add_job(
            self._scan_job,
            IntervalTrigger(seconds=self.settings.reminder_scan_seconds),
            id="reminder-scan",
            next_run_time=first,
        )
        aps.add_job(
            self._deliver_job,
            IntervalTrigger(seconds=self.settings.reminder_deliver_seconds),
            id="reminder-delivery",
            next_run_time=first,
        )
        aps.start()
        self._aps = aps

    def job(self, job_id: str) -> Any:
        return self._aps.get_job(job_id) if self._aps is not None else None

    async def stop(self) -> None:
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None
        await self.deliverer.close()


async def run_scheduler(settings: SchedulerConfig, engine: AsyncEngine, stop: Any = None) -> None:
    """The production loop: ``crm-tracker scheduler`` and the in-process one of ``up``, on
    an engine its caller owns."""
    import asyncio

    sched = ReminderScheduler(settings, engine)
    stop = stop or asyncio.Event()
    try:
        await sched.start()
        log.info(
            "scheduler running: scan every %ss, %d webhook(s), channels %s",
            settings.reminder_scan_seconds,
            len(settings.webhook_urls),
            ", ".join(sched.channels) or "none",  # names only: URLs carry keys
        )
        await stop.wait()
    finally:
        await sched.stop()
