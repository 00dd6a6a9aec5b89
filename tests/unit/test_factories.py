"""Tests of the independent test-data factory (testkit/factories.py) itself.

The vectors test is the proof that the reference computation follows the contract: run on the
shared vectors' valid events it must reproduce vectors/expected.json exactly."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from testkit.factories import (
    EVENT_TYPES,
    MALFORMED_KINDS,
    MONTHS,
    Msg,
    compute_expected,
    exact_weighted,
    generate_log,
    load_vectors,
    parse_message,
    valid_events,
)
from testkit.paths import VECTORS

TZ = "Asia/Shanghai"
SMALL = {"events": 3000, "managers": 10, "branches": 3, "clients": 120}
FACT_TYPES = ("transaction.posted", "account.opened", "visit.logged")
FIGURES = {
    "transactions",
    "volume",
    "simulated_profit",
    "weighted_profit",
    "accounts_opened",
    "visits",
}


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def log():
    return generate_log(7)


@pytest.fixture(scope="module")
def parsed(log):
    return valid_events(log.messages)


def _env(m: Msg) -> dict | None:
    try:
        e = json.loads(m.value)
    except (TypeError, ValueError):
        return None
    return e if isinstance(e, dict) else None


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes():
    a, b = generate_log(3, **SMALL), generate_log(3, **SMALL)
    assert a.messages == b.messages
    assert a.tallies == b.tallies and a.branches == b.branches and a.bad == b.bad
    c = generate_log(4, **SMALL)
    assert [m.value for m in c.messages] != [m.value for m in a.messages]


def test_default_size_is_fast():
    t = time.perf_counter()
    g = generate_log(11)
    elapsed = time.perf_counter() - t
    assert elapsed < 3.5, f"generate_log(events=20000) took {elapsed:.2f}s"
    assert len(g.messages) == 24 + 500 + 12 + 20_000 + 1000 + 200


# ----------------------------------------------------------------------------- counts


def test_malformed_count_and_kinds(log, parsed):
    events, bad = parsed
    assert log.bad == round(20_000 * 0.01) == 200
    assert bad == log.bad  # our validator rejects exactly the malformed ones
    rejected = [m for m in log.messages if parse_message(m) is None]
    assert len(rejected) == 200
    # every kind present, spread evenly (200 / 12 -> 16 or 17 each)
    kinds = Counter()
    for m in rejected:
        if m.value is None:
            kinds["tombstone"] += 1
            continue
        try:
            text = m.value.decode("utf-8")
        except UnicodeDecodeError:
            kinds["non_utf8"] += 1
            continue
        try:
            e = json.loads(text)
        except ValueError:
            kinds["truncated_json"] += 1
            continue
        if isinstance(e, list):
            kinds["json_array"] += 1
        elif e["event_type"] not in EVENT_TYPES.values():
            kinds["unknown_event_type"] += 1
        elif e["schema_version"] == "1":
            kinds["schema_version_string"] += 1
        elif "client_id" not in e["payload"]:
            kinds["missing_client_id"] += 1
        elif e["payload"].get("method") == "carrier_pigeon":
            kinds["visit_bad_method"] += 1
        elif e["payload"].get("currency") == "USD":
            kinds["currency_usd"] += 1
        elif e["payload"].get("amount") == "12,00":
            kinds["amount_comma_string"] += 1
        elif str(e["payload"].get("amount", "")).startswith("-"):
            kinds["negative_amount"] += 1
        elif not e["occurred_at"].endswith(("Z", "+08:00", "+00:00")):
            kinds["naive_occurred_at"] += 1
    assert set(kinds) == set(MALFORMED_KINDS)
    assert set(kinds.values()) <= {16, 17}
    # malformed ones are never duplicated, and their event_ids are fresh
    with_value = [m.value for m in rejected if m.value is not None]
    assert len(set(with_value)) == len(with_value) == 200 - kinds["tombstone"]
    valid_ids = {e["event_id"] for e in events}
    for m in rejected:
        e = _env(m)
        if e and "event_id" in e:
            assert e["event_id"] not in valid_ids


def test_duplicates_are_identical_resends_after_the_original(log):
    first: dict[bytes, int] = {}
    dups = 0
    for i, m in enumerate(log.messages):
        if m.value is None:
            continue
        if m.value in first:
            dups += 1
            assert m.role in {"transactions", "accounts", "visits"}
            assert parse_message(m) is not None
            assert log.messages[first[m.value]] == m  # same key too
        else:
            first[m.value] = i
    assert dups == round(20_000 * 0.05) == 1000
    # distinct events by id: no two different payloads share an event_id
    by_id: dict[str, bytes] = {}
    for m in log.messages:
        e = parse_message(m)
        if e:
            assert by_id.setdefault(e["event_id"], m.value) == m.value


def test_rates_are_parameters():
    g = generate_log(
        5, **SMALL, duplicate_rate=0.1, malformed_rate=0.02, late_clients=5, transfers=4
    )
    events, bad = valid_events(g.messages)
    assert g.bad == bad == 60
    assert len(g.messages) - bad - len(events) == 300  # resends
    t, b = compute_expected(events, TZ)
    assert (t, b) == (g.tallies, g.branches)


# ----------------------------------------------------------------------------- shape and order


def test_production_order(log):
    roles = [m.role for m in log.messages]
    assert roles[:24] == ["managers"] * 24
    n_clients_first = 500 - 20 + 12
    assert roles[24 : 24 + n_clients_first] == ["clients"] * n_clients_first
    assert roles[-20:] == ["clients"] * 20
    assert set(roles[24 + n_clients_first : -20]) == {"transactions", "accounts", "visits"}
    late = {m.key for m in log.messages[-20:]}
    early = {m.key for m in log.messages[24 : 24 + n_clients_first]}
    assert not late & early  # late clients have a single upsert


def test_transfers(log, parsed):
    events, _ = parsed
    ups: dict[str, list[dict]] = {}
    for e in events:
        if e["event_type"] == "client.upserted":
            ups.setdefault(e["payload"]["client_id"], []).append(e["payload"])
    moved = {c: u for c, u in ups.items() if len(u) == 2}
    assert len(moved) == 12
    zone = ZoneInfo(TZ)
    cross = 0
    for _c, (a, b) in moved.items():
        assert a["assigned_at"] == "2026-08-01T00:00:00+08:00"
        at = _at(b["assigned_at"]).astimezone(zone)
        assert (at.year, at.month) == (2026, 10) and 10 <= at.day <= 20
        assert a["manager_id"] != b["manager_id"]
        assert a.get("claim_ratio") == b.get("claim_ratio")
        cross += log.manager_branch[a["manager_id"]] != log.manager_branch[b["manager_id"]]
    assert cross >= 1
    # facts on both sides of (and exactly at) a transfer instant
    when = {c: _at(u[1]["assigned_at"]) for c, u in moved.items()}
    sides = Counter()
    for e in events:
        c = e["payload"].get("client_id")
        if c in when and e["event_type"] != "client.upserted":
            t = _at(e["occurred_at"])
            sides["before" if t < when[c] else "at" if t == when[c] else "after"] += 1
    assert sides["before"] and sides["after"] and sides["at"]


def test_envelopes_and_time_zone_matters(parsed):
    events, _ = parsed
    facts = [e for e in events if e["event_type"] in FACT_TYPES]
    utc = sum(e["occurred_at"].endswith(("Z", "+00:00")) for e in facts)
    assert 0.2 < utc / len(facts) < 0.3
    zone = ZoneInfo(TZ)
    shifted = 0
    for e in facts:
        t = _at(e["occurred_at"])
        assert t.astimezone(zone).strftime("%Y-%m") in MONTHS
        shifted += t.astimezone(zone).month != t.astimezone(ZoneInfo("UTC")).month
    assert shifted > 50
    assert all(e["schema_version"] == 1 and len(e["event_id"]) == 36 for e in events)
    numbers = sum(isinstance(e["payload"].get("amount"), Decimal) for e in facts)
    assert numbers > 0.05 * len(facts) * 0.8
    overrides = sum(
        "manager_id" in e["payload"] for e in facts if e["event_type"] != "visit.logged"
    )
    assert overrides > 0


def test_expected_shape(log, parsed):
    assert set(log.tallies) == {f"{m}|{mo}" for m in log.manager_branch for mo in MONTHS}
    branch_ids = set(log.manager_branch.values())
    assert set(log.branches) == {f"{b}|{mo}" for b in branch_ids for mo in MONTHS}
    for fig in log.tallies.values():
        assert set(fig) == FIGURES
        for k in ("volume", "simulated_profit"):
            assert set(fig[k]) == {"asset", "liability", "intermediary", "off_balance"}
            assert all(Decimal(v).as_tuple().exponent == -2 for v in fig[k].values())
        assert all(v > 0 for v in fig["accounts_opened"].values())
        methods = ("on_site", "phone", "sms", "online")
        assert fig["visits"]["total"] == sum(fig["visits"].get(k, 0) for k in methods)
    # branch transactions = sum over the branch's managers (each event counted once)
    for key, b in log.branches.items():
        branch, month = key.split("|")
        n = sum(
            log.tallies[f"{m}|{month}"]["transactions"]
            for m, bb in log.manager_branch.items()
            if bb == branch
        )
        assert b["transactions"] == n
    events, _ = parsed
    assert sum(f["transactions"] for f in log.tallies.values()) == sum(
        e["event_type"] == "transaction.posted" for e in events
    )


def test_generated_expectation_matches_its_bytes(log, parsed):
    events, _ = parsed
    assert compute_expected(events, TZ) == (log.tallies, log.branches)


def test_rounding_ties_are_planted(log, parsed):
    """Six figures end exactly on a half cent after an even cent digit: half-up (the contract)
    and half-even (Decimal's default) disagree there."""
    events, _ = parsed
    by_manager, by_branch = exact_weighted(events, TZ)

    def tie(d: Decimal) -> bool:
        u = d.scaleb(4)
        return u == u.to_integral_value() and int(u) % 200 == 50

    m_ties = {k: v for k, v in by_manager.items() if tie(v)}
    b_ties = {k: v for k, v in by_branch.items() if tie(v)}
    assert len(m_ties) >= 3 and len(b_ties) >= 3
    for k, v in m_ties.items():
        assert v > 0
        assert log.tallies[k]["weighted_profit"] == f"{v + Decimal('0.005'):.2f}"
        assert log.tallies[k]["weighted_profit"] != f"{v.quantize(Decimal('0.01')):f}"
    for k, v in b_ties.items():
        assert log.branches[k]["weighted_profit"] == f"{v + Decimal('0.005'):.2f}"


# ----------------------------------------------------------------------------- reference by hand


def _e(i, typ, at, **p):
    return {
        "event_id": f"e{i}",
        "event_type": typ,
        "schema_version": 1,
        "occurred_at": at,
        "payload": p,
    }


def test_compute_expected_by_hand():
    ev = [
        _e(1, "manager.upserted", "2026-08-01T00:00:00+08:00", manager_id="m1", branch_id="b1"),
        _e(2, "manager.upserted", "2026-08-01T00:00:00+08:00", manager_id="m2", branch_id="b2"),
        _e(
            3,
            "client.upserted",
            "2026-08-01T00:00:00+08:00",
            client_id="c1",
            manager_id="m1",
            claim_ratio="0.8",
        ),
        _e(
            4,
            "client.upserted",
            "2026-10-20T00:00:00+08:00",
            client_id="c1",
            manager_id="m2",
            claim_ratio="0.8",
            assigned_at="2026-10-15T00:00:00+08:00",
        ),
        # Sept 30 16:30 UTC = Oct 1 00:30 Shanghai; before transfer -> m1; 100 * 2.0 * 0.8
        _e(
            5,
            "transaction.posted",
            "2026-09-30T16:30:00Z",
            client_id="c1",
            account_id="a",
            business_line="intermediary",
            amount="10.00",
            simulated_profit="100.00",
        ),
        # exactly at the transfer instant -> m2; 0.01 * 0.9 * 0.8 = 0.0072
        _e(
            6,
            "transaction.posted",
            "2026-10-14T16:00:00+00:00",
            client_id="c1",
            account_id="a",
            business_line="asset",
            amount=Decimal("5.00"),
            simulated_profit="0.01",
        ),
        # override to m1 after the transfer, claim ratio still applies; no profit
        _e(
            7,
            "transaction.posted",
            "2026-10-16T00:00:00+08:00",
            client_id="c1",
            account_id="a",
            business_line="liability",
            amount="7",
            manager_id="m1",
        ),
        _e(
            8,
            "account.opened",
            "2026-10-01T00:00:00+08:00",
            client_id="c1",
            account_id="b",
            account_type="payroll",
        ),
        _e(
            9,
            "visit.logged",
            "2026-10-31T23:59:59+08:00",
            client_id="c1",
            manager_id="m1",
            method="phone",
            kind="routine",
        ),
        # unknown client: held forever, counts nowhere
        _e(
            10,
            "transaction.posted",
            "2026-10-02T00:00:00+08:00",
            client_id="zz",
            account_id="a",
            business_line="asset",
            amount="1.00",
            simulated_profit="1.00",
        ),
        # 0.625 * 1.0 * 0.8 = 0.5 -> second one on m2 brings 0.0072 + 0.5 + 0.5 = 1.0072
        _e(
            11,
            "transaction.posted",
            "2026-11-01T00:00:00+08:00",
            client_id="c1",
            account_id="a",
            business_line="liability",
            amount="1.00",
            simulated_profit="0.625",
        ),
    ]
    t, b = compute_expected(ev, TZ, handover="full")  # the transfer takes everything
    m1, m2 = t["m1|2026-10"], t["m2|2026-10"]
    assert m1["transactions"] == 2
    assert m1["volume"] == {
        "asset": "0.00",
        "liability": "7.00",
        "intermediary": "10.00",
        "off_balance": "0.00",
    }
    assert m1["weighted_profit"] == "160.00"
    assert m1["accounts_opened"] == {"payroll": 1}
    assert m1["visits"] == {"total": 1, "phone": 1, "routine": 1}
    assert m2["transactions"] == 1 and m2["weighted_profit"] == "0.01"  # 0.0072 half-up
    assert m2["accounts_opened"] == {} and m2["visits"] == {"total": 0}
    assert t["m2|2026-11"]["weighted_profit"] == "0.50"
    assert t["m1|2026-09"]["transactions"] == 0
    assert b["b1|2026-10"] == {"transactions": 2, "weighted_profit": "160.00"}
    assert b["b2|2026-10"] == {"transactions": 1, "weighted_profit": "0.01"}
    assert b["b2|2026-11"] == {"transactions": 1, "weighted_profit": "0.50"}
    assert len(t) == 6 and len(b) == 6
    # 增量认领 (the default): account "a" was never seen opened, so it is existing business
    # and stays with m1 (active): transactions 5, 6 and 7 in October, 160 + 0.0072 =
    # 160.0072 → "160.01"; transaction 11 in November, 0.5. An account opened after the
    # hand-over (account "n", 2026-10-20) is m2's at the claim ratio set on the client (0.8):
    # 10 × 0.9 × 0.8 = 7.2.
    t, b = compute_expected(ev, TZ)
    assert t["m1|2026-10"]["transactions"] == 3
    assert t["m1|2026-10"]["weighted_profit"] == "160.01"
    assert t["m1|2026-11"]["weighted_profit"] == "0.50"
    assert t["m2|2026-10"]["transactions"] == 0 and t["m2|2026-11"]["transactions"] == 0
    opened_late = [
        _e(
            12,
            "account.opened",
            "2026-10-20T00:00:00+08:00",
            client_id="c1",
            account_id="n",
            account_type="special",
        ),
        _e(
            13,
            "transaction.posted",
            "2026-10-21T00:00:00+08:00",
            client_id="c1",
            account_id="n",
            business_line="asset",
            amount="1.00",
            simulated_profit="10.00",
        ),
    ]
    t, b = compute_expected(ev + opened_late, TZ)
    assert t["m2|2026-10"]["transactions"] == 1 and t["m2|2026-10"]["weighted_profit"] == "7.20"
    assert t["m2|2026-10"]["accounts_opened"] == {"special": 1}
    # m1 leaves (inactive): a full transfer again, m2's October as without the rule plus 7.2
    gone = _e(14, "manager.upserted", "2026-12-01T00:00:00+08:00", manager_id="m1", branch_id="b1")
    gone["payload"]["active"] = False
    t, b = compute_expected(ev + opened_late + [gone], TZ)
    assert t["m2|2026-10"]["transactions"] == 2 and t["m2|2026-10"]["weighted_profit"] == "7.21"
    assert t["m1|2026-10"]["transactions"] == 2


# ----------------------------------------------------------------------------- contract vectors


def test_vectors_reproduced_exactly():
    v = load_vectors(VECTORS)
    expected = json.loads((VECTORS / "expected.json").read_text())
    assert len(v.messages) == expected["messages"] == 5730
    events, bad = valid_events(v.messages)
    assert bad == v.bad == 200
    tallies, branches = compute_expected(events, TZ)
    assert set(tallies) == set(v.tallies)
    for key in v.tallies:
        assert tallies[key] == v.tallies[key], key
    assert branches == v.branches
    managers = {
        e["payload"]["manager_id"]: e["payload"]["branch_id"]
        for e in events
        if e["event_type"] == "manager.upserted"
    }
    assert managers == v.manager_branch


def test_vectors_rejects_are_the_known_kinds():
    v = load_vectors(VECTORS)
    kinds = Counter()
    for m in v.messages:
        if parse_message(m) is not None:
            continue
        try:
            e = json.loads(m.value)
        except ValueError:
            kinds["truncated_json"] += 1
            continue
        p = e["payload"]
        if "event_id" not in e:
            kinds["missing_event_id"] += 1
        elif e["event_type"] == "transaction.exploded":
            kinds["unknown_event_type"] += 1
        elif "client_id" not in p:
            kinds["missing_client_id"] += 1
        elif p.get("currency") == "USD":
            kinds["currency_usd"] += 1
        elif p.get("business_line") == "crypto":
            kinds["unknown_business_line"] += 1
        elif str(p.get("amount")).startswith("-"):
            kinds["negative_amount"] += 1
        elif e["occurred_at"][-6] not in "+-" and not e["occurred_at"].endswith("Z"):
            kinds["naive_occurred_at"] += 1
        else:
            kinds["other"] += 1
    assert kinds == dict.fromkeys(
        [
            "truncated_json",
            "missing_event_id",
            "unknown_event_type",
            "missing_client_id",
            "currency_usd",
            "unknown_business_line",
            "negative_amount",
            "naive_occurred_at",
        ],
        25,
    )
