"""Independent test-data factory and reference computation, written from CONTRACT.md/DOMAIN.md.

Nothing here imports the product (models/, streams/, api/, crmtracker/): the figures it
computes are an independent oracle to check the product against.

Public API
----------
Msg, GeneratedLog                      -- the message log and its expected outcome
generate_log(seed, ...)                -- a seeded, deterministic log + expected tallies
load_vectors(path)                     -- /work/shared/vectors as a GeneratedLog
compute_expected(valid_events, tz)     -- the reference computation (tallies, branches)
exact_weighted(valid_events, tz)       -- the unrounded weighted profit per manager/branch-month
parse_message(msg)                     -- contract validation of one message -> envelope | None
valid_events(messages)                 -- (valid deduplicated envelopes, number rejected)
EVENT_TYPES, TOPICS, ROLE_OF_TOPIC, MONTHS, MALFORMED_KINDS, COEFFICIENTS

Interpretation choices (where the contract is silent), used consistently here:
- the claim ratio applied to an event is the one of the client record (upsert) in effect at the
  event's occurred_at (the generator never changes a client's claim ratio, so "latest" and
  "in effect" agree on generated logs);
- assignments are ordered by assigned_at (default occurred_at); equal instants: the later
  message wins; an event before the first assignment goes to the first assigned manager;
- half of the late clients' upserts carry no assigned_at and occur in December 2026: every
  fact of theirs is older than the first assignment and goes to that first manager;
- a transfer upsert is recorded 1-72 h after its assigned_at: attribution must use assigned_at;
- hand-over (增量认领, default "increment"): after a transfer, a transaction on an account the
  client held before it stays with the manager who held the client when the account was
  opened (never seen opened — every generated transaction's account: the first manager) while
  that manager is active; business on accounts opened from the transfer on, and account
  openings, go to the new manager; an unset claim ratio is 0.6 (liability) / 0.8 for business
  claimed after a hand-over (not for a transaction naming its manager), else 1; "full":
  everything from the transfer on to the new one;
- the generator plants rounding ties: 3 manager-month and 3 branch-month weighted_profit
  figures whose exact value is x.x(even)5 exactly, where half-up and half-even disagree
  (the shared vectors have no such tie, so they cannot tell the two apart);
- a branch total counts transactions only (as in vectors/expected.json) and a zero-rounded
  negative figure is shown as "0.00", never "-0.00".
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

__all__ = [
    "COEFFICIENTS",
    "EVENT_TYPES",
    "MALFORMED_KINDS",
    "MONTHS",
    "ROLE_OF_TOPIC",
    "TOPICS",
    "GeneratedLog",
    "Msg",
    "compute_expected",
    "exact_weighted",
    "generate_log",
    "load_vectors",
    "parse_message",
    "valid_events",
]

# --------------------------------------------------------------------------- contract tables

TOPICS = {
    "transactions": "bank.transactions",
    "accounts": "bank.accounts",
    "visits": "crm.visits",
    "clients": "crm.clients",
    "managers": "crm.managers",
}
ROLE_OF_TOPIC = {t: r for r, t in TOPICS.items()}
EVENT_TYPES = {
    "transactions": "transaction.posted",
    "accounts": "account.opened",
    "visits": "visit.logged",
    "clients": "client.upserted",
    "managers": "manager.upserted",
}
LINES = ("asset", "liability", "intermediary", "off_balance")
COEFFICIENTS = {
    "asset": Decimal("0.9"),
    "liability": Decimal("1.0"),
    "intermediary": Decimal("2.0"),
    "off_balance": Decimal("1.5"),
}
ACCOUNT_TYPES = (
    "basic_settlement",
    "general_settlement",
    "special",
    "temporary",
    "usd_settlement",
    "payroll",
    "ebanking",
    "personal",
)
METHODS = ("on_site", "phone", "sms", "online")
KINDS = ("routine", "business", "post_loan_check", "surprise")
ORIGINS = ("natural", "marketed")
LEVELS = ("senior", "advanced", "standard", "assistant")
TIERS = ("diamond", "platinum", "gold", "silver", "bronze")
MONTHS = ("2026-09", "2026-10", "2026-11")
CLAIM_RATIOS = ("1.0", "0.8", "0.6", "0.5")
PRODUCTS = {
    "asset": ("loan", "discounting"),
    "liability": ("deposit",),
    "intermediary": ("fee", "wealth", "agency"),
    "off_balance": ("guarantee", "letter_of_credit", "acceptance"),
}
MALFORMED_KINDS = (
    "truncated_json",
    "non_utf8",
    "json_array",
    "unknown_event_type",
    "missing_client_id",
    "negative_amount",
    "naive_occurred_at",
    "amount_comma_string",
    "currency_usd",
    "visit_bad_method",
    "schema_version_string",
    "tombstone",
)

CENT = Decimal("0.01")
ZERO = Decimal(0)


# --------------------------------------------------------------------------- data classes


@dataclass(frozen=True)
class Msg:
    role: str  # "managers" | "clients" | "transactions" | "accounts" | "visits"
    key: bytes | None
    value: bytes | None  # exact bytes to produce

    @property
    def topic(self) -> str:
        return TOPICS[self.role]


@dataclass
class GeneratedLog:
    messages: list[Msg]  # in production order
    tallies: dict[str, dict]  # "manager_id|YYYY-MM" -> figures (vectors expected.json shape)
    branches: dict[str, dict]  # "branch_id|YYYY-MM" -> {"transactions", "weighted_profit"}
    bad: int  # messages that must end in the rejected list
    manager_branch: dict[str, str]


# --------------------------------------------------------------------------- validation

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_DECIMAL_TEXT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


def _instant(value: Any) -> datetime | None:
    """An RFC 3339 timestamp with an offset, as an aware datetime; None if not one."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        return None
    text = value.replace("t", "T").replace(" ", "T")
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else None


