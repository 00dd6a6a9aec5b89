"""The fast decode path (models/fast_decode.py) gives exactly what the pydantic models give,
or hands the message over to them: never a different event, never an event they reject."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from models import fast_decode as fd
from models.decode import _decode_checked, decode_event
from models.events import InvalidEvent
from models.policy import Policy
from testkit.factories import generate_log
from testkit.paths import VECTORS


def _both(raw: bytes | None, policy: Policy) -> None:
    try:
        checked = _decode_checked(raw, policy)
    except InvalidEvent as exc:
        checked = exc
    fast = fd.fast_decode(raw, policy) if raw is not None else None
    if isinstance(checked, InvalidEvent):
        assert fast is None, raw
        with pytest.raises(InvalidEvent) as got:
            decode_event(raw, policy)
        assert got.value.reason == checked.reason
        return
    assert decode_event(raw, policy) == checked
    if fast is not None:
        assert fast == checked
        assert fast.payload.model_dump() == checked.payload.model_dump()
        for k, v in checked.payload.model_dump().items():
            if isinstance(v, Decimal):  # the same digits and exponent, not only the value
                assert getattr(fast.payload, k).as_tuple() == v.as_tuple(), (raw, k)


def test_the_structs_mirror_the_models_field_by_field() -> None:
    for struct, model in fd.MIRRORS.values():
        assert set(struct.__struct_fields__) == set(model.model_fields), model.__name__


def test_generated_logs_and_vectors_decode_alike() -> None:
    policy = Policy(fx_rates={"HKD": Decimal("0.91")})
    log = generate_log(5, events=3000, malformed_rate=0.05)
    raws = [m.value for m in log.messages]
    raws += [
        json.loads(line)["value"].encode()
        for name in ("events.jsonl", "balances.jsonl")
        for line in (VECTORS / name).read_text().splitlines()
    ]
    for raw in raws:
        _both(raw, policy)


EDGE = {
    "amount": [
        "1e5",
        1e5,
        5,
        "5.",
        ".5",
        " 7 ",
        "1_000",
        "NaN",
        "Infinity",
        "-1",
        -0.0,
        True,
        None,
        "1e18",
        "999999999999999999.99",
        0.1000000000000000055511151231257827,
    ],
    "simulated_profit": ["-3.33", None, "x", 2.50],
    "currency": ["CNY", "HKD", "USD", "cny", "CN", None],
    "occurred_at": [
        "2026-11-20T09:15:00+08:00",
        "2026-11-20T09:15:00",
        "2026-11-20t09:15:00z",
        "2026-11-20 09:15:00Z",
        "2026-11-20T09:15:00.1234567891+08:00",
        "2026-11-20T09:15+08:00",
        "2026-02-30T09:15:00+08:00",
        20261120,
    ],
    "schema_version": [1, 2, "1", True, 1.0],
    "manager_id": ["", "m" * 129, "m1", None, 5],
}


@pytest.mark.parametrize("field", sorted(EDGE))
def test_edge_values_decode_alike(field: str) -> None:
    policy = Policy(fx_rates={"HKD": Decimal("0.91")})
    for value in EDGE[field]:
        env = {
            "event_id": "e1",
            "event_type": "transaction.posted",
            "schema_version": 1,
            "occurred_at": "2026-11-20T09:15:00+08:00",
            "payload": {
                "client_id": "c1",
                "account_id": "a1",
                "business_line": "asset",
                "amount": "10.00",
            },
        }
        target = env if field in env else env["payload"]
        target[field] = value  # type: ignore[index]
        raw = json.dumps(env, default=str).encode()
        if isinstance(value, float):  # the number as written, not as Python prints it
            raw = raw.replace(json.dumps(value).encode(), repr(value).encode())
        _both(raw, policy)
    _both(b'{"event_id": "e", "event_type": "visit.logged", "payload": []}', policy)
    _both(b"\xff\xfe", policy)
    _both(None, policy)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("as_of_date", v)
        for v in ("2026-11-05", "2026-02-30", "2026-1-5", "2026-11-05T00:00:00", 20261105, None)
    ]
    + [("balance", v) for v in ("0", "-0.01", "12.345", 7, "NaN", None, "1e18")]
    + [("currency", v) for v in ("CNY", "HKD", "USD", "cny")]
    + [("business_line", v) for v in ("liability", "asset", "off_balance")],
)
def test_balance_snapshots_decode_alike(field: str, value: object) -> None:
    policy = Policy(fx_rates={"HKD": Decimal("0.91")})
    payload: dict[str, object] = {
        "client_id": "c1",
        "account_id": "a1",
        "business_line": "liability",
        "balance": "100.00",
        "as_of_date": "2026-11-05",
    }
    payload[field] = value
    env = {
        "event_id": "b1",
        "event_type": "balance.snapshot",
        "schema_version": 1,
        "occurred_at": "2026-11-06T01:00:00+08:00",
        "payload": payload,
    }
    _both(json.dumps(env).encode(), policy)


def test_the_snapshot_envelope_mirrors_the_envelope() -> None:
    assert fd._SnapshotEnvelope.__struct_fields__ == fd._Envelope.__struct_fields__
    for name in fd._Envelope.__struct_fields__:
        if name != "payload":
            got = fd._SnapshotEnvelope.__annotations__[name]
            assert got == fd._Envelope.__annotations__[name], name


@pytest.mark.parametrize(
    "env",
    [
        # another type naming the snapshot type somewhere: the general path decides
        {
            "event_id": "balance.snapshot",
            "event_type": "transaction.posted",
            "schema_version": 1,
            "occurred_at": "2026-11-06T01:00:00+08:00",
            "payload": {
                "client_id": "c1",
                "account_id": "a1",
                "business_line": "asset",
                "amount": "10.00",
                "product": "balance.snapshot",
            },
        },
        # a snapshot's payload under another type
        {
            "event_id": "b1",
            "event_type": "account.opened",
            "schema_version": 1,
            "occurred_at": "2026-11-06T01:00:00+08:00",
            "payload": {
                "client_id": "c1",
                "account_id": "balance.snapshot",
                "business_line": "liability",
                "balance": "100.00",
                "as_of_date": "2026-11-05",
            },
        },
        # extra fields, a source, envelope edge values on a snapshot
        *(
            {
                "event_id": eid,
                "event_type": "balance.snapshot",
                "schema_version": version,
                "occurred_at": at,
                "source": source,
                "extra": 1,
                "payload": {
                    "client_id": "c1",
                    "account_id": "a1",
                    "business_line": "liability",
                    "balance": "100.00",
                    "as_of_date": "2026-11-05",
                    "note": "x",
                },
            }
            for eid in ("b1", "", "b" * 129)
            for version in (1, 2, True)
            for at in ("2026-11-06T01:00:00+08:00", "2026-11-06T01:00:00", "2026-11-06")
            for source in ("core", None, 5)
        ),
    ],
)
def test_the_snapshot_path_decodes_as_the_general_path(env: dict[str, object]) -> None:
    policy = Policy()
    raw = json.dumps(env).encode()
    _both(raw, policy)
    _both(raw, policy)  # again: a remembered timestamp or date gives the same


def test_a_well_formed_snapshot_takes_the_one_pass_path() -> None:
    raw = json.dumps(
        {
            "event_id": "b1",
            "event_type": "balance.snapshot",
            "schema_version": 1,
            "occurred_at": "2026-11-06T01:00:00+08:00",
            "payload": {
                "client_id": "c1",
                "account_id": "a1",
                "business_line": "liability",
                "balance": "100.00",
                "as_of_date": "2026-11-05",
            },
        }
    ).encode()
    got = fd._fast_snapshot(raw, Policy())
    assert got is not None
    assert got == _decode_checked(raw, Policy())
