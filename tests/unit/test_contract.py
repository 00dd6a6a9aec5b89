"""The contract for integrators: the AsyncAPI document and JSON Schemas kept in docs/ match
the models, ``crm-tracker check`` rejects exactly what the worker rejects, and ``crm-tracker
produce`` sends each message to its topic with the contract's key."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import jsonschema_rs
import pytest

from crmtracker.broker import EmbeddedBroker
from models import contract
from models.events import PAYLOADS
from reminders.outbox import outbox_rows
from streams.apply import Incoming
from streams.worker import deadletter_value
from testkit.broker import isolated_settings, read_topic
from testkit.factories import load_vectors, parse_message
from testkit.paths import VECTORS
from testkit.process import child_environ
from testkit.serving import serve_in_thread

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def cli(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "crmtracker", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        env=child_environ(env or {}),
    )


def test_the_committed_docs_are_what_the_models_generate() -> None:
    want = contract.docs_files()
    stale = {
        f"schemas/{p.name}"
        for p in (DOCS / "schemas").glob("*.json")
        if f"schemas/{p.name}" not in want
    }
    differ = [
        rel
        for rel, text in want.items()
        if not (DOCS / rel).exists() or (DOCS / rel).read_text() != text
    ]
    assert not differ and not stale, (
        f"docs/ drifted from the models ({differ or ''} {sorted(stale) or ''}): "
        "run `make contract` and commit the result"
    )


def test_every_registered_event_type_has_a_topic_a_key_and_a_message() -> None:
    doc = contract.asyncapi()
    addresses = {c["address"]: c for c in doc["channels"].values()}
    for event_type in PAYLOADS:
        assert event_type in contract.TOPICS, f"{event_type} has no topic in models.contract"
        channel = addresses[contract.TOPICS[event_type][1]]
        assert event_type in channel["messages"]
        key = doc["components"]["messages"][event_type]["bindings"]["kafka"]["key"]
        assert contract.key_field(event_type) in key["description"]
    assert contract.key_field("manager.upserted") == "manager_id"
    assert contract.key_field("transaction.posted") == "client_id"
    # outputs
    assert {"crm.reminders", "crm.deadletter"} <= set(addresses)
    assert doc["asyncapi"].startswith("3.")
    # every reference resolves inside the document
    text = json.dumps(doc)
    for ref in {r.split('"')[0] for r in text.split('"$ref": "')[1:]}:
        node: Any = doc
        for part in ref.lstrip("#/").split("/"):
            node = node[part]


def test_the_schemas_accept_every_valid_vector_and_the_models_agree() -> None:
    log = load_vectors(VECTORS)
    validators = {
        t: jsonschema_rs.validator_for(json.loads((DOCS / "schemas" / f"{t}.json").read_text()))
        for t in PAYLOADS
    }
    checked = 0
    for msg in log.messages:
        env = parse_message(msg)
        if env is None:
            continue
        doc = json.loads(msg.value or b"")
        errors = [e.message for e in validators[doc["event_type"]].iter_errors(doc)]
        assert not errors, (doc, errors)
        checked += 1
    assert checked == len(log.messages) - log.bad
    # a payload without its required field fails the schema, as it fails the worker
    bad = {
        "event_id": "e1",
        "event_type": "visit.logged",
        "schema_version": 1,
        "occurred_at": "2026-11-20T09:15:00+08:00",
        "payload": {"client_id": "c1", "method": "on_site", "kind": "routine"},
    }
    assert not validators["visit.logged"].is_valid(bad)
    bad["payload"]["manager_id"] = "m1"  # type: ignore[index]  # the dict literal is nested
    assert validators["visit.logged"].is_valid(bad)


def test_the_output_schemas_describe_what_the_product_writes() -> None:
    now = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    row = {
        "id": 7,
        "client_id": "c1",
        "manager_id": "m1",
        "supervisor_id": None,
        "kind": "visit",
        "due_at": now,
        "status": "open",
    }
    body = outbox_rows("reminder.fired", [row], now, ZoneInfo("Asia/Shanghai"), "test")[0]["body"]
    contract.ReminderEnvelope.model_validate_json(body)
    value = deadletter_value(Incoming("bank.transactions", 2, 41, b"c1", b"{oops"), "not JSON")
    dead = contract.DeadLetter.model_validate_json(value)
    assert base64.b64decode(dead.value_base64 or "") == b"{oops"


def test_asyncapi_is_served_without_a_token_with_the_configured_topics(tmp_path: Path) -> None:
    from config import Settings
    from crmtracker.compose import api_app as create_app

    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'crm.sqlite3'}",
        topic_prefix="acme.",
        kafka_bootstrap="kafka.example:9093",
        auth_secret="s" * 48,
    )
    from models.db import upgrade

    upgrade(settings.db_url)
    with serve_in_thread(create_app(settings)) as base:
        r = httpx.get(f"{base}/asyncapi.json")
        assert r.status_code == 200
        doc = r.json()
        assert "/asyncapi.json" not in httpx.get(f"{base}/openapi.json").json()["paths"]
    assert doc == json.loads(contract.dumps(contract.asyncapi(settings, server=settings.bootstrap)))
    addresses = {c["address"] for c in doc["channels"].values()}
    assert "acme.bank.transactions" in addresses and "acme.crm.deadletter" in addresses
    assert doc["servers"]["kafka"]["host"] == "kafka.example:9093"


def test_check_reports_exactly_the_vectors_malformed_messages() -> None:
    log = load_vectors(VECTORS)
    want = {i for i, m in enumerate(log.messages, 1) if parse_message(m) is None}
    assert len(want) == log.bad
    r = cli("check", str(VECTORS / "events.jsonl"))
    assert r.returncode == 1, r.stderr
    lines = r.stdout.decode().splitlines()
    got = {int(line.split()[1].rstrip(":")) for line in lines}
    assert got == want and len(lines) == log.bad
    assert all(": " in line and line.split(": ", 1)[1] for line in lines)  # a reason each
    assert f"{log.bad} rejected" in r.stderr.decode()


def test_check_reads_envelopes_from_stdin_and_names_line_and_reason() -> None:
    good = {
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
    usd = {**good, "event_id": "e2", "payload": {**good["payload"], "currency": "USD"}}  # type: ignore[dict-item]  # a dict of dicts
    text = "\n".join([json.dumps(good), "", json.dumps(usd), "{not json"]) + "\n"
    r = cli("check", "-", stdin=text.encode())
    assert r.returncode == 1
    out = r.stdout.decode().splitlines()
    assert out[0].startswith("line 3 (event e2): payload.currency: 'USD' is not accepted")
    assert out[1].startswith("line 4: value is not valid JSON")
    assert len(out) == 2
    # an FX rate configured for USD: the worker would accept it, so check does too
    r = cli("check", "-", stdin=(json.dumps(good) + "\n" + json.dumps(usd)).encode(),
            env={"CRM_FX_RATES": '{"USD": "7.1"}'})  # fmt: skip
    assert r.returncode == 0, r.stdout
    assert b"2 valid, 0 rejected" in r.stderr


@pytest.mark.kafka
async def test_produce_sends_each_message_to_its_topic_with_the_contract_key(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    from crmtracker.broker import ensure_topics

    settings = isolated_settings(broker.bootstrap, "sqlite:///unused", tmp_path)
    await ensure_topics(settings)
    envs = [
        {"event_type": "manager.upserted", "payload": {"manager_id": "m9", "branch_id": "b1"}},
        {"event_type": "visit.logged", "payload": {"client_id": "c9", "manager_id": "m9"}},
        {"event_type": "client.upserted", "payload": {"client_id": "c8", "manager_id": "m9"}},
    ]
    lines = [json.dumps({"event_id": f"e{i}", **e}) for i, e in enumerate(envs)]
    # a record line (the vectors' form) keeps its key and exact value, even a malformed one
    lines.append(json.dumps({"topic": "bank.transactions", "key": "k1", "value": "{broken"}))
    lines.append("{not json at all")
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in settings.child_env().items() if k.startswith("CRM_")}
    r = cli("produce", str(f), env=env)
    assert r.returncode == 1, r.stderr  # the last line cannot be routed: said, not sent
    err = r.stderr.decode()
    assert "line 5: not sent" in err and "sent 4 messages" in err and "produce [" in err
    got = {}
    for topic in ("crm.managers", "crm.visits", "crm.clients", "bank.transactions"):
        for rec in await read_topic(settings, topic, 1):
            got[topic] = (rec.key, rec.value)
    assert got["crm.managers"][0] == b"m9"
    assert got["crm.visits"][0] == b"c9"
    assert got["crm.clients"][0] == b"c8"
    assert got["bank.transactions"] == (b"k1", b"{broken")
    assert json.loads(got["crm.visits"][1])["event_id"] == "e1"
