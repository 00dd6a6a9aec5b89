"""What a reminder change sends: its ``reminder.*`` envelope (CONTRACT §2) and its live-stream
row, and the messages to people (``notice.*``), all written to ``reminder_outbox`` in the
caller's transaction, so nothing is lost between a change and its delivery
(scheduler/delivery.py sends the rows afterwards).

A notice is an outbox row like a ``reminder.*`` event, with event type ``notice.digest`` or
``notice.escalation``, keyed by its recipient, whose body carries the composed message and the
channels it goes to (``routes``); the deliverer fans it out to those channels only (never to
the Kafka topic or the generic webhooks, which keep carrying the ``reminder.*`` events). A
digest's ``event_id`` is derived from (recipient, local day), so a day has one per person.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from models.digest import DIGEST, Message, NoticeRules, Recipient
from models.stream import publish
from models.tables import OutboxRow
from models.visits import overdue_days
from reminders.store import insert

SCHEMA_VERSION = 1
NAMESPACE = uuid.UUID("8c4f3a52-3f0e-4c55-9a4e-5b0d1f6c2e21")


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _get(r: Any, key: str) -> Any:
    return r.get(key) if isinstance(r, dict) else getattr(r, key, None)


# --- the reminder.* envelope ---------------------------------------------------------------
def reminder_payload(r: Any, now: datetime, tz: ZoneInfo) -> dict[str, Any]:
    """The ``reminder.*`` payload (CONTRACT §2) of a reminder row or mapping."""
    get: Callable[[str], Any] = r.get if isinstance(r, dict) else lambda k: getattr(r, k)
    due_at: datetime = get("due_at")
    return {
        "reminder_id": get("id"),
        "client_id": get("client_id"),
        "manager_id": get("manager_id"),
        "supervisor_id": get("supervisor_id"),
        "kind": get("kind"),
        "due_at": due_at.astimezone(tz).isoformat(),
        "overdue_days": overdue_days(due_at, now),
        "status": get("status"),
    }


def outbox_rows(
    event_type: str, reminders: Iterable[Any], now: datetime, tz: ZoneInfo, source: str
) -> list[dict[str, Any]]:
    """Outbox rows (one envelope each) for reminders that just changed."""
    rows = []
    for r in reminders:
        payload = reminder_payload(r, now, tz)
        event_id = str(uuid.uuid4())
        envelope = {
            "event_id": event_id,
            "event_type": event_type,
            "schema_version": SCHEMA_VERSION,
            "occurred_at": now.astimezone(tz).isoformat(),
            "source": source,
            "payload": payload,
        }
        rows.append(
            {
                "event_id": event_id,
                "event_type": event_type,
                "reminder_id": payload["reminder_id"],
                "key": payload["manager_id"],
                "body": _dumps(envelope),
                "created_at": now,
                "dispatched": False,
            }
        )
    return rows


def stream_rows(
    event_type: str, reminders: Sequence[Any], outbox: Sequence[dict[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """The live-stream rows (GET /v1/stream) of the same events, scoped by manager and branch."""
    return [
        {
            "kind": "reminder",
            "manager_id": envelope["payload"]["manager_id"],
            "branch_id": _get(r, "branch_id"),
            "at": now,
            "data": {"event_type": event_type, **envelope["payload"]},
        }
        for r, envelope in zip(reminders, (json.loads(x["body"]) for x in outbox), strict=True)
    ]


async def write_events(
    conn: AsyncConnection,
    event_type: str,
    reminders: Sequence[Any],
    now: datetime,
    tz: ZoneInfo,
    source: str,
) -> int:
    """The ``reminder.*`` event of each reminder that just changed: to the outbox and to live
    clients, in the caller's transaction."""
    if not reminders:
        return 0
    rows = outbox_rows(event_type, reminders, now, tz, source)
    await conn.execute(insert(conn, OutboxRow), rows)
    await publish(conn, stream_rows(event_type, reminders, rows, now))
    return len(reminders)


# --- messages to people --------------------------------------------------------------------
def digest_event_id(recipient_key: str, day: date) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{DIGEST}|{recipient_key}|{day.isoformat()}"))


def notice_row(
    event_type: str,
    event_id: str,
    key: str,
    recipient: Recipient,
    message: Message,
    route: Sequence[str],
    now: datetime,
    rules: NoticeRules,
    source: str,
) -> dict[str, Any]:
    body = {
        "event_id": event_id,
        "event_type": event_type,
        "occurred_at": now.astimezone(rules.tz).isoformat(),
        "source": source,
        "lang": rules.lang,
        "recipient": recipient.as_dict(),
        "routes": list(route),
        **message.as_dict(),
    }
    return {
        "event_id": event_id,
        "event_type": event_type,
        "reminder_id": None,
        "key": key,
        "body": _dumps(body),
        "created_at": now,
        "dispatched": False,
    }


async def write_notices(
    conn: AsyncConnection, rows: Sequence[dict[str, Any]], *, once: bool = False
) -> int:
    """Notice rows to the outbox; ``once``: a row whose ``event_id`` is there already is left
    out (a digest). Returns the rows written."""
    if not rows:
        return 0
    if not once:
        await conn.execute(insert(conn, OutboxRow), rows)
        return len(rows)
    stmt = (
        insert(conn, OutboxRow)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(OutboxRow.id)
    )
    return len((await conn.execute(stmt, rows)).all())
