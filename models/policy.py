"""Bank rules as plain functions over plain data (DOMAIN.md).

Everything here is a default a bank configures through settings; nothing reads the
environment, a broker or a database.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

BUSINESS_LINES = ("asset", "liability", "intermediary", "off_balance")
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
VISIT_METHODS = ("on_site", "phone", "sms", "online")
VISIT_KINDS = ("routine", "business", "post_loan_check", "surprise")
TIERS = ("diamond", "platinum", "gold", "silver", "bronze")
PERIODS = ("day", "week", "month", "quarter", "year")

CENT = Decimal("0.01")


@dataclass(frozen=True)
class Policy:
    timezone: str = "Asia/Shanghai"
    coefficients: dict[str, Decimal] = field(
        default_factory=lambda: {
            "asset": Decimal("0.9"),
            "liability": Decimal("1.0"),
            "intermediary": Decimal("2.0"),
            "off_balance": Decimal("1.5"),
        }
    )
    default_claim_ratio: Decimal = Decimal("1.0")
    fx_rates: dict[str, Decimal] = field(default_factory=dict)
    # --- visits (DOMAIN.md "Visits") ---
    visit_interval_days: dict[str, int] = field(
        default_factory=lambda: {
            "diamond": 30,
            "platinum": 45,
            "gold": 60,
            "silver": 90,
            "bronze": 180,
        }
    )
    """Ordinary visit interval by tier; a client's own ``visit_interval_days`` overrides it."""
    default_visit_interval_days: int = 90
    """Interval for a client whose tier is not given."""
    post_loan_interval_days: int = 90
    """Credit clients: an on-site post-loan check (or surprise visit) at least this often."""
    escalation_grace_days: int = 7
    """A reminder still open this long after its due instant is escalated to the supervisor."""
    max_snooze_days: int = 14
    """A snooze may push a reminder at most this far past now."""
    heads_up_enabled: bool = False
    heads_up_days: int = 3
    """Optional "due in N days" reminders (off by default)."""
    # --- claim ratios (绩效认领比例) ---
    origin_claim_defaults: bool = False
    """When a client's claim_ratio is unset: False → ``default_claim_ratio`` (1.0);
    True → the minimums below by the client's origin and whether it was handed over."""
    claim_marketed: Decimal = Decimal("0.8")
    claim_natural: Decimal = Decimal("0.5")
    claim_handed_over_deposits: Decimal = Decimal("0.6")
    claim_handed_over_other: Decimal = Decimal("0.8")
    # --- branch new-account targets ---
    branch_weekly_corporate_settlement: int = 1
    branch_monthly_corporate_settlement: int = 4
    branch_monthly_basic_settlement: int = 2
    corporate_settlement_types: tuple[str, ...] = (
        "basic_settlement",
        "general_settlement",
        "special",
        "temporary",
        "usd_settlement",
    )
    # --- assessment (考核) ---
    performance_points: Decimal = Decimal("70")
    evaluation_points: Decimal = Decimal("30")
    completion_cap: Decimal = Decimal("1.2")
    warn_below: Decimal = Decimal("0.6")
    demotion_low_below: Decimal = Decimal("0.6")
    demotion_low_years: int = 2
    demotion_mid_below: Decimal = Decimal("1.0")
    demotion_mid_years: int = 3
    grade_min_credit_clients: dict[str, int] = field(
        default_factory=lambda: {"A": 41, "B": 31, "C": 21, "D": 11, "E": 0}
    )
    """Grade by credit clients held: the best grade whose minimum is reached."""
    # --- hand-over (他人移交的客户, 增量认领) ---
    handover_mode: str = "increment"
    """``increment``: business above the hand-over base goes to the new manager, the base
    stays with the previous one; ``full``: everything after the transfer is the new one's."""
    handover_deposit_ratio: Decimal = Decimal("0.6")
    handover_other_ratio: Decimal = Decimal("0.8")
    # --- balances: standard deposits (标准存款), tiers, alerts (product defaults) ---
    standard_coefficients: dict[str, Decimal] = field(
        default_factory=lambda: {"liability": Decimal("1.0"), "asset": Decimal("0.5")}
    )
    """Standard deposits = Σ line average daily balance × coefficient (the bank's annex 1
    is missing: product defaults)."""
    tier_thresholds: dict[str, Decimal] = field(
        default_factory=lambda: {
            "diamond": Decimal("200000000"),
            "platinum": Decimal("50000000"),
            "gold": Decimal("5000000"),
            "silver": Decimal("1000000"),
        }
    )
    """Least standard deposits per tier; below silver: bronze (silver's is a product default)."""
    standard_window_days: int = 183
    """Standard deposits are the averages of the last this many days (half a year)."""
    relationship_min_days: int = 183
    """A client is classified only after this long a relationship (half a year)."""
    outflow_share: Decimal = Decimal("0.3")
    outflow_amount: Decimal = Decimal("5000000")
    """大额资金流出: a client's deposits falling day over day by more than this share of the
    previous day's, or by more than this amount, fire an ``outflow`` alert."""

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def bank_day(occurred_at: datetime, tz: ZoneInfo) -> date:
    """The calendar day an instant belongs to in the bank's time zone."""
    if occurred_at.tzinfo is None:
        raise ValueError("occurred_at must be timezone-aware")
    return occurred_at.astimezone(tz).date()


