"""End-to-end latency: produced → visible in the API, at steady input rates.

    python bench/latency.py [--rates 2000,8000] [--seconds 20] [--db sqlite,postgresql]
                            [--json out.json]

Per database: an embedded broker, a fresh database, ``crm-tracker worker`` and
``crm-tracker api`` as child processes. The demo's reference data is loaded, plus a probe
manager and a probe client of its own. Then, per rate, for ``--seconds``: demo activity at the
given rate (sent in 10 ms slices), and every 50 ms one probe transaction for the probe client
(so about 20 samples a second, part of the rate). A poller asks
``GET /v1/managers/{probe}/tally?from=..&to=..`` every 10 ms; when its transaction count
rises from k to k', probes k+1..k' became visible at that instant. Latency = visible − sent
(the time the producer was handed the probe): p50, p99, max. The poll interval and the
request time add up to ~10-20 ms of resolution.

The achieved input rate is reported as well: the producer is Python on the same 2 cores as
the worker, the API and the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    DEFAULT_PG,
    Child,
    api_env,
    bearer,
    embedded_broker,
    finish,
    new_secret,
    percentile,
    scratch_database,
    wait_http,
)
from config import Settings
from crmtracker.broker import ensure_topics, free_port

PROBE_MANAGER = "probe-manager"
PROBE_CLIENT = "probe-client"


def envelope(event_type: str, when: datetime, payload: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "event_id": uuid.uuid4().hex,
            "event_type": event_type,
            "schema_version": 1,
            "occurred_at": when.isoformat(),
            "source": "bench",
            "payload": payload,
        }
    ).encode()


async def phase(
    settings: Settings,
    producer: Any,
    gen: Any,
    client: Any,
    headers: dict[str, str],
    rate: int,
    seconds: float,
    probes_before: int,
) -> dict[str, Any]:
    topics = settings.topics
    tz = settings.tz
    today = datetime.now(tz).date()
    url = (
        f"/v1/managers/{PROBE_MANAGER}/tally?from={today - timedelta(days=1)}"
        f"&to={today + timedelta(days=1)}"
    )
    sent: list[float] = []  # monotonic send time of probe k (index k-1 after probes_before)
    visible: list[float] = []
    stop = asyncio.Event()

    async def poll() -> None:
        seen = probes_before
        while True:
            r = await client.get(url, headers=headers)
            now = time.monotonic()
            if r.status_code == 200:
                n = int(r.json()["transactions"])
                while seen < n:
                    visible.append(now)
                    seen += 1
            if stop.is_set() and seen >= probes_before + len(sent):
                return
            await asyncio.sleep(0.01)

    poller = asyncio.create_task(poll())
    slice_s = 0.01
    per_slice = rate * slice_s
    produced = 0
    owed = 0.0
    t0 = time.monotonic()
    next_probe = t0
    next_slice = t0
    while time.monotonic() - t0 < seconds:
        owed += per_slice
        batch = gen.next_messages(int(owed)) if int(owed) else []
        owed -= len(batch)
        for m in batch:
            await producer.send(getattr(topics, m.topic_role), m.value, key=m.key)
        produced += len(batch)
        now = time.monotonic()
        if now >= next_probe:
            value = envelope(
                "transaction.posted",
                datetime.now(tz),
                {
                    "client_id": PROBE_CLIENT,
                    "account_id": "probe-account",
                    "business_line": "liability",
                    "amount": "1.00",
                    "simulated_profit": "0.01",
                },
            )
            await producer.send(topics.transactions, value, key=PROBE_CLIENT.encode())
            sent.append(time.monotonic())
            produced += 1
            next_probe += 0.05
        next_slice += slice_s
        delay = next_slice - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    elapsed = time.monotonic() - t0
    await producer.flush()
    stop.set()
    try:
        await asyncio.wait_for(poller, 60)
    except TimeoutError:
        poller.cancel()
    lat = [v - s for s, v in zip(sent, visible, strict=False)]
    return {
        "rate_target": rate,
        "rate_achieved": round(produced / elapsed, 1),
        "seconds": round(elapsed, 1),
        "samples": len(lat),
        "probes_sent": len(sent),
        "p50_ms": _ms(percentile(lat, 50)),
        "p99_ms": _ms(percentile(lat, 99)),
        "max_ms": _ms(max(lat) if lat else None),
    }


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


async def bench_db(kind: str, args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict:
    import httpx
    from aiokafka import AIOKafkaProducer

    from demo import DemoGenerator

    out: dict[str, Any] = {"db": kind, "phases": []}
    async with scratch_database(kind, workdir, args.pg_url) as url:
        settings = Settings(
            kafka_bootstrap=bootstrap,
            kafka_session_timeout=2.0,
            kafka_heartbeat_interval=0.5,
            database_url=url,
            data_dir=workdir / f"data-{kind}",
            topic_prefix=f"lat{uuid.uuid4().hex[:10]}.",
            group_id=f"lat-{kind}-{uuid.uuid4().hex[:8]}",
            topic_partitions=args.partitions,
        )
        await ensure_topics(settings)
        secret = new_secret()
        port = free_port()
        worker = Child("worker", settings.child_env(), workdir / f"worker-{kind}.log")
        api = Child("api", api_env(settings, port, secret), workdir / f"api-{kind}.log")
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
        )
        await producer.start()
        try:
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", 60)
            gen = DemoGenerator(seed=args.seed, clients=args.clients, tz=settings.policy.timezone)
            topics = settings.topics
            now = datetime.now(settings.tz) - timedelta(days=2)
            for m in gen.reference_messages():
                await producer.send(getattr(topics, m.topic_role), m.value, key=m.key)
            branch = gen.branch_ids[0]
            await producer.send(
                topics.managers,
                envelope(
                    "manager.upserted",
                    now,
                    {"manager_id": PROBE_MANAGER, "branch_id": branch, "name": "Probe"},
                ),
                key=PROBE_MANAGER.encode(),
            )
            await producer.send(
                topics.clients,
                envelope(
                    "client.upserted",
                    now,
                    {"client_id": PROBE_CLIENT, "manager_id": PROBE_MANAGER, "branch_id": branch},
                ),
                key=PROBE_CLIENT.encode(),
            )
            await producer.flush()
            headers = bearer(secret, "manager", manager_id=PROBE_MANAGER)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
                # the probe manager is known once the reference data is applied
                deadline = time.monotonic() + 120
                while True:
                    r = await c.get(f"/v1/managers/{PROBE_MANAGER}/tally", headers=headers)
                    if r.status_code == 200:
                        break
                    if time.monotonic() > deadline or not worker.alive():
                        raise RuntimeError(
                            f"probe manager not visible: {r.status_code}\n{worker.tail()}"
                        )
                    await asyncio.sleep(0.5)
                await asyncio.sleep(2)
                probes = 0
                for rate in args.rates:
                    print(f"[{kind}] {rate} ev/s for {args.seconds:.0f}s ...", file=sys.stderr)
                    res = await phase(
                        settings, producer, gen, c, headers, rate, args.seconds, probes
                    )
                    probes += res["probes_sent"]
                    out["phases"].append(res)
                    await asyncio.sleep(3)
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
            print(f"[{kind}] FAILED: {out['error']}", file=sys.stderr)
        finally:
            await producer.stop()
            worker.stop()
            api.stop()
    return out


def table(results: list[dict]) -> str:
    head = ("db", "target ev/s", "achieved ev/s", "samples", "p50 ms", "p99 ms", "max ms")
    rows = []
    for r in results:
        for p in r["phases"]:
            rows.append(
                (
                    r["db"],
                    f"{p['rate_target']:,}",
                    f"{p['rate_achieved']:,.0f}",
                    str(p["samples"]),
                    str(p["p50_ms"]),
                    str(p["p99_ms"]),
                    str(p["max_ms"]),
                )
            )
        if r.get("error"):
            rows.append((r["db"], "ERROR", r["error"][:60], "", "", "", ""))
    widths = [
        max(len(h), *(len(x[i]) for x in rows)) if rows else len(h) for i, h in enumerate(head)
    ]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*x) for x in rows]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default="2000,8000")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--clients", type=int, default=5000)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--pg-url", default=DEFAULT_PG)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    args.rates = [int(x) for x in args.rates.split(",") if x.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="crm-latency-"))

    async def run(bootstrap: str) -> list[dict]:
        return [await bench_db(k.strip(), args, bootstrap, workdir) for k in args.db.split(",")]

    with embedded_broker(workdir) as broker:
        results = asyncio.run(run(broker.bootstrap))
    print(table(results))
    doc = {"seconds": args.seconds, "partitions": args.partitions, "results": results}
    return finish(doc, results, args.json, workdir)


if __name__ == "__main__":
    sys.exit(main())
