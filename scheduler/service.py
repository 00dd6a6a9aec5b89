"""The reminder scheduler: runs the reminder scan (reminders/service.py) and the delivery
of the outbox (scheduler/delivery.py) on APScheduler 3 (``AsyncIOScheduler``), with the
delivery targets and channels the settings name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from config import SchedulerConfig
from models.digest import NoticeRules
from models.policy import Policy
from reminders.rules import release_at
from reminders.service import (
    SCHEDULER_SOURCE,
    RecomputeResult,
    Scan,
    ScanResult,
    digest,
    recompute_all,
    scan,
)
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
from streams.balances import check_tiers

log = logging.getLogger("crmtracker.scheduler")


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
    def scan_at(self, now: datetime) -> Scan:
        """A scan at ``now`` under the policy, notice rules and channels as set now."""
        return Scan(
            now, self.policy, self.rules, tuple(self.channels), self.chunk, check_tiers=check_tiers
        )

    async def scan_once(self) -> ScanResult:
        """One scan (reminders/service.py ``scan``): wake, fire, heads-ups, tier check,
        escalate, digests."""
        return await scan(self.engine, self.scan_at(self.now()))

    async def digest_once(self, now: datetime | None = None) -> int:
        """The morning digests due at ``now`` (none outside the digest hours, none twice a
        day for one person); their contents are read from the state at this moment."""
        return await digest(self.engine, self.scan_at(now or self.now()))

    async def deliver_once(self) -> DeliveryResult:
        return await self.deliverer.run_once()

    async def recompute_all(self) -> RecomputeResult:
        """Every client's due dates under the current policy (run at start; also the
        ``crm-tracker reminders recompute`` command)."""
        return await recompute_all(self.engine, self.policy, self.now(), source=SCHEDULER_SOURCE)

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
