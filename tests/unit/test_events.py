"""Every validation rule of CONTRACT.md §1, on the exact bytes of a message value."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest

from models.decode import decode_event
from models.events import (
    AccountOpened,
    ClientUpserted,
    InvalidEvent,
    ManagerUpserted,
    TransactionPosted,
    VisitLogged,
)
from models.policy import Policy

VALID: dict[str, dict[str, Any]] = {
    "transaction.posted": {
        "client_id": "c1",
        "account_id": "a1",
        "business_line": "asset",
        "product": "loan",
        "amount": "1250000.00",
        "simulated_profit": "-12.50",
        "currency": "CNY",
    },
    "account.opened": {"client_id": "c1", "account_id": "a1", "account_type": "payroll"},
    "visit.logged": {
        "client_id": "c1",
        "manager_id": "m1",
        "method": "on_site",
        "kind": "post_loan_check",
        "duration_minutes": 45,
        "notes": "confidential",
    },
    "client.upserted": {
        "client_id": "c1",
        "manager_id": "m1",
        "tier": "gold",
        "claim_ratio": "0.8",
        "credit_client": True,
    },
    "manager.upserted": {
        "manager_id": "m1",
        "branch_id": "b1",
        "level": "senior",
        "annual_profit_target": "5000000",
    },
}


def envelope(event_type: str = "transaction.posted", **changes: Any) -> dict[str, Any]:
    doc = {
        "event_id": "e-1",
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": "2026-11-20T09:15:00+08:00",
        "source": "core-banking",
        "payload": copy.deepcopy(VALID[event_type]),
    }
    doc.update(changes)
    return doc


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def rejected(value: bytes | None, policy: Policy | None = None) -> str:
    with pytest.raises(InvalidEvent) as info:
        decode_event(value, policy)
    return info.value.reason


@pytest.mark.parametrize(
    ("event_type", "model"),
    [
        ("transaction.posted", TransactionPosted),
        ("account.opened", AccountOpened),
        ("visit.logged", VisitLogged),
        ("client.upserted", ClientUpserted),
        ("manager.upserted", ManagerUpserted),
    ],
)
def test_valid_events_of_every_type_decode(event_type: str, model: type) -> None:
    ev = decode_event(raw(envelope(event_type)))
    assert isinstance(ev.payload, model)
    assert ev.occurred_at.utcoffset() is not None


def test_money_is_decimal_from_strings_and_json_numbers_never_float() -> None:
    doc = envelope()
    doc["payload"]["amount"] = 0.1  # a JSON number: parsed from its text, not via float
    text = json.dumps(doc).replace("0.1", "1234567890123.17")
    ev = decode_event(text.encode())
    assert ev.payload.amount == Decimal("1234567890123.17")
    assert isinstance(ev.payload.simulated_profit, Decimal)


def test_defaults_apply() -> None:
    doc = envelope()
    for k in ("simulated_profit", "currency", "product"):
        doc["payload"].pop(k)
    p = decode_event(raw(doc)).payload
    assert p.simulated_profit == 0 and p.currency == "CNY" and p.manager_id is None
    acc = decode_event(raw(envelope("account.opened"))).payload
    assert acc.origin == "marketed"
    cl = decode_event(
        raw(envelope("client.upserted", payload={"client_id": "c", "manager_id": "m"}))
    )
    assert cl.payload.credit_client is False and cl.payload.claim_ratio is None
    mg = decode_event(
        raw(envelope("manager.upserted", payload={"manager_id": "m", "branch_id": "b"}))
    )
    assert mg.payload.active is True


def test_unknown_extra_fields_are_ignored() -> None:
    doc = envelope(trace_id="x")
    doc["payload"]["future_field"] = {"a": 1}
    assert decode_event(raw(doc)).event_id == "e-1"


def test_utc_z_and_fractional_seconds_are_accepted() -> None:
    ev = decode_event(raw(envelope(occurred_at="2026-10-31T17:30:00.123456789Z")))
    assert ev.occurred_at.isoformat() == "2026-10-31T17:30:00.123456+00:00"


def _mutate(path: str, value: Any) -> bytes:
    doc = envelope()
    target = doc
    keys = path.split(".")
    for k in keys[:-1]:
        target = target[k]
    if value is _DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return raw(doc)


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        ("event_id", _DELETE, "event_id: required"),
        ("event_id", "", "event_id"),
        ("event_id", "x" * 129, "event_id"),
        ("event_id", 17, "event_id"),
        ("event_type", _DELETE, "event_type: required"),
        ("event_type", "transaction.exploded", "unknown type"),
        ("schema_version", _DELETE, "schema_version: required"),
        ("schema_version", "1", "schema_version"),
        ("schema_version", 2, "not supported"),
        ("occurred_at", _DELETE, "occurred_at: required"),
        ("occurred_at", "2026-11-20T09:15:00", "offset"),
        ("occurred_at", "2026-11-20", "offset"),
        ("occurred_at", 1795000000, "RFC 3339"),
        ("occurred_at", "2026-13-20T09:15:00+08:00", "occurred_at"),
        ("payload", _DELETE, "payload: required"),
        ("payload", [1, 2], "payload"),
        ("payload.client_id", _DELETE, "payload.client_id: required"),
        ("payload.client_id", 42, "payload.client_id"),
        ("payload.account_id", _DELETE, "payload.account_id"),
        ("payload.business_line", "retail", "payload.business_line"),
        ("payload.amount", _DELETE, "payload.amount: required"),
        ("payload.amount", "-0.01", "payload.amount"),
        ("payload.amount", "12,00", "not a decimal"),
        ("payload.amount", "NaN", "finite"),
        ("payload.amount", True, "payload.amount"),
        ("payload.amount", None, "payload.amount"),
        ("payload.simulated_profit", "abc", "payload.simulated_profit"),
        ("payload.currency", "USD", "payload.currency"),
    ],
)
def test_rule_breaks_are_rejected_with_the_field_named(
    path: str, value: Any, fragment: str
) -> None:
    assert fragment in rejected(_mutate(path, value))


@pytest.mark.parametrize(
    ("event_type", "field", "value"),
    [
        ("account.opened", "account_type", "savings"),
        ("account.opened", "origin", "walk-in"),
        ("visit.logged", "method", "email"),
        ("visit.logged", "kind", "party"),
        ("visit.logged", "manager_id", None),
        ("visit.logged", "duration_minutes", 1441),
        ("visit.logged", "duration_minutes", -1),
        ("visit.logged", "notes", "x" * 4001),
        ("client.upserted", "manager_id", None),
        ("client.upserted", "claim_ratio", "1.5"),
        ("client.upserted", "tier", "iron"),
        ("client.upserted", "segment", "sme"),
        ("client.upserted", "assigned_at", "yesterday"),
        ("manager.upserted", "branch_id", None),
        ("manager.upserted", "level", "boss"),
        ("manager.upserted", "active", "yes"),
        ("manager.upserted", "hired_at", "2026-13-01"),
        ("manager.upserted", "hired_at", "1 Sep 2025"),
        ("manager.upserted", "hired_at", 20250901),
        ("client.upserted", "origin", "public"),
    ],
)
def test_payload_rules_of_every_type(event_type: str, field: str, value: Any) -> None:
    doc = envelope(event_type)
    doc["payload"][field] = value
    assert f"payload.{field}" in rejected(raw(doc))


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"event_id": "x"', "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"", "not valid JSON"),
        (None, "tombstone"),
        (
            b'{"event_id":"e","event_type":"transaction.posted","schema_version":1,'
            b'"occurred_at":"2026-11-20T09:15:00+08:00","payload":{"client_id":"c","account_id":"a",'
            b'"business_line":"asset","amount":Infinity}}',
            "not a number",
        ),
    ],
)
def test_undecodable_messages_are_rejected(value: bytes | None, fragment: str) -> None:
    assert fragment in rejected(value)


def test_foreign_currency_is_accepted_only_with_an_fx_rate() -> None:
    value = _mutate("payload.currency", "USD")
    assert "USD" in rejected(value)
    ev = decode_event(value, Policy(fx_rates={"USD": Decimal("7.10")}))
    assert ev.payload.currency == "USD"


def test_rejection_keeps_the_event_id_and_type_when_readable() -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(_mutate("payload.amount", "-5"))
    assert info.value.event_id == "e-1"
    assert info.value.event_type == "transaction.posted"


def test_hired_at_and_a_public_resource_origin_decode() -> None:
    from datetime import date

    doc = envelope("manager.upserted")
    doc["payload"]["hired_at"] = "2025-09-01"
    assert decode_event(raw(doc)).payload.hired_at == date(2025, 9, 1)  # type: ignore[union-attr]
    client = envelope("client.upserted")
    client["payload"]["origin"] = "public_resource"
    assert decode_event(raw(client)).payload.origin == "public_resource"  # type: ignore[union-attr]
