"""The event contract in integrators' forms, and JSONL files of messages.

- ``asyncapi(...)``: an AsyncAPI 3.0 document of every input and output topic, its key and its
  messages, the message schemas generated from the pydantic models (``models.events.PAYLOADS``
  is the registry: an event type added there appears here, on the topic ``TOPICS`` names).
- ``write_docs(dir)``: ``asyncapi.json`` and ``schemas/<event_type>.json`` (JSON Schema 2020-12
  of the whole envelope), the files kept in ``docs/``.
- ``read_jsonl(...)``: the lines of a file of messages, for ``crm-tracker check`` and
  ``produce``. A line is either an envelope (the contract's JSON object) or a record
  ``{"topic", "key", "value"}`` whose ``value`` is the exact message text (the contract vectors'
  form: it can carry malformed messages and tombstones, ``"value": null``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, Field

from models.events import PAYLOADS, SUPPORTED_SCHEMA_VERSIONS, Envelope

# event type -> (topic role in Settings.topics, default topic name); the contract's table
TOPICS: dict[str, tuple[str, str]] = {
    "transaction.posted": ("transactions", "bank.transactions"),
    "account.opened": ("accounts", "bank.accounts"),
    "visit.logged": ("visits", "crm.visits"),
    "client.upserted": ("clients", "crm.clients"),
    "manager.upserted": ("managers", "crm.managers"),
    "balance.snapshot": ("balances", "bank.balances"),
}
# the message key: manager_id on the managers topic, client_id everywhere else
KEY_FIELDS: dict[str, str] = {"manager.upserted": "manager_id"}
REMINDER_TYPES = ("reminder.fired", "reminder.escalated", "reminder.resolved")
COMPACTED = ("client.upserted", "manager.upserted")


def key_field(event_type: str) -> str:
    return KEY_FIELDS.get(event_type, "client_id")


def topic_for(event_type: str, settings: Any = None) -> str:
    """The configured topic of an event type (``settings``: a ``Settings``), or the contract's
    default name. An event type without a row in ``TOPICS`` is a programming error (the
    contract test says so)."""
    role, default = TOPICS[event_type]
    if settings is None:
        return default
    name = getattr(settings.topics, role, None)
    return name if isinstance(name, str) else settings.topic_prefix + default


# --- output messages (what the product writes) ---------------------------------------------
class ReminderPayload(BaseModel):
    """``reminder.*`` payload (CONTRACT §2)."""

    reminder_id: int
    client_id: str
    manager_id: str
    supervisor_id: str | None
    kind: Literal["visit", "post_loan_check"]
    due_at: str = Field(description="RFC 3339 with the bank's UTC offset")
    overdue_days: int
    status: Literal["open", "acked", "snoozed", "escalated", "resolved"]


class ReminderEnvelope(BaseModel):
    event_id: str
    event_type: Literal["reminder.fired", "reminder.escalated", "reminder.resolved"]
    schema_version: int
    occurred_at: str = Field(description="RFC 3339 with the bank's UTC offset")
    source: str | None = None
    payload: ReminderPayload


class DeadLetter(BaseModel):
    """A message the worker rejected, as written to the dead-letter topic (key: the original)."""

    topic: str
    partition: int
    offset: int
    reason: str
    time: str = Field(description="RFC 3339, when it was rejected")
    key: str | None
    value_base64: str | None = Field(description="the original bytes; null for a tombstone")


# --- schemas ------------------------------------------------------------------------------
def _rewrite_refs(node: Any, template: str) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                template.format(model=v.rsplit("/", 1)[1])
                if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/")
                else _rewrite_refs(v, template)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(v, template) for v in node]
    return node


def _model_schema(model: type[BaseModel], template: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema, definitions it refers to), refs written with ``template``."""
    schema = model.model_json_schema(mode="validation")
    defs = schema.pop("$defs", {})
    return _rewrite_refs(schema, template), {k: _rewrite_refs(v, template) for k, v in defs.items()}


def event_schema(event_type: str, template: str = "#/$defs/{model}") -> dict[str, Any]:
    """JSON Schema of the whole envelope of one input event type (its ``$defs`` inside)."""
    env, env_defs = _model_schema(Envelope, template)
    payload, defs = _model_schema(PAYLOADS[event_type], template)
    props = dict(env["properties"])
    props["event_type"] = {"const": event_type, "title": "Event Type"}
    props["schema_version"] = {
        "enum": list(SUPPORTED_SCHEMA_VERSIONS),
        "title": "Schema Version",
        "type": "integer",
    }
    props["payload"] = payload
    props["occurred_at"] = {
        **props["occurred_at"],
        "description": "RFC 3339 with a UTC offset; counts in the bank-time-zone period it "
        "falls in; rejected when more than CRM_MAX_FUTURE_SKEW ahead of the worker's clock",
    }
    out: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{event_type} envelope",
        "description": 'Money fields are decimals, as a JSON string ("1250000.00") or number, '
        "read exactly (never as a float). Unknown extra fields are ignored.",
        "type": "object",
        "properties": props,
        "required": env["required"],
    }
    if env_defs or defs:
        out["$defs"] = {**env_defs, **defs}
    return out


def _key_binding(field: str) -> dict[str, Any]:
    return {"kafka": {"key": {"type": "string", "description": f"the payload's {field}"}}}


