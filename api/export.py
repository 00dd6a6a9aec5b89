"""Reports as CSV or XLSX: ``?format=csv|xlsx`` (or ``Accept: text/csv`` / the XLSX media
type) on the report routes turns their JSON answer into a table.

An ASGI middleware, so every report route keeps one implementation (and its scope checks,
read cache and audit): the middleware calls the route for JSON with the same caller, page
by page (1,000 items a page, following ``next_cursor``), and writes each page out as it
arrives: a CSV is streamed row by row, an XLSX (openpyxl, write-only) is built page by page
and sent in chunks. An error answer (401, 403, 404, 422) stays JSON.

Cells: money and ratios (decimal strings) are written as numbers from their exact decimal
text (the XLSX holds the digits the API sent; Excel shows 15 significant digits, so a figure
with more is written as text instead); counts as integers; everything else as text. Nested
objects become dotted columns (``tally.volume.asset``), lists JSON text.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.policy import ACCOUNT_TYPES, VISIT_KINDS, VISIT_METHODS

CSV = "text/csv"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# the report routes: path pattern -> sheet name
REPORTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/v1/branches/[^/]+/leaderboard$"), "leaderboard"),
    (re.compile(r"^/v1/leaderboard$"), "leaderboard"),
    (re.compile(r"^/v1/managers/[^/]+/tally$"), "tally"),
    (re.compile(r"^/v1/branches/[^/]+/tally$"), "tally"),
    (re.compile(r"^/v1/overdue$"), "overdue"),
    (re.compile(r"^/v1/branches/[^/]+/assessment$"), "assessment"),
    (re.compile(r"^/v1/managers/[^/]+/assessment$"), "assessment"),
    (re.compile(r"^/v1/managers/[^/]+/clients$"), "clients"),
    (re.compile(r"^/v1/managers/[^/]+/plan$"), "plan"),
    (re.compile(r"^/v1/branches/[^/]+/coverage$"), "coverage"),
    (re.compile(r"^/v1/branches/[^/]+/unassigned$"), "unassigned"),
]
MONEY = re.compile(r"^-?\d+\.\d+$")
PAGE = 1000
CHUNK = 64 * 1024


def report_name(path: str) -> str | None:
    for pattern, name in REPORTS:
        if pattern.match(path):
            return name
    return None


def wanted_format(scope: Scope) -> str | None:
    """csv, xlsx, json, or "" for an unknown ``format`` value (a 422)."""
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    if "format" in query:
        f = query["format"].lower()
        return f if f in ("csv", "xlsx", "json") else ""
    accept = b""
    for k, v in scope.get("headers", []):
        if k == b"accept":
            accept = v
    if CSV.encode() in accept:
        return "csv"
    if XLSX.encode() in accept:
        return "xlsx"
    return None


# --- flattening ------------------------------------------------------------------------------
_COMPLETE = {
    "accounts_opened": ACCOUNT_TYPES,
    "visits": ("total", *VISIT_METHODS, *VISIT_KINDS),
}


def flatten(doc: Any, prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dotted columns; zero counts a tally leaves out are filled in, so every row of a report
    has the same columns."""
    out = {} if out is None else out
    if isinstance(doc, dict):
        for k, v in doc.items():
            key = f"{prefix}{k}"
            if k in _COMPLETE and isinstance(v, dict):
                v = {**{name: 0 for name in _COMPLETE[k]}, **v}
            if isinstance(v, dict):
                flatten(v, key + ".", out)
            else:
                out[key] = v
    else:
        out[prefix.rstrip(".") or "value"] = doc
    return out


