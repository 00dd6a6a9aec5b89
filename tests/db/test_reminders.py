"""Visit due dates and reminders over the real apply step and scheduler, time frozen,
on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from config import Settings
from models.db import make_engine
from models.policy import Policy
from models.tables import ClientRow, OutboxRow
from models.visits import overdue_days, resets_post_loan_clock
from reminders.rules import ClientClock, due_dates
from scheduler.service import ReminderScheduler
from testkit.reminders import World, day, iso


def _fired_metric(kind: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("crm_reminders_fired_total", {"kind": kind}) or 0.0


# --- pure rules ----------------------------------------------------------------------------
def test_due_dates_rules() -> None:
    p = Policy()
    assigned = day(-10)
    never = ClientClock("gold", True, None, assigned, None, None)
    d = due_dates(never, p)
    assert d.visit == assigned + timedelta(days=60)
    assert d.post_loan_check == assigned + timedelta(days=90)
    visited = ClientClock("gold", False, 7, assigned, day(3), None)
    d = due_dates(visited, p)
    assert d.visit == day(10) and d.post_loan_check is None
    assert due_dates(ClientClock(None, False, None, assigned, None, None), p).visit == day(80)
    assert resets_post_loan_clock("on_site", "surprise")
    assert resets_post_loan_clock("on_site", "post_loan_check")
    assert not resets_post_loan_clock("phone", "post_loan_check")
    assert not resets_post_loan_clock("on_site", "routine")
    assert overdue_days(day(0), day(0)) == 0
    assert overdue_days(day(0), day(1) - timedelta(seconds=1)) == 0
    assert overdue_days(day(0), day(7)) == 7
    assert overdue_days(day(1), day(0)) == -1


# --- the life of one reminder ---------------------------------------------------------------
async def test_diamond_reminded_on_day_30_escalated_37_resolved_38(world: World) -> None:
    w = world
    await w.client("c1", day(-100))
    await w.visit("c1", day(0))
    assert (await w.due("c1")) == (day(30), None)

    w.clock.t = day(30) - timedelta(seconds=1)
    r = await w.scheduler.scan_once()
    assert r.total_fired == 0 and await w.reminders() == []

    w.clock.t = day(30)
    before = _fired_metric("visit")
    assert (await w.scheduler.scan_once()).fired == {"visit": 1, "post_loan_check": 0}
    assert _fired_metric("visit") - before == 1
    w.clock.t = day(31)
    assert (await w.scheduler.scan_once()).total_fired == 0
    [rem] = await w.reminders()
    assert (rem.kind, rem.due_at, rem.status, rem.manager_id, rem.supervisor_id) == (
        "visit",
        day(30),
        "open",
        "m1",
        "s1",
    )

    w.clock.t = day(37) - timedelta(seconds=1)
    assert (await w.scheduler.scan_once()).escalated == 0
    w.clock.t = day(37)
    assert (await w.scheduler.scan_once()).escalated == 1
    w.clock.t = day(37.5)
    assert (await w.scheduler.scan_once()).escalated == 0
    [rem] = await w.reminders()
    assert rem.status == "escalated" and rem.escalated_at == day(37)

    w.clock.t = day(38)
    await w.visit("c1", day(38), method="phone")
    [rem] = await w.reminders()
    assert rem.status == "resolved" and rem.resolved_at == day(38)
    assert (await w.due("c1"))[0] == day(68)
    assert (await w.scheduler.scan_once()).total_fired == 0

    events = await w.outbox()
    assert [e["event_type"] for e in events] == [
        "reminder.fired",
        "reminder.escalated",
        "reminder.resolved",
    ]
    for e, status, overdue in zip(
        events, ("open", "escalated", "resolved"), (0, 7, 8), strict=True
    ):
        assert e["schema_version"] == 1 and e["event_id"]
        p = e["payload"]
        assert p["reminder_id"] == rem.id and p["client_id"] == "c1"
        assert p["manager_id"] == "m1" and p["supervisor_id"] == "s1"
        assert p["kind"] == "visit" and p["status"] == status
        assert p["overdue_days"] == overdue
        assert datetime.fromisoformat(p["due_at"]) == day(30)
        assert p["due_at"].endswith("+08:00")


async def test_never_visited_client_is_due_from_assignment(world: World) -> None:
    await world.client("c1", day(-50), tier="silver")
    assert (await world.due("c1")) == (day(40), None)


async def test_phone_visit_does_not_satisfy_a_post_loan_check(world: World) -> None:
    w = world
    await w.client("c1", day(-100), tier="gold", credit_client=True)
    assert (await w.due("c1")) == (day(-40), day(-10))
    r = await w.scheduler.scan_once()
    assert r.fired == {"visit": 1, "post_loan_check": 1}

    await w.visit("c1", day(0), method="phone", kind="post_loan_check")
    assert (await w.due("c1")) == (day(60), day(-10))
    by_kind = {r.kind: r.status for r in await w.reminders()}
    # the post-loan check (due day -10) is still asked for, escalated since day -3
    assert by_kind == {"visit": "resolved", "post_loan_check": "escalated"}

    await w.visit("c1", day(0.5), method="on_site", kind="routine")
    assert (await w.due("c1"))[1] == day(-10)
    await w.visit("c1", day(1), method="on_site", kind="surprise")
    assert (await w.due("c1")) == (day(61), day(91))
    assert {r.status for r in await w.reminders()} == {"resolved"}


async def test_late_visits_count_from_their_time_and_never_move_the_clock_back(
    world: World,
) -> None:
    w = world
    await w.client("c1", day(-100))
    await w.visit("c1", day(10))
    assert (await w.due("c1"))[0] == day(40)
    await w.visit("c1", day(5))  # logged late, older than the last visit
    assert (await w.due("c1"))[0] == day(40)

    # a visit made before the due instant but logged after the reminder fired resolves it
    w.clock.t = day(41)
    assert (await w.scheduler.scan_once()).total_fired == 1
    await w.visit("c1", day(39))
    assert (await w.due("c1"))[0] == day(69)
    assert [r.status for r in await w.reminders()] == ["resolved"]


async def test_tier_change_override_and_transfer_recompute(world: World) -> None:
    w = world
    await w.client("c1", day(-100), tier="diamond")
    await w.visit("c1", day(0))
    assert (await w.due("c1"))[0] == day(30)

    w.clock.t = day(35)
    assert (await w.scheduler.scan_once()).total_fired == 1
    await w.client("c1", day(-150), tier="bronze")  # an older upsert arriving late never wins
    assert (await w.due("c1"))[0] == day(30)
    await w.send(
        "crm.clients",
        "client.upserted",
        day(35),
        client_id="c1",
        manager_id="m1",
        tier="gold",
        assigned_at=iso(day(-100)),
    )
    assert (await w.due("c1"))[0] == day(60)
    [rem] = await w.reminders()
    assert rem.status == "resolved"

    await w.send(
        "crm.clients",
        "client.upserted",
        day(35.1),
        client_id="c1",
        manager_id="m1",
        tier="gold",
        visit_interval_days=20,
        assigned_at=iso(day(-100)),
    )
    assert (await w.due("c1"))[0] == day(20)
    assert (await w.scheduler.scan_once()).total_fired == 1

    # transfer: the open reminder follows the client to the new manager and supervisor
    await w.send(
        "crm.clients",
        "client.upserted",
        day(35.2),
        client_id="c1",
        manager_id="m2",
        tier="gold",
        visit_interval_days=20,
        assigned_at=iso(day(35.2)),
    )
    rems = await w.reminders()
    assert rems[-1].status == "escalated" and rems[-1].due_at == day(20)
    assert (rems[-1].manager_id, rems[-1].supervisor_id, rems[-1].branch_id) == ("m2", "s2", "b2")


async def test_snooze_wakes_and_fires_again(world: World) -> None:
    from reminders.store import snooze

    w = world
    await w.client("c1", day(-32))  # due on day -2
    w.clock.t = day(0)
    await w.scheduler.scan_once()
    [rem] = await w.reminders()
    assert rem.status == "open"
    async with w.engine.begin() as conn:
        await snooze(conn, rem.id, day(6), day(0))
    w.clock.t = day(5.9)  # the grace ran out on day 5, but a snoozed reminder waits
    r = await w.scheduler.scan_once()
    assert (r.woken, r.escalated) == (0, 0) and (await w.reminders())[0].status == "snoozed"
    w.clock.t = day(6)
    r = await w.scheduler.scan_once()
    assert (r.woken, r.total_fired, r.escalated) == (1, 0, 1)
    [rem] = await w.reminders()
    assert rem.status == "escalated" and rem.snoozed_until is None
    types = [e["event_type"] for e in await w.outbox()]
    assert types == ["reminder.fired", "reminder.fired", "reminder.escalated"]


async def test_recompute_all_applies_a_policy_change(world: World) -> None:
    from reminders.service import recompute_all

    w = world
    for i in range(7):
        await w.client(f"c{i}", day(-10), tier="gold")
    changed = await recompute_all(
        w.engine, Policy(visit_interval_days={"gold": 5}), day(0), source="test", chunk=3
    )
    assert changed.changed == 7
    assert {await w.due(f"c{i}") for i in range(7)} == {(day(-5), None)}


# --- several schedulers, downtime --------------------------------------------------------
async def test_two_schedulers_fire_and_escalate_each_reminder_once(
    db_url: str, world: World, tmp_path: Path
) -> None:
    w = world
    n = 150
    for i in range(n):
        assigned = day(-90) - timedelta(hours=i % 5)  # both clocks run out just before day 0
        await w.client(f"c{i:03d}", assigned, tier="silver", credit_client=i % 3 == 0)
    want = n + len(range(0, n, 3))
    other_engine = make_engine(db_url, writer=True)
    try:
        settings = Settings(database_url=db_url, data_dir=tmp_path)
        a = ReminderScheduler(settings, w.engine, now=w.clock, targets=[], chunk=40)
        b = ReminderScheduler(settings, other_engine, now=w.clock, targets=[], chunk=40)
        w.clock.t = day(0)
        ra, rb = await asyncio.gather(a.scan_once(), b.scan_once())
        assert ra.total_fired + rb.total_fired == want
        w.clock.t = day(10)
        ra, rb = await asyncio.gather(a.scan_once(), b.scan_once())
        assert ra.total_fired + rb.total_fired == 0
        assert ra.escalated + rb.escalated == want
    finally:
        await other_engine.dispose()
    rems = await w.reminders()
    assert len(rems) == want and {r.status for r in rems} == {"escalated"}
    async with w.engine.connect() as conn:
        per_type = dict(
            (
                await conn.execute(
                    select(OutboxRow.event_type, func.count()).group_by(OutboxRow.event_type)
                )
            ).all()
        )
    assert per_type == {"reminder.fired": want, "reminder.escalated": want}


async def test_reminders_due_while_the_scheduler_was_down_fire_when_it_returns(
    world: World, db_url: str, tmp_path: Path
) -> None:
    """The real APScheduler loop: the first scan runs at start and makes up for downtime."""
    w = world
    await w.client("c1", day(-100))
    await w.visit("c1", day(0))
    w.clock.t = day(45)  # down from day 0 to day 45: due on day 30, grace over on day 37
    settings = Settings(database_url=db_url, data_dir=tmp_path, reminder_scan_seconds=3600)
    sched = ReminderScheduler(settings, w.engine, now=w.clock, targets=[])
    await sched.start()
    try:
        job = sched.job("reminder-scan")
        assert job.coalesce is True and job.misfire_grace_time is None and job.max_instances == 1
        for _ in range(100):
            rems = await w.reminders()
            if rems and rems[0].status == "escalated":
                break
            await asyncio.sleep(0.1)
    finally:
        await sched.stop()
    [rem] = await w.reminders()
    assert rem.due_at == day(30) and rem.status == "escalated"
    assert [e["event_type"] for e in await w.outbox()] == ["reminder.fired", "reminder.escalated"]


async def test_a_scan_racing_a_visit_never_leaves_a_stale_reminder(
    db_url: str,
    world: World,
    tmp_path: Path,
) -> None:
    """PostgreSQL: a scan while a worker's transaction moves the due date (uncommitted)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: the scan waits for the worker")
    from sqlalchemy import update

    from reminders.service import recompute_due

    w = world
    await w.client("c1", day(-31))  # due day -1
    other = make_engine(db_url, writer=True)
    try:
        scan = ReminderScheduler(
            Settings(database_url=db_url, data_dir=tmp_path), other, now=w.clock, targets=[]
        )
        async with w.engine.begin() as conn:  # a worker applying a visit of day 0
            await conn.execute(
                update(ClientRow).where(ClientRow.client_id == "c1").values(last_visit_at=day(0))
            )
            await recompute_due(conn, ["c1"], Policy(), day(0), source="test")
            assert (await scan.scan_once()).total_fired == 0
        assert (await scan.scan_once()).total_fired == 0
    finally:
        await other.dispose()
    assert await w.reminders() == []
    assert (await w.due("c1"))[0] == day(30)


