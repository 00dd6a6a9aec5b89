"""Tests for the demo generator (pure part) and run_demo (pacing, stop, send failures)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import uuid
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from demo import ROLES, DemoGenerator, DemoMessage, run_demo
from testkit.process import child_environ

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 20, 9, 15, 0, tzinfo=TZ)
EVENT_TYPES = {
    "transactions": "transaction.posted",
    "accounts": "account.opened",
    "visits": "visit.logged",
    "clients": "client.upserted",
    "managers": "manager.upserted",
}
ACCOUNT_TYPES = {
    "basic_settlement",
    "general_settlement",
    "special",
    "temporary",
    "usd_settlement",
    "payroll",
    "ebanking",
    "personal",
}
PRODUCTS = {
    "asset": {"loan"},
    "liability": {"deposit"},
    "intermediary": {"fee", "wealth"},
    "off_balance": {"guarantee"},
}
INTERVALS = {"diamond": 30, "platinum": 45, "gold": 60, "silver": 90, "bronze": 180}
SAMPLE = 30_000


def fixed_gen(**kw: object) -> DemoGenerator:
    return DemoGenerator(now=lambda: NOW, **kw)  # type: ignore[arg-type]


def money(value: object) -> Decimal:
    assert isinstance(value, str), f"money must be a JSON string, got {value!r}"
    d = Decimal(value)
    assert d.as_tuple().exponent == -2, f"money must have two places: {value!r}"
    return d


def ts(value: object) -> datetime:
    assert isinstance(value, str)
    t = datetime.fromisoformat(value)
    assert t.tzinfo is not None and t.utcoffset() == timedelta(hours=8), value
    assert value.endswith("+08:00"), value
    return t


def fault_of(msg: DemoMessage) -> str | None:
    """Which deliberate fault a message carries, or None for a (supposedly) valid one."""
    try:
        env = json.loads(msg.value.decode("utf-8"))
    except ValueError:
        return "invalid_json"
    if env.get("event_type") not in EVENT_TYPES.values():
        return "unknown_event_type"
    payload = env.get("payload", {})
    if msg.topic_role in ("transactions", "accounts", "visits") and "client_id" not in payload:
        return "missing_client_id"
    if msg.topic_role == "transactions" and Decimal(payload["amount"]) < 0:
        return "negative_amount"
    return None


@pytest.fixture(scope="module")
def gen_sample() -> tuple[DemoGenerator, list[DemoMessage], list[DemoMessage]]:
    gen = fixed_gen()
    return gen, gen.reference_messages(), gen.next_messages(SAMPLE)


def check_envelope(msg: DemoMessage) -> dict:
    assert msg.topic_role in ROLES
    env = json.loads(msg.value.decode("utf-8"))
    assert isinstance(env["event_id"], str) and 1 <= len(env["event_id"]) <= 128
    assert uuid.UUID(env["event_id"]).version == 4
    assert env["event_type"] == EVENT_TYPES[msg.topic_role]
    assert type(env["schema_version"]) is int and env["schema_version"] == 1
    ts(env["occurred_at"])
    assert env["source"] in ("demo-core-banking", "demo-crm-app")
    assert isinstance(env["payload"], dict)
    return env


# --- determinism --------------------------------------------------------------------------
def test_same_seed_and_clock_give_identical_bytes() -> None:
    a, b = fixed_gen(), fixed_gen()
    assert a.reference_messages() == b.reference_messages()
    assert a.next_messages(3000) == b.next_messages(3000)
    # The reference set does not depend on how many activity messages came before.
    assert a.reference_messages() == fixed_gen().reference_messages()


def test_different_seed_differs() -> None:
    assert fixed_gen(seed=1).next_messages(50) != fixed_gen(seed=2).next_messages(50)


def test_naive_clock_is_read_as_bank_time() -> None:
    naive = DemoGenerator(now=lambda: NOW.replace(tzinfo=None))
    assert naive.next_messages(200) == fixed_gen().next_messages(200)


def test_new_run_gets_fresh_event_ids_but_same_business() -> None:
    later = NOW + timedelta(hours=1)
    a, b = fixed_gen(), DemoGenerator(now=lambda: later)
    ma, mb = a.next_messages(100), b.next_messages(100)
    ids_a = {json.loads(m.value)["event_id"] for m in ma if fault_of(m) is None}
    ids_b = {json.loads(m.value)["event_id"] for m in mb if fault_of(m) is None}
    assert not ids_a & ids_b
    assert [m.key for m in ma] == [m.key for m in mb]


def test_identical_across_processes() -> None:
    # Set iteration order of strings varies with PYTHONHASHSEED; the output must not.
    code = (
        "import hashlib; from datetime import datetime; from zoneinfo import ZoneInfo;"
        "from demo import DemoGenerator;"
        "now = datetime(2026, 11, 20, 9, 15, tzinfo=ZoneInfo('Asia/Shanghai'));"
        "g = DemoGenerator(now=lambda: now);"
        "h = hashlib.sha256();"
        "[h.update(m.topic_role.encode() + m.key + m.value)"
        " for m in g.reference_messages() + g.next_messages(2000)];"
        "print(h.hexdigest())"
    )
    root = Path(__file__).resolve().parents[2]
    digests = set()
    for hash_seed in ("1", "2"):
        env = child_environ({"PYTHONHASHSEED": hash_seed})
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
            check=True,
            timeout=60,
        )
        digests.add(out.stdout.strip())
    g = fixed_gen()
    h = hashlib.sha256()
    for m in g.reference_messages() + g.next_messages(2000):
        h.update(m.topic_role.encode() + m.key + m.value)
    assert digests == {h.hexdigest()}


# --- reference data -----------------------------------------------------------------------
def test_reference_messages(gen_sample) -> None:
    gen, ref, _ = gen_sample
    managers = [m for m in ref if m.topic_role == "managers"]
    clients = [m for m in ref if m.topic_role == "clients"]
    assert len(managers) == 15 and len(clients) == 240
    assert ref == managers + clients, "managers first, so clients find their manager"

    branch_of = {}
    for m in managers:
        p = check_envelope(m)["payload"]
        assert m.key == p["manager_id"].encode()
        assert p["manager_id"] == f"m-{p['branch_id']}-{p['manager_id'][-2:]}"
        assert p["branch_id"] in {"b01", "b02", "b03"}
        assert p["supervisor_id"] == f"s-{p['branch_id']}"
        assert p["level"] in {"senior", "advanced", "standard", "assistant"}
        assert Decimal("3000000") <= money(p["annual_profit_target"]) <= Decimal("20000000")
        assert p["name"]
        branch_of[p["manager_id"]] = p["branch_id"]
    assert set(branch_of) == set(gen.manager_ids)
    assert gen.branch_ids == ("b01", "b02", "b03")

    tiers, credit, held = Counter(), 0, Counter()
    names = set()
    for m in clients:
        env = check_envelope(m)
        p = env["payload"]
        assert m.key == p["client_id"].encode()
        assert p["segment"] in {"corporate", "retail"}
        assert p["manager_id"] in branch_of
        assert p["branch_id"] == branch_of[p["manager_id"]]
        assert isinstance(p["credit_client"], bool)
        assert p["claim_ratio"] in {"1.0", "0.8", "0.6", "0.5"}
        age = ts(env["occurred_at"]) - ts(p["assigned_at"])
        assert timedelta(days=60) <= age <= timedelta(days=200)
        if p["client_id"] in gen.unvisited_client_ids:
            # Never visited, so overdue at once under the default DOMAIN intervals.
            assert age > timedelta(days=INTERVALS[p["tier"]])
        tiers[p["tier"]] += 1
        credit += p["credit_client"]
        held[p["manager_id"]] += 1
        names.add(p["name"])
    assert len(names) == 240
    assert set(held) == set(branch_of), "every manager holds clients"
    assert 0.3 <= credit / 240 <= 0.5
    assert tiers["diamond"] < tiers["gold"] < tiers["silver"] + tiers["bronze"]
    assert tiers["silver"] + tiers["bronze"] > 120
    assert 70 <= len(gen.unvisited_client_ids) <= 90


def test_roster_size_is_configurable() -> None:
    gen = DemoGenerator(now=lambda: NOW, branches=2, managers_per_branch=3, clients=12)
    ref = gen.reference_messages()
    assert Counter(m.topic_role for m in ref) == {"managers": 6, "clients": 12}
    assert gen.client_ids[0] == "c0001" and gen.manager_ids[-1] == "m-b02-03"
    assert len(gen.next_messages(100)) == 100
    with pytest.raises(ValueError):
        DemoGenerator(clients=0)


# --- activity -----------------------------------------------------------------------------
def test_activity_messages_are_valid(gen_sample) -> None:
    gen, ref, msgs = gen_sample
    assert len(msgs) == SAMPLE
    clients = {
        p["client_id"]: p
        for p in (json.loads(m.value)["payload"] for m in ref if m.topic_role == "clients")
    }
    roles, lines, backdated, kinds = Counter(), Counter(), 0, Counter()
    negative_profit = 0
    for msg in msgs:
        if fault_of(msg) is not None:
            continue
        env = check_envelope(msg)
        p = env["payload"]
        roles[msg.topic_role] += 1
        assert msg.topic_role in ("transactions", "accounts", "visits")
        assert msg.key == p["client_id"].encode()
        client = clients[p["client_id"]]
        age = NOW - ts(env["occurred_at"])
        if msg.topic_role == "transactions":
            assert p["account_id"].startswith(p["client_id"])
            assert p["product"] in PRODUCTS[p["business_line"]]
            amount = money(p["amount"])
            assert Decimal("1000") <= amount <= Decimal("5000000")
            profit = money(p["simulated_profit"])
            assert abs(profit) < amount
            negative_profit += profit < 0
            assert p["currency"] == "CNY"
            lines[p["business_line"]] += 1
            assert timedelta(0) <= age <= timedelta(seconds=5)
        elif msg.topic_role == "accounts":
            assert p["account_type"] in ACCOUNT_TYPES
            assert p["origin"] in {"natural", "marketed"}
            if client["segment"] == "retail":
                assert p["account_type"] == "personal"
            assert timedelta(0) <= age <= timedelta(seconds=5)
        else:
            assert p["client_id"] not in gen.unvisited_client_ids
            assert p["manager_id"] == client["manager_id"]
            assert p["method"] in {"on_site", "phone", "sms", "online"}
            assert p["kind"] in {"routine", "business", "post_loan_check", "surprise"}
            if p["kind"] in ("post_loan_check", "surprise"):
                assert client["credit_client"]
            kinds[(p["kind"], p["method"])] += 1
            assert type(p["duration_minutes"]) is int and 0 <= p["duration_minutes"] <= 1440
            assert len(p.get("notes", "")) <= 4000
            if age > timedelta(seconds=5):
                assert timedelta(days=1) <= age <= timedelta(days=11)
                backdated += 1
    total = sum(roles.values())
    assert 0.66 <= roles["transactions"] / total <= 0.74
    assert 0.08 <= roles["accounts"] / total <= 0.12
    assert 0.17 <= roles["visits"] / total <= 0.23
    assert all(lines[line] > 0 for line in PRODUCTS)
    assert 0 < negative_profit < 0.1 * roles["transactions"]
    assert 0.03 <= backdated / roles["visits"] <= 0.07
    post_loan = sum(n for (k, _), n in kinds.items() if k == "post_loan_check")
    assert kinds[("post_loan_check", "on_site")] > 0.7 * post_loan
    # Most visitable clients are visited within a sample this size, none of the others.
    visited = {
        json.loads(m.value)["payload"]["client_id"]
        for m in msgs
        if m.topic_role == "visits" and fault_of(m) is None
    }
    assert len(visited) > 0.9 * (240 - len(gen.unvisited_client_ids))


def test_malformed_messages_present_at_intended_rate(gen_sample) -> None:
    _, _, msgs = gen_sample
    faults = Counter(f for f in map(fault_of, msgs) if f is not None)
    expected = SAMPLE / 300
    assert 0.6 * expected <= sum(faults.values()) <= 1.5 * expected
    assert set(faults) == {
        "invalid_json",
        "negative_amount",
        "missing_client_id",
        "unknown_event_type",
    }


def test_resends_are_byte_identical_at_intended_rate(gen_sample) -> None:
    _, _, msgs = gen_sample
    by_id: dict[str, DemoMessage] = {}
    resends = 0
    for msg in msgs:
        if fault_of(msg) is not None:
            continue
        event_id = json.loads(msg.value)["event_id"]
        if event_id in by_id:
            assert by_id[event_id] == msg, "a reused event_id must carry the same bytes"
            resends += 1
        by_id[event_id] = msg
    expected = SAMPLE / 200
    assert 0.6 * expected <= resends <= 1.5 * expected


# --- run_demo -----------------------------------------------------------------------------
def topic_for(role: str) -> str:
    return f"t.{role}"


async def test_run_demo_sends_reference_then_activity_and_stops_promptly() -> None:
    sent: list[tuple[str, bytes, bytes]] = []

    async def send(topic: str, key: bytes, value: bytes) -> None:
        sent.append((topic, key, value))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    gen = fixed_gen()
    loop.call_later(0.7, stop.set)
    task = asyncio.create_task(run_demo(send, topic_for, stop=stop, rate=100, generator=gen))
    await stop.wait()
    stopped_at = loop.time()
    count = await asyncio.wait_for(task, 2)
    assert loop.time() - stopped_at < 0.5
    assert count == len(sent)

    ref = fixed_gen().reference_messages()
    assert [(m.key, m.value) for m in ref] == [(k, v) for _, k, v in sent[: len(ref)]]
    assert [t for t, _, _ in sent[:15]] == ["t.managers"] * 15
    assert {t for t, _, _ in sent[15 : len(ref)]} == {"t.clients"}
    activity = sent[len(ref) :]
    assert 20 <= len(activity) <= 120  # ~0.7 s at 100/s
    for topic, key, value in activity:
        assert topic in {"t.transactions", "t.accounts", "t.visits"}
        msg = DemoMessage(topic.removeprefix("t."), key, value)
        if fault_of(msg) is None:
            check_envelope(msg)


async def test_run_demo_cancels_a_hanging_send_on_stop() -> None:
    async def send(topic: str, key: bytes, value: bytes) -> None:
        await asyncio.Event().wait()  # a broker that never answers

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(run_demo(send, topic_for, stop=stop, generator=fixed_gen()))
    await asyncio.sleep(0.1)
    stop.set()
    stopped_at = loop.time()
    assert await asyncio.wait_for(task, 2) == 0
    assert loop.time() - stopped_at < 0.5


async def test_run_demo_idle_between_ticks_stops_promptly() -> None:
    async def send(topic: str, key: bytes, value: bytes) -> None:
        return None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(
        run_demo(send, topic_for, stop=stop, rate=0, generator=fixed_gen(), log=lambda _: None)
    )
    await asyncio.sleep(0.3)
    stop.set()
    stopped_at = loop.time()
    assert await asyncio.wait_for(task, 2) == 255  # reference data only at rate 0
    assert loop.time() - stopped_at < 0.5


async def test_run_demo_survives_send_failures() -> None:
    calls = 0
    ok = 0
    logs: list[str] = []

    async def send(topic: str, key: bytes, value: bytes) -> None:
        nonlocal calls, ok
        calls += 1
        if calls % 3 == 0:
            raise ConnectionError("broker unavailable")
        ok += 1

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    count = await asyncio.wait_for(
        run_demo(send, topic_for, stop=stop, rate=50, generator=fixed_gen(), log=logs.append),
        3,
    )
    assert count == ok and calls > 255
    failures = [line for line in logs if "failed" in line]
    assert failures and "broker unavailable" in failures[0]
    assert len(failures) < calls / 3, "failure logging is throttled"


async def test_run_demo_survives_unknown_role() -> None:
    logs: list[str] = []

    def picky_topic_for(role: str) -> str:
        if role == "visits":
            raise KeyError(role)
        return role

    sent: list[str] = []

    async def send(topic: str, key: bytes, value: bytes) -> None:
        sent.append(topic)

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    count = await run_demo(
        send, picky_topic_for, stop=stop, rate=100, generator=fixed_gen(), log=logs.append
    )
    assert count == len(sent) and "visits" not in sent and "transactions" in sent
    assert any("cannot send to visits" in line for line in logs)


def test_balance_messages_cover_every_account_and_decode() -> None:
    from models.decode import decode_event
    from models.events import BalanceSnapshot

    gen = fixed_gen()
    day = NOW.date() - timedelta(days=1)
    msgs = gen.balance_messages(day)
    assert msgs == fixed_gen().balance_messages(day)  # deterministic
    events = [decode_event(m.value) for m in msgs]
    assert all(m.topic_role == "balances" for m in msgs)
    payloads = [e.payload for e in events]
    assert all(isinstance(p, BalanceSnapshot) and p.as_of_date == day for p in payloads)
    assert len({p.account_id for p in payloads}) == len(payloads)  # type: ignore[union-attr]
    assert {p.business_line for p in payloads} == {"liability", "asset"}  # type: ignore[union-attr]
    assert all(e.occurred_at <= NOW for e in events)
    assert len({e.event_id for e in events}) == len(events)


async def test_run_demo_sends_past_nights_of_balances_when_asked() -> None:
    sent: list[str] = []

    async def send(topic: str, key: bytes, value: bytes) -> None:
        sent.append(topic)

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    gen = fixed_gen()
    count = await asyncio.wait_for(
        run_demo(
            send, topic_for, stop=stop, rate=0, generator=gen, balance_nights=3, log=lambda _: None
        ),
        5,
    )
    per_night = len(fixed_gen().balance_messages(NOW.date()))
    assert sent.count("t.balances") == 3 * per_night
    assert count == 255 + 3 * per_night
