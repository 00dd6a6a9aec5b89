"""Decoding a message value: ``decode_event`` turns the exact bytes of a Kafka message value
into a validated event (``models.events``) or raises ``InvalidEvent`` with a reason a person
can act on. Money is parsed as ``Decimal`` straight from the JSON text (never through a
float). Well-formed messages take the fast path (``models.fast_decode``), the rest the
pydantic models, which give the result or the reason.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from pydantic import ValidationError

from models import fast_decode as _fast
from models.events import (
    DEFAULT_MAX_FUTURE_SKEW,
    EVENT_TYPES,
    PAYLOADS,
    SUPPORTED_SCHEMA_VERSIONS,
    BalanceSnapshot,
    Envelope,
    Event,
    InvalidEvent,
    Payload,
    TransactionPosted,
    currency_accepted,
)
from models.policy import Policy


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


# Built once: json.loads(..., parse_float=...) builds a new decoder on every call.
# Numbers with a fraction become Decimal, never float: money must stay exact.
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)


def _loads(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"value is not valid UTF-8 (byte {exc.start})") from None
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent(f"value is not valid JSON: {exc}") from None


def _explain(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) if err["loc"] else ""
        where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "value"
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "required field is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        parts.append(f"{where}: {msg}")
    more = len(exc.errors()) - 5
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def decode_event(
    raw: bytes | None,
    policy: Policy | None = None,
    *,
    now: datetime | None = None,
    max_future_skew: timedelta | None = None,
) -> Event:
    """Validate the bytes of one message value; raise ``InvalidEvent`` with the reason.

    The one validation path of the worker. A well-formed message is decoded straight from
    its bytes by ``models.fast_decode`` (msgspec, exact decimals, ~4 µs); anything that path
    does not accept as-is is decoded here again by the pydantic models, which give the
    result or the reason (``_decode_checked``).

    ``now`` is the receiving clock: given, an ``occurred_at`` more than ``max_future_skew``
    (default: the policy's, from ``CRM_MAX_FUTURE_SKEW``, 5 minutes) ahead of it is rejected
    (a typo of a year would otherwise silence a client's reminders for a year). Events read
    back from the database are decoded without ``now``: they were checked on arrival.
    """
    event = _fast.fast_decode(raw, policy) if raw is not None else None
    if event is None:
        event = _decode_checked(raw, policy)
    if now is not None:
        skew = max_future_skew
        if skew is None:
            skew = policy.max_future_skew if policy is not None else DEFAULT_MAX_FUTURE_SKEW
        if event.occurred_at - now > skew:
            _refuse_future(event, policy, now, skew)
    return event


def _refuse_future(
    event: Event, policy: Policy | None, now: datetime, max_future_skew: timedelta | None
) -> None:
    skew = max_future_skew
    if skew is None:
        skew = policy.max_future_skew if policy is not None else DEFAULT_MAX_FUTURE_SKEW
    if event.occurred_at - now > skew:
        raise InvalidEvent(
            f"occurred_at: {event.occurred_at.isoformat()} is in the future "
            f"(more than {int(skew.total_seconds())} s ahead of the receiving clock, "
            f"{now.astimezone(event.occurred_at.tzinfo).isoformat(timespec='seconds')})",
            event.event_id,
            event.event_type,
        )


def _decode_checked(raw: bytes | None, policy: Policy | None) -> Event:
    if raw is None:
        raise InvalidEvent("empty value (a tombstone): deleting records is not supported")
    doc = _loads(raw)
    if not isinstance(doc, dict):
        raise InvalidEvent(f"value must be a JSON object, not {type(doc).__name__}")
    event_id = doc.get("event_id") if isinstance(doc.get("event_id"), str) else None
    event_type = doc.get("event_type") if isinstance(doc.get("event_type"), str) else None
    try:
        env = Envelope.model_validate(doc)
    except ValidationError as exc:
        raise InvalidEvent(_explain(exc, ""), event_id, event_type) from None
    model = PAYLOADS.get(env.event_type)
    if model is None:
        raise InvalidEvent(
            f"event_type: unknown type {env.event_type!r}; expected one of "
            + ", ".join(EVENT_TYPES),
            event_id,
            event_type,
        )
    if env.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
        raise InvalidEvent(
            f"schema_version: {env.schema_version} is not supported (supported: 1)",
            event_id,
            event_type,
        )
    try:
        payload = model.model_validate(env.payload)
    except ValidationError as exc:
        raise InvalidEvent(_explain(exc, "payload."), event_id, event_type) from None
    if isinstance(payload, TransactionPosted | BalanceSnapshot) and not currency_accepted(
        payload.currency, policy
    ):
        raise InvalidEvent(
            f"payload.currency: {payload.currency!r} is not accepted "
            "(only CNY unless an FX rate is configured for it)",
            event_id,
            event_type,
        )
    return Event(
        event_id=env.event_id,
        event_type=env.event_type,
        schema_version=env.schema_version,
        occurred_at=env.occurred_at,
        source=env.source,
        payload=cast(Payload, payload),  # PAYLOADS maps each type to a member of Payload
    )
