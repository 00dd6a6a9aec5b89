"""A book for reading tallies against: ``generate_log`` (transfers in October, targets) plus
what makes every part of a manager's tally answer non-trivial: nightly balances of every
client (so ``balance_daily``, ``balance_openings`` and handed-over ``balance_holders``
exist), accounts opened after the transfers with business on them (the hand-over split
moves weighted profit), hiring dates for some managers, and one manager who leaves (a full
transfer for the clients handed over from them)."""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from typing import Any

from models.db import make_engine
from models.policy import Policy
from streams.apply import Applier, Incoming
from testkit.factories import GeneratedLog, Msg, generate_log, valid_events

BALANCES_TOPIC = "bank.balances"
SNAPSHOT_DAYS = tuple(date(2026, 8, 1) + timedelta(days=d) for d in range(0, 122, 5))


def _envelope(eid: str, event_type: str, at: str, payload: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "event_id": eid,
            "event_type": event_type,
            "schema_version": 1,
            "occurred_at": at,
            "payload": payload,
        }
    ).encode()


def tally_book(
    seed: int = 7,
    *,
    events: int = 3_000,
    managers: int = 8,
    branches: int = 2,
    clients: int = 80,
    transfers: int = 12,
) -> tuple[GeneratedLog, list[Incoming]]:
    """The log (its ``tallies`` are only the generated facts' figures) and its balance
    snapshots, as messages of the balances topic."""
    log = generate_log(
        seed,
        events=events,
        managers=managers,
        branches=branches,
        clients=clients,
        transfers=transfers,
        late_clients=min(10, clients - transfers),
    )
    rng = random.Random(seed)
    messages = list(log.messages)
    valid, _bad = valid_events(log.messages)
    cids = sorted(
        {e["payload"]["client_id"] for e in valid if e["event_type"] == "client.upserted"}
    )
    for i, c in enumerate(cids):
        messages.append(
            Msg(
                "accounts",
                c.encode(),
                _envelope(
                    f"tb-open-{c}",
                    "account.opened",
                    "2026-10-25T10:00:00+08:00",
                    {"client_id": c, "account_id": f"tb{c}", "account_type": "special"},
                ),
            )
        )
        for k in range(3):
            messages.append(
                Msg(
                    "transactions",
                    c.encode(),
                    _envelope(
                        f"tb-tx-{c}-{k}",
                        "transaction.posted",
                        f"2026-{10 + k % 2:02d}-{1 + (i + 9 * k) % 28:02d}T10:00:00+08:00",
                        {
                            "client_id": c,
                            "account_id": f"tb{c}" if k else f"tb{c}-old",
                            "business_line": "liability" if k < 2 else "asset",
                            "amount": "100.00",
                            "simulated_profit": f"{rng.randint(1, 99999)}.{rng.randint(0, 99):02d}",
                        },
                    ),
                )
            )
    managers_msgs = [m for m in log.messages if m.role == "managers"]
    for n, m in enumerate(managers_msgs[:3]):  # hired during the log's months
        doc = json.loads(m.value or b"{}")
        doc["event_id"] = f"tb-hired-{n}"
        doc["occurred_at"] = "2026-09-01T09:00:00+08:00"
        doc["payload"]["hired_at"] = f"2026-{9 + n}-{10 + n:02d}"
        messages.append(Msg("managers", m.key, json.dumps(doc).encode()))
    leaving = json.loads(managers_msgs[-1].value or b"{}")
    leaving["event_id"] = "tb-leaves"
    leaving["occurred_at"] = "2026-11-20T09:00:00+08:00"
    leaving["payload"]["active"] = False
    messages.append(Msg("managers", managers_msgs[-1].key, json.dumps(leaving).encode()))
    log.messages = messages
    snaps: list[Incoming] = []
    for c in cids:
        level = rng.randint(1_000, 5_000_000)
        for day in SNAPSHOT_DAYS:
            if rng.random() < 0.3:
                continue
            level = max(0, level + rng.randint(-200_000, 300_000))
            deposits = f"{level}.{level % 100:02d}"
            for acc, line, bal in ((f"d{c}", "liability", deposits), (f"l{c}", "asset", "1000.50")):
                if line == "asset" and rng.random() < 0.7:
                    continue
                snaps.append(
                    Incoming(
                        BALANCES_TOPIC,
                        0,
                        len(snaps),
                        c.encode(),
                        _envelope(
                            f"tb-bal-{acc}-{day}",
                            "balance.snapshot",
                            f"{day + timedelta(days=1)}T01:00:00+08:00",
                            {
                                "client_id": c,
                                "account_id": acc,
                                "business_line": line,
                                "balance": bal,
                                "as_of_date": day.isoformat(),
                            },
                        ),
                    )
                )
    return log, snaps


async def apply_book(url: str, log: GeneratedLog, snaps: list[Incoming], policy: Policy) -> Any:
    """Apply the book (its messages per topic in order, in batches of 500, then the
    balances night by night) on ``url``; returns the engine (the caller disposes of it)."""
    engine = make_engine(url, writer=True)
    applier = Applier(engine, policy)
    offsets: dict[str, int] = {}
    batch: list[Incoming] = []
    for m in log.messages:
        off = offsets.get(m.topic, 0)
        offsets[m.topic] = off + 1
        batch.append(Incoming(m.topic, 0, off, m.key, m.value))
        if len(batch) == 500:
            await applier.apply(batch)
            batch = []
    if batch:
        await applier.apply(batch)
    for i in range(0, len(snaps), 500):
        await applier.apply(snaps[i : i + 500])
    return engine
