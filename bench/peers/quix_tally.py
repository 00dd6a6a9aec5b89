"""A peer side by side: the per-manager tally workload in Quix Streams.

    python bench/peers/quix_tally.py --bootstrap HOST:PORT --topic T --total N \\
        --reference clients.json [--partitions P]

The same workload as the tracker's core: for every valid ``transaction.posted`` on the topic,
count it and add its weighted profit (simulated_profit × coefficient(line) × claim_ratio,
exact ``Decimal``) to its manager's month (bank time zone). Resends (same event_id) count
once, malformed messages are skipped.

How it is built, in Quix's terms: messages are keyed by client, so the dedupe set and the
running per-(manager, month) figures live in Quix's per-key RocksDB state of each client; the
manager-month totals are the sums over clients of the last state values (collected in the
process from the ``update`` callback). Reference data (client → manager, claim ratio) is
given as a JSON file, loaded before the run: the tracker gets it from topics and also
handles transfers, held events, accounts and visits, which this peer does not.

Tansu quirks: the source topic is created with explicit ``retention.ms=-1`` and
``retention.bytes=-1``, changelog topics are off (the state is not recovered anyway:
``app.clear_state()`` before ``app.run()``).

Prints one JSON line: {"count", "first", "last", "started", "totals": {"m|YYYY-MM": [n, "sum"]}}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

COEFFICIENTS = {
    "asset": Decimal("0.9"),
    "liability": Decimal("1.0"),
    "intermediary": Decimal("2.0"),
    "off_balance": Decimal("1.5"),
}


def parse(value: bytes, tz: ZoneInfo) -> tuple[str, str, str, str, Decimal] | None:
    """(event_id, client_id, manager override or "", month, profit × coefficient) or None."""
    try:
        env = json.loads(value)
        if env.get("event_type") != "transaction.posted":
            return None
        p = env["payload"]
        client = p["client_id"]
        if not isinstance(client, str) or not client:
            return None
        if p.get("currency", "CNY") != "CNY":
            return None
        amount = Decimal(str(p["amount"]))
        if amount < 0:
            return None
        profit = Decimal(str(p.get("simulated_profit", "0")))
        coef = COEFFICIENTS[p["business_line"]]
        when = datetime.fromisoformat(env["occurred_at"])
        if when.tzinfo is None:
            return None
        month = when.astimezone(tz).strftime("%Y-%m")
        return env["event_id"], client, p.get("manager_id") or "", month, profit * coef
    except (ValueError, KeyError, TypeError, InvalidOperation, AttributeError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--total", type=int, required=True, help="messages on the topic")
    ap.add_argument("--reference", required=True, help='{"client": ["manager", "ratio"]}')
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--group", default=f"bench-quix-{os.getpid()}")
    ap.add_argument("--tz", default="Asia/Shanghai")
    args = ap.parse_args()

    from quixstreams import Application
    from quixstreams.models import TopicConfig

    started = time.monotonic()
    tz = ZoneInfo(args.tz)
    with open(args.reference) as f:
        ref = {c: (m, Decimal(r)) for c, (m, r) in json.load(f).items()}
    state_dir = tempfile.mkdtemp(prefix="quix-state-")
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        use_changelog_topics=False,
        loglevel="WARNING",
    )
    topic = app.topic(
        args.topic,
        key_deserializer="str",
        value_deserializer="bytes",
        config=TopicConfig(
            num_partitions=args.partitions,
            replication_factor=1,
            extra_config={"retention.ms": "-1", "retention.bytes": "-1"},
        ),
    )
    seen = {"count": 0, "first": None, "last": None}
    latest: dict[tuple[str, str, str], tuple[int, str]] = {}

    def tally(value: bytes, state) -> None:  # state: quixstreams State
        now = time.monotonic()
        if seen["first"] is None:
            seen["first"] = now
        seen["count"] += 1
        seen["last"] = now
        ev = parse(value, tz)
        if ev is not None and ev[1] in ref:
            event_id, client, override, month, weighted = ev
            if state.get("e:" + event_id) is None:
                state.set("e:" + event_id, 1)
                manager, ratio = ref[client]
                manager = override or manager
                key = f"{manager}|{month}"
                n, total = state.get(key, (0, "0"))
                new = (n + 1, str(Decimal(total) + weighted * ratio))
                state.set(key, new)
                latest[(client, manager, month)] = new
        if seen["count"] >= args.total:
            app.stop()

    sdf = app.dataframe(topic)
    sdf.update(tally, stateful=True)
    app.clear_state()
    app.run()

    totals: dict[str, list] = {}
    for (_client, manager, month), (n, s) in latest.items():
        k = f"{manager}|{month}"
        cur = totals.get(k, [0, Decimal(0)])
        totals[k] = [cur[0] + n, cur[1] + Decimal(s)]
    out = {
        "count": seen["count"],
        "first": seen["first"],
        "last": seen["last"],
        "started": started,
        "totals": {k: [n, str(s)] for k, (n, s) in totals.items()},
    }
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