def _money(value: Any) -> Decimal | None:
    """A contract decimal (JSON string or number), exactly; None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):  # only if the caller parsed JSON without parse_float
        return Decimal(repr(value))
    if isinstance(value, str) and _DECIMAL_TEXT.match(value.strip()):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            return None
    return None


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _payload_ok(event_type: str, p: dict) -> bool:
    if event_type == "transaction.posted":
        if not all(_nonempty_str(p.get(f)) for f in ("client_id", "account_id")):
            return False
        if p.get("business_line") not in LINES:
            return False
        amount = _money(p.get("amount"))
        if amount is None or amount < 0:
            return False
        if "simulated_profit" in p and p["simulated_profit"] is not None:
            if _money(p["simulated_profit"]) is None:
                return False
        currency = p.get("currency")
        if currency is not None and currency != "CNY":
            return False
        if p.get("manager_id") is not None and not _nonempty_str(p["manager_id"]):
            return False
        return True
    if event_type == "account.opened":
        if not all(_nonempty_str(p.get(f)) for f in ("client_id", "account_id")):
            return False
        if p.get("account_type") not in ACCOUNT_TYPES:
            return False
        if p.get("origin") is not None and p["origin"] not in ORIGINS:
            return False
        if p.get("manager_id") is not None and not _nonempty_str(p["manager_id"]):
            return False
        return True
    if event_type == "visit.logged":
        if not all(_nonempty_str(p.get(f)) for f in ("client_id", "manager_id")):
            return False
        if p.get("method") not in METHODS or p.get("kind") not in KINDS:
            return False
        d = p.get("duration_minutes")
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 1440):
            return False
        notes = p.get("notes")
        if notes is not None and (not isinstance(notes, str) or len(notes) > 4000):
            return False
        return True
    if event_type == "client.upserted":
        if not all(_nonempty_str(p.get(f)) for f in ("client_id", "manager_id")):
            return False
        if p.get("claim_ratio") is not None:
            r = _money(p["claim_ratio"])
            if r is None or not ZERO <= r <= 1:
                return False
        if p.get("assigned_at") is not None and _instant(p["assigned_at"]) is None:
            return False
        return True
    if event_type == "manager.upserted":
        return all(_nonempty_str(p.get(f)) for f in ("manager_id", "branch_id"))
    return False


def parse_message(msg: Msg) -> dict | None:
    """The envelope of a message valid under CONTRACT.md section 1, or None if it must be
    rejected. Money keeps its JSON form; JSON numbers are parsed as Decimal, never float."""
    if msg.value is None:
        return None
    try:
        text = msg.value.decode("utf-8")
        env = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(env, dict):
        return None
    eid = env.get("event_id")
    if not isinstance(eid, str) or not 1 <= len(eid) <= 128:
        return None
    if env.get("event_type") != EVENT_TYPES.get(msg.role):
        return None
    sv = env.get("schema_version")
    if isinstance(sv, bool) or not isinstance(sv, int) or sv != 1:
        return None
    if _instant(env.get("occurred_at")) is None:
        return None
    payload = env.get("payload")
    if not isinstance(payload, dict) or not _payload_ok(env["event_type"], payload):
        return None
    return env


def valid_events(messages: list[Msg]) -> tuple[list[dict], int]:
    """(valid envelopes in production order, first occurrence of each event_id; rejected count)."""
    seen: set[str] = set()
    out: list[dict] = []
    bad = 0
    for m in messages:
        env = parse_message(m)
        if env is None:
            bad += 1
            continue
        if env["event_id"] in seen:
            continue
        seen.add(env["event_id"])
        out.append(env)
    return out, bad


# --------------------------------------------------------------------------- reference computation


def _fmt(d: Decimal) -> str:
    q = d.quantize(CENT, rounding=ROUND_HALF_UP)
    if q == 0:
        q = ZERO.quantize(CENT)
    return f"{q:f}"


def _month_keys(first: str, last: str) -> list[str]:
    y, m = map(int, first.split("-"))
    ly, lm = map(int, last.split("-"))
    out = []
    while (y, m) <= (ly, lm):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def _blank() -> dict:
    return {
        "transactions": 0,
        "volume": dict.fromkeys(LINES, ZERO),
        "simulated_profit": dict.fromkeys(LINES, ZERO),
        "weighted_profit": ZERO,
        "accounts_opened": defaultdict(int),
        "visits": defaultdict(int),
    }


HANDOVER_RATIOS = {"liability": Decimal("0.6")}
"""Hand-over (增量认领, DOMAIN.md): business a manager claims after a hand-over, for a client
without a ratio of its own: deposits 0.6, every other line 0.8."""
HANDOVER_OTHER = Decimal("0.8")


def _accumulate(valid_events: list[dict], tz: str, handover: str = "increment"):
    """Exact (unrounded) accumulators: (per (manager, month), per (branch, month) as
    [transactions, weighted], manager -> branch, months seen).

    ``handover`` (DOMAIN.md "Hand-over"): "increment" — after a hand-over, a transaction on
    an account the client held before it (opened before it, or never seen opened) stays
    with the manager who held the client when the account was opened (never seen opened: the
    first manager), if that manager is active; "full" — with whoever held the client at the
    transaction."""
    zone = ZoneInfo(tz)
    manager_branch: dict[str, str] = {}
    manager_active: dict[str, tuple[datetime, bool]] = {}  # newest record wins
    # client -> list of (assigned_at, seq, manager_id, claim_ratio or None)
    history: dict[str, list[tuple[datetime, int, str, Decimal | None]]] = defaultdict(list)
    opened: dict[str, datetime] = {}  # account -> earliest opening
    facts: list[dict] = []
    for seq, env in enumerate(valid_events):
        et, p = env["event_type"], env["payload"]
        if et == "manager.upserted":
            manager_branch[p["manager_id"]] = p["branch_id"]
            when = _instant(env["occurred_at"])
            known = manager_active.get(p["manager_id"])
            if known is None or when >= known[0]:
                manager_active[p["manager_id"]] = (when, p.get("active", True) is not False)
        elif et == "client.upserted":
            at = _instant(p.get("assigned_at")) if p.get("assigned_at") else None
            if at is None:
                at = _instant(env["occurred_at"])
            ratio = _money(p["claim_ratio"]) if p.get("claim_ratio") is not None else None
            history[p["client_id"]].append((at, seq, p["manager_id"], ratio))
        else:
            if et == "account.opened":
                when = _instant(env["occurred_at"])
                a = p["account_id"]
                if a not in opened or when < opened[a]:
                    opened[a] = when
            facts.append(env)
    for h in history.values():
        h.sort(key=lambda r: (r[0], r[1]))

    def stint(h: list, when: datetime) -> int:
        """Which stint (run of one manager in the history) held the client at ``when``."""
        k, chosen = 0, 0
        for n, rec in enumerate(h):
            if n and rec[2] != h[n - 1][2]:
                k += 1
            if n == 0 or rec[0] <= when:
                chosen = k
            else:
                break
        return chosen

    def stint_manager(h: list, k: int) -> str:
        runs = [h[0][2]]
        for rec in h[1:]:
            if rec[2] != runs[-1]:
                runs.append(rec[2])
        return runs[k]

    def holder(client_id: str, when: datetime, p: dict) -> tuple[str, Decimal] | None:
        h = history.get(client_id)
        if not h:
            return None  # never resolved: held forever, counts nowhere
        chosen = h[0]
        for rec in h:
            if rec[0] <= when:
                chosen = rec
            else:
                break
        k = stint(h, when)
        if handover == "increment" and k > 0 and "business_line" in p and not p.get("manager_id"):
            o = opened.get(p["account_id"])
            j = 0 if o is None else stint(h, o)
            owner = stint_manager(h, j)
            if j < k:
                if owner not in manager_active:
                    return None  # its active flag decides: held until its record arrives
                if manager_active[owner][1]:
                    k = j
        manager = stint_manager(h, k)
        ratio = chosen[3]
        if ratio is None:
            line = p.get("business_line")
            claimed = k > 0 and not p.get("manager_id")  # a named manager claims nothing
            ratio = HANDOVER_RATIOS.get(line, HANDOVER_OTHER) if claimed else Decimal(1)
        return manager, ratio

    acc: dict[tuple[str, str], dict] = defaultdict(_blank)
    bacc: dict[tuple[str, str], list] = defaultdict(lambda: [0, ZERO])
    months = set(MONTHS)
    for env in facts:
        et, p = env["event_type"], env["payload"]
        when = _instant(env["occurred_at"])
        local = when.astimezone(zone)
        month = f"{local.year:04d}-{local.month:02d}"
        months.add(month)
        if et == "visit.logged":
            if not history.get(p["client_id"]):
                continue  # client never known: the event stays held, counts nowhere
            manager = p["manager_id"]
            if manager not in manager_branch:
                continue  # unknown manager: held
            t = acc[(manager, month)]
            t["visits"]["total"] += 1
            t["visits"][p["method"]] += 1
            t["visits"][p["kind"]] += 1
            continue
        held = holder(p["client_id"], when, p)
        if held is None:
            continue  # client (or the manager deciding) never known: held, counts nowhere
        manager = p.get("manager_id") or held[0]
        ratio = held[1]
        if manager not in manager_branch:
            continue
        t = acc[(manager, month)]
        if et == "account.opened":
            t["accounts_opened"][p["account_type"]] += 1
            continue
        line = p["business_line"]
        amount = _money(p["amount"])
        profit = _money(p["simulated_profit"]) if p.get("simulated_profit") is not None else ZERO
        weighted = profit * COEFFICIENTS[line] * ratio
        t["transactions"] += 1
        t["volume"][line] += amount
        t["simulated_profit"][line] += profit
        t["weighted_profit"] += weighted
        b = bacc[(manager_branch[manager], month)]
        b[0] += 1
        b[1] += weighted
    return acc, bacc, manager_branch, months


def exact_weighted(
    valid_events: list[dict], tz: str = "Asia/Shanghai", handover: str = "increment"
) -> tuple[dict, dict]:
    """The exact, unrounded weighted profit: ({"m|YYYY-MM": Decimal}, {"b|YYYY-MM": Decimal})."""
    acc, bacc, _, _ = _accumulate(valid_events, tz, handover)
    return (
        {f"{m}|{mo}": t["weighted_profit"] for (m, mo), t in acc.items()},
        {f"{b}|{mo}": v[1] for (b, mo), v in bacc.items()},
    )


def compute_expected(
    valid_events: list[dict], tz: str = "Asia/Shanghai", handover: str = "increment"
) -> tuple[dict, dict]:
    """Tallies and branch totals from valid, deduplicated envelopes (production order).

    Returns (tallies, branches): tallies["<manager_id>|<YYYY-MM>"] with transactions, volume,
    simulated_profit, weighted_profit, accounts_opened, visits; branches["<branch_id>|<YYYY-MM>"]
    with transactions and weighted_profit. Every known manager/branch gets an entry for every
    month of 2026-09..2026-11 (and any other month an event falls in)."""
    acc, bacc, manager_branch, months = _accumulate(valid_events, tz, handover)
    all_months = _month_keys(min(months), max(months))
    tallies: dict[str, dict] = {}
    for manager in sorted(manager_branch):
        for month in all_months:
            t = acc.get((manager, month)) or _blank()
            visits = {k: v for k, v in t["visits"].items() if v > 0}
            visits = {"total": visits.pop("total", 0), **visits}
            tallies[f"{manager}|{month}"] = {
                "transactions": t["transactions"],
                "volume": {k: _fmt(v) for k, v in t["volume"].items()},
                "simulated_profit": {k: _fmt(v) for k, v in t["simulated_profit"].items()},
                "weighted_profit": _fmt(t["weighted_profit"]),
                "accounts_opened": {k: v for k, v in t["accounts_opened"].items() if v > 0},
                "visits": visits,
            }
    branches: dict[str, dict] = {}
    for branch in sorted(set(manager_branch.values())):
        for month in all_months:
            n, w = bacc.get((branch, month), (0, ZERO))
            branches[f"{branch}|{month}"] = {"transactions": n, "weighted_profit": _fmt(w)}
    return tallies, branches


# --------------------------------------------------------------------------- vectors


def load_vectors(path: str | Path = "/work/shared/vectors") -> GeneratedLog:
    """The shared contract vectors (directory with events.jsonl and expected.json)."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    messages: list[Msg] = []
    with open(path / "events.jsonl", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            key, value = rec.get("key"), rec.get("value")
            messages.append(
                Msg(
                    role=ROLE_OF_TOPIC[rec["topic"]],
                    key=None if key is None else key.encode("utf-8"),
                    value=None if value is None else value.encode("utf-8"),
                )
            )
    expected = json.loads((path / "expected.json").read_text(encoding="utf-8"))
    return GeneratedLog(
        messages=messages,
        tallies=expected["tallies"],
        branches=expected["branches"],
        bad=expected["bad"],
        manager_branch=expected["managers"],
    )


# --------------------------------------------------------------------------- generator


class _Gen:
    """Holds the RNG and the encoding helpers of one generate_log call."""

    def __init__(self, seed: int, tz: str) -> None:
        self.rng = random.Random(seed)
        self.zone = ZoneInfo(tz)
        self.start = datetime(2026, 9, 1, tzinfo=self.zone)
        self.end = datetime(2026, 12, 1, tzinfo=self.zone)  # exclusive
        self.span = int((self.end - self.start).total_seconds())
        self.boundaries = [
            datetime(2026, 10, 1, tzinfo=self.zone),
            datetime(2026, 11, 1, tzinfo=self.zone),
        ]
        self._nums: dict[str, str] = {}

    # -- ids and times
    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def instant(self) -> datetime:
        r = self.rng.random()
        if r < 0.12:  # near a month boundary of the bank time zone
            b = self.rng.choice(self.boundaries)
            s = self.rng.random()
            if s < 0.15:
                return b  # exactly midnight: the new month
            if s < 0.30:
                return b - timedelta(seconds=1)
            return b + timedelta(seconds=self.rng.randint(-8 * 3600, 8 * 3600))
        if r < 0.14:  # near the edges of the three months, still inside
            if self.rng.random() < 0.5:
                return self.start + timedelta(seconds=self.rng.randint(0, 8 * 3600))
            return self.end - timedelta(seconds=self.rng.randint(1, 8 * 3600))
        dt = self.start + timedelta(seconds=self.rng.randrange(self.span))
        if self.rng.random() < 0.4:
            dt += timedelta(microseconds=self.rng.randrange(1_000_000))
        return dt

    def clamp(self, dt: datetime) -> datetime:
        return min(max(dt, self.start), self.end - timedelta(microseconds=1))

    def stamp(self, dt: datetime) -> str:
        """RFC 3339: ~25% UTC ("Z" or "+00:00"), a few other offsets, the rest bank time."""
        r = self.rng.random()
        if r < 0.25:
            s = dt.astimezone(UTC).isoformat()
            return s.replace("+00:00", "Z") if r < 0.125 else s
        if r < 0.28:
            off = timezone(timedelta(hours=self.rng.choice((9, -5, 5.5))))
            return dt.astimezone(off).isoformat()
        return dt.astimezone(self.zone).isoformat()

    # -- money
    def money(self, value: Decimal) -> str:
        """A money value as it goes in the dict (the expected figures are computed from what is
        returned): mostly a 2-place string, ~2% whole, ~10% a bare JSON number in the bytes."""
        text = f"{value:f}"
        r = self.rng.random()
        if 0.09 <= r < 0.11:  # a whole amount written without places (1500 / "1500")
            text = f"{value.to_integral_value(ROUND_HALF_UP):f}"
        if r < 0.10:
            marker = f"\x00num{len(self._nums)}\x00"
            self._nums[marker] = text
            return marker
        return text

    def encode(self, env: dict, *, ensure_ascii: bool = True) -> bytes:
        s = json.dumps(env, ensure_ascii=ensure_ascii)
        if self._nums and "\\u0000num" in s:
            for marker in re.findall(r'"\\u0000num\d+\\u0000"', s):
                s = s.replace(marker, self._nums[json.loads(marker)], 1)
        return s.encode("utf-8")

    def envelope(self, event_type: str, when: str, source: str, payload: dict) -> dict:
        return {
            "event_id": self.uid(),
            "event_type": event_type,
            "schema_version": 1,
            "occurred_at": when,
            "source": source,
            "payload": payload,
        }


def _unmark(g: _Gen, env: dict) -> dict:
    """The envelope as a consumer sees it: number markers (payload level) become Decimals."""
    p = env["payload"]
    nums = g._nums
    if not any(isinstance(v, str) and v in nums for v in p.values()):
        return env
    return {
        **env,
        "payload": {
            k: Decimal(nums[v]) if isinstance(v, str) and v in nums else v for k, v in p.items()
        },
    }


def generate_log(
    seed: int = 1,
    *,
    events: int = 20_000,
    managers: int = 24,
    branches: int = 4,
    clients: int = 500,
    duplicate_rate: float = 0.05,
    malformed_rate: float = 0.01,
    late_clients: int = 20,
    transfers: int = 12,
    tz: str = "Asia/Shanghai",
) -> GeneratedLog:
    """A deterministic message log (same seed → same bytes) and its expected figures.

    `events` distinct valid facts (transactions ~80%, account openings ~8%, visits ~12%),
    plus round(events*duplicate_rate) identical resends and round(events*malformed_rate)
    malformed messages (kinds of MALFORMED_KINDS in turn). Up to twelve of the `events` facts are
    rounding-tie corrections (see _ties). Messages: managers, clients (+ transfers), facts with
    resends and malformed ones mixed in, then the `late_clients` upserts."""
    if managers < 2 or branches < 1 or clients < 1:
        raise ValueError("need at least 2 managers, 1 branch, 1 client")
    if late_clients + transfers > clients:
        raise ValueError("late_clients + transfers must not exceed clients")
    g = _Gen(seed, tz)
    rng = g.rng
    aug1 = "2026-08-01T00:00:00+08:00"
    aug1_dt = _instant(aug1)

    # ---- managers
    mids = [f"m{i:03d}" for i in range(1, managers + 1)]
    bids = [f"b{i:02d}" for i in range(1, branches + 1)]
    manager_branch = {m: bids[i % branches] for i, m in enumerate(mids)}
    by_branch: dict[str, list[str]] = defaultdict(list)
    for m in mids:
        by_branch[manager_branch[m]].append(m)
    ref_msgs: list[Msg] = []
    valid: list[dict] = []  # consumer view, in production order (reference data first)
    for i, m in enumerate(mids):
        b = manager_branch[m]
        env = g.envelope(
            "manager.upserted",
            "2026-08-01T09:00:00+08:00",
            "hr",
            {
                "manager_id": m,
                "name": f"Manager {i + 1}",
                "branch_id": b,
                "supervisor_id": "s" + b[1:],
                "level": rng.choice(LEVELS),
                "annual_profit_target": f"{rng.randint(5, 30) * 1_000_000}.00",
                "active": True,
            },
        )
        ref_msgs.append(Msg("managers", m.encode(), g.encode(env)))
        valid.append(env)

    # ---- clients
    cids = [f"c{i:05d}" for i in range(1, clients + 1)]
    order = cids[:]
    rng.shuffle(order)
    late = set(order[:late_clients])
    transferred = order[late_clients : late_clients + transfers]
    # assignment history: client -> [(instant, manager)]
    assign: dict[str, list[tuple[datetime, str]]] = {}
    ratio: dict[str, Decimal] = {}
    client_payload: dict[str, dict] = {}
    late_msgs: list[tuple[Msg, dict]] = []
    # two clients with known ratios carry the rounding-tie corrections (see _ties)
    tie_clients = dict(zip(cids[:2], ("0.5", "0.6"), strict=False)) if clients >= 2 else {}
    for c in cids:
        m = rng.choice(mids)
        r = rng.random()
        cr = None if r < 0.15 else rng.choice(CLAIM_RATIOS)
        if c in tie_clients:
            cr = tie_clients[c]
        ratio[c] = Decimal(cr) if cr else Decimal(1)
        branch = manager_branch[m]
        if rng.random() < 0.05:  # client's home branch differs: must not matter
            branch = rng.choice(bids)
        p: dict[str, Any] = {
            "client_id": c,
            "name": f"Client {c[1:]}",
            "segment": rng.choice(("corporate", "retail")),
            "tier": rng.choice(TIERS),
            "manager_id": m,
            "branch_id": branch,
            "credit_client": rng.random() < 0.3,
        }
        if cr is not None:
            p["claim_ratio"] = cr
        occurred = "2026-08-01T09:00:00+08:00"
        if c in late and rng.random() < 0.5:
            # arrives after its facts, no assigned_at: assignment instant is in December,
            # every fact is older than it -> the first (only) assigned manager.
            occurred = "2026-12-02T10:00:00+08:00"
            first_at = _instant(occurred)
        elif c in late or rng.random() < 0.7 or c in transferred:
            p["assigned_at"] = aug1
            first_at = aug1_dt
        else:
            first_at = _instant(occurred)
        assign[c] = [(first_at, m)]
        client_payload[c] = p
        env = g.envelope("client.upserted", occurred, "crm", p)
        msg = Msg("clients", c.encode(), g.encode(env))
        if c in late:
            late_msgs.append((msg, env))
        else:
            ref_msgs.append(msg)
            valid.append(env)
    transfer_at: dict[str, datetime] = {}
    for k, c in enumerate(transferred):
        old = assign[c][0][1]
        same = [m for m in by_branch[manager_branch[old]] if m != old]
        other = [m for m in mids if manager_branch[m] != manager_branch[old]]
        pool = (other or same) if k % 2 == 0 else (same or other)
        new = rng.choice(pool)
        at = datetime(2026, 10, 10, 9, tzinfo=g.zone) + timedelta(seconds=rng.randrange(10 * 86400))
        transfer_at[c] = at
        assign[c].append((at, new))
        p = dict(client_payload[c])
        p["manager_id"] = new
        p["branch_id"] = manager_branch[new]
        p["assigned_at"] = g.stamp(at)
        recorded = at + timedelta(hours=rng.randint(1, 72))
        env = g.envelope("client.upserted", g.stamp(recorded), "crm", p)
        ref_msgs.append(Msg("clients", c.encode(), g.encode(env)))
        valid.append(env)

    def holder(c: str, when: datetime) -> str:
        h = assign[c]
        return h[1][1] if len(h) > 1 and when >= h[1][0] else h[0][1]

    # ---- facts
    fact_msgs: list[Msg] = []
    fact_envs: list[dict] = []
    targets = _tie_targets(mids, manager_branch) if tie_clients else []
    n_regular = max(events - 2 * len(targets), 0)
    targets = targets[: (events - n_regular) // 2]
    for _ in range(n_regular):
        c = rng.choice(cids)
        if c in transfer_at and rng.random() < 0.3:
            at = transfer_at[c]
            s = rng.random()
            when = (
                at
                if s < 0.2
                else at - timedelta(microseconds=1)
                if s < 0.3
                else at - timedelta(seconds=1)
                if s < 0.4
                else at + timedelta(seconds=rng.randint(-3 * 3600, 3 * 3600))
            )
        else:
            when = g.instant()
        when = g.clamp(when)
        stamp = g.stamp(when)
        held = holder(c, when)
        kind = rng.random()
        if kind < 0.80:
            line = rng.choice(LINES)
            if rng.random() < 0.01:
                amount = Decimal(rng.randint(1, 10**12)).scaleb(-2)
            else:
                amount = Decimal(rng.randint(100, 500_000_000)).scaleb(-2)
            p = {
                "client_id": c,
                "account_id": f"a{c[1:]}-{rng.randint(1, 4)}",
                "business_line": line,
                "product": rng.choice(PRODUCTS[line]),
                "amount": g.money(amount),
            }
            s = rng.random()
            if s < 0.85:
                profit = Decimal(rng.randint(-2_000_000, 8_000_000)).scaleb(-2)
                if s < 0.02:
                    profit = ZERO.quantize(CENT)
                p["simulated_profit"] = g.money(profit)
            if rng.random() < 0.7:
                p["currency"] = "CNY"
            if rng.random() < 0.05:
                p["manager_id"] = rng.choice([m for m in mids if m != held])
            env = g.envelope("transaction.posted", stamp, "core-banking", p)
            role = "transactions"
        elif kind < 0.88:
            p = {
                "client_id": c,
                "account_id": f"a{c[1:]}-{rng.randint(5, 99)}",
                "account_type": rng.choice(ACCOUNT_TYPES),
            }
            if rng.random() < 0.8:
                p["origin"] = rng.choice(ORIGINS)
            if rng.random() < 0.05:
                p["manager_id"] = rng.choice([m for m in mids if m != held])
            env = g.envelope("account.opened", stamp, "core-banking", p)
            role = "accounts"
        else:
            visitor = held if rng.random() < 0.85 else rng.choice([m for m in mids if m != held])
            p = {
                "client_id": c,
                "manager_id": visitor,
                "method": rng.choice(METHODS),
                "kind": rng.choice(KINDS),
            }
            if rng.random() < 0.7:
                p["duration_minutes"] = rng.randint(0, 240)
            if rng.random() < 0.3:
                p["notes"] = "Confidential: discussed credit line renewal."
            env = g.envelope("visit.logged", stamp, "crm-app", p)
            role = "visits"
        fact_msgs.append(Msg(role, c.encode(), g.encode(env)))
        fact_envs.append(env)

    # ---- rounding ties: a few figures whose exact weighted profit is x.x(even)5 exactly
    if targets:
        sofar = [_unmark(g, e) for e in (*valid, *fact_envs, *(e for _, e in late_msgs))]
        by_manager, by_branch = exact_weighted(sofar, tz)
        for env in _ties(g, targets, by_manager, by_branch, manager_branch, tie_clients):
            i = rng.randrange(len(fact_envs) + 1)
            fact_envs.insert(i, env)
            fact_msgs.insert(
                i, Msg("transactions", env["payload"]["client_id"].encode(), g.encode(env))
            )

    # ---- malformed
    n_bad = round(events * malformed_rate)
    bad_msgs = [
        _malformed(g, MALFORMED_KINDS[i % len(MALFORMED_KINDS)], cids) for i in range(n_bad)
    ]

    # ---- interleave: facts in order, resends after their original, malformed anywhere
    n = len(fact_msgs)
    n_dup = min(round(events * duplicate_rate), n)
    placed: list[tuple[float, int, Msg]] = [(float(i), 0, m) for i, m in enumerate(fact_msgs)]
    for j, i in enumerate(sorted(rng.sample(range(n), n_dup))):
        placed.append((rng.uniform(i + 0.5, n), 1 + j, fact_msgs[i]))
    for j, m in enumerate(bad_msgs):
        placed.append((rng.uniform(0, n), 1 + n_dup + j, m))
    placed.sort(key=lambda t: (t[0], t[1]))

    messages = ref_msgs + [m for _, _, m in placed] + [m for m, _ in late_msgs]
    valid.extend(fact_envs)
    valid.extend(env for _, env in late_msgs)
    tallies, branch_totals = compute_expected([_unmark(g, e) for e in valid], tz)
    return GeneratedLog(
        messages=messages,
        tallies=tallies,
        branches=branch_totals,
        bad=n_bad,
        manager_branch=manager_branch,
    )


def _tie_targets(mids: list[str], manager_branch: dict[str, str]) -> list[tuple[str, str, str]]:
    """("manager"|"branch", manager to credit, month): three manager-month figures, then three
    branch-month figures credited through a manager whose own figure is not a target."""
    out: list[tuple[str, str, str]] = []
    for i, m in enumerate(mids[:3]):
        out.append(("manager", m, MONTHS[i % 3]))
    taken = {(m, mo) for _, m, mo in out}
    seen: list[str] = []
    for m in mids:
        b = manager_branch[m]
        if b in seen or len(seen) == 3:
            continue
        month = MONTHS[(len(seen) + 1) % 3]
        pick = next((x for x in mids if manager_branch[x] == b and (x, month) not in taken), None)
        if pick is not None:
            seen.append(b)
            out.append(("branch", pick, month))
    return out


def _ties(g, targets, by_manager, by_branch, manager_branch, tie_clients):
    """Two asset transactions per target (claim ratios 0.5 and 0.6: 0.45 and 0.54 per unit of
    profit, overriding the credited manager) so that the target's exact weighted profit ends
    in an exact half cent after an even cent digit: half-up and half-even round differently,
    and float arithmetic is likely to land on the wrong side."""
    rng = g.rng
    c05, c06 = list(tie_clients)
    for what, m, month in targets:
        key = f"{m}|{month}" if what == "manager" else f"{manager_branch[m]}|{month}"
        exact = (by_manager if what == "manager" else by_branch).get(key, ZERO)
        units = exact.scaleb(4)  # in 0.0001
        assert units == units.to_integral_value(), exact
        need = (50 - int(units)) % 200  # 45*n1 + 54*n2 == need (mod 200)
        n1, n2 = next(
            (a, b) for b in range(1, 201) for a in range(1, 201) if (45 * a + 54 * b) % 200 == need
        )
        n1 += 200 * rng.randint(50, 20_000)
        n2 += 200 * rng.randint(50, 20_000)
        w = Decimal(45 * n1 + 54 * n2).scaleb(-4)
        if exact + w <= 0:
            n1 += 200 * (int(-(exact + w) / Decimal("0.9")) + 1)
            w = Decimal(45 * n1 + 54 * n2).scaleb(-4)
        y, mo = map(int, month.split("-"))
        for client, cents in ((c05, n1), (c06, n2)):
            when = datetime(y, mo, rng.randint(1, 28), rng.randint(0, 23), tzinfo=g.zone)
            payload = {
                "client_id": client,
                "account_id": f"a{client[1:]}-1",
                "business_line": "asset",
                "product": "loan",
                "amount": f"{Decimal(rng.randint(10_000, 10_000_000)).scaleb(-2):f}",
                "simulated_profit": f"{Decimal(cents).scaleb(-2):f}",
                "currency": "CNY",
                "manager_id": m,
            }
            yield g.envelope("transaction.posted", g.stamp(when), "core-banking", payload)
        by_manager[f"{m}|{month}"] = by_manager.get(f"{m}|{month}", ZERO) + w
        bkey = f"{manager_branch[m]}|{month}"
        by_branch[bkey] = by_branch.get(bkey, ZERO) + w


def _malformed(g: _Gen, kind: str, cids: list[str]) -> Msg:
    """One message that the contract requires to be rejected (fresh event_id when it has one)."""
    rng = g.rng
    c = rng.choice(cids)
    stamp = g.stamp(g.instant())
    p: dict[str, Any] = {
        "client_id": c,
        "account_id": f"a{c[1:]}-1",
        "business_line": rng.choice(LINES),
        "product": "loan",
        "amount": f"{rng.randint(100, 10_000_000) / 100:.2f}",
        "simulated_profit": f"{rng.randint(1, 100_000) / 100:.2f}",
    }
    env = g.envelope("transaction.posted", stamp, "core-banking", p)
    role = "transactions"
    if kind == "truncated_json":
        raw = g.encode(env)
        return Msg(role, c.encode(), raw[: rng.randint(10, len(raw) - 2)])
    if kind == "non_utf8":
        p["product"] = "理财产品"  # GBK bytes are not UTF-8
        return Msg(role, c.encode(), json.dumps(env, ensure_ascii=False).encode("gbk"))
    if kind == "json_array":
        return Msg(role, c.encode(), json.dumps([env]).encode())
    if kind == "unknown_event_type":
        env["event_type"] = "transaction.exploded"
    elif kind == "missing_client_id":
        del p["client_id"]
    elif kind == "negative_amount":
        p["amount"] = "-" + p["amount"]
    elif kind == "naive_occurred_at":
        env["occurred_at"] = g.instant().astimezone(g.zone).replace(tzinfo=None).isoformat()
    elif kind == "amount_comma_string":
        p["amount"] = "12,00"
    elif kind == "currency_usd":
        p["currency"] = "USD"
    elif kind == "visit_bad_method":
        role = "visits"
        env["event_type"] = "visit.logged"
        env["payload"] = {
            "client_id": c,
            "manager_id": "m001",
            "method": "carrier_pigeon",
            "kind": "routine",
        }
    elif kind == "schema_version_string":
        env["schema_version"] = "1"
    elif kind == "tombstone":
        return Msg(role, c.encode(), None)
    else:  # pragma: no cover
        raise ValueError(kind)
    return Msg(role, c.encode(), g.encode(env))
