"""The visit ledger (拜访记录台账): every visit of a client, with its notes encrypted at rest.

Visit notes are confidential. They are stored once, encrypted (Fernet: AES-128-CBC with an
HMAC-SHA256, under ``MultiFernet`` so keys can be rotated), in ``visits.notes_sealed``; the
raw message kept in ``events.value`` and in ``rejected_events.value_b64`` has them removed
(``payload.notes`` dropped, ``payload.notes_withheld`` set to their length). The apply step
calls ``stored_value``, ``stored_raw`` and ``record`` (streams/apply.py); the API reads the
ledger through ``client_page`` and ``manager_page`` and opens notes with the same cipher.

Keys: ``CRM_NOTES_KEYS`` (comma separated, newest first), else a key generated on first
start in the data directory (``notes-key``, one key per line, newest first), shared by every
process of the embedded setup like the token signing secret.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from models.events import Event, VisitLogged
from models.tables import ClientRow, EventRow, ManagerRow, VisitRow

if TYPE_CHECKING:
    from config import Settings

KEY_FILE = "notes-key"


class NotesCipher:
    """Seals and opens visit notes; the first key seals, every key opens."""

    def __init__(self, keys: Sequence[bytes | str]) -> None:
        if not keys:
            raise ValueError("at least one notes key is needed")
        self.keys = [k.encode() if isinstance(k, str) else k for k in keys]
        self._fernet = MultiFernet([Fernet(k) for k in self.keys])

    def seal(self, text: str) -> str:
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def open(self, token: str) -> str:
        return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")

    def rotate(self, token: str) -> str:
        """The same notes sealed under the first key."""
        return self._fernet.rotate(token.encode("ascii")).decode("ascii")


def _read_or_create_key_file(path: Path) -> list[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:  # first start: this process creates the key, any other one reads it
        with os.fdopen(fd, "w") as f:
            f.write(Fernet.generate_key().decode() + "\n")
    for _ in range(50):
        keys = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if keys:
            return keys
        import time

        time.sleep(0.02)  # another process is writing it
    raise RuntimeError(f"the notes key file {path} is empty")


def cipher_for(settings: Settings) -> NotesCipher:
    """The notes cipher of these settings (``CRM_NOTES_KEYS`` or the data directory's key)."""
    if settings.notes_keys is not None:
        keys = [k.strip() for k in settings.notes_keys.get_secret_value().split(",") if k.strip()]
        return NotesCipher(keys)
    return NotesCipher(_read_or_create_key_file(settings.data_dir / KEY_FILE))


def add_key(settings: Settings) -> Path:
    """Put a new key first in the data directory's key file (rotation, embedded setup)."""
    path = settings.data_dir / KEY_FILE
    old = _read_or_create_key_file(path)
    path.write_text("\n".join([Fernet.generate_key().decode(), *old]) + "\n")
    return path


_current: NotesCipher | None = None
_settings: Settings | None = None


def use_settings(settings: Settings) -> None:
    """Make this process seal notes with these settings' key (built on first use: the
    command line calls it for every command, the worker and migrations then use it)."""
    global _current, _settings
    _current, _settings = None, settings


def current() -> NotesCipher:
    """The cipher the apply step (and the migration of stored visits) seals with: the one
    of ``use_settings``, else of the environment's settings (``CRM_NOTES_KEYS`` /
    ``CRM_DATA_DIR``)."""
    global _current
    if _current is None:
        from config import Settings

        _current = cipher_for(_settings if _settings is not None else Settings())
    return _current


# --- what the apply step stores ---------------------------------------------------------------
def _without_notes_doc(doc: Any) -> bool:
    payload = doc.get("payload") if isinstance(doc, dict) else None
    if not isinstance(payload, dict) or "notes" not in payload:
        return False
    notes = payload.pop("notes")
    payload["notes_withheld"] = len(notes) if isinstance(notes, str) else True
    return True


def stored_raw(raw: bytes | None) -> bytes | None:
    """A raw message as it may be stored: a JSON envelope's ``payload.notes`` removed.

    For rejected and held rows, whatever their type (a visit rejected for a bad method still
    carries notes). A value that is not a JSON object is kept as received: it is not an
    event, and what it holds cannot be told apart.
    """
    if raw is None or (b"notes" not in raw and b"\\u" not in raw):
        return raw
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw
    if not _without_notes_doc(doc):
        return raw
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def stored_value(event: Event, raw: bytes | None) -> bytes | None:
    """The value of an applied event as ``events.value`` keeps it (visits: without notes)."""
    if isinstance(event.payload, VisitLogged) and event.payload.notes is not None:
        return stored_raw(raw)
    return raw


def visit_rows(events: Iterable[Event], now: datetime, cipher: NotesCipher) -> list[dict[str, Any]]:
    rows = []
    for e in events:
        p = e.payload
        if not isinstance(p, VisitLogged):
            continue
        rows.append(
            {
                "event_id": e.event_id,
                "client_id": p.client_id,
                "manager_id": p.manager_id,
                "occurred_at": e.occurred_at,
                "method": p.method,
                "kind": p.kind,
                "duration_minutes": p.duration_minutes,
                "notes_sealed": cipher.seal(p.notes) if p.notes is not None else None,
                "received_at": now,
            }
        )
    return rows


async def record(conn: AsyncConnection, events: Iterable[Event], now: datetime) -> None:
    """Add the newly claimed visits to the ledger (applied or held: the ledger lists those
    whose event is applied), notes sealed; a redelivered visit adds nothing."""
    rows = visit_rows(events, now, current())
    if not rows:
        return
    mod = postgresql if conn.dialect.name == "postgresql" else sqlite
    rows.sort(key=lambda r: r["event_id"])
    await conn.execute(mod.insert(VisitRow).on_conflict_do_nothing(), rows)


# --- reading ----------------------------------------------------------------------------------
@dataclass
class VisitPage:
    rows: list[Any]
    last_key: tuple[str, str] | None
    total: int


_COLUMNS = (
    VisitRow.event_id,
    VisitRow.occurred_at,
    VisitRow.client_id,
    VisitRow.manager_id,
    VisitRow.method,
    VisitRow.kind,
    VisitRow.duration_minutes,
    VisitRow.notes_sealed,
    ClientRow.manager_id.label("client_manager_id"),
    ManagerRow.branch_id.label("client_branch_id"),
)


def _applied() -> Any:
    return (
        select(EventRow.event_id)
        .where(EventRow.event_id == VisitRow.event_id, EventRow.status == "applied")
        .exists()
    )


async def _page(
    conn: AsyncConnection, conds: list[Any], after: tuple[datetime, str] | None, limit: int
) -> VisitPage:
    base = and_(*conds, _applied())
    total = (await conn.execute(select(func.count()).select_from(VisitRow).where(base))).scalar()
    q = (
        select(*_COLUMNS)
        .select_from(VisitRow)
        .outerjoin(ClientRow, ClientRow.client_id == VisitRow.client_id)
        .outerjoin(ManagerRow, ManagerRow.manager_id == ClientRow.manager_id)
        .where(base)
    )
    if after is not None:
        at, eid = after
        q = q.where(
            or_(
                VisitRow.occurred_at < at,
                and_(VisitRow.occurred_at == at, VisitRow.event_id < eid),
            )
        )
    rows = (
        await conn.execute(
            q.order_by(VisitRow.occurred_at.desc(), VisitRow.event_id.desc()).limit(limit + 1)
        )
    ).all()
    more = len(rows) > limit
    page = list(rows[:limit])
    last = (page[-1].occurred_at.isoformat(), page[-1].event_id) if more and page else None
    return VisitPage(page, last, int(total or 0))


async def client_page(
    conn: AsyncConnection, client_id: str, after: tuple[datetime, str] | None, limit: int
) -> VisitPage:
    """A client's visits, newest first (then event id, descending)."""
    return await _page(conn, [VisitRow.client_id == client_id], after, limit)


async def manager_page(
    conn: AsyncConnection,
    manager_id: str,
    start: datetime | None,
    end: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> VisitPage:
    """The visits a manager made in ``[start, end)``, newest first."""
    conds = [VisitRow.manager_id == manager_id]
    if start is not None:
        conds.append(VisitRow.occurred_at >= start)
    if end is not None:
        conds.append(VisitRow.occurred_at < end)
    return await _page(conn, conds, after, limit)


def open_notes(cipher: NotesCipher, sealed: str | None) -> str | None:
    if sealed is None:
        return None
    try:
        return cipher.open(sealed)
    except InvalidToken:
        raise RuntimeError("visit notes sealed with a key that is no longer configured") from None


async def rotate(conn: AsyncConnection, cipher: NotesCipher, batch: int = 500) -> int:
    """Re-seal every visit's notes under the first key; returns how many were re-sealed."""
    done = 0
    after = ""
    while True:
        rows = (
            await conn.execute(
                select(VisitRow.event_id, VisitRow.notes_sealed)
                .where(VisitRow.notes_sealed.is_not(None), VisitRow.event_id > after)
                .order_by(VisitRow.event_id)
                .limit(batch)
            )
        ).all()
        if not rows:
            return done
        for eid, sealed in rows:
            if sealed is None:  # (the query selects sealed notes only)
                continue
            await conn.execute(
                update(VisitRow)
                .where(VisitRow.event_id == eid)
                .values(notes_sealed=cipher.rotate(sealed))
            )
        done += len(rows)
        after = rows[-1].event_id
