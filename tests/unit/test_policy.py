"""Bank rules: time-zone bucketing, periods, weighted profit, rounding."""

import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- the policy file ------------------------------------------------------------------------
def test_shipped_policy_file_holds_the_domain_defaults() -> None:
    from models.policy_file import load_policy

    assert load_policy() == Policy()


def test_bank_file_and_overrides_layer_over_the_defaults(tmp_path: Path) -> None:
    from models.policy_file import load_policy

    f = tmp_path / "bank.toml"
    f.write_text(
        'timezone = "Asia/Hong_Kong"\n[coefficients]\nintermediary = "2.5"\n'
        "[visits.interval_days]\ndiamond = 20\n"
    )
    p = load_policy(f, {"visits": {"escalation_grace_days": 3}})
    assert p.timezone == "Asia/Hong_Kong"
    assert p.coefficients["intermediary"] == Decimal("2.5")
    assert p.coefficients["asset"] == Decimal("0.9")  # untouched keys keep the defaults
    assert p.visit_interval_days["diamond"] == 20 and p.visit_interval_days["gold"] == 60
    assert p.escalation_grace_days == 3


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('timezone = "Mars/Base"', "timezone"),
        ('[coefficients]\nasset = "-1"', "coefficients.asset"),
        ('[claim_ratio]\nnatural = "1.5"', "claim_ratio.natural"),
        ("[visits.interval_days]\ndiamond = 0", "visits.interval_days"),
        ('[targets]\ncorporate_settlement_types = ["vault"]', "targets.corporate_settlement_types"),
        ("[visits]\ntypo_days = 3", "visits.typo_days"),
        ('[assessment]\nconversion = [["1.0", "70"], ["0.6", "36"]]', "assessment.conversion"),
        ('[assessment]\nconversion = [["1.0", "80"]]', "assessment"),
        ('[assessment.judgement]\nlow_below = "0"', "assessment.judgement.low_below"),
        ('[assessment.judgement]\nmet_at = "0.5"', "assessment.judgement.met_at"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_a_bad_policy_file_is_refused_naming_the_key(tmp_path: Path, text: str, names: str) -> None:
    from models.policy_file import PolicyError, load_policy

    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(PolicyError, match=re.escape(names)):
        load_policy(f)


def test_settings_pass_the_policy_to_child_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from config import Settings

    f = tmp_path / "bank.toml"
    f.write_text('[assessment]\ncompletion_cap = "1.5"\n')
    s = Settings(policy_file=f, coefficient_asset=Decimal("0.7"), data_dir=tmp_path)
    for k, v in s.child_env().items():
        monkeypatch.setenv(k, v)
    child = Settings()
    assert child.policy == s.policy
    assert child.policy.completion_cap == Decimal("1.5")
    assert child.policy.coefficients["asset"] == Decimal("0.7")


def test_claim_ratio_defaults_by_origin_and_hand_over() -> None:
    from models.policy import claim_ratio

    off = Policy()
    on = Policy(origin_claim_defaults=True)
    assert claim_ratio(None, "natural", False, "asset", off) == Decimal("1.0")
    assert claim_ratio(Decimal("0.3"), "natural", True, "asset", on) == Decimal("0.3")
    assert claim_ratio(None, None, False, "asset", on) == Decimal("0.8")
    assert claim_ratio(None, "natural", False, "asset", on) == Decimal("0.5")
    assert claim_ratio(None, "natural", True, "liability", on) == Decimal("0.6")
    assert claim_ratio(None, "marketed", True, "intermediary", on) == Decimal("0.8")
    assert claim_ratio(None, "handed_over", False, "liability", on) == Decimal("0.6")


def test_targets_prorate_by_days() -> None:
    from datetime import date

    from models.policy import branch_account_targets, prorated_annual_target

    assert prorated_annual_target(Decimal("365"), date(2026, 11, 1), date(2026, 11, 30)) == 30
    assert prorated_annual_target(Decimal("1000"), date(2026, 1, 1), date(2026, 12, 31)) == 1000
    # a range over two years takes each year's share by its own length (2028 is leap)
    both = prorated_annual_target(Decimal("366"), date(2027, 12, 31), date(2028, 1, 1))
    assert both == Decimal("366") / 365 + 1
    p = Policy()
    q = branch_account_targets("quarter", date(2026, 10, 1), date(2026, 12, 31), {}, p)
    # Q4 2026 holds 14 ISO weeks by their Thursdays (Oct 1-29: 5, Nov 5-26: 4, Dec 3-31: 5)
    assert [(t.name, t.cadence, t.target) for t in q] == [
        ("corporate_settlement", "weekly", 14),
        ("corporate_settlement", "monthly", 12),
        ("basic_settlement", "monthly", 6),
    ]
    day = branch_account_targets(
        "day", date(2026, 11, 3), date(2026, 11, 3), {date(2026, 11, 3): {"special": 1}}, p
    )
    assert [(t.cadence, t.actual, t.met) for t in day] == [
        ("weekly", 1, True),
        ("monthly", 1, True),
        ("monthly", 0, False),
    ]


def test_a_month_with_a_week_lacking_an_account_is_behind() -> None:
    """November 2026, judged when it is over, by hand:

    Its ISO weeks are those whose Thursday falls in November: 2-8, 9-15, 16-22, 23-29 (the
    week of Oct 26-Nov 1 has its Thursday on Oct 29, the one of Nov 30-Dec 6 on Dec 3).
    Accounts: 2 general on Nov 3, 1 basic on Nov 10, 2 basic on Nov 25, none in 16-22.
    Monthly: corporate 5 ≥ 4 met, basic 3 ≥ 2 met; weekly: 16-22 has 0 < 1 → behind, so
    the month is behind although its totals are met. Then the running month: on Nov 18 the
    week 16-22 is still running (not judged yet) and the monthly rules are not over: no
    unit over and short → on_track; by Nov 23 that week is over and short → behind.
    """
    from datetime import date

    from models.policy import branch_account_targets, iso_weeks_of

    p = Policy()
    nov = (date(2026, 11, 1), date(2026, 11, 30))
    assert iso_weeks_of(*nov) == [
        (date(2026, 11, 2), date(2026, 11, 8)),
        (date(2026, 11, 9), date(2026, 11, 15)),
        (date(2026, 11, 16), date(2026, 11, 22)),
        (date(2026, 11, 23), date(2026, 11, 29)),
    ]
    daily = {
        date(2026, 11, 3): {"general_settlement": 2},
        date(2026, 11, 10): {"basic_settlement": 1},
        date(2026, 11, 25): {"basic_settlement": 2},
    }
    over = branch_account_targets("month", *nov, daily, p, today=date(2026, 12, 3))
    weekly, corp, basic = over
    assert [u.actual for u in weekly.units] == [2, 1, 0, 2]
    assert [u.status for u in weekly.units] == ["met", "met", "behind", "met"]
    assert weekly.status == "behind" and not weekly.met
    assert (corp.actual, corp.met) == (5, True)
    assert (basic.actual, basic.met) == (3, True)
    early = {d: n for d, n in daily.items() if d <= date(2026, 11, 18)}
    running = branch_account_targets("month", *nov, early, p, today=date(2026, 11, 18))
    assert [u.status for u in running[0].units] == ["met", "met", "running", "pending"]
    assert [t.status for t in running] == ["on_track", "on_track", "on_track"]
    # the running month: 4 × 18/30 = 2.4 expected to date, shown, not judged
    assert running[1].units[0].expected_to_date == Decimal("2.4")
    later = branch_account_targets("month", *nov, early, p, today=date(2026, 11, 23))
    assert later[0].status == "behind"


def test_grades_and_points() -> None:
    from models.policy import grade, performance_points

    p = Policy()
    assert [grade(n, p) for n in (41, 40, 31, 30, 21, 20, 11, 10, 0)] == list("ABBCCDDEE")
    # 百分制: 70 × min(ratio, 1.0), never below 0
    assert performance_points(Decimal("2"), p) == Decimal("70")
    assert performance_points(Decimal("0.55"), p) == Decimal("38.50")
    assert performance_points(Decimal("-0.5"), p) == 0
    # a conversion table (附表一) as breakpoints: linear between them, flat outside
    table = ((Decimal("0.6"), Decimal("36")), (Decimal("1.0"), Decimal("70")))
    lin = Policy(conversion=table)
    assert performance_points(Decimal("0.8"), lin) == Decimal("53")  # 36 + 34 × 0.2/0.4
    assert performance_points(Decimal("0.3"), lin) == Decimal("36")
    assert performance_points(Decimal("1.5"), lin) == Decimal("70")
    step = Policy(conversion=table, conversion_mode="step")
    assert performance_points(Decimal("0.8"), step) == Decimal("36")
    assert performance_points(Decimal("0.59"), step) == 0


def test_annual_judgement_takes_the_strongest_step() -> None:
    """Rules §15 on settled years (oldest first, the judged year last), by hand:
    60-99 % once → reminder; below 60 % once → demote; 60-99 % twice → demote;
    below 60 % twice → reappoint; 60-99 % three times → reappoint; a met or unjudged
    year (None) breaks a run; a run counts years of the same band."""
    from models.policy import annual_judgement

    p = Policy()
    d = Decimal
    assert annual_judgement([None, None, d("0.6")], p) == "reminder"
    assert annual_judgement([None, d("1.0"), d("0.99")], p) == "reminder"
    assert annual_judgement([None, None, d("0.59")], p) == "demote_one_level"
    assert annual_judgement([None, d("0.7"), d("0.8")], p) == "demote_one_level"
    assert annual_judgement([d("0.5"), d("0.7"), d("0.8")], p) == "demote_one_level"
    assert annual_judgement([None, d("0.5"), d("0.59")], p) == "reappoint_by_performance"
    assert annual_judgement([d("0.6"), d("0.99"), d("0.8")], p) == "reappoint_by_performance"
    assert annual_judgement([d("0.6"), d("1.0"), d("0.8")], p) == "reminder"
    assert annual_judgement([d("0.5"), None, d("0.5")], p) == "demote_one_level"
    assert annual_judgement([d("0.5"), d("0.5"), d("1.2")], p) is None
    assert annual_judgement([d("0.5"), d("0.5"), None], p) is None


@settings(max_examples=300, deadline=None)
@given(
    ratio=st.decimals(min_value=-1000, max_value=1000, allow_nan=False, places=6),
    evaluation=st.decimals(min_value=0, max_value=30, allow_nan=False, places=2),
    breaks=st.lists(
        st.tuples(
            st.decimals(min_value=0, max_value=3, allow_nan=False, places=2),
            st.decimals(min_value=0, max_value=70, allow_nan=False, places=2),
        ),
        max_size=5,
    ),
    mode=st.sampled_from(["linear", "step"]),
)
def test_the_score_never_exceeds_100(
    ratio: Decimal, evaluation: Decimal, breaks: list[tuple[Decimal, Decimal]], mode: str
) -> None:
    """百分制: performance (≤ 70) + evaluation (≤ 30) ≤ 100 for any completion, with the
    default conversion and with any valid table (breakpoints by increasing completion)."""
    from models.policy import performance_points

    table = tuple(sorted(dict(breaks).items()))
    for p in (Policy(), Policy(conversion=table, conversion_mode=mode)):
        points = performance_points(ratio, p)
        assert 0 <= points <= 70
        assert points + evaluation <= 100
