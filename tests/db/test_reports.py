"""Reports as CSV and XLSX: read back (openpyxl, csv), every figure equals the JSON answer
exactly (Decimal); pages streamed; the weekly branch report; errors stay JSON."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import httpx
import openpyxl
import pytest

from api import export
from testkit.book import auth

SUP = auth("supervisor", branches=["b1"])


def sheet_rows(content: bytes, sheet: int = 0) -> list[dict[str, Any]]:
    wb = openpyxl.load_workbook(io.BytesIO(content))
    ws = wb.worksheets[sheet]
    rows = list(ws.iter_rows(values_only=True))
    return [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


def exact(v: Any) -> Decimal:
    """A cell read back: a number (openpyxl reads it as float or int) as its decimal."""
    return Decimal(str(v))


def flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    return export.flatten(doc, prefix)


async def test_leaderboard_xlsx_and_csv_equal_the_json(api: httpx.AsyncClient) -> None:
    q = "/v1/branches/b1/leaderboard?period=month&at=2026-11-20"
    doc = (await api.get(q, headers=SUP)).json()
    assert doc["items"][0]["value"] == "1875.67"  # m1: 1866.664 + 9.009, rounded once
    r = await api.get(q + "&format=xlsx", headers=SUP)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == export.XLSX
    assert "attachment" in r.headers["content-disposition"]
    rows = sheet_rows(r.content)
    assert len(rows) == len(doc["items"]) == 2
    for row, item in zip(rows, doc["items"], strict=True):
        want = flat(item)
        assert row["manager_id"] == item["manager_id"] and row["rank"] == item["rank"]
        for key, v in want.items():
            if isinstance(v, str) and export.MONEY.match(v) and not key.endswith("id"):
                assert exact(row[key]) == Decimal(v), key
                assert isinstance(row[key], float | int), key  # a number in the sheet
            elif isinstance(v, int) and not isinstance(v, bool):
                assert row[key] == v, key
    about = {
        r[0]: r[1]
        for r in openpyxl.load_workbook(io.BytesIO(r.content))["about"].iter_rows(values_only=True)
    }
    assert about["period.from"] == "2026-11-01" and about["metric"] == "weighted_profit"

    # CSV: decimals exactly as the JSON has them; by Accept as well
    r = await api.get(q, headers={**SUP, "Accept": "text/csv"})
    assert r.headers["content-type"].startswith("text/csv")
    body = r.content.decode("utf-8-sig")
    got = list(csv.DictReader(io.StringIO(body)))
    assert [g["tally.weighted_profit"] for g in got] == [
        i["tally"]["weighted_profit"] for i in doc["items"]
    ]
    assert got[0]["tally.accounts_opened.basic_settlement"] == "0"  # every column on every row


async def test_lists_are_streamed_page_by_page(
    api: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(export, "PAGE", 1)  # every item its own page: the cursor is followed
    doc = (await api.get("/v1/overdue?branch_id=b1", headers=SUP)).json()
    assert doc["total"] >= 2
    r = await api.get("/v1/overdue?branch_id=b1&format=csv", headers=SUP)
    got = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert [(g["client_id"], g["kind"], g["overdue_days"]) for g in got] == [
        (i["client_id"], i["kind"], str(i["overdue_days"])) for i in doc["items"]
    ]
    r = await api.get("/v1/overdue?branch_id=b1&format=xlsx", headers=SUP)
    assert [(x["client_id"], x["overdue_days"]) for x in sheet_rows(r.content)] == [
        (i["client_id"], i["overdue_days"]) for i in doc["items"]
    ]
    # a page asked for is that page alone
    r = await api.get("/v1/overdue?branch_id=b1&format=csv&limit=2", headers=SUP)
    assert len(list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))) == 2


async def test_assessment_table_tally_and_client_book(api: httpx.AsyncClient) -> None:
    q = "/v1/branches/b1/assessment?period=month&at=2026-11-20"
    doc = (await api.get(q, headers=SUP)).json()
    assert [i["manager_id"] for i in doc["items"]] == ["m1", "m2"] and doc["total"] == 2
    rows = sheet_rows((await api.get(q + "&format=xlsx", headers=SUP)).content)
    for row, item in zip(rows, doc["items"], strict=True):
        assert exact(row["weighted_profit"]) == Decimal(item["weighted_profit"])
        assert exact(row["total_score"]) == Decimal(item["total_score"])
        assert row["grade"] == item["grade"]
    q = "/v1/managers/m1/tally?from=2026-11-01&to=2026-11-30"
    doc = (await api.get(q, headers=SUP)).json()
    (row,) = sheet_rows((await api.get(q + "&format=xlsx", headers=SUP)).content)
    for line, v in doc["volume"].items():
        assert exact(row[f"volume.{line}"]) == Decimal(v)
    assert exact(row["weighted_profit"]) == Decimal(doc["weighted_profit"]) == Decimal("1875.67")
    q = "/v1/managers/m1/clients?sort=weighted_profit_month&order=desc"
    doc = (await api.get(q, headers=SUP)).json()
    rows = sheet_rows((await api.get(q + "&format=xlsx", headers=SUP)).content)
    assert [exact(r["weighted_profit_month"]) for r in rows] == [
        Decimal(i["weighted_profit_month"]) for i in doc["items"]
    ]


async def test_errors_stay_json(api: httpx.AsyncClient) -> None:
    q = "/v1/branches/b1/leaderboard?period=month"
    r = await api.get(q + "&format=pdf", headers=SUP)
    assert r.status_code == 422 and "format" in r.json()["detail"]
    r = await api.get(q + "&format=xlsx", headers=auth("supervisor", branches=["b2"]))
    assert r.status_code == 403 and r.json()["detail"]
    r = await api.get(q + "&format=csv")
    assert r.status_code == 401
    r = await api.get("/v1/branches/b1/leaderboard?period=decade&format=csv", headers=SUP)
    assert r.status_code == 422
    # JSON is still the default, and format=json is JSON
    assert (await api.get(q + "&format=json", headers=SUP)).json()["items"]


async def test_weekly_report(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/branches/b1/reports/weekly?at=2026-11-18", headers=SUP)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == export.XLSX
    assert 'filename="weekly-b1-2026-11-16.xlsx"' in r.headers["content-disposition"]
    wb = openpyxl.load_workbook(io.BytesIO(r.content))
    ws = wb.worksheets[0]
    values = list(ws.iter_rows(values_only=True))
    assert values[1][1] == "2026-11-16 – 2026-11-22"
    header = next(i for i, v in enumerate(values) if v[0] == "客户经理 manager")
    table = [dict(zip(values[header], v, strict=True)) for v in values[header + 1 :]]
    by_id = {t["客户经理 manager"]: t for t in table}
    assert list(by_id) == ["m1", "m2", "b1"]
    for mid in ("m1", "m2"):
        tally = (
            await api.get(f"/v1/managers/{mid}/tally?from=2026-11-16&to=2026-11-22", headers=SUP)
        ).json()
        row = by_id[mid]
        assert exact(row["加权模拟利润 weighted profit"]) == Decimal(tally["weighted_profit"])
        assert row["交易笔数 transactions"] == tally["transactions"]
        assert row["走访 visits"] == tally["visits"]["total"]
    branch = (
        await api.get("/v1/branches/b1/tally?from=2026-11-16&to=2026-11-22", headers=SUP)
    ).json()
    assert exact(by_id["b1"]["加权模拟利润 weighted profit"]) == Decimal(branch["weighted_profit"])
    assert exact(by_id["b1"]["加权模拟利润 weighted profit"]) == Decimal("266.66")
    cov = (
        await api.get("/v1/branches/b1/coverage?from=2026-11-16&to=2026-11-22", headers=SUP)
    ).json()
    assert exact(by_id["b1"]["走访覆盖率 coverage"]) == Decimal(cov["coverage"])
    assert by_id["m1"]["管户 clients"] == 2
    targets = list(wb.worksheets[1].iter_rows(values_only=True))
    assert targets[1][:2] == ("corporate_settlement", "weekly")
    # the same count as the branch tally's week; the report is made on 20 November (the
    # app's clock), inside the week, so the week is still running and not judged behind
    week_rule = (
        await api.get("/v1/branches/b1/tally?period=week&at=2026-11-16", headers=SUP)
    ).json()["account_targets"][0]
    assert targets[1][3] == week_rule["actual"]
    assert targets[1][5] == "on_track"
    for q, code in (
        ("?at=2026-13-01", 422),
        ("?at=9999-12-31", 422),
    ):
        assert (
            await api.get("/v1/branches/b1/reports/weekly" + q, headers=SUP)
        ).status_code == code, q
    r = await api.get("/v1/branches/b1/reports/weekly", headers=auth("manager", manager_id="m1"))
    assert r.status_code == 403


async def test_weekly_report_from_the_command_line(sqlite_url: str, tmp_path: Any) -> None:
    import asyncio
    import os
    import sys

    from testkit.book import fill_book

    await fill_book(sqlite_url)
    out = tmp_path / "weekly.xlsx"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crmtracker",
        "report",
        "weekly",
        "--branch",
        "b1",
        "--week",
        "2026-11-18",
        "--out",
        str(out),
        "--data-dir",
        str(tmp_path),
        env={**os.environ, "CRM_DATABASE_URL": sqlite_url},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert b"weekly report [" in err and b"4/4" in err and b"2 managers" in err
    values = list(openpyxl.load_workbook(out).worksheets[0].iter_rows(values_only=True))
    assert values[1][1] == "2026-11-16 – 2026-11-22"
    assert exact(values[-1][2]) == Decimal("266.66")  # the branch row
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crmtracker",
        "report",
        "weekly",
        "--branch",
        "nowhere",
        "--out",
        str(out),
        "--data-dir",
        str(tmp_path),
        env={**os.environ, "CRM_DATABASE_URL": sqlite_url},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 1 and b"not found" in err
