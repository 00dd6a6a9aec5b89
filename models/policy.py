"""Bank rules as plain functions over plain data (DOMAIN.md).

Everything here is a default a bank configures through settings; nothing reads the
environment, a broker or a database.
"""

from __future__ import annotations

import calendar
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
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
    # --- hand-over (他人移交的客户, 增量认领: DOMAIN.md "Hand-over") ---
    handover_mode: str = "increment"
    """``increment``: after a hand-over, business on accounts the client held before it stays
    with the previous manager (while active); ``full``: everything from it on goes to the new
    manager."""
    handover_deposit_ratio: Decimal = Decimal("0.6")
    """The ratio of the new manager's deposit (liability) business after a hand-over, when the
    client carries no ratio of its own."""
    handover_other_ratio: Decimal = Decimal("0.8")
    """The same for every other line."""
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
    completion_cap: Decimal = Decimal("1.0")
    """Default conversion: performance_points × min(completion, cap); 1.0 keeps 百分制 ≤ 100."""
    conversion: tuple[tuple[Decimal, Decimal], ...] = ()
    """The bank's conversion table (附表一) as (completion, points) breakpoints, completion
    increasing; empty: the default above. Between breakpoints by ``conversion_mode``."""
    conversion_mode: str = "linear"
    """``linear`` (interpolate between breakpoints) or ``step`` (the points of the highest
    breakpoint reached; below the first one, 0)."""
    judgement_low_below: Decimal = Decimal("0.6")
    """Annual judgement (rules §15): a completion below this is 达不到60% ..."""
    judgement_met_at: Decimal = Decimal("1.0")
    """... and from judgement_low_below up to below this is 60%至99%."""
    reminder_mid_years: int = 1
    demote_low_years: int = 1
    demote_mid_years: int = 2
    reappoint_low_years: int = 2
    reappoint_mid_years: int = 3
    judgement_min_share_of_year: Decimal = Decimal("0.5")
    """A year in which a manager worked less than this share (hired_at) is not judged."""
    work_log_late_hours: int = 48
    """A visit logged (received) more than this after it happened counts as logged late."""
    grade_min_credit_clients: dict[str, int] = field(
        default_factory=lambda: {"A": 41, "B": 31, "C": 21, "D": 11, "E": 0}
    )
    """Grade by credit clients held: the best grade whose minimum is reached."""
    # --- claim-ratio floors (绩效认领比例"不应低于") ---
    claim_floors: dict[str, Decimal] = field(
        default_factory=lambda: {"marketed": Decimal("0.8"), "natural": Decimal("0.5")}
    )
    """By client origin; an origin left out (public_resource: negotiated) has no floor."""
    # --- ingest ---
    max_future_skew: timedelta = timedelta(seconds=300)
    """An event dated further than this ahead of the receiving worker's clock is rejected
    (settings ``CRM_MAX_FUTURE_SKEW``; not a bank rule, so not in the policy file)."""
    # --- balances: standard deposits (标准存款), tiers, alerts (product defaults) ---
    standard_coefficients: dict[str, Decimal] = field(
        default_factory=lambda: {
            "liability": Decimal("1.0"),
            "asset": Decimal("0.5"),
            "fee_income": Decimal("100"),
        }
    )
    """Standard deposits = Σ line average daily balance × coefficient + the window's fee
    income × ``fee_income`` (the bank's annex 1 is missing: product defaults)."""
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

    A ratio set on the client always wins. Unset: business the manager claims after a
    hand-over (``handed_over``: DOMAIN.md "Hand-over", 增量认领) takes the hand-over ratios,
    0.6 for deposits (the liability line) and 0.8 for other business; otherwise
    ``default_claim_ratio`` (1.0), unless the policy turns on the defaults by origin: a client
    recorded as handed over (origin ``handed_over``) the hand-over ratios, natural growth 0.5,
    self-marketed 0.8.
    """
    if client_ratio is not None:
        return client_ratio
    if handed_over or (policy.origin_claim_defaults and origin == "handed_over"):
        if line == "liability":
            return policy.handover_deposit_ratio
        return policy.handover_other_ratio
    if not policy.origin_claim_defaults:
        return policy.default_claim_ratio
    if origin == "natural":
        return policy.claim_natural
    if origin == "public_resource":  # negotiated: its floor if the bank set one, else 1.0
        return policy.claim_floors.get("public_resource", policy.default_claim_ratio)
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
class AccountUnit:
    """One week or month held to a new-account target."""

    start: date
    end: date
    target: Decimal
    actual: int
    today: date | None = None

    @property
    def met(self) -> bool:
        return self.actual >= self.target

    @property
    def status(self) -> str:
        """``met``, ``behind`` (over and short), ``running`` (not over, not met yet) or
        ``pending`` (not started): a unit still running is not judged yet."""
        if self.met:
            return "met"
        if self.today is None or self.end < self.today:
            return "behind"
        return "running" if self.start <= self.today else "pending"

    @property
    def expected_to_date(self) -> Decimal | None:
        """For a running unit: the target pro-rated to the days elapsed (today included)."""
        if self.today is None or not self.start <= self.today <= self.end:
            return None
        days = Decimal((self.end - self.start).days + 1)
        return self.target * Decimal((self.today - self.start).days + 1) / days


@dataclass(frozen=True)
class AccountTarget:
    name: str
    """``corporate_settlement`` or ``basic_settlement``."""
    cadence: str
    """``weekly`` or ``monthly``: the policy rule it comes from."""
    target: Decimal
    """The rule's target over the period (per unit × units, or pro-rated for a day/range)."""
    actual: int
    units: tuple[AccountUnit, ...] = ()
    """The weeks or months judged one by one (empty for a day or a free range)."""

    @property
    def ratio(self) -> Decimal | None:
        return None if self.target == 0 else Decimal(self.actual) / self.target

    @property
    def status(self) -> str:
        """``behind`` if any unit over is short, ``met`` if every unit is met, else
        ``on_track`` (units still running or to come; none over and short)."""
        if not self.units:
            return "met" if self.actual >= self.target else "behind"
        states = [u.status for u in self.units]
        if "behind" in states:
            return "behind"
        return "met" if all(s == "met" for s in states) else "on_track"

    @property
    def met(self) -> bool:
        return self.status == "met"


