"""``crm-tracker lag``: the lag table of ``GET /v1/ops/lag`` in the terminal.

By default it asks the running API (which holds the sliding window, so the statuses are
judged over it). With ``--direct``, or when the API does not answer, it samples the broker
itself a few times and judges over those samples: useful when the API is down too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import httpx

from config import Settings
from crmtracker import compose

COLUMNS = [
    ("group", "GROUP"),
    ("topic", "TOPIC"),
    ("partition", "PART"),
    ("committed_offset", "COMMITTED"),
    ("end_offset", "END"),
    ("lag", "LAG"),
    ("time_lag_seconds", "TIME LAG"),
    ("status", "STATUS"),
]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "time_lag_seconds":
        return _duration(float(value))
    return str(value)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def format_table(report: dict[str, Any]) -> str:
    """A fixed-width table of the items, then one line per group."""
    rows = [[_cell(k, item.get(k)) for k, _ in COLUMNS] for item in report.get("items", [])]
    heads = [h for _, h in COLUMNS]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(heads)]
    numeric = {"PART", "COMMITTED", "END", "LAG", "TIME LAG"}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if h in numeric else c.ljust(w)
            for c, w, h in zip(cells, widths, heads, strict=True)
        ).rstrip()

    out = [line(heads), *(line(r) for r in rows), ""]
    for g in report.get("groups", []):
        out.append(
            f"group {g['group']}: {g['status']}  (total lag {g['lag']} over "
            f"{g['partitions']} partitions, window {report.get('window_seconds')}s)"
        )
    if report.get("error"):
        out.append(f"last sample failed: {report['error']}")
    return "\n".join(out)


async def from_api(url: str, token: str, timeout: float = 10.0) -> dict[str, Any]:
    """Every page of ``GET /v1/ops/lag``, merged."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout) as client:
        report: dict[str, Any] | None = None
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            r = await client.get("/v1/ops/lag", params=params)
            r.raise_for_status()
            page = r.json()
            if report is None:
                report = page
            else:
                report["items"].extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return report


async def direct(settings: Settings, samples: int, interval: float) -> dict[str, Any]:
    """Sample the broker (and the database for liveness) from here."""
    async with compose.engine_scope(settings) as engine:
        monitor = compose.lag_monitor(settings, engine)
        for i in range(samples):
            if i:
                await asyncio.sleep(interval)
            await monitor.sample()
        return monitor.report()


def run(
    settings: Settings,
    *,
    url: str | None,
    token: str | None,
    as_json: bool,
    use_direct: bool,
    samples: int,
    interval: float,
) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no request log lines in the table
    report: dict[str, Any] | None = None
    if not use_direct:
        if token is None:
            from api.auth import mint_token, parse_ttl

            token = mint_token(compose.signing_secret(settings), "ops", ttl=parse_ttl("5m"))
        base = url or f"http://{settings.api_host}:{settings.api_port}"
        try:
            report = asyncio.run(from_api(base, token))
        except httpx.HTTPStatusError as exc:
            print(f"crm-tracker lag: {base} answered {exc.response.status_code}", file=sys.stderr)
            return 1
        except httpx.TransportError as exc:
            print(
                f"crm-tracker lag: API at {base} unreachable ({type(exc).__name__}); "
                "sampling the broker directly",
                file=sys.stderr,
            )
    if report is None:
        try:
            report = asyncio.run(direct(settings, samples, interval))
        except Exception as exc:
            print(f"crm-tracker lag: cannot read offsets: {exc}", file=sys.stderr)
            return 1
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    # exit status for scripts and cron checks: 0 OK, 1 WARN, 2 worse
    return {"OK": 0, "WARN": 1}.get(report["status"], 2)
