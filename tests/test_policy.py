"""Bank rules: time-zone bucketing, periods, weighted profit, rounding."""

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from models.policy import Policy, bank_day, money, period_range, weighted_profit

SH = ZoneInfo("Asia/Shanghai")


def test_utc_evening_of_october_31_is_a_november_event_in_shanghai() -> None:
    at = datetime.fromisoformat("2026-10-31T17:30:00+00:00")
    assert bank_day(at, SH) == date(2026, 11, 1)
    assert bank_day(at, ZoneInfo("UTC")) == date(2026, 10, 31)


def test_offsets_other_than_the_bank_zone_are_converted() -> None:
    assert bank_day(datetime.fromisoformat("2026-11-30T23:59:59-05:00"), SH) == date(2026, 12, 1)
    assert bank_day(datetime.fromisoformat("2026-12-01T00:00:00+08:00"), SH) == date(2026, 12, 1)
    assert bank_day(datetime.fromisoformat("2026-11-30T15:59:59Z"), SH) == date(2026, 11, 30)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError):
        bank_day(datetime(2026, 11, 1, 12, 0), SH)


@pytest.mark.parametrize(
    ("period", "at", "expected"),
    [
        ("day", date(2026, 11, 20), (date(2026, 11, 20), date(2026, 11, 20))),
        ("week", date(2026, 11, 20), (date(2026, 11, 16), date(2026, 11, 22))),  # ISO: Mon-Sun
        ("week", date(2026, 1, 1), (date(2025, 12, 29), date(2026, 1, 4))),
        ("month", date(2026, 2, 10), (date(2026, 2, 1), date(2026, 2, 28))),
        ("month", date(2028, 2, 10), (date(2028, 2, 1), date(2028, 2, 29))),
        ("quarter", date(2026, 11, 20), (date(2026, 10, 1), date(2026, 12, 31))),
        ("quarter", date(2026, 2, 1), (date(2026, 1, 1), date(2026, 3, 31))),
        ("year", date(2026, 7, 4), (date(2026, 1, 1), date(2026, 12, 31))),
    ],
)
def test_period_ranges(period: str, at: date, expected: tuple[date, date]) -> None:
    assert period_range(period, at) == expected


def test_unknown_period_is_an_error() -> None:
    with pytest.raises(ValueError):
        period_range("decade", date(2026, 1, 1))


@pytest.mark.parametrize(
    ("line", "ratio", "expected"),
    [
        ("asset", None, Decimal("90.00")),
        ("liability", Decimal("0.8"), Decimal("80.00")),
        ("intermediary", Decimal("0.5"), Decimal("100.00")),
        ("off_balance", Decimal("0.6"), Decimal("90.00")),
    ],
)
def test_weighted_profit_uses_line_coefficient_and_claim_ratio(
    line: str, ratio: Decimal | None, expected: Decimal
) -> None:
    assert weighted_profit(Decimal("100.00"), line, ratio, Policy()) == expected


def test_weighted_profit_is_exact_and_rounded_once_when_shown() -> None:
    policy = Policy()
    parts = [weighted_profit(Decimal("0.01"), "asset", Decimal("0.5"), policy)] * 3
    assert sum(parts) == Decimal("0.0135")  # never rounded per event
    assert money(sum(parts)) == "0.01"
    assert money(Decimal("0.005")) == "0.01"  # half-up, not banker's rounding
    assert money(Decimal("-0.005")) == "-0.01"
    assert money(Decimal("2.675")) == "2.68"


def test_configured_coefficients_and_default_ratio_are_used() -> None:
    policy = Policy(
        coefficients={
            "asset": Decimal("1.1"),
            "liability": Decimal("1"),
            "intermediary": Decimal("3"),
            "off_balance": Decimal("1"),
        },
        default_claim_ratio=Decimal("0.8"),
    )
    assert weighted_profit(Decimal("10"), "intermediary", None, policy) == Decimal("24.0")