def weighted_profit(
    simulated_profit: Decimal, line: str, claim_ratio: Decimal | None, policy: Policy
) -> Decimal:
    """simulated_profit × coefficient(line) × claim_ratio, exact (never rounded here)."""
    ratio = policy.default_claim_ratio if claim_ratio is None else claim_ratio
    return simulated_profit * policy.coefficients[line] * ratio


def to_cny(value: Decimal, currency: str, policy: Policy) -> Decimal:
    """Convert an amount to CNY with the configured FX table (CNY passes through)."""
    if currency == "CNY":
        return value
    return value * policy.fx_rates[currency]


def money(value: Decimal) -> str:
    """Show a decimal the way the contract does: a string, rounded half-up to two places."""
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def period_range(period: str, at: date) -> tuple[date, date]:
    """The inclusive [from, to] of the day/ISO week/month/quarter/year containing ``at``."""
    if period == "day":
        return at, at
    if period == "week":
        start = at - timedelta(days=at.weekday())
        return start, start + timedelta(days=6)
    if period == "month":
        last = calendar.monthrange(at.year, at.month)[1]
        return at.replace(day=1), at.replace(day=last)
    if period == "quarter":
        first_month = 3 * ((at.month - 1) // 3) + 1
        start = date(at.year, first_month, 1)
        end_month = first_month + 2
        return start, date(at.year, end_month, calendar.monthrange(at.year, end_month)[1])
    if period == "year":
        return date(at.year, 1, 1), date(at.year, 12, 31)
    raise ValueError(f"unknown period {period!r}; expected one of {', '.join(PERIODS)}")


# --- claim ratios ----------------------------------------------------------------------------
def claim_ratio(
    client_ratio: Decimal | None,
    origin: str | None,
    handed_over: bool,
    line: str | None,
    policy: Policy,
) -> Decimal:
    """The share of a client's business credited to its manager (DOMAIN.md "Claim ratio").

    A ratio set on the client always wins. Unset: ``default_claim_ratio`` (1.0), unless the
    policy turns on the defaults by origin: a client handed over by a colleague 0.6 for
    deposits (the liability line) and 0.8 for other business; otherwise natural growth 0.5,
    self-marketed 0.8.
    """
    if client_ratio is not None:
        return client_ratio
    if not policy.origin_claim_defaults:
        return policy.default_claim_ratio
    if handed_over or origin == "handed_over":
        if line == "liability":
            return policy.claim_handed_over_deposits
        return policy.claim_handed_over_other
    if origin == "natural":
        return policy.claim_natural
    return policy.claim_marketed


# --- targets ---------------------------------------------------------------------------------
def _days_in_year(year: int) -> int:
    return 366 if calendar.isleap(year) else 365


def prorated_annual_target(annual: Decimal, start: date, end: date) -> Decimal:
    """An annual target pro-rated by days to [start, end] (each year by its own length).

    A whole year gets the annual target; November 2026 gets 30/365 of it. Exact (no rounding).
    """
    total = Decimal(0)
    y = start.year
    while y <= end.year:
        lo = max(start, date(y, 1, 1))
        hi = min(end, date(y, 12, 31))
        total += annual * Decimal((hi - lo).days + 1) / Decimal(_days_in_year(y))
        y += 1
    return total


def _months_fraction(start: date, end: date) -> Decimal:
    """How many months [start, end] covers, partial months by days (Jan 1-31 → 1)."""
    total = Decimal(0)
    cur = start.replace(day=1)
    while cur <= end:
        last = calendar.monthrange(cur.year, cur.month)[1]
        lo = max(start, cur)
        hi = min(end, cur.replace(day=last))
        total += Decimal((hi - lo).days + 1) / Decimal(last)
        cur = date(cur.year + (cur.month == 12), cur.month % 12 + 1, 1)
    return total


@dataclass(frozen=True)
class AccountTarget:
    name: str
    """``corporate_settlement`` or ``basic_settlement``."""
    cadence: str
    """``weekly`` or ``monthly``: the policy rule it comes from."""
    target: Decimal
    actual: int

    @property
    def ratio(self) -> Decimal | None:
        return None if self.target == 0 else Decimal(self.actual) / self.target

    @property
    def met(self) -> bool:
        return self.actual >= self.target


def branch_account_targets(
    period: str | None, start: date, end: date, accounts: dict[str, int], policy: Policy
) -> list[AccountTarget]:
    """The branch new-account targets that apply to a period, with the actual counts.

    A week is held to the weekly corporate-settlement target; a month, quarter or year to
    the monthly targets times its months; a day or a free date range to both, pro-rated by
    days (weekly × days/7, monthly × the share of each month covered).
    """
    corporate = sum(accounts.get(t, 0) for t in policy.corporate_settlement_types)
    basic = accounts.get("basic_settlement", 0)
    weekly = Decimal(policy.branch_weekly_corporate_settlement)
    monthly_corp = Decimal(policy.branch_monthly_corporate_settlement)
    monthly_basic = Decimal(policy.branch_monthly_basic_settlement)
    out: list[AccountTarget] = []
    if period in (None, "day", "week"):
        days = Decimal((end - start).days + 1)
        out.append(AccountTarget("corporate_settlement", "weekly", weekly * days / 7, corporate))
    if period != "week":
        months = _months_fraction(start, end)
        out.append(
            AccountTarget("corporate_settlement", "monthly", monthly_corp * months, corporate)
        )
        out.append(AccountTarget("basic_settlement", "monthly", monthly_basic * months, basic))
    return out


# --- assessment ------------------------------------------------------------------------------
def completion_ratio(actual: Decimal, target: Decimal | None) -> Decimal | None:
    """Actual weighted profit ÷ target; None when there is no (positive) target."""
    if target is None or target <= 0:
        return None
    return actual / target


def performance_points(ratio: Decimal | None, policy: Policy) -> Decimal:
    """70 × min(ratio, cap); never below 0 (a loss scores nothing, not negative points)."""
    if ratio is None:
        return Decimal(0)
    return policy.performance_points * max(Decimal(0), min(ratio, policy.completion_cap))


def grade(credit_clients: int, policy: Policy) -> str:
    """普惠金融 grading by credit clients held: A > 40, B 31-40, C 21-30, D 11-20, E ≤ 10."""
    best = sorted(policy.grade_min_credit_clients.items(), key=lambda kv: -kv[1])
    for name, minimum in best:
        if credit_clients >= minimum:
            return name
    return best[-1][0]


def assessment_flags(
    ratio: Decimal | None, yearly: list[Decimal | None], policy: Policy
) -> list[str]:
    """``warn`` below 60 % for the period; ``demotion_review`` from the annual completions.

    ``yearly`` holds the annual completion ratios, the assessed year last, earlier years
    before it (None: no target that year). Demotion review: below 60 % two years running, or
    60-99 % three years running. The product flags; people decide.
    """
    flags: list[str] = []
    if ratio is not None and ratio < policy.warn_below:
        flags.append("warn")

    def run(pred: Any, years: int) -> bool:
        tail = yearly[-years:]
        return len(tail) == years and all(r is not None and pred(r) for r in tail)

    low = run(lambda r: r < policy.demotion_low_below, policy.demotion_low_years)
    mid = run(
        lambda r: policy.demotion_low_below <= r < policy.demotion_mid_below,
        policy.demotion_mid_years,
    )
    if low or mid:
        flags.append("demotion_review")
    return flags
