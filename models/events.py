"""Wire events: the envelope and the six payload types of CONTRACT.md §1.

``decode_event`` turns the exact bytes of a Kafka message value into a validated event or
raises ``InvalidEvent`` with a reason a person can act on. Money is parsed as ``Decimal``
straight from the JSON text (never through a float).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Literal, cast

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from models.policy import Policy

EVENT_TYPES = (
    "transaction.posted",
    "account.opened",
    "visit.logged",
    "client.upserted",
    "manager.upserted",
    "balance.snapshot",
)
FACT_TYPES = ("transaction.posted", "account.opened", "visit.logged", "balance.snapshot")
SUPPORTED_SCHEMA_VERSIONS = (1,)

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_MONEY = Decimal("1e18")
DEFAULT_MAX_FUTURE_SKEW = timedelta(seconds=300)


class InvalidEvent(ValueError):
    """A message that cannot be applied; ``reason`` says why."""

    def __init__(
        self, reason: str, event_id: str | None = None, event_type: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id
        self.event_type = event_type


def _rfc3339(v: Any) -> datetime:
    m = _RFC3339.match(v) if isinstance(v, str) else None
    if m is None:
        raise ValueError(
            "must be an RFC 3339 timestamp with a UTC offset, e.g. 2026-11-20T09:15:00+08:00"
        )
    # fromisoformat (3.11) takes 'Z' and up to 6 fractional digits: cut finer digits
    text = v.replace("z", "Z").replace("t", "T")
    fraction = m.group(1)
    if fraction is not None and len(fraction) > 7:
        cut = m.start(1) + 7
        text = text[:cut] + text[m.end(1) :]
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not a valid date/time: {exc}") from None


def _decimal(v: Any) -> Decimal:
    if isinstance(v, bool) or v is None:
        raise ValueError("must be a decimal number or a string holding one")
    if isinstance(v, Decimal):
        d = v
    elif isinstance(v, int):
        d = Decimal(v)
    elif isinstance(v, str):
        try:
            d = Decimal(v.strip())
        except InvalidOperation:
            raise ValueError(f"{v!r} is not a decimal number") from None
    else:
        raise ValueError("must be a decimal number or a string holding one")
    if not d.is_finite():
        raise ValueError("must be a finite decimal")
    if abs(d) >= MAX_MONEY:
        raise ValueError("is too large")
    return d


def _iso_date(v: Any) -> date:
    if not isinstance(v, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
        raise ValueError("must be a date written YYYY-MM-DD")
    try:
        return date.fromisoformat(v)
    except ValueError as exc:
        raise ValueError(f"not a valid date: {exc}") from None


Money = Annotated[Decimal, BeforeValidator(_decimal)]
Timestamp = Annotated[datetime, BeforeValidator(_rfc3339)]
Id = Annotated[StrictStr, Field(min_length=1, max_length=128)]
OptStr = Annotated[StrictStr | None, Field(max_length=256)]
Email = Annotated[
    StrictStr, Field(max_length=254, pattern=r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")
]
UserId = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[^\s<>@]+$")]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


BusinessLine = Literal["asset", "liability", "intermediary", "off_balance"]
AccountType = Literal[
    "basic_settlement",
    "general_settlement",
    "special",
    "temporary",
    "usd_settlement",
    "payroll",
    "ebanking",
    "personal",
]
VisitMethod = Literal["on_site", "phone", "sms", "online"]
VisitKind = Literal["routine", "business", "post_loan_check", "surprise"]
Segment = Literal["corporate", "retail"]
Tier = Literal["diamond", "platinum", "gold", "silver", "bronze"]
ClientOrigin = Literal["marketed", "natural", "public_resource", "handed_over"]
"""The contract's enumerations, one place for the models and the fast decoder's structs."""


class TransactionPosted(_Payload):
    client_id: Id
    account_id: Id
    business_line: BusinessLine
    product: OptStr = None
    amount: Money = Field(ge=0)
    simulated_profit: Money = Decimal(0)
    currency: Annotated[StrictStr, Field(min_length=3, max_length=3)] = "CNY"
    manager_id: Id | None = None


class AccountOpened(_Payload):
    client_id: Id
    account_id: Id
    account_type: AccountType
    origin: Literal["natural", "marketed"] = "marketed"
    manager_id: Id | None = None


class VisitLogged(_Payload):
    client_id: Id
    manager_id: Id
    method: VisitMethod
    kind: VisitKind
    duration_minutes: Annotated[StrictInt, Field(ge=0, le=1440)] | None = None
    notes: Annotated[StrictStr, Field(max_length=4000)] | None = None


class ClientUpserted(_Payload):
    client_id: Id
    name: Annotated[StrictStr, Field(max_length=512)] | None = None
    segment: Segment | None = None
    tier: Tier | None = None
    manager_id: Id
    branch_id: Id | None = None
    credit_client: StrictBool = False
    claim_ratio: Annotated[Money, Field(ge=0, le=1)] | None = None
    visit_interval_days: Annotated[StrictInt, Field(ge=1, le=3660)] | None = None
    assigned_at: Timestamp | None = None
    origin: ClientOrigin | None = None
    """How the client came: picks the claim-ratio floor (and default when origin defaults are
    on); ``public_resource`` (公共资源户, allocated by the branch) has no floor."""
    bad_credit: StrictBool = False
    """A bad-credit record or a pending lawsuit: bronze whatever its deposits."""


class ManagerUpserted(_Payload):
    manager_id: Id
    name: Annotated[StrictStr, Field(max_length=512)] | None = None
    branch_id: Id
    supervisor_id: Id | None = None
    level: Literal["senior", "advanced", "standard", "assistant"] | None = None
    annual_profit_target: Annotated[Money, Field(ge=0)] | None = None
    active: StrictBool = True
    hired_at: Annotated[date, BeforeValidator(_iso_date)] | None = None
    """First day as a manager: a year's target is pro-rated to the days employed."""
    # where reminders reach the manager (README "Reminder channels"): all optional
    email: Email | None = None
    wecom_userid: UserId | None = None
    """WeCom (企业微信) userid, @-mentioned in the branch's group robot messages."""
    dingtalk_userid: UserId | None = None
    """DingTalk (钉钉) userId, @-mentioned in the branch's group robot messages."""


