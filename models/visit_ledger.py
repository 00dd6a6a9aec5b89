"""The visit ledger (拜访记录台账): every visit of a client, with its notes encrypted at rest.

Visit notes are confidential. They are stored once, encrypted (AES-256-GCM under a key
derived from the configured one, ``NotesCipher``; notes sealed before 2026-12-05 are Fernet
tokens, AES-128-CBC with an HMAC-SHA256, and stay readable; several keys so that keys can be
rotated), in ``visits.notes_sealed``; the
raw message kept in ``events.value`` and in ``rejected_events.value_b64`` has them removed
(``payload.notes`` dropped, ``payload.notes_withheld`` set to their length). The apply step
calls ``stored_value``, ``stored_raw`` and ``record`` (streams/apply.py); the API reads the
ledger through ``client_page`` and ``manager_page`` and opens notes with the same cipher.

Keys: ``CRM_NOTES_KEYS`` (comma separated, newest first), else a key generated on first
start in the data directory (``notes-key``, one key per line, newest first), shared by every
process of the embedded setup like the token signing secret.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from models.events import Event, VisitLogged
from models.tables import ClientRow, EventRow, ManagerRow, VisitRow

if TYPE_CHECKING:
    from config import Settings

KEY_FILE = "notes-key"


SEALED_V2 = "n2."
"""The prefix of notes sealed by the second format (AES-256-GCM); anything else is a Fernet
token (notes sealed before it: they stay readable, and ``rotate`` re-seals them)."""
_V2_INFO = b"crm-tracker visit notes v2 (AES-256-GCM)"
_NONCE = 12


def _v2_key(fernet_key: bytes) -> AESGCM:
    """The AES-256-GCM key of a configured (Fernet) key: HKDF-SHA256 of its 32 bytes, derived
    once per key and process, so the keys people configure and rotate stay the same."""
    raw = base64.urlsafe_b64decode(fernet_key)
    return AESGCM(HKDF(hashes.SHA256(), 32, None, _V2_INFO).derive(raw))


class NotesCipher:
    """Seals and opens visit notes; the first key seals, every key opens.

    Sealed: ``n2.`` + URL-safe base64 of (12-byte random nonce, AES-256-GCM ciphertext and
    tag), under a key derived from the configured one (``_v2_key``): about a microsecond a
    note, where Fernet (AES-128-CBC, HMAC-SHA256 and base64 in Python) took ten. Fernet tokens
    sealed before (by any of the keys) still open; ``rotate`` re-seals them in the new form.
    A random 96-bit nonce per note: the GCM limit of 2^32 notes per key is far off; rotate
    keys long before it.
    """

    def __init__(self, keys: Sequence[bytes | str]) -> None:
        if not keys:
            raise ValueError("at least one notes key is needed")
        self.keys = [k.encode() if isinstance(k, str) else k for k in keys]
        self._fernet = MultiFernet([Fernet(k) for k in self.keys])  # checks every key
        self._aead = [_v2_key(k) for k in self.keys]

    def seal(self, text: str) -> str:
        return self.seal_many([text])[0]

    def seal_many(self, texts: Sequence[str]) -> list[str]:
        """Several notes at once (one read of the system's random source for their nonces)."""
        if not texts:
            return []
        aead = self._aead[0]
        nonces = os.urandom(_NONCE * len(texts))
        out = []
        for i, text in enumerate(texts):
            nonce = nonces[i * _NONCE : (i + 1) * _NONCE]
            sealed = nonce + aead.encrypt(nonce, text.encode("utf-8"), None)
            out.append(SEALED_V2 + base64.urlsafe_b64encode(sealed).decode("ascii"))
        return out

    def open(self, token: str) -> str:
        """The notes; ``InvalidToken`` when no configured key opens them."""
        if not token.startswith(SEALED_V2):
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        try:
            sealed = base64.urlsafe_b64decode(token[len(SEALED_V2) :].encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise InvalidToken from None
        nonce, body = sealed[:_NONCE], sealed[_NONCE:]
        if len(nonce) < _NONCE or len(body) < 16:  # not even a tag: nothing a key opens
            raise InvalidToken
        for aead in self._aead:
            try:
                return aead.decrypt(nonce, body, None).decode("utf-8")
            except InvalidTag:
                continue
        raise InvalidToken

    def rotate(self, token: str) -> str:
        """The same notes sealed under the first key."""
        return self.seal(self.open(token))


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
    try:  # the same document and text, decoded and written in C
        doc = _NO_FLOATS.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    else:
        if not _without_notes_doc(doc):
            return raw
        return _ENCODER.encode(doc)
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw
    if not _without_notes_doc(doc):
        return raw
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _refuse_float(_text: str) -> Any:
    raise ValueError("a float: written as json writes it")


# msgspec writes what ``json.dumps(doc, ensure_ascii=False, separators=(",", ":"))`` writes
# for dicts, lists, strings, integers, booleans and null (the same escapes, key order and
# duplicate keys resolved the same way), in a tenth of the time; floats it writes in
# another form (1e16 for 1e+16): a document with a float goes through ``json``
_NO_FLOATS = msgspec.json.Decoder(float_hook=_refuse_float)
_ENCODER = msgspec.json.Encoder()


def stored_value(event: Event, raw: bytes | None) -> bytes | None:
    """The value of an applied event as ``events.value`` keeps it (visits: without notes)."""
    if isinstance(event.payload, VisitLogged) and event.payload.notes is not None:
        return stored_raw(raw)
    return raw


def visit_rows(events: Iterable[Event], now: datetime, cipher: NotesCipher) -> list[dict[str, Any]]:
    visits = [(e, p) for e in events if isinstance(p := e.payload, VisitLogged)]
    sealed = iter(cipher.seal_many([p.notes for _e, p in visits if p.notes is not None]))
    return [
        {
            "event_id": e.event_id,
            "client_id": p.client_id,
            "manager_id": p.manager_id,
            "occurred_at": e.occurred_at,
            "method": p.method,
            "kind": p.kind,
            "duration_minutes": p.duration_minutes,
            "notes_sealed": next(sealed) if p.notes is not None else None,
            "received_at": now,
        }
        for e, p in visits
    ]


_VISIT_COLUMNS = (
    "event_id",
    "client_id",
    "manager_id",
    "occurred_at",
    "method",
    "kind",
    "duration_minutes",
    "notes_sealed",
    "received_at",
)
# PostgreSQL: the batch's visits as one JSON document (msgspec writes times in RFC 3339),
# expanded by the server, in event id order; SQLite: one executemany of the stored forms
_PG_RECORD = (
    f"INSERT INTO visits ({', '.join(_VISIT_COLUMNS)}) SELECT r->>0, r->>1, r->>2,"
    " (r->>3)::timestamptz, r->>4, r->>5, (r->>6)::int, r->>7, (r->>8)::timestamptz"
    " FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(r, n) ORDER BY n"
    " ON CONFLICT DO NOTHING"
)
_SQLITE_RECORD = (
    f"INSERT INTO visits ({', '.join(_VISIT_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(_VISIT_COLUMNS))}) ON CONFLICT DO NOTHING"
)


def _sqlite_time(at: datetime) -> str:
    """A timestamp as ``UTCDateTime`` stores it on SQLite (UTC, naive, microseconds)."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


async def record(conn: AsyncConnection, events: Iterable[Event], now: datetime) -> None:
    """Add the newly claimed visits to the ledger (applied or held: the ledger lists those
    whose event is applied), notes sealed; a redelivered visit adds nothing."""
    visits = sorted(
        ((e, p) for e in events if isinstance(p := e.payload, VisitLogged)),
        key=lambda ep: ep[0].event_id,
    )
    if not visits:
        return
    sealed = iter(current().seal_many([p.notes for _e, p in visits if p.notes is not None]))
    rows: list[list[Any]] = [
        [
            e.event_id,
            p.client_id,
            p.manager_id,
            e.occurred_at,
            p.method,
            p.kind,
            p.duration_minutes,
            next(sealed) if p.notes is not None else None,
            now,
        ]
        for e, p in visits
    ]
    if conn.dialect.name == "postgresql":
        driver = (await conn.get_raw_connection()).driver_connection
        await driver.execute(_PG_RECORD, _JSON.encode(rows).decode())  # type: ignore[union-attr]
        return
    received = _sqlite_time(now)
    for r in rows:
        r[3], r[8] = _sqlite_time(r[3]), received
    await conn.exec_driver_sql(_SQLITE_RECORD, [tuple(r) for r in rows])


_JSON = msgspec.json.Encoder()


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