async def test_heads_up_when_the_policy_asks_for_it(world: World) -> None:
    w = world
    await w.client("c1", day(-100), tier="diamond")
    await w.client("c2", day(-80), tier="gold", credit_client=True)  # post-loan due day 10
    await w.visit("c1", day(0))
    await w.visit("c2", day(0))
    w.scheduler.policy = Policy(heads_up_enabled=True, heads_up_days=3)
    w.clock.t = day(7) - timedelta(seconds=1)
    assert (await w.scheduler.scan_once()).heads_up == 0
    w.clock.t = day(7)  # c2's post-loan check is due on day 10
    assert (await w.scheduler.scan_once()).heads_up == 1
    w.clock.t = day(8)
    assert (await w.scheduler.scan_once()).heads_up == 0
    w.clock.t = day(27)  # c1's visit is due on day 30
    r = await w.scheduler.scan_once()
    assert r.heads_up == 1 and r.fired == {"visit": 0, "post_loan_check": 1}
    w.clock.t = day(30)
    r = await w.scheduler.scan_once()
    assert r.heads_up == 0 and r.fired == {"visit": 1, "post_loan_check": 0}
    heads = [e for e in await w.outbox() if e["event_type"] == "reminder.heads_up"]
    assert [(e["payload"]["client_id"], e["payload"]["kind"]) for e in heads] == [
        ("c2", "post_loan_check"),
        ("c1", "visit"),
    ]
    p = heads[1]["payload"]
    assert p["reminder_id"] is None and p["status"] == "upcoming" and p["overdue_days"] == -3
    assert p["manager_id"] == "m1" and p["supervisor_id"] == "s1"
    assert datetime.fromisoformat(p["due_at"]) == day(30)