def _bank_date(v: Any) -> date:
    if not isinstance(v, str) or _DATE.match(v) is None:
        raise ValueError("must be a date written YYYY-MM-DD")
    try:
        return date.fromisoformat(v)
    except ValueError as exc:
        raise ValueError(f"not a valid date: {exc}") from None


BankDate = Annotated[date, BeforeValidator(_bank_date)]


class BalanceSnapshot(_Payload):
    """An account's balance at the end of a bank date (core banking, nightly)."""

    client_id: Id
    account_id: Id
    business_line: Literal["liability", "asset"]
    balance: Money = Field(ge=0)
    as_of_date: BankDate
    currency: Annotated[StrictStr, Field(min_length=3, max_length=3)] = "CNY"

    manager_id: ClassVar[None] = None
    """A snapshot names no manager (its client's holder is credited); said here so that
    asking for one is a plain attribute read, not pydantic's slow missing-attribute path."""


PAYLOADS: dict[str, type[_Payload]] = {
    "transaction.posted": TransactionPosted,
    "account.opened": AccountOpened,
    "visit.logged": VisitLogged,
    "client.upserted": ClientUpserted,
    "manager.upserted": ManagerUpserted,
    "balance.snapshot": BalanceSnapshot,
}

Payload = (
    TransactionPosted
    | AccountOpened
    | VisitLogged
    | ClientUpserted
    | ManagerUpserted
    | BalanceSnapshot
)


class Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: Id
    event_type: StrictStr
    schema_version: StrictInt
    occurred_at: Timestamp
    source: Annotated[StrictStr, Field(max_length=256)] | None = None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event: the envelope with its typed payload."""

    event_id: str
    event_type: str
    schema_version: int
    occurred_at: datetime
    source: str | None
    payload: Payload


def currency_accepted(currency: str, policy: Policy | None) -> bool:
    """CNY, or a currency the policy has an FX rate for."""
    return currency == "CNY" or (policy is not None and currency in policy.fx_rates)


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
        _refuse_future(event, policy, now, max_future_skew)
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


from models import fast_decode as _fast  # noqa: E402  (it builds on the models above)