def rows_of(doc: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The table rows of an answer and what surrounds them (repeated on no row)."""
    if isinstance(doc.get("items"), list):
        rest = {k: v for k, v in doc.items() if k not in ("items", "next_cursor", "total")}
        return [flatten(i) for i in doc["items"]], rest
    if isinstance(doc.get("managers"), list) and doc.get("branch_id"):
        # a branch's coverage: a row per manager after the branch's own
        head = {k: v for k, v in doc.items() if k != "managers"}
        return [flatten({"manager_id": "(branch)", **head}), *map(flatten, doc["managers"])], {}
    return [flatten(doc)], {}


def cell_value(key: str, v: Any) -> Any:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return v
    if isinstance(v, list | dict):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, str) and MONEY.match(v) and not key.endswith("id"):
        d = Decimal(v)
        digits = len(d.as_tuple().digits)
        return d if digits <= 15 else v
    return v


def number_format(v: Any) -> str | None:
    if isinstance(v, Decimal):
        places = -v.as_tuple().exponent  # type: ignore[operator]
        return "#,##0." + "0" * places if places > 0 else "#,##0"
    return None


# --- the middleware --------------------------------------------------------------------------
class ExportMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        name = report_name(scope["path"])
        fmt = wanted_format(scope) if name else None
        if name is None or fmt is None or fmt == "json":
            await self.app(scope, receive, send)
            return
        if fmt == "":
            await _send_json(send, 422, {"detail": "format must be one of csv, xlsx, json"})
            return
        query = [
            (k, v)
            for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"))
            if k != "format"
        ]
        base = dict(query)
        limit = base.get("limit")
        status, first = await self._json(scope, {**base, "limit": limit or str(PAGE)})
        if status != 200:
            await _send_json(send, status, first)
            return

        async def pages() -> AsyncIterator[dict[str, Any]]:
            doc = first
            while True:
                yield doc
                cursor = doc.get("next_cursor") if isinstance(doc, dict) else None
                if limit is not None or not cursor:  # a page asked for: that page alone
                    return
                status, doc = await self._json(
                    scope, {**base, "limit": str(PAGE), "cursor": cursor}
                )
                if status != 200:
                    raise RuntimeError(f"export page failed with HTTP {status}")

        filename = _filename(scope["path"], base, fmt)
        media = CSV + "; charset=utf-8" if fmt == "csv" else XLSX
        headers = [
            (b"content-type", media.encode()),
            (b"content-disposition", f'attachment; filename="{filename}"'.encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        write = csv_chunks if fmt == "csv" else xlsx_chunks
        async for chunk in write(pages(), name):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _json(self, scope: Scope, query: dict[str, str]) -> tuple[int, Any]:
        """Call the route itself for its JSON answer (same caller, same headers)."""
        headers = [(k, v) for k, v in scope["headers"] if k != b"accept"]
        headers.append((b"accept", b"application/json"))
        inner = {
            **scope,
            "query_string": urlencode(query).encode(),
            "headers": headers,
        }
        status = 500
        body = bytearray()

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        await self.app(inner, receive, capture)
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return 500, {"detail": "internal error"}


async def _send_json(send: Send, status: int, doc: Any) -> None:
    body = json.dumps(doc, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _filename(path: str, query: dict[str, str], fmt: str) -> str:
    parts = [p for p in path.split("/")[2:] if p]
    for k in ("period", "at", "from", "to", "branch_id", "manager_id"):
        if query.get(k):
            parts.append(query[k])
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))[:150]
    return f"{safe or 'report'}.{fmt}"


class _Columns:
    """Columns in order of first appearance (the first page fixes a CSV's header)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self, rows: list[dict[str, Any]]) -> None:
        seen = set(self.names)
        for r in rows:
            for k in r:
                if k not in seen:
                    seen.add(k)
                    self.names.append(k)


async def csv_chunks(pages: AsyncIterator[dict[str, Any]], name: str) -> AsyncIterator[bytes]:
    """CSV (UTF-8 with a byte-order mark, so Excel opens Chinese text right), a page at a
    time; decimals exactly as the API sent them."""
    buf = io.StringIO()
    writer: Any = None
    cols = _Columns()
    buf.write("\ufeff")
    async for doc in pages:
        rows, _ = rows_of(doc)
        if writer is None:
            cols.add(rows)
            writer = csv.DictWriter(buf, fieldnames=cols.names, extrasaction="ignore")
            writer.writeheader()
        for r in rows:
            writer.writerow({k: _csv(v) for k, v in r.items()})
            if buf.tell() > CHUNK:
                yield buf.getvalue().encode()
                buf.seek(0)
                buf.truncate()
    yield buf.getvalue().encode()


def _csv(v: Any) -> Any:
    if isinstance(v, list | dict):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else v


async def xlsx_chunks(pages: AsyncIterator[dict[str, Any]], name: str) -> AsyncIterator[bytes]:
    """An XLSX of one sheet (and an "about" sheet with what surrounds the rows: period,
    metric, branch), built page by page in openpyxl's write-only mode."""
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(name[:31])
    cols = _Columns()
    about: dict[str, Any] = {}
    header_done = False
    bold = Font(bold=True)
    async for doc in pages:
        rows, rest = rows_of(doc)
        about.update(flatten(rest))
        if not header_done:
            cols.add(rows)
            ws.freeze_panes = "A2"
            header = []
            for c in cols.names:
                cell = WriteOnlyCell(ws, value=c)
                cell.font = bold
                header.append(cell)
            ws.append(header)
            header_done = True
        for r in rows:
            ws.append([_xlsx_cell(ws, c, r.get(c)) for c in cols.names])
    if about:
        info = wb.create_sheet("about")
        for k, v in about.items():
            info.append([k, _xlsx_cell(info, k, v)])
    out = io.BytesIO()
    wb.save(out)
    data = out.getvalue()
    for i in range(0, len(data), CHUNK):
        yield data[i : i + CHUNK]


def _xlsx_cell(ws: Any, key: str, v: Any) -> Any:
    value = cell_value(key, v)
    fmt = number_format(value)
    if fmt is None:
        return value
    cell = WriteOnlyCell(ws, value=value)
    cell.number_format = fmt
    return cell


Writer = Callable[[AsyncIterator[dict[str, Any]], str], AsyncIterator[bytes]]
