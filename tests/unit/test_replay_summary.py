"""``crm-tracker replay``'s summary line names what it rebuilt, balances included."""

from __future__ import annotations

from datetime import date

from crmtracker.cli import replay_summary
from streams.replay import ReplayResult


def test_the_summary_names_the_balance_changes_rebuilt() -> None:
    r = ReplayResult(events=120, corrected=3, manager_days=40, branch_days=10, balance_changes=57)
    assert replay_summary(r) == (
        "replayed 120 events: 3 re-credited, 40 manager-days, 10 branch-days and "
        "57 balance day-changes rebuilt"
    )


def test_the_summary_with_a_start_date_and_skipped_facts() -> None:
    r = ReplayResult(events=5, corrected=0, manager_days=2, branch_days=1, skipped=1)
    assert replay_summary(r, date(2026, 11, 1)) == (
        "replayed 5 events from 2026-11-01: 0 re-credited, 2 manager-days, 1 branch-days and "
        "0 balance day-changes rebuilt, 1 left as they were (manager unknown)"
    )