def asyncapi(settings: Any = None, server: str = "localhost:9092") -> dict[str, Any]:
    """The AsyncAPI 3.0 document. ``settings``: a ``Settings`` (configured topic names), or
    None for the contract's default names (the copy in docs/)."""
    topics = settings.topics if settings is not None else None
    ref = "#/components/schemas/{model}"
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}

    def channel(name: str, address: str, msgs: list[str], description: str, compact: bool) -> None:
        channels[name] = {
            "address": address,
            "description": description,
            "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in msgs},
            "bindings": {
                "kafka": {
                    "topic": address,
                    "topicConfiguration": {"cleanup.policy": ["compact" if compact else "delete"]},
                }
            },
        }

    # inputs: one channel per topic (a topic may one day carry several event types)
    by_topic: dict[str, list[str]] = {}
    for event_type in PAYLOADS:
        by_topic.setdefault(topic_for(event_type, settings), []).append(event_type)
    for address, types in by_topic.items():
        for t in types:
            schema = event_schema(t, ref)
            schemas.update(schema.pop("$defs", {}))
            schema.pop("$schema", None)
            schemas[t] = schema
            messages[t] = {
                "name": t,
                "title": t,
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{t}"},
                "bindings": _key_binding(key_field(t)),
            }
        name = TOPICS[types[0]][0]
        channel(
            name,
            address,
            types,
            f"Input: {', '.join(types)} (key: {key_field(types[0])})",
            types[0] in COMPACTED,
        )
        operations[f"receive-{name}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{name}"},
            "messages": [{"$ref": f"#/channels/{name}/messages/{t}"} for t in types],
            "summary": "the worker consumes these (at least once; exactly once in effect)",
        }

    # outputs
    reminder_schema, defs = _model_schema(ReminderEnvelope, ref)
    schemas.update(defs)
    schemas["reminder"] = reminder_schema
    for t in REMINDER_TYPES:
        messages[t] = {
            "name": t,
            "title": t,
            "contentType": "application/json",
            "payload": {"$ref": "#/components/schemas/reminder"},
            "bindings": _key_binding("manager_id"),
        }
    reminders = getattr(topics, "reminders", None) or "crm.reminders"
    deadletter = getattr(topics, "deadletter", None) or "crm.deadletter"
    channel("reminders", reminders, list(REMINDER_TYPES), "Output: reminders", False)
    operations["send-reminders"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/reminders"},
        "messages": [{"$ref": f"#/channels/reminders/messages/{t}"} for t in REMINDER_TYPES],
        "summary": "one reminder per (client, kind, due_at); escalation updates it",
    }
    dl_schema, defs = _model_schema(DeadLetter, ref)
    schemas.update(defs)
    schemas["deadletter"] = dl_schema
    messages["deadletter"] = {
        "name": "deadletter",
        "title": "dead letter",
        "contentType": "application/json",
        "payload": {"$ref": "#/components/schemas/deadletter"},
        "bindings": {
            "kafka": {"key": {"type": "string", "description": "the original message's key"}}
        },
    }
    channel("deadletter", deadletter, ["deadletter"], "Output: rejected messages", False)
    operations["send-deadletter"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/deadletter"},
        "messages": [{"$ref": "#/channels/deadletter/messages/deadletter"}],
        "summary": "every message that failed validation, with the reason",
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "crm-tracker event contract",
            "version": "1.0.0",
            "description": "Topics, keys and messages core banking and the CRM app produce, "
            "and what crm-tracker writes back. Topic names are the configured ones "
            "(defaults shown in docs/asyncapi.json; a prefix and each name are configurable).",
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": server,
                "protocol": "kafka",
                "description": "the Kafka cluster (CRM_KAFKA_BOOTSTRAP)",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def docs_files() -> dict[str, str]:
    """The files of docs/ (relative path -> text) generated from the models."""
    files = {"asyncapi.json": dumps(asyncapi())}
    for t in PAYLOADS:
        files[f"schemas/{t}.json"] = dumps(event_schema(t))
    return files


def write_docs(directory: Path) -> list[Path]:
    """Write the generated files under ``directory``; returns those that changed."""
    changed = []
    for rel, text in docs_files().items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


# --- JSONL files of messages ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Line:
    """One message of a JSONL file: where it goes and its exact bytes."""

    number: int
    topic: str | None  # the record's topic, or None for a bare envelope
    key: bytes | None
    value: bytes | None  # None: a tombstone


def read_jsonl(stream: IO[bytes]) -> Iterator[Line]:
    """The messages of a file, in order (blank lines skipped)."""
    for number, raw in enumerate(stream, 1):
        text = raw.strip()
        if not text:
            continue
        doc: Any = None
        try:
            doc = json.loads(text)
        except ValueError:
            pass  # a bare envelope that is not JSON: the validation says why
        if isinstance(doc, dict) and "value" in doc and "topic" in doc and "event_type" not in doc:
            value = doc["value"]
            key = doc.get("key")
            yield Line(
                number,
                str(doc["topic"]),
                key.encode() if isinstance(key, str) else None,
                value.encode() if isinstance(value, str) else None,
            )
        else:
            yield Line(number, None, None, text)


def route(line: Line, settings: Any) -> tuple[str, bytes | None] | str:
    """(topic, key) for a line, or why it cannot be routed. A record keeps its key and goes to
    the configured topic of its contract topic name; an envelope goes by its event type."""
    if line.topic is not None:
        by_default = {default: t for t, (_, default) in TOPICS.items()}
        if line.topic in by_default:
            return topic_for(by_default[line.topic], settings), line.key
        return line.topic, line.key  # not a contract name: taken as it is
    try:
        doc = json.loads(line.value or b"")
    except ValueError:
        return "not JSON: cannot tell its topic"
    event_type = doc.get("event_type") if isinstance(doc, dict) else None
    if event_type not in TOPICS:
        return f"event_type {event_type!r} has no topic"
    payload = doc.get("payload")
    key = payload.get(key_field(event_type)) if isinstance(payload, dict) else None
    return topic_for(event_type, settings), key.encode() if isinstance(key, str) else None
