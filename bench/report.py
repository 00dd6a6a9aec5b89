"""Markdown tables from the benchmarks' JSON (``bench/results/*.json``), for the README.

python bench/report.py [bench/results]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _f(v: Any, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def _exact(r: dict) -> str:
    """The pipeline's tallies against the independent sums (absent in older results)."""
    if r.get("exact") is None:
        return "-"
    return "yes" if r["exact"] else f"no ({r['mismatches']} of {r['manager_months']} differ)"


def throughput(doc: dict) -> list[str]:
    out = [
        f"Throughput: {doc['workload']['messages']:,} messages ({doc['events']:,} activity + "
        f"{doc['workload']['reference']:,} reference; {doc['workload']['invalid']:,} malformed, "
        f"{doc['workload']['resends']:,} resends), {doc['partitions']} partitions, "
        f"{doc['cpus']} CPUs.",
        "",
        "| db | bare aiokafka msg/s | bare faust msg/s | pipeline ev/s | pipeline / faust | "
        "pipeline / aiokafka | startup s | worker peak RSS MiB | worker CPU s | complete | exact |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in doc["results"]:
        out.append(
            f"| {r['db']} | {_f(r['bare_msg_s'])} | {_f(r.get('faust_msg_s'))} | "
            f"{_f(r['pipeline_events_s'])} | {_f(r.get('ratio_pipeline_faust'), '.2f')} | "
            f"{_f(r['ratio_pipeline_bare'], '.3f')} | {_f(r['worker_startup_s'], '.1f')} | "
            f"{_f(r['worker_peak_rss_mib'])} | {_f(r['worker_cpu_s'], '.0f')} | "
            f"{'yes' if r['complete'] else 'no'}{' ' + r['error'] if r.get('error') else ''} | "
            f"{_exact(r)} |"
        )
    peer = doc.get("peer")
    if peer:
        out += [
            "",
            f"Peer: Quix Streams, {peer['messages']:,} transaction messages: "
            f"{_f(peer['msg_s'])} msg/s (process start to last message {_f(peer['total_s'], '.1f')} s); "
            f"totals exact: {peer['exact']} ({peer['mismatches']} of {peer['manager_months']} "
            f"manager-months differ){' error: ' + peer['error'] if peer.get('error') else ''}.",
        ]
    return out


def latency(doc: dict) -> list[str]:
    out = [
        f"Latency (produced → visible in the tally API), {doc['seconds']:.0f} s per rate:",
        "",
        "| db | target ev/s | achieved ev/s | samples | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in doc["results"]:
        for p in r["phases"]:
            out.append(
                f"| {r['db']} | {p['rate_target']:,} | {_f(p['rate_achieved'])} | {p['samples']} | "
                f"{_f(p['p50_ms'], ',.0f')} | {_f(p['p99_ms'], ',.0f')} | {_f(p['max_ms'], ',.0f')} |"
            )
        if r.get("error"):
            out.append(f"| {r['db']} | error: {r['error'][:80]} | | | | | |")
    return out


def api_load(doc: dict) -> list[str]:
    out = [
        f"API load, {doc['concurrency']} concurrent clients ({doc.get('tool', 'httpx')}), "
        f"{doc['seconds']:.0f} s per endpoint:",
        "",
        "| db | read cache | endpoint | requests | req/s | p50 ms | p99 ms | max ms | errors |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in doc["results"]:
        for name, e in r["endpoints"].items():
            out.append(
                f"| {r['db']} | {r.get('cache', 'off')} | {name} | {e['requests']:,} | {_f(e['rps'])} | {e['p50_ms']} | "
                f"{e['p99_ms']} | {e['max_ms']} | {e['errors']} |"
            )
        if r.get("error"):
            out.append(f"| {r['db']} | | error: {r['error'][:80]} | | | | | | |")
    return out


def memory(doc: dict) -> list[str]:
    out = [
        "Memory (peak RSS, VmHWM):",
        "",
        "| db | clients | managers | events applied | worker MiB | API MiB | apply s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in doc["results"]:
        out.append(
            f"| {r['db']} | {r['clients']:,} | {r['managers']:,} | {doc['events']:,} | "
            f"{_f(r.get('worker_peak_rss_mib'))} | {_f(r.get('api_peak_rss_mib'))} | "
            f"{_f(r.get('apply_s'), '.0f')} |" + (f" error: {r['error']}" if r.get("error") else "")
        )
    return out


def drills(doc: list) -> list[str]:
    out = [
        "| drill | db | events | faults injected | result | recover s | time s |",
        "| --- | --- | ---: | --- | --- | ---: | ---: |",
    ]
    for r in doc:
        extra = r.get("extra", {})
        note = ""
        if "slowdown" in extra:
            note = f" (poison run {extra['slowdown']}× the clean run's time per message)"
        if "readyz_during" in extra:
            note = f" (/readyz {extra['readyz_during']} during)"
        out.append(
            f"| {r['drill']} | {r['db']} | {r['events']:,} | {r['faults']} | {r['result']}{note} | "
            f"{_f(r.get('recover_s'), '.1f')} | {_f(r.get('elapsed_s'), '.0f')} |"
        )
    return out


def main() -> None:
    d = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
    for name, fn in (
        ("throughput", throughput),
        ("latency", latency),
        ("api_load", api_load),
        ("memory", memory),
        ("drills", drills),
    ):
        p = d / f"{name}.json"
        if p.exists():
            print("\n".join(fn(json.loads(p.read_text()))))
            print()


if __name__ == "__main__":
    main()
