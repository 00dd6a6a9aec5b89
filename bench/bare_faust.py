"""A bare faust agent that only counts: the reference for "read from Kafka through faust".

    python bench/bare_faust.py --bootstrap HOST:PORT --topics a,b,c --total N [--partitions P]

Same faust settings as the worker (``streams/worker.py`` ``faust_app``): raw values, memory
store, earliest offsets, session timeout 2 s / heartbeat 0.5 s on the embedded broker, commit
interval 1 s, ``stream_wait_empty=False``; one agent per input topic, each consuming with
``stream.take(1000, within=0.2)`` (the worker's batch size and window) and only counting.
When ``total`` messages have been counted it prints one JSON line
``{"count", "first", "last", "started"}`` (monotonic seconds of process start, the first
and the last batch) and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topics", required=True)
    p.add_argument("--total", type=int, required=True)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--group", default=f"bench-faust-{os.getpid()}")
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--within", type=float, default=0.2)
    args = p.parse_args()

    import faust

    started = time.monotonic()
    app = faust.App(
        args.group,
        broker=[f"kafka://{h.strip()}" for h in args.bootstrap.split(",")],
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=args.partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=2.0,
        broker_heartbeat_interval=0.5,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
    )
    state = {"count": 0, "first": None, "last": None}

    def done() -> None:
        out = dict(state, started=started)
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
        os._exit(0)

    for name in args.topics.split(","):
        topic = app.topic(
            name, key_serializer="raw", value_serializer="raw", partitions=args.partitions
        )

        async def count(stream: faust.StreamT) -> None:
            async for values in stream.take(args.batch, within=args.within):
                now = time.monotonic()
                if state["first"] is None:
                    state["first"] = now
                    state["first_n"] = len(values)
                state["count"] += len(values)
                state["last"] = now
                if state["count"] >= args.total:
                    done()

        app.agent(topic, name=f"count.{name}", concurrency=1)(count)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
