"""The visit ledger: newest first, each visit once, notes only to those allowed, every read
of notes audited, notes never in clear text in the database (SQLite file bytes, PostgreSQL
rows), keys generated in the data directory and rotated."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from config import Settings
from crmtracker.compose import api_app as create_app
from models import visit_ledger
from models.db import make_engine
from models.tables import VisitRow
from testkit.api import asgi_client
from testkit.ledger import NOTE, SECRET, audit_rows, auth, fill, note


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    await fill(db_url)
    app = create_app(
        Settings(database_url=db_url, data_dir=tmp_path, auth_secret=SECRET, lag_sample_seconds=0)
    )
    async with asgi_client(app) as c:
        yield c, db_url


async def test_client_ledger_newest_first_once_with_notes_and_audited(api: Any) -> None:
    c, url = api
    r = await c.get("/v1/clients/c1/visits", headers=auth("manager", manager_id="m1"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["event_id"] for i in body["items"]] == ["v4", "v2", "v3", "v1"]
    assert body["total"] == 4 and body["next_cursor"] is None
    first = body["items"][1]
    assert first == {
        "event_id": "v2",
        "occurred_at": "2026-11-05T10:00:00+08:00",
        "client_id": "c1",
        "manager_id": "m1",
        "method": "on_site",
        "kind": "routine",
        "duration_minutes": 45,
        "notes": note(2),
        "notes_withheld": False,
    }
    # m2's visit of m1's client: its notes are the client's, shown to the client's manager
    assert body["items"][0]["notes"] == note(4)
    assert body["items"][2]["notes"] is None
    rows = await audit_rows(url)
    assert [(a.actor, a.role, a.subject) for a in rows] == [("m1", "manager", "client:c1")]
    assert json.loads(rows[0].detail)["visits_with_notes"] == 3
    assert rows[0].at is not None

    # supervisors of the branch and admins read them too, each read audited
    for headers in (auth("supervisor", branches=["b1"]), auth("admin")):
        r = await c.get("/v1/clients/c1/visits", headers=headers)
        assert r.json()["items"][1]["notes"] == note(2)
    assert len(await audit_rows(url)) == 3

    # pages: limit and cursor walk the same order; a page without notes writes nothing
    seen = []
    cursor = None
    while True:
        q = "?limit=1" + (f"&cursor={cursor}" if cursor else "")
        r = (await c.get("/v1/clients/c1/visits" + q, headers=auth("admin"))).json()
        seen += [i["event_id"] for i in r["items"]]
        assert r["total"] == 4
        cursor = r["next_cursor"]
        if cursor is None:
            break
    assert seen == ["v4", "v2", "v3", "v1"]
    assert len(await audit_rows(url)) == 3 + 3  # v3's page carried no notes


async def test_out_of_scope_and_bad_input(api: Any) -> None:
    c, url = api
    r = await c.get("/v1/clients/c1/visits", headers=auth("manager", manager_id="m2"))
    assert r.status_code == 403
    r = await c.get("/v1/clients/c1/visits", headers=auth("supervisor", branches=["b2"]))
    assert r.status_code == 403
    assert (await c.get("/v1/clients/c1/visits", headers=auth("ops"))).status_code == 403
    assert (await c.get("/v1/clients/c1/visits")).status_code == 401
    assert (await c.get("/v1/clients/zz/visits", headers=auth("admin"))).status_code == 404
    for q in ("?limit=0", "?limit=1001", "?cursor=%25%25", "?cursor=WzFd"):
        r = await c.get("/v1/clients/c1/visits" + q, headers=auth("admin"))
        assert r.status_code == 422, (q, r.text)
    for q in ("?from=2026-11-05&to=2026-11-01", "?from=nope", "?to=9999-12-31&from=0001-01-01"):
        r = await c.get("/v1/managers/m1/visits" + q, headers=auth("admin"))
        assert r.status_code == 422, (q, r.text)
    assert await audit_rows(url) == []


async def test_manager_ledger_withholds_notes_of_others_clients(api: Any) -> None:
    c, url = api
    r = await c.get("/v1/managers/m2/visits", headers=auth("manager", manager_id="m2"))
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert item["event_id"] == "v4" and item["client_id"] == "c1"
    assert item["notes"] is None and item["notes_withheld"] is True
    assert await audit_rows(url) == []
    # the client's supervisor sees m2's visit only through the client (m2 is another branch)
    r = await c.get("/v1/managers/m2/visits", headers=auth("supervisor", branches=["b1"]))
    assert r.status_code == 403
    r = await c.get("/v1/managers/m2/visits", headers=auth("admin"))
    assert r.json()["items"][0]["notes"] == note(4)
    assert [a.subject for a in await audit_rows(url)] == ["client:c1"]

    # from/to are bank days, inclusive
    r = await c.get(
        "/v1/managers/m1/visits?from=2026-11-04&to=2026-11-05",
        headers=auth("manager", manager_id="m1"),
    )
    assert [i["event_id"] for i in r.json()["items"]] == ["v2", "v3"]
    r = await c.get(
        "/v1/managers/m1/visits?from=2026-11-06&to=2026-12-31",
        headers=auth("manager", manager_id="m1"),
    )
    assert r.json()["items"] == []


async def test_notes_never_in_clear_text_in_the_database(api: Any) -> None:
    c, url = api
    # rejected and held rows keep the message without its notes; the list says so
    r = await c.get("/v1/events/rejected", headers=auth("admin"))
    items = r.json()["items"]
    assert {i["event_id"] for i in items} >= {"v5", "v6"}
    assert NOTE not in r.text
    engine = make_engine(url)
    async with engine.connect() as conn:
        sealed = (await conn.execute(select(VisitRow.notes_sealed))).scalars().all()
        assert sum(s is not None for s in sealed) == 4  # v1, v2, v4 and the held v5
        if conn.dialect.name == "postgresql":
            tables = (
                await conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
            ).scalars()
            for t in list(tables):
                dump = (await conn.execute(text(f'SELECT t::text FROM "{t}" t'))).scalars()
                for row in dump:
                    assert NOTE not in row, t
                    for chunk in row.split(","):  # base64 columns, decoded
                        try:
                            decoded = base64.b64decode(chunk.strip('"()'), validate=True)
                        except ValueError:
                            continue
                        assert NOTE.encode() not in decoded, t
        held = (await conn.execute(text("SELECT value_b64 FROM rejected_events"))).scalars()
        for b64 in held:
            raw = base64.b64decode(b64)
            assert NOTE.encode() not in raw
            assert b"notes_withheld" in raw
        values = (
            await conn.execute(text("SELECT value FROM events WHERE event_type='visit.logged'"))
        ).scalars()
        assert all(NOTE not in v for v in values)
    await engine.dispose()
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        for f in path.parent.glob(path.name + "*"):  # the file, its WAL and shared memory
            data = f.read_bytes()
            assert NOTE.encode() not in data, f
            assert NOTE.encode("utf-16-le") not in data, f


def test_key_generated_in_data_dir_and_rotated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRM_NOTES_KEYS", raising=False)
    settings = Settings(data_dir=tmp_path)
    first = visit_ledger.cipher_for(settings)
    assert (tmp_path / "notes-key").stat().st_mode & 0o077 == 0
    token = first.seal("hello 你好")
    assert visit_ledger.cipher_for(Settings(data_dir=tmp_path)).open(token) == "hello 你好"
    # rotation: a new key first; old notes still open, and re-sealed they need only the new
    visit_ledger.add_key(settings)
    rotated = visit_ledger.cipher_for(settings)
    assert rotated.open(token) == "hello 你好"
    again = rotated.rotate(token)
    only_new = visit_ledger.NotesCipher(rotated.keys[:1])
    assert only_new.open(again) == "hello 你好"
    with pytest.raises(RuntimeError):
        visit_ledger.open_notes(only_new, token)
    # configured keys win over the file
    key = visit_ledger.Fernet.generate_key().decode()
    monkeypatch.setenv("CRM_NOTES_KEYS", f"{key}, {rotated.keys[0].decode()}")
    configured = visit_ledger.cipher_for(Settings(data_dir=tmp_path))
    assert configured.keys[0].decode() == key and configured.open(again) == "hello 你好"


async def test_cli_rotation_reseals_every_visit(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(sqlite_url)
    old = os.environ["CRM_NOTES_KEYS"]
    new = visit_ledger.Fernet.generate_key().decode()
    monkeypatch.setenv("CRM_NOTES_KEYS", f"{new},{old}")
    monkeypatch.setenv("CRM_DATABASE_URL", sqlite_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crmtracker",
        "notes",
        "rotate",
        "--data-dir",
        str(tmp_path),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert b"4 visits" in err
    only_new = visit_ledger.NotesCipher([new])
    engine = make_engine(sqlite_url)
    async with engine.connect() as conn:
        sealed = (
            await conn.execute(
                select(VisitRow.event_id, VisitRow.notes_sealed).where(
                    VisitRow.notes_sealed.is_not(None)
                )
            )
        ).all()
    await engine.dispose()
    opened = {eid: visit_ledger.open_notes(only_new, s) for eid, s in sealed}
    assert opened == {"v1": note(1), "v2": note(2), "v4": note(4), "v5": note(5)}