def months_of(start: date, end: date) -> list[tuple[date, date]]:
    """The calendar months [first, last day] that [start, end] touches."""
    out = []
    cur = start.replace(day=1)
    while cur <= end:
        last = cur.replace(day=calendar.monthrange(cur.year, cur.month)[1])
        out.append((cur, last))
        cur = last + timedelta(days=1)
    return out


def iso_weeks_of(start: date, end: date) -> list[tuple[date, date]]:
    """The ISO weeks (Monday-Sunday) belonging to the months of [start, end]: a week belongs
    to the month holding its Thursday (the ISO rule), so each week is judged in one month
    only, on all its seven days."""
    out = []
    for m0, m1 in months_of(start, end):
        thursday = m0 + timedelta(days=(3 - m0.weekday()) % 7)
        while thursday <= m1:
            monday = thursday - timedelta(days=3)
            out.append((monday, monday + timedelta(days=6)))
            thursday += timedelta(days=7)
    return out


def account_counts_span(period: str | None, start: date, end: date) -> tuple[date, date]:
    """The days whose new accounts a period's targets read (its weeks may reach outside)."""
    if period in ("month", "quarter", "year"):
        weeks = iso_weeks_of(start, end)
        return min(start, weeks[0][0]), max(end, weeks[-1][1])
    return start, end


def branch_account_targets(
    period: str | None,
    start: date,
    end: date,
    daily: Mapping[date, Mapping[str, int]],
    policy: Policy,
    today: date | None = None,
) -> list[AccountTarget]:
    """The branch new-account targets of a period, judged unit by unit (DOMAIN.md "Accounts").

    ``daily``: new accounts by type per bank day (at least over ``account_counts_span``).
    A week is held to ≥ 1 new corporate settlement account; a month to ≥ 4 of them and ≥ 2
    new basic accounts, and every ISO week of the month to ≥ 1; a quarter or a year to the
    same, month by month and week by week. A unit still running (``today`` in it) is not
    judged until it is over (or met). A day or a free date range gets both rules pro-rated by
    days (weekly × days/7, monthly × the share of each month covered), judged on its total.
    """
    corp_types = policy.corporate_settlement_types

    def count(lo: date, hi: date, types: tuple[str, ...]) -> int:
        return sum(
            n
            for day, by_type in daily.items()
            if lo <= day <= hi
            for t, n in by_type.items()
            if t in types
        )

    weekly = Decimal(policy.branch_weekly_corporate_settlement)
    monthly_corp = Decimal(policy.branch_monthly_corporate_settlement)
    monthly_basic = Decimal(policy.branch_monthly_basic_settlement)
    corporate = count(start, end, corp_types)
    basic = count(start, end, ("basic_settlement",))

    def rule(
        name: str,
        cadence: str,
        per: Decimal,
        spans: list[tuple[date, date]],
        types: tuple[str, ...],
    ) -> AccountTarget:
        units = tuple(AccountUnit(a, b, per, count(a, b, types), today) for a, b in spans)
        return AccountTarget(name, cadence, per * len(units), sum(u.actual for u in units), units)

    if period == "week":
        return [rule("corporate_settlement", "weekly", weekly, [(start, end)], corp_types)]
    if period in ("month", "quarter", "year"):
        months = months_of(start, end)
        return [
            rule("corporate_settlement", "weekly", weekly, iso_weeks_of(start, end), corp_types),
            rule("corporate_settlement", "monthly", monthly_corp, months, corp_types),
            rule("basic_settlement", "monthly", monthly_basic, months, ("basic_settlement",)),
        ]
    days = Decimal((end - start).days + 1)
    months_share = _months_fraction(start, end)
    return [
        AccountTarget("corporate_settlement", "weekly", weekly * days / 7, corporate),
        AccountTarget("corporate_settlement", "monthly", monthly_corp * months_share, corporate),
        AccountTarget("basic_settlement", "monthly", monthly_basic * months_share, basic),
    ]


