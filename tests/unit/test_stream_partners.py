"""The live stream's hand-over expansion (models/stream.py): a ``tally`` row of one side of a
hand-over names the other side on the days the split runs, and only on those."""

from __future__ import annotations

from datetime import date

from models.stream import Partner, partner_changes

# client handed a → b on 1 July, b → c on 1 September (a's days end with b's)
PARTNERS = {
    "a": [Partner("b", "b2", date(2026, 7, 1), date(2026, 8, 31))],
    "b": [
        Partner("a", "b1", date(2026, 7, 1), date(2026, 8, 31)),
        Partner("c", "b3", date(2026, 9, 1), None),
    ],
    "c": [Partner("b", "b2", date(2026, 9, 1), None)],
}


def row(manager: str, *days: str) -> dict[str, object]:
    return {"manager_id": manager, "branch_id": "x", "days": list(days), "at": "T"}


def test_the_other_side_is_named_on_the_split_days_only() -> None:
    got = partner_changes(
        row("b", "2026-06-30", "2026-07-01", "2026-08-31", "2026-09-01"), PARTNERS
    )
    assert got == [
        {"manager_id": "a", "branch_id": "b1", "days": ["2026-07-01", "2026-08-31"], "at": "T"},
        {"manager_id": "c", "branch_id": "b3", "days": ["2026-09-01"], "at": "T"},
    ]
    assert partner_changes(row("a", "2026-06-30"), PARTNERS) == []  # before the hand-over
    assert partner_changes(row("c", "2027-01-05"), PARTNERS)[0]["manager_id"] == "b"


def test_a_manager_without_hand_overs_names_nobody() -> None:
    assert partner_changes(row("z", "2026-07-01"), PARTNERS) == []
    assert partner_changes({"days": ["2026-07-01"]}, PARTNERS) == []
