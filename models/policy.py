"""Bank rules as plain functions over plain data (DOMAIN.md).

Everything here is a default a bank configures through settings; nothing reads the
environment, a broker or a database.
"""

from __future__ import annotations

import calendar
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
