"""Demo traffic: plays "core banking" and "the CRM app" so tallies move within seconds.

``DemoGenerator`` is pure and deterministic (seeded RNG, injectable clock, no I/O): it builds a
roster of managers and clients and then emits contract-shaped envelopes (CONTRACT.md §1),
including a trickle of resends and malformed messages so the dedup and dead-letter paths are
visible too. ``run_demo`` paces those messages onto a caller-supplied ``send``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["ROLES", "DemoGenerator", "DemoMessage", "run_demo"]

_logger = logging.getLogger(__name__)

ROLES = ("transactions", "accounts", "visits", "clients", "managers", "balances")

_EVENT_TYPE = {
    "transactions": "transaction.posted",
    "accounts": "account.opened",
    "visits": "visit.logged",
    "clients": "client.upserted",
    "managers": "manager.upserted",
    "balances": "balance.snapshot",
}
_SOURCE = {
    "transactions": "demo-core-banking",
    "accounts": "demo-core-banking",
    "visits": "demo-crm-app",
    "clients": "demo-crm-app",
    "managers": "demo-crm-app",
    "balances": "demo-core-banking",
}

# DOMAIN.md default visit intervals; only used to backdate never-visited clients far enough
# that they are overdue under the default policy (a bank may configure other values).
_VISIT_INTERVAL_DAYS = {"diamond": 30, "platinum": 45, "gold": 60, "silver": 90, "bronze": 180}
_ASSIGNED_MIN_DAYS, _ASSIGNED_MAX_DAYS = 60, 200

_CENT = Decimal("0.01")
_MIN_AMOUNT, _MAX_AMOUNT = 1_000.0, 5_000_000.0

# Message mix per next_messages() slot.
_P_MALFORMED = 1 / 300
_P_RESEND = 1 / 200
_P_TRANSACTION, _P_ACCOUNT = 0.70, 0.10  # the rest (0.20) are visits
_P_BACKDATED_VISIT = 0.05
_RESEND_HISTORY = 1000

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕"
_GIVEN_NAMES = tuple(
    "芳 伟 静 敏 磊 洋 艳 勇 军 杰 娟 涛 明 超 霞 平 刚 丽 强 秀英 "
    "桂英 建华 晓东 海燕 志强 丽娟 文博 雪梅 国庆 俊杰 子涵 欣怡 浩然 "
    "佳慧 立新 春梅".split()
)
_COMPANY_BRANDS = tuple(
    "华兴 鑫源 宏达 恒通 瑞丰 金诚 永盛 天宇 中联 博远 嘉禾 新泰 锦程 "
    "德隆 盛世 汇通 远航 安泰 正和 东方 长江 海纳".split()
)
_COMPANY_TRADES = tuple(
    "机械 电子 纺织 物流 建材 食品 医药 化工 贸易 科技 包装 汽配 环保 农业 光电 精密制造".split()
)
_COMPANY_FORMS = ("有限公司", "股份有限公司", "有限责任公司")

_LEVELS = ("senior", "advanced", "standard", "assistant")
_LEVEL_WEIGHTS = (1, 2, 4, 2)
# Annual weighted-profit targets by level, in units of 10,000 CNY (万元), as banks set them.
_TARGET_WAN = {
    "senior": (1200, 2000),
    "advanced": (800, 1400),
    "standard": (500, 900),
    "assistant": (300, 500),
}

_TIERS = ("diamond", "platinum", "gold", "silver", "bronze")
_TIER_WEIGHTS = {
    "corporate": (3, 8, 20, 37, 32),
    "retail": (0, 1, 12, 45, 42),
}
# Bigger clients bring more business, so they are picked more often.
_TIER_ACTIVITY = {"diamond": 8, "platinum": 5, "gold": 3, "silver": 2, "bronze": 1}
_TIER_AMOUNT_BOOST = {"diamond": 1.6, "platinum": 1.1, "gold": 0.6, "silver": 0.0, "bronze": -0.4}
_CLAIM_RATIOS = ("1.0", "0.8", "0.6", "0.5")
_CLAIM_WEIGHTS = (40, 30, 15, 15)

_LINES = ("asset", "liability", "intermediary", "off_balance")
_LINE_WEIGHTS = {"corporate": (25, 35, 25, 15), "retail": (20, 50, 30, 0)}
# Simulated profit as basis points of the volume, per line.
_PROFIT_BP = {
    "asset": (40, 200),
    "liability": (10, 80),
    "intermediary": (50, 400),
    "off_balance": (20, 120),
}

_ACCOUNT_TYPES_CORPORATE = (
    "basic_settlement",
    "general_settlement",
    "special",
    "temporary",
    "usd_settlement",
    "payroll",
    "ebanking",
)
_ACCOUNT_WEIGHTS_CORPORATE = (15, 25, 8, 4, 6, 14, 20)

_METHODS = ("on_site", "phone", "sms", "online")
_METHOD_WEIGHTS = (40, 35, 10, 15)
_DURATION_RANGE = {"on_site": (30, 150), "phone": (5, 30), "sms": (1, 3), "online": (15, 60)}
_NOTES = {
    "routine": (
        "季度例行回访，客户经营平稳",
        "了解客户近期资金安排",
        "节前走访，维护关系",
        "介绍新上线的企业网银功能",
    ),
    "business": (
        "洽谈流动资金贷款续作",
        "推荐结构性存款产品",
        "讨论代发工资业务迁移",
        "商谈开立保函事宜",
        "客户有理财需求，已提供方案",
    ),
    "post_loan_check": (
        "贷后检查：生产经营正常，库存合理",
        "贷后检查：核对资金用途，符合约定",
        "贷后检查：抵押物状况良好",
    ),
    "surprise": ("突击探访：厂区开工正常", "突击探访：核实经营场所与申报一致"),
}

_MALFORMED_KINDS = ("invalid_json", "negative_amount", "missing_client_id", "unknown_event_type")


@dataclass(frozen=True)
class DemoMessage:
    """One message ready for a producer: ``topic_role`` is one of ``ROLES``."""

    topic_role: str
    key: bytes
    value: bytes


@dataclass(frozen=True)
class _Manager:
    manager_id: str
    name: str
    branch_id: str
    supervisor_id: str
    level: str
    annual_profit_target: str


@dataclass(frozen=True)
class _Client:
    client_id: str
    name: str
    segment: str
    tier: str
    manager_id: str
    branch_id: str
    credit_client: bool
    claim_ratio: str
    assigned_days_ago: timedelta
    visited: bool


def _person_name(rng: random.Random) -> str:
    return rng.choice(_SURNAMES) + rng.choice(_GIVEN_NAMES)


def _unique(make: Callable[[], str], taken: set[str]) -> str:
    # Retries keep names unique while the pools are large; past that a suffix disambiguates.
    for _ in range(50):
        name = make()
        if name not in taken:
            taken.add(name)
            return name
    name = f"{make()}{len(taken) + 1}"
    taken.add(name)
    return name


def _fmt_time(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def _fmt_money(value: Decimal) -> str:
    return str(value.quantize(_CENT, rounding=ROUND_HALF_UP))


class DemoGenerator:
    """Deterministic source of demo envelopes; no I/O.

    With the same ``seed`` and a ``now`` returning the same instants, every call sequence gives
    byte-identical messages. Event ids are drawn from a second RNG seeded with ``seed`` and the
    clock reading at construction, so two live demo runs never reuse event ids (a restarted
    demo against the same data would otherwise be deduplicated as a resend and tallies would
    freeze), while a fixed clock still gives identical output.
    """

    def __init__(
        self,
        *,
        seed: int = 7,
        tz: str = "Asia/Shanghai",
        now: Callable[[], datetime] | None = None,
        branches: int = 3,
        managers_per_branch: int = 5,
        clients: int = 240,
    ) -> None:
        if branches < 1 or managers_per_branch < 1 or clients < 1:
            raise ValueError("branches, managers_per_branch and clients must be >= 1")
        self._tz = ZoneInfo(tz)
        self._now = now or (lambda: datetime.now(self._tz))
        self._rng = random.Random(seed)
        start = _fmt_time(self._clock())
        self._id_salt = f"{seed}|{start}"
        self._ids = random.Random(self._id_salt)
        self._hired: date | None = None

        self._managers = self._build_managers(branches, managers_per_branch)
        self._clients = self._build_clients(clients)
        self._visitable = [c for c in self._clients if c.visited]
        self._activity_cum = self._cumulative([_TIER_ACTIVITY[c.tier] for c in self._clients])
        self._visit_cum = self._cumulative([_TIER_ACTIVITY[c.tier] for c in self._visitable])
        # Accounts each client already holds, so transactions hit existing account ids.
        self._accounts = {c.client_id: self._rng.randint(1, 3) for c in self._clients}
        self._history: deque[DemoMessage] = deque(maxlen=_RESEND_HISTORY)

    # --- roster -------------------------------------------------------------------------
    @property
    def manager_ids(self) -> tuple[str, ...]:
        return tuple(m.manager_id for m in self._managers)

    @property
    def branch_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.branch_id for m in self._managers))

    @property
    def client_ids(self) -> tuple[str, ...]:
        return tuple(c.client_id for c in self._clients)

    @property
    def unvisited_client_ids(self) -> frozenset[str]:
        """Clients the generator never visits, so the overdue list is never empty."""
        return frozenset(c.client_id for c in self._clients if not c.visited)

    def _build_managers(self, branches: int, per_branch: int) -> list[_Manager]:
        rng, taken = self._rng, set[str]()
        managers = []
        for b in range(1, branches + 1):
            branch_id = f"b{b:02d}"
            for m in range(1, per_branch + 1):
                level = rng.choices(_LEVELS, weights=_LEVEL_WEIGHTS)[0]
                lo, hi = _TARGET_WAN[level]
                target = Decimal(rng.randint(lo, hi) * 10_000)
                managers.append(
                    _Manager(
                        manager_id=f"m-{branch_id}-{m:02d}",
                        name=_unique(lambda: _person_name(rng), taken),
                        branch_id=branch_id,
                        supervisor_id=f"s-{branch_id}",
                        level=level,
                        annual_profit_target=_fmt_money(target),
                    )
                )
        return managers

    def _build_clients(self, count: int) -> list[_Client]:
        rng, taken = self._rng, set[str]()
        unvisited = set(rng.sample(range(count), count // 3))
        order = list(range(len(self._managers)))
        rng.shuffle(order)
        clients = []
        for i in range(count):
            segment = "corporate" if rng.random() < 0.6 else "retail"
            tier = rng.choices(_TIERS, weights=_TIER_WEIGHTS[segment])[0]
            if segment == "corporate":
                name = _unique(
                    lambda: (
                        rng.choice(_COMPANY_BRANDS)
                        + rng.choice(_COMPANY_TRADES)
                        + rng.choice(_COMPANY_FORMS)
                    ),
                    taken,
                )
            else:
                name = _unique(lambda: _person_name(rng), taken)
            # Round-robin over a shuffled manager order: every manager holds clients.
            manager = self._managers[order[i % len(order)]]
            visited = i not in unvisited
            if visited:
                lo = _ASSIGNED_MIN_DAYS
            else:
                # Old enough that the ordinary visit clock has already run out.
                lo = max(_ASSIGNED_MIN_DAYS, _VISIT_INTERVAL_DAYS[tier] + 1)
            days = rng.randint(lo, _ASSIGNED_MAX_DAYS - 1)
            clients.append(
                _Client(
                    client_id=f"c{i + 1:04d}",
                    name=name,
                    segment=segment,
                    tier=tier,
                    manager_id=manager.manager_id,
                    branch_id=manager.branch_id,
                    credit_client=rng.random() < 0.4,
                    claim_ratio=rng.choices(_CLAIM_RATIOS, weights=_CLAIM_WEIGHTS)[0],
                    assigned_days_ago=timedelta(days=days, seconds=rng.randrange(86_400)),
                    visited=visited,
                )
            )
        return clients

    @staticmethod
    def _cumulative(weights: list[int]) -> list[int]:
        total, out = 0, []
        for w in weights:
            total += w
            out.append(total)
        return out

    # --- envelopes ----------------------------------------------------------------------
    def _clock(self) -> datetime:
        t = self._now()
        # A naive clock is read as bank local time; the contract needs an explicit offset.
        return t.replace(tzinfo=self._tz) if t.tzinfo is None else t.astimezone(self._tz)

    @staticmethod
    def _event_id(rng: random.Random) -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    @staticmethod
    def _encode(envelope: dict[str, Any]) -> bytes:
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def _envelope(
        self, role: str, occurred_at: datetime, payload: dict[str, Any], ids: random.Random
    ) -> dict[str, Any]:
        return {
            "event_id": self._event_id(ids),
            "event_type": _EVENT_TYPE[role],
            "schema_version": 1,
            "occurred_at": _fmt_time(occurred_at),
            "source": _SOURCE[role],
            "payload": payload,
        }

    def reference_messages(self) -> list[DemoMessage]:
        """manager.upserted then client.upserted for the whole roster (same on every call)."""
        now = self._clock()
        if self._hired is None:  # the roster's first day: a demo that starts a year back
            self._hired = now.date()  # judges no year before it (README "Figures a bank asks for")
        ids = random.Random(self._id_salt + "|reference")
        out = []
        for m in self._managers:
            payload = {
                "manager_id": m.manager_id,
                "name": m.name,
                "branch_id": m.branch_id,
                "supervisor_id": m.supervisor_id,
                "level": m.level,
                "annual_profit_target": m.annual_profit_target,
                "active": True,
                "hired_at": self._hired.isoformat(),
                # reminder digests go here (README "Reminder channels": an SMTP catcher)
                "email": f"{m.manager_id}@demo-bank.example",
            }
            env = self._envelope("managers", now, payload, ids)
            out.append(DemoMessage("managers", m.manager_id.encode(), self._encode(env)))
        for c in self._clients:
            payload = {
                "client_id": c.client_id,
                "name": c.name,
                "segment": c.segment,
                "tier": c.tier,
                "manager_id": c.manager_id,
                "branch_id": c.branch_id,
                "credit_client": c.credit_client,
                "claim_ratio": c.claim_ratio,
                "assigned_at": _fmt_time(now - c.assigned_days_ago),
            }
            env = self._envelope("clients", now, payload, ids)
            out.append(DemoMessage("clients", c.client_id.encode(), self._encode(env)))
        return out

    def next_messages(self, n: int) -> list[DemoMessage]:
        """``n`` activity messages (transactions, accounts, visits, resends, malformed)."""
        out = []
        for _ in range(max(0, n)):
            r = self._rng.random()
            if r < _P_MALFORMED:
                out.append(self._malformed())
                continue
            if r < _P_MALFORMED + _P_RESEND and self._history:
                # Same bytes and event_id as before: the product must count it once.
                out.append(self._rng.choice(self._history))
                continue
            kind = self._rng.random()
            if kind < _P_TRANSACTION:
                role, payload, at = "transactions", *self._transaction()
            elif kind < _P_TRANSACTION + _P_ACCOUNT:
                role, payload, at = "accounts", *self._account_opened()
            else:
                role, payload, at = "visits", *self._visit()
            env = self._envelope(role, at, payload, self._ids)
            msg = DemoMessage(role, payload["client_id"].encode(), self._encode(env))
            self._history.append(msg)
            out.append(msg)
        return out

    def history_messages(
        self, days: int, *, per_weekday: int = 170, per_weekend: int = 60
    ) -> Iterator[list[DemoMessage]]:
        """A year (``days``) of past activity, a day at a time (a list per day, oldest first,
        up to yesterday): business hours on each day, fewer on weekends. Same mix as the live
        traffic (resends and the odd malformed message included)."""
        live = self._now
        today = self._clock().date()
        try:
            for back in range(days, 0, -1):
                day = today - timedelta(days=back)
                n = per_weekday if day.weekday() < 5 else per_weekend
                opening = datetime.combine(day, time(9, 1), self._tz)
                step = timedelta(hours=9) / max(n, 1)
                calls = iter(range(1_000_000))

                # each clock reading moves on one step, so the day's events spread over it
                def spread(
                    o: datetime = opening, s: timedelta = step, c: Iterator[int] = calls, n: int = n
                ) -> datetime:
                    return o + s * min(next(c), n - 1)

                self._now = spread
                yield self.next_messages(n)
        finally:
            self._now = live

    def reference_messages_at(self, at: datetime) -> list[DemoMessage]:
        """The roster as of ``at`` (its targets and assignments in force from then)."""
        live = self._now
        self._now = lambda: at
        try:
            return self.reference_messages()
        finally:
            self._now = live

    # --- end-of-day balances (balance.snapshot) ------------------------------------------
    def balance_messages(self, day: date) -> list[DemoMessage]:
        """Every demo account's end-of-day balance for the bank date ``day``, sent the next
        morning (or now, for today's). Deterministic per (seed, account, day): a balance
        drifts a few percent a night around a level set by the client's tier; the first
        account of a credit client is its loan (asset), the others are deposits."""
        sent_at = min(
            datetime(day.year, day.month, day.day, tzinfo=self._tz) + timedelta(days=1, hours=1),
            self._clock(),
        )
        ids = random.Random(f"{self._id_salt}|balances|{day.isoformat()}")
        out = []
        for c in self._clients:
            for k in range(1, self._accounts[c.client_id] + 1):
                account = f"{c.client_id}-a{k:02d}"
                level = random.Random(f"{account}|level").lognormvariate(
                    14.5 + 2 * _TIER_AMOUNT_BOOST[c.tier], 0.8
                )
                drift = random.Random(f"{account}|{day.isoformat()}").uniform(0.9, 1.1)
                payload = {
                    "client_id": c.client_id,
                    "account_id": account,
                    "business_line": "asset" if c.credit_client and k == 1 else "liability",
                    "balance": _fmt_money(Decimal(f"{level * drift:.2f}")),
                    "as_of_date": day.isoformat(),
                    "currency": "CNY",
                }
                env = self._envelope("balances", sent_at, payload, ids)
                out.append(DemoMessage("balances", c.client_id.encode(), self._encode(env)))
        return out

    def bank_today(self) -> date:
        return self._clock().date()

    # --- activity -----------------------------------------------------------------------
    def _recent(self) -> datetime:
        return self._clock() - timedelta(seconds=self._rng.randint(0, 5))

    def _pick_client(self) -> _Client:
        return self._rng.choices(self._clients, cum_weights=self._activity_cum)[0]

    def _transaction(self) -> tuple[dict[str, Any], datetime]:
        rng = self._rng
        c = self._pick_client()
        line = rng.choices(_LINES, weights=_LINE_WEIGHTS[c.segment])[0]
        if line == "asset":
            product = "loan"
        elif line == "liability":
            product = "deposit"
        elif line == "intermediary":
            product = rng.choice(("fee", "wealth"))
        else:
            product = "guarantee"
        mu = (11.3 if c.segment == "corporate" else 9.6) + _TIER_AMOUNT_BOOST[c.tier]
        # Redraw out-of-range values rather than clamp, so no pile-up at the bounds.
        raw = rng.lognormvariate(mu, 1.3)
        for _ in range(20):
            if _MIN_AMOUNT <= raw <= _MAX_AMOUNT:
                break
            raw = rng.lognormvariate(mu, 1.3)
        raw = min(max(raw, _MIN_AMOUNT), _MAX_AMOUNT)
        amount = Decimal(f"{raw:.2f}")
        if rng.random() < 0.04:
            # Loss-making business (e.g. a rate concession) shows up as negative profit.
            bp = -rng.randint(5, 60)
        else:
            bp = rng.randint(*_PROFIT_BP[line])
        profit = amount * bp / 10_000
        account = rng.randint(1, self._accounts[c.client_id])
        payload = {
            "client_id": c.client_id,
            "account_id": f"{c.client_id}-a{account:02d}",
            "business_line": line,
            "product": product,
            "amount": _fmt_money(amount),
            "simulated_profit": _fmt_money(profit),
            "currency": "CNY",
        }
        return payload, self._recent()

    def _account_opened(self) -> tuple[dict[str, Any], datetime]:
        rng = self._rng
        c = self._pick_client()
        if c.segment == "corporate":
            account_type = rng.choices(
                _ACCOUNT_TYPES_CORPORATE, weights=_ACCOUNT_WEIGHTS_CORPORATE
            )[0]
        else:
            account_type = "personal"
        self._accounts[c.client_id] += 1
        payload = {
            "client_id": c.client_id,
            "account_id": f"{c.client_id}-a{self._accounts[c.client_id]:02d}",
            "account_type": account_type,
            "origin": "marketed" if rng.random() < 0.6 else "natural",
        }
        return payload, self._recent()

    def _visit(self) -> tuple[dict[str, Any], datetime]:
        rng = self._rng
        # Never-visited clients are excluded so that some clients stay overdue.
        c = rng.choices(self._visitable, cum_weights=self._visit_cum)[0]
        k = rng.random()
        if c.credit_client and k < 0.35:
            kind = "post_loan_check"
            # Only on-site checks reset the post-loan clock, and that is what policy asks for.
            method = "on_site" if rng.random() < 0.85 else rng.choice(("phone", "online"))
        elif c.credit_client and k < 0.42:
            kind, method = "surprise", "on_site"
        else:
            kind = "routine" if rng.random() < 0.6 else "business"
            method = rng.choices(_METHODS, weights=_METHOD_WEIGHTS)[0]
        payload: dict[str, Any] = {
            "client_id": c.client_id,
            "manager_id": c.manager_id,
            "method": method,
            "kind": kind,
            "duration_minutes": rng.randint(*_DURATION_RANGE[method]),
        }
        if rng.random() < 0.8:
            payload["notes"] = rng.choice(_NOTES[kind])
        if rng.random() < _P_BACKDATED_VISIT:
            # Logged today for a visit days ago: late-arriving data counts in its own period.
            at = self._clock() - timedelta(days=rng.randint(1, 10), minutes=rng.randint(0, 600))
        else:
            at = self._recent()
        return payload, at

    def _malformed(self) -> DemoMessage:
        rng = self._rng
        fault = rng.choice(_MALFORMED_KINDS)
        if fault == "missing_client_id":
            role = rng.choice(("transactions", "accounts", "visits"))
        else:
            role = "transactions"
        payload, at = {
            "transactions": self._transaction,
            "accounts": self._account_opened,
            "visits": self._visit,
        }[role]()
        key = payload["client_id"].encode()
        env = self._envelope(role, at, payload, self._ids)
        if fault == "negative_amount":
            payload["amount"] = "-" + payload["amount"]
        elif fault == "missing_client_id":
            del payload["client_id"]
        elif fault == "unknown_event_type":
            env["event_type"] = "transaction.reversed"
        value = self._encode(env)
        if fault == "invalid_json":
            # A truncated write: any proper prefix of a JSON object is invalid JSON.
            value = value[: len(value) // 2]
        return DemoMessage(role, key, value)


async def run_demo(
    send: Callable[[str, bytes, bytes], Awaitable[None]],
    topic_for: Callable[[str], str],
    *,
    stop: asyncio.Event,
    rate: float = 25.0,
    generator: DemoGenerator | None = None,
    log: Callable[[str], None] | None = None,
    history_days: int = 0,
    balance_nights: int = 0,
) -> int:
    """Send the reference data, then ``history_days`` of past activity (a year's history:
    ``up --demo`` backfills 365 days), then ~``rate`` activity messages/s until ``stop``.

    ``balance_nights`` > 0: after the reference data, the end-of-day balances of that many
    past bank dates (up to yesterday), then each night's balances when the bank date turns.

    Returns the number of messages sent successfully. A failed send is logged and skipped; an
    in-flight send is cancelled when ``stop`` is set, so this returns within one tick (0.2 s).
    """
    if rate < 0:
        raise ValueError("rate must be >= 0")
    gen = generator or DemoGenerator()
    say = log or _logger.info
    tick = 0.2
    sent = failures = 0
    stop_task = asyncio.ensure_future(stop.wait())

    async def deliver(msg: DemoMessage) -> None:
        nonlocal sent, failures
        try:
            task = asyncio.ensure_future(send(topic_for(msg.topic_role), msg.key, msg.value))
        except Exception as exc:  # e.g. topic_for rejects the role
            failures += 1
            say(f"demo: cannot send to {msg.topic_role}: {exc!r}")
            return
        try:
            done, _ = await asyncio.wait({task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task not in done:
            task.cancel()
            # Retrieve the outcome later so asyncio does not warn about an unread exception.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            return
        error = asyncio.CancelledError() if task.cancelled() else task.exception()
        if error is None:
            sent += 1
            return
        failures += 1
        # A dead broker would otherwise print one line per message.
        if failures <= 3 or failures % 100 == 0:
            say(f"demo: send to {msg.topic_role} failed ({failures} so far): {error!r}")

    try:
        if history_days > 0:
            # the roster a year back, so the year's targets and assignments are in force
            start = gen._clock() - timedelta(days=history_days)
            reference = gen.reference_messages_at(start)
        else:
            reference = gen.reference_messages()
        for msg in reference:
            if stop.is_set():
                return sent
            await deliver(msg)
        if history_days > 0:
            say(
                f"demo: backfilling {history_days} days of history through Kafka before the "
                "live traffic starts (the worker applies it in the background)"
            )
            before = sent
            for day in gen.history_messages(history_days):
                for msg in day:
                    if stop.is_set():
                        return sent
                    await deliver(msg)
            say(f"demo: history sent: {sent - before} messages")
        say(
            f"demo: sent {sent} messages so far ({len(reference)} reference); "
            f"live activity at ~{rate:g} msg/s"
        )

        balances_through = gen.bank_today() - timedelta(days=1)
        if balance_nights > 0:
            for n in range(balance_nights, 0, -1):
                for msg in gen.balance_messages(gen.bank_today() - timedelta(days=n)):
                    if stop.is_set():
                        return sent
                    await deliver(msg)
            say(f"demo: sent end-of-day balances of the last {balance_nights} nights")

        loop = asyncio.get_running_loop()
        owed = rate * tick
        last = loop.time()
        while not stop.is_set():
            started = loop.time()
            # Cap the backlog at ~1 s so a slow broker does not cause a burst afterwards.
            owed = min(owed + rate * (started - last), max(rate, 1.0))
            last = started
            batch = int(owed)
            owed -= batch
            for msg in gen.next_messages(batch):
                if stop.is_set():
                    break
                await deliver(msg)
            # the bank date turned: last night's balances, as core banking sends them
            while balance_nights > 0 and balances_through < gen.bank_today() - timedelta(days=1):
                balances_through += timedelta(days=1)
                for msg in gen.balance_messages(balances_through):
                    if stop.is_set():
                        break
                    await deliver(msg)
            delay = tick - (loop.time() - started)
            if delay > 0 and not stop.is_set():
                await asyncio.wait({stop_task}, timeout=delay)
        return sent
    finally:
        stop_task.cancel()
