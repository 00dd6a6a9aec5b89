"""Messages as the worker receives them: contract envelopes, numbered per topic like a
one-partition broker, the contract vectors and generated logs in batches, and a few builders
of reference data."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from typing import Any

from streams.apply import Applier, Incoming
from testkit.paths import VECTORS


def env(event_id: str, event_type: str, occurred_at: str, **payload: Any) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "event_type": event_type,
            "schema_version": 1,
            "occurred_at": occurred_at,
            "payload": payload,
        }
    ).encode()


class Feed:
    """Numbers messages per topic like a one-partition broker would."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = defaultdict(int)

    def msg(self, topic: str, value: bytes | None, key: str | None = None) -> Incoming:
        off = self.offsets[topic]
        self.offsets[topic] += 1
        return Incoming(topic, 0, off, key.encode() if key else None, value)


def vector_batches(size: int = 500) -> list[list[Incoming]]:
    """The vectors as a consumer sees them: each topic in order, batches alternating
    between topics (topics are not ordered against each other)."""
    feed = Feed()
    per_topic: dict[str, list[Incoming]] = defaultdict(list)
    for line in (VECTORS / "events.jsonl").read_text().splitlines():
        m = json.loads(line)
        per_topic[m["topic"]].append(feed.msg(m["topic"], m["value"].encode(), m["key"]))
    batches: list[list[Incoming]] = []
    while any(per_topic.values()):
        for msgs in per_topic.values():
            if msgs:
                batches.append(msgs[:size])
                del msgs[:size]
    return batches


def batches_of(log: Any, rng: random.Random) -> list[list[Incoming]]:
    """The log as consumers see it: per topic in order, topics interleaved at random, in
    batches of random sizes."""
    per_topic: dict[str, list[Incoming]] = defaultdict(list)
    for m in log.messages:
        per_topic[m.topic].append(Incoming(m.topic, 0, len(per_topic[m.topic]), m.key, m.value))
    out = []
    while any(per_topic.values()):
        topic = rng.choice([t for t, msgs in per_topic.items() if msgs])
        n = rng.randint(1, 200)
        out.append(per_topic[topic][:n])
        del per_topic[topic][:n]
    return out


async def add_old_and_new_managers(applier: Applier, feed: Feed) -> None:
    """Manager 'old' in branch b1 and 'new' in branch b2: the two sides of a transfer."""
    await applier.apply(
        [
            feed.msg(
                "crm.managers",
                env(
                    f"{m}-up",
                    "manager.upserted",
                    "2026-08-01T00:00:00+08:00",
                    manager_id=m,
                    branch_id=b,
                ),
            )
            for m, b in (("old", "b1"), ("new", "b2"))
        ]
    )


# --- reference data and facts, one message each --------------------------------------------
def manager_upsert(
    feed: Feed, eid: str, at: str, manager_id: str, target: str, **extra: Any
) -> Any:
    return feed.msg(
        "crm.managers",
        env(
            eid,
            "manager.upserted",
            at,
            manager_id=manager_id,
            branch_id="b1",
            annual_profit_target=target,
            **extra,
        ),
    )


def client_upsert(
    feed: Feed, client_id: str, manager_id: str, assigned_at: str, **extra: Any
) -> Any:
    return feed.msg(
        "crm.clients",
        env(
            f"{client_id}-{manager_id}-{assigned_at}",
            "client.upserted",
            assigned_at,
            client_id=client_id,
            manager_id=manager_id,
            assigned_at=assigned_at,
            **extra,
        ),
    )


def deposit_profit(feed: Feed, eid: str, at: str, client_id: str, profit: str) -> Any:
    """Simulated profit on the liability line (coefficient 1.0, claim ratio 1.0)."""
    return feed.msg(
        "bank.transactions",
        env(
            eid,
            "transaction.posted",
            at,
            client_id=client_id,
            account_id=f"{client_id}-acct",
            business_line="liability",
            amount="1.00",
            simulated_profit=profit,
        ),
    )


def tx(eid: str, at: str, client: str, line: str, profit: str) -> bytes:
    return env(
        eid,
        "transaction.posted",
        at,
        client_id=client,
        account_id=f"{client}-a",
        business_line=line,
        amount="100",
        simulated_profit=profit,
    )
