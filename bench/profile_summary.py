"""Summarise py-spy collapsed stacks (``bench/throughput.py --profile DIR``) as text.

    python bench/profile_summary.py DIR/profile-postgresql.collapsed [--top 25]

Prints the share of samples (self time: the innermost frame) per function and per module
file, and the inclusive share of a few frames of interest (faust's stream iteration, the
apply step, JSON, the event loop). Idle samples (py-spy's ``--idle`` is off, so none) are not
counted.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

INTEREST = {
    "faust stream iteration (streams.py)": re.compile(r"faust/streams\.py"),
    "faust take/take_events": re.compile(r"\btake(_events)?\b.*faust/streams\.py"),
    "faust consumer/conductor/transport": re.compile(
        r"faust/transport/(consumer|conductor|drivers/aiokafka)\.py"
    ),
    "aiokafka fetcher/protocol": re.compile(r"aiokafka/"),
    "mode Service.wait_first": re.compile(r"wait_first \(.*mode/services\.py"),
    "pipeline.handle (streams/worker.py)": re.compile(r"\bhandle \(.*streams/worker\.py"),
    "apply (streams/apply/)": re.compile(r"streams/apply/"),
    "decode_event (models/events.py)": re.compile(r"models/events\.py"),
    "pydantic": re.compile(r"pydantic"),
    "json": re.compile(r"json/"),
    "sqlalchemy": re.compile(r"sqlalchemy/"),
    "asyncpg / aiosqlite / sqlite3": re.compile(r"asyncpg/|aiosqlite/|sqlite3/"),
    "asyncio event loop (base_events/_run_once)": re.compile(r"_run_once"),
}


def frame_parts(frame: str) -> tuple[str, str]:
    m = re.match(r"(.*) \((.*?)(:\d+)?\)$", frame.strip())
    if not m:
        return frame, "?"
    path = m.group(2)
    short = re.sub(r".*site-packages/", "", path)
    short = re.sub(r".*/wt-[^/]+/", "", short)
    short = re.sub(r".*/lib/python3\.\d+/", "stdlib/", short)
    return f"{m.group(1)} ({short})", short


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path", type=Path)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    self_fn: Counter[str] = Counter()
    self_mod: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in args.path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        fn, mod = frame_parts(frames[-1])
        self_fn[fn] += count
        self_mod[mod] += count
        for name, rx in INTEREST.items():
            if any(rx.search(f) for f in frames):
                inclusive[name] += count
    print(f"{args.path.name}: {total} samples")
    print("\nself time by function (innermost frame):")
    for fn, n in self_fn.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {fn}")
    print("\nself time by file:")
    for mod, n in self_mod.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {mod}")
    print("\ninclusive (a frame anywhere on the stack):")
    for name, n in sorted(inclusive.items(), key=lambda kv: -kv[1]):
        print(f"  {100 * n / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
