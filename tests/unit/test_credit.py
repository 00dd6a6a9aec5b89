"""The credit rule (streams/apply/credit.py) alone: plain data in, plain data out, checked
against the independent oracle of testkit/factories.py and against hand-computed cases."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

import pytest

from models.decode import decode_event
from models.events import ClientUpserted, ManagerUpserted
from models.policy import Policy
from streams.apply.credit import ClientTerms, Credit, ManagerTerms, Wait, credit
from testkit.factories import exact_weighted, generate_log, valid_events
from testkit.feed import env

TZ = "Asia/Shanghai"


def _terms(events: list) -> tuple[dict, dict, dict]:
    """Managers, clients (latest record) and histories, as the database would hold them."""
    managers: dict[str, ManagerTerms] = {}
    clients: dict[str, tuple[datetime, ClientTerms]] = {}
    history: dict[str, list[tuple[datetime, int, str]]] = defaultdict(list)
    for seq, e in enumerate(events):
        p = e.payload
        if isinstance(p, ManagerUpserted):
            managers[p.manager_id] = ManagerTerms(p.branch_id, p.active)
        elif isinstance(p, ClientUpserted):
            if p.client_id not in clients or clients[p.client_id][0] <= e.occurred_at:
                clients[p.client_id] = (e.occurred_at, ClientTerms(p.manager_id, p.claim_ratio))
            history[p.client_id].append((p.assigned_at or e.occurred_at, seq, p.manager_id))
    hist = {c: [(at, m) for at, _s, m in sorted(h)] for c, h in history.items()}
    return managers, {c: t for c, (_at, t) in clients.items()}, hist


@pytest.mark.parametrize("seed", [3, 11])
def test_the_credit_rule_gives_the_oracles_exact_figures(seed: int) -> None:
    log = generate_log(seed, events=4000, managers=12, branches=3, clients=300, transfers=30)
    valid, _bad = valid_events(log.messages)
    policy = Policy()
    events = [decode_event(json_bytes(e), policy) for e in valid]
    managers, clients, history = _terms(events)
    per_manager: dict[str, Decimal] = defaultdict(Decimal)
    per_branch: dict[str, Decimal] = defaultdict(Decimal)
    counts: dict[str, int] = defaultdict(int)
    for e in events:
        if e.event_type not in ("transaction.posted", "account.opened", "visit.logged"):
            continue
        cid = e.payload.client_id  # type: ignore[union-attr]
        c = credit(e, clients.get(cid), history.get(cid, []), managers, policy)
        if isinstance(c, Wait):
            assert cid not in clients or c.manager_id not in managers
            continue
        month = c.day.strftime("%Y-%m")
        if c.weighted_profit is not None:
            per_manager[f"{c.manager_id}|{month}"] += c.weighted_profit
            per_branch[f"{c.branch_id}|{month}"] += c.weighted_profit
        for col, n in c.columns:
            if col in ("transactions", "visits_total") or col.startswith("accounts_"):
                counts[f"{c.manager_id}|{month}|{col}"] += int(n)
    exact_m, exact_b = exact_weighted(valid, TZ)
    assert per_manager == {k: v for k, v in exact_m.items() if k in per_manager or v}
    assert per_branch == {k: v for k, v in exact_b.items() if k in per_branch or v}
    for key, t in log.tallies.items():
        assert counts.get(f"{key}|transactions", 0) == t["transactions"], key
        assert counts.get(f"{key}|visits_total", 0) == t["visits"].get("total", 0), key
        opened = sum(n for a, n in t["accounts_opened"].items())
        mine = sum(
            counts.get(f"{key}|accounts_{a}", 0)
            for a in (
                "basic_settlement",
                "general_settlement",
                "special",
                "temporary",
                "usd_settlement",
                "payroll",
                "ebanking",
                "personal",
            )
        )
        assert mine == opened, key


def json_bytes(envelope: dict) -> bytes:
    import json

    return json.dumps(envelope, default=str).encode()


def _tx(at: str, line: str = "liability", profit: str = "100", **extra: str) -> object:
    return decode_event(
        env(
            "t",
            "transaction.posted",
            at,
            client_id="c",
            account_id="a",
            business_line=line,
            amount="1000",
            simulated_profit=profit,
            **extra,
        )
    )


OLD, NEW = "2026-08-01T00:00:00+08:00", "2026-11-15T09:00:00+08:00"
HISTORY = [(datetime.fromisoformat(OLD), "old"), (datetime.fromisoformat(NEW), "new")]
MANAGERS = {"old": ManagerTerms("b1"), "new": ManagerTerms("b2")}


def test_hand_computed_credit_before_and_after_a_transfer() -> None:
    policy = Policy()
    client = ClientTerms("new", Decimal("0.6"))
    before = credit(_tx("2026-11-15T08:59:59+08:00"), client, HISTORY, MANAGERS, policy)
    after = credit(
        _tx("2026-11-15T09:00:00+08:00", "off_balance", "3.33"),
        client,
        HISTORY,
        MANAGERS,
        policy,
        opened_at=datetime.fromisoformat(NEW),  # an account opened at the hand-over: new's
    )
    assert isinstance(before, Credit) and isinstance(after, Credit)
    assert (before.manager_id, before.branch_id, str(before.day)) == ("old", "b1", "2026-11-15")
    assert before.weighted_profit == Decimal("60.0")  # 100 × 1.0 × 0.6
    assert (after.manager_id, after.branch_id) == ("new", "b2")
    assert after.weighted_profit == Decimal("2.9970")  # 3.33 × 1.5 × 0.6, exact
    assert after.ratio == Decimal("0.6")
    # the bank day is the bank time zone's: 23:30 UTC on the 14th is 07:30 on the 15th in
    # Shanghai, before the 09:00 hand-over
    late = credit(_tx("2026-11-14T23:30:00Z"), client, HISTORY, MANAGERS, policy)
    assert isinstance(late, Credit) and str(late.day) == "2026-11-15" and late.manager_id == "old"
    # an override wins over the history; a visit counts for its visitor
    forced = credit(_tx(NEW, manager_id="old"), client, HISTORY, MANAGERS, policy)
    assert isinstance(forced, Credit) and forced.manager_id == "old"


def test_the_credit_waits_for_what_is_missing() -> None:
    policy = Policy()
    w = credit(_tx(NEW), None, [], MANAGERS, policy)
    assert w == Wait("client c is not known yet", "c", None)
    w = credit(_tx(NEW, manager_id="x"), None, [], MANAGERS, policy)
    assert isinstance(w, Wait) and (w.client_id, w.manager_id) == ("c", "x")
    w = credit(_tx(NEW), ClientTerms("late"), [(HISTORY[0][0], "late")], MANAGERS, policy)
    assert w == Wait("manager late is not known yet", None, "late")


def test_hand_over_increment_by_hand() -> None:
    """增量认领 (DOMAIN.md "Hand-over"), old → new at 2026-11-15 09:00, a client without a
    ratio of its own, a 100.00 profit liability (coefficient 1.0) or intermediary (2.0)
    transaction on 2026-11-20:

    - account opened 2026-09-01 (before the hand-over): existing business, old's, at the
      client's ratio as before (unset: 1.0) → 100 × 1.0 × 1.0 = 100.0;
    - account never seen opened: existing business too → old, 100.0;
    - account opened 2026-11-16 (after): new's at the hand-over ratio, deposits 0.6 →
      100 × 1.0 × 0.6 = 60.0; intermediary 0.8 → 100 × 2.0 × 0.8 = 160.0;
    - old inactive (left): everything goes to new, a full transfer: the existing account's
      deposit 100 × 1.0 × 0.6 = 60.0;
    - mode ``full``: new, 60.0, whatever the account;
    - a ratio set on the client (0.7) wins: old's business 100 × 0.7 = 70.0, new's 70.0;
    - a previous manager whose record is missing: the fact waits for it (its flag decides).
    """
    policy = Policy()
    client = ClientTerms("new")
    at = "2026-11-20T10:00:00+08:00"
    before, after = (
        datetime.fromisoformat("2026-09-01T10:00:00+08:00"),
        datetime.fromisoformat("2026-11-16T10:00:00+08:00"),
    )

    def got(event: object, **kw: object) -> tuple[str, Decimal | None]:
        args = {"client": client, "managers": MANAGERS, "policy": policy, **kw}
        c = credit(
            event,  # type: ignore[arg-type]
            args["client"],  # type: ignore[arg-type]
            HISTORY,
            args["managers"],  # type: ignore[arg-type]
            args["policy"],  # type: ignore[arg-type]
            opened_at=args.get("opened_at"),  # type: ignore[arg-type]
        )
        assert isinstance(c, Credit), c
        return c.manager_id, c.weighted_profit

    assert got(_tx(at), opened_at=before) == ("old", Decimal("100.0"))
    assert got(_tx(at)) == ("old", Decimal("100.0"))
    assert got(_tx(at), opened_at=after) == ("new", Decimal("60.0"))
    assert got(_tx(at, "intermediary"), opened_at=after) == ("new", Decimal("160.0"))
    left = {"old": ManagerTerms("b1", active=False), "new": ManagerTerms("b2")}
    assert got(_tx(at), opened_at=before, managers=left) == ("new", Decimal("60.0"))
    full = Policy(handover_mode="full")
    assert got(_tx(at), opened_at=before, policy=full) == ("new", Decimal("60.0"))
    assert got(_tx(at), policy=full) == ("new", Decimal("60.0"))
    own = ClientTerms("new", Decimal("0.7"))
    assert got(_tx(at), opened_at=before, client=own) == ("old", Decimal("70.0"))
    assert got(_tx(at), opened_at=after, client=own) == ("new", Decimal("70.0"))
    # before the hand-over nothing changes; an explicit manager is never re-decided
    assert got(_tx("2026-11-10T10:00:00+08:00"), opened_at=after) == ("old", Decimal("100.0"))
    assert got(_tx(at, manager_id="new"), opened_at=before) == ("new", Decimal("100.0"))
    w = credit(_tx(at), client, HISTORY, {"new": ManagerTerms("b2")}, policy, opened_at=before)
    assert w == Wait("manager old is not known yet", None, "old")


def test_stock_owner_over_two_hand_overs() -> None:
    """a → b (2026-10-01) → c (2026-11-01): an account opened in b's time is b's existing
    business after the second hand-over; one opened in a's time (or never seen) stays a's;
    one opened in c's time is c's."""
    from streams.apply.credit import stock_owner

    h = [
        (datetime.fromisoformat("2026-08-01T00:00:00+08:00"), "a"),
        (datetime.fromisoformat("2026-10-01T00:00:00+08:00"), "b"),
        (datetime.fromisoformat("2026-11-01T00:00:00+08:00"), "c"),
    ]
    assert stock_owner(h, 2, datetime.fromisoformat("2026-10-15T00:00:00+08:00")) == ("b", 1)
    assert stock_owner(h, 2, datetime.fromisoformat("2026-09-15T00:00:00+08:00")) == ("a", 0)
    assert stock_owner(h, 2, None) == ("a", 0)
    assert stock_owner(h, 2, datetime.fromisoformat("2026-11-02T00:00:00+08:00")) is None
    assert stock_owner(h, 0, None) is None