# --- assessment ------------------------------------------------------------------------------
def completion_ratio(actual: Decimal, target: Decimal | None) -> Decimal | None:
    """Actual weighted profit ÷ target; None when there is no (positive) target."""
    if target is None or target <= 0:
        return None
    return actual / target


def performance_points(ratio: Decimal | None, policy: Policy) -> Decimal:
    """Points of the performance part (工作业绩, 70 %) for a completion ratio.

    The bank's conversion table (附表一) when the policy has one: breakpoints (completion,
    points), interpolated linearly between them or taken step-wise, flat beyond the last one.
    Otherwise the product default ``70 × min(ratio, cap)`` (cap 1.0). Never below 0 (a loss
    scores nothing) and never above ``performance_points``, so the 百分制 total stays ≤ 100.
    """
    if ratio is None:
        return Decimal(0)
    top = policy.performance_points
    table = policy.conversion
    if not table:
        return min(top, top * max(Decimal(0), min(ratio, policy.completion_cap)))
    if ratio < table[0][0]:
        points = Decimal(0) if policy.conversion_mode == "step" else table[0][1]
    elif ratio >= table[-1][0]:
        points = table[-1][1]
    else:
        points = table[0][1]
        for (c0, p0), (c1, p1) in itertools.pairwise(table):
            if c0 <= ratio < c1:
                if policy.conversion_mode == "step":
                    points = p0
                else:
                    points = p0 + (p1 - p0) * (ratio - c0) / (c1 - c0)
                break
    return min(top, max(Decimal(0), points))


def grade(credit_clients: int, policy: Policy) -> str:
    """普惠金融 grading by credit clients held: A > 40, B 31-40, C 21-30, D 11-20, E ≤ 10."""
    best = sorted(policy.grade_min_credit_clients.items(), key=lambda kv: -kv[1])
    for name, minimum in best:
        if credit_clients >= minimum:
            return name
    return best[-1][0]


JUDGEMENTS = ("reminder", "demote_one_level", "reappoint_by_performance")
"""The annual judgement's steps (职务聘任, rules §15), weakest first."""


def completion_band(ratio: Decimal | None, policy: Policy) -> str | None:
    """``low`` (达不到60%), ``mid`` (60%至99%), ``met`` or None (the year is not judged)."""
    if ratio is None:
        return None
    if ratio < policy.judgement_low_below:
        return "low"
    if ratio < policy.judgement_met_at:
        return "mid"
    return "met"


def annual_judgement(yearly: list[Decimal | None], policy: Policy) -> str | None:
    """The judgement of the last year in ``yearly`` (settled years, oldest first; None for a
    year that is not judged: no target, or less than half a year worked).

    Rules §15: "达到60%以上的进行提醒,达不到60%的或连续两年在60%至99%间的行内降一级使用,
    连续两年达不到60%或连续三年在60%至99%间的,按实际达到业绩聘任". A run counts the years
    of the same band ending with the judged year; the strongest step that applies is given.
    """
    band = completion_band(yearly[-1], policy) if yearly else None
    if band not in ("low", "mid"):
        return None
    run = 0
    for r in reversed(yearly):
        if completion_band(r, policy) != band:
            break
        run += 1
    steps: tuple[tuple[str, int], ...]
    if band == "low":
        steps = (
            ("reappoint_by_performance", policy.reappoint_low_years),
            ("demote_one_level", policy.demote_low_years),
        )
    else:
        steps = (
            ("reappoint_by_performance", policy.reappoint_mid_years),
            ("demote_one_level", policy.demote_mid_years),
            ("reminder", policy.reminder_mid_years),
        )
    for name, years in steps:
        if run >= years:
            return name
    return None


def claim_floor(origin: str | None, policy: Policy) -> Decimal | None:
    """The lowest claim ratio the policy allows for a client of this origin (None: no floor)."""
    return policy.claim_floors.get(origin) if origin is not None else None
