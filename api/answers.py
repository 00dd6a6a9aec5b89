"""What the routes answer, as types: the OpenAPI's response schemas, the examples' shapes
and, for the read cache's answers, what a computed answer is checked against and encoded
with once (api/reads.py).

The shapes are the contract's (CONTRACT.md §3): decimals are strings rounded when shown
(two places for money, four for ratios), dates ISO, times ISO with the bank's offset. A key
the documents leave out when it has nothing to say (a zero count, a target's ``met`` when
there is no target) is left out here too: ``omitted`` fields are not sent when ``None``.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, SerializationInfo

from models.events import AccountType

ItemT = TypeVar("ItemT")


def _is_none(value: Any) -> bool:
    return value is None


class Answer(BaseModel):
    """An answer: its keys are exactly the ones declared (a document with another key is a
    mistake, found when the answer is computed, not by a client)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


Money = Annotated[
    str,
    Field(
        pattern=r"^-?\d+\.\d{2}$",
        description="a decimal as a string, rounded half-up to two places",
        examples=["12345.67"],
    ),
]
Ratio = Annotated[
    str,
    Field(
        pattern=r"^-?\d+\.\d{4}$",
        description="a ratio as a decimal string, rounded half-up to four places",
        examples=["1.1886"],
    ),
]


def _stamp(value: str, info: SerializationInfo) -> str:
    context = info.context
    return context["as_of"] if isinstance(context, dict) and "as_of" in context else value


AsOf = Annotated[
    str,
    PlainSerializer(_stamp, return_type=str),
    Field(
        description="when the figures were read: the request's time, in the bank's time zone",
        examples=["2026-11-22T10:15:00+08:00"],
    ),
]
"""An answer's ``as_of``: a cached answer is encoded with a stand-in (the serialization
context's ``as_of``) that each request replaces with its own time."""


def omitted(description: str) -> Any:
    """A field left out of the answer when it has no value (``None``)."""
    return Field(None, exclude_if=_is_none, description=description)


# --- tallies ---------------------------------------------------------------------------------
class PeriodOut(Answer):
    from_: date = Field(alias="from", description="first day (inclusive)")
    to: date = Field(description="last day (inclusive)")


class LinesOut(Answer):
    """An amount per business line."""

    asset: Money
    liability: Money
    intermediary: Money
    off_balance: Money


class OriginsOut(Answer):
    """Accounts opened by the client's origin (自然 / 自主营销)."""

    natural: int
    marketed: int


class VisitsOut(Answer):
    """Visits in all, and by method and by kind (zero counts left out)."""

    total: int
    on_site: int | None = omitted("visits made on site")
    phone: int | None = omitted("by phone")
    sms: int | None = omitted("by text message")
    online: int | None = omitted("online")
    routine: int | None = omitted("routine visits")
    business: int | None = omitted("business visits")
    post_loan_check: int | None = omitted("post-loan checks")
    surprise: int | None = omitted("surprise visits")


class BalanceOut(Answer):
    """Average daily balances over the period's days (to today for a running period)."""

    liability: Money
    asset: Money


class TargetOut(Answer):
    """A profit target and how far the actual figure has come (``no_target``: none set)."""

    target: Money | None
    actual: Money
    ratio: Ratio | None
    met: bool | None = omitted("actual ≥ target (left out without a target)")
    status: Literal["met", "behind", "no_target"]
    expected_to_date: Money | None = omitted("for a running period: the target pro-rated to today")
    on_track: bool | None = omitted("for a running period: actual ≥ expected_to_date")


class ManagerKey(Answer):
    manager_id: str


class BranchKey(Answer):
    branch_id: str


class TallyFigures(Answer):
    """The tally object of the contract (§3), without its owner."""

    period: PeriodOut
    transactions: int
    volume: LinesOut
    simulated_profit: LinesOut
    weighted_profit: Money = Field(
        description="Σ simulated profit × line coefficient × claim ratio, exact, rounded once"
    )
    accounts_opened: dict[AccountType, int] = Field(
        description="new accounts by type (zero counts left out)"
    )
    accounts_by_origin: OriginsOut
    visits: VisitsOut
    as_of: AsOf


class LeaderTallyOut(TallyFigures, ManagerKey):
    """A ranked manager's tally."""

    average_balance: BalanceOut


class TallyOut(TallyFigures, ManagerKey):
    """A manager's tally for a period or range, with the profit target."""

    branch_id: str
    average_balance: BalanceOut
    target: TargetOut


class AccountUnitOut(Answer):
    """One week or month of an account target."""

    from_: date = Field(alias="from")
    to: date
    target: Money
    actual: int
    met: bool
    status: Literal["met", "behind", "running", "pending"]
    expected_to_date: Money | None = omitted("for a running unit: the target pro-rated")


class AccountTargetOut(Answer):
    """A branch's account target rule over the period, unit by unit."""

    name: str = Field(examples=["corporate_settlement"])
    cadence: Literal["weekly", "monthly"]
    target: Money
    actual: int
    ratio: Ratio | None
    met: bool
    status: Literal["met", "behind", "on_track"]
    units: list[AccountUnitOut]


class BranchTallyOut(TallyFigures, BranchKey):
    """A branch's tally: exact sums over its events, account targets and profit target."""

    average_balance: BalanceOut
    account_targets: list[AccountTargetOut]
    account_targets_met: bool
    account_targets_status: Literal["met", "behind", "on_track"]
    target: TargetOut
    managers: int = Field(description="how many managers the branch has")


# --- leaderboards ----------------------------------------------------------------------------
class LeaderOut(Answer):
    rank: int = Field(description="position, from 1")
    manager_id: str
    name: str | None
    branch_id: str
    value: Money | int = Field(description="the metric: money as a string, counts as integers")
    tally: LeaderTallyOut


class LeaderboardOut(Answer):
    """Managers ranked on a metric, highest first, ties by manager_id (a page of them)."""

    metric: str
    period: PeriodOut
    items: list[LeaderOut]
    next_cursor: str | None
    total: int


class BranchLeaderboardOut(LeaderboardOut, BranchKey):
    """A branch's managers ranked on a metric."""


# --- lists -----------------------------------------------------------------------------------
class Page(Answer, Generic[ItemT]):
    """A page of a list: the items, the cursor of the next page (null: the last page) and how
    many items the whole list has."""

    items: list[ItemT]
    next_cursor: str | None
    total: int


Timestamp = Annotated[
    str,
    Field(
        description="a time, ISO 8601 with the bank's offset",
        examples=["2026-11-22T10:15:00+08:00"],
    ),
]


# --- clients, reminders, overdue -------------------------------------------------------------
class ReminderOut(Answer):
    """A reminder: the ``reminder.*`` payload fields and its history (overdue days counted
    when read; a resolved reminder's stop at its resolution)."""

    reminder_id: int
    client_id: str
    manager_id: str
    supervisor_id: str | None
    branch_id: str | None
    kind: str
    due_at: Timestamp
    overdue_days: int
    status: str
    fired_at: Timestamp
    escalated_at: Timestamp | None
    acked_at: Timestamp | None
    acked_by: str | None
    snoozed_until: Timestamp | None
    resolved_at: Timestamp | None


class ClientManagerOut(Answer):
    manager_id: str
    name: str | None
    branch_id: str | None
    supervisor_id: str | None


class OverdueDaysOut(Answer):
    """Days past due (null: not due, or no such check for this client)."""

    visit: int | None
    post_loan_check: int | None


class ClientOut(Answer):
    """A client, its manager, last visits, next due dates and open reminders."""

    client_id: str
    name: str | None
    segment: str | None
    tier: str | None
    credit_client: bool
    branch_id: str | None
    visit_interval_days: int | None = Field(description="the interval in force")
    visit_interval_override: int | None = Field(description="the client's own, if set")
    post_loan_interval_days: int | None = Field(description="credit clients only")
    assigned_at: Timestamp
    manager: ClientManagerOut
    last_visit_at: Timestamp | None
    last_post_loan_check_at: Timestamp | None
    next_visit_due: Timestamp | None
    next_post_loan_due: Timestamp | None
    overdue_days: OverdueDaysOut
    open_reminders: list[ReminderOut]


class OverdueOut(Answer):
    """A client overdue for a visit or a post-loan check."""

    client_id: str
    manager_id: str
    branch_id: str | None
    supervisor_id: str | None
    kind: Literal["visit", "post_loan_check"]
    due_at: Timestamp
    overdue_days: int


# --- assessment ------------------------------------------------------------------------------
class AssessPeriodOut(PeriodOut):
    label: str = Field(description="the key evaluations are stored under", examples=["2026-Q4"])


class DerivedSignalOut(Answer):
    """The evaluation points the post-loan discipline gives (used when none were entered)."""

    what: str
    as_of: Timestamp
    credit_clients: int
    not_overdue: int
    share: Ratio | None
    points: Money


class WorkLogOut(Answer):
    """How promptly the manager's visits were logged."""

    what: str
    limit_hours: int
    visits: int
    late: int
    on_time_share: Ratio | None


class EvaluationOut(Answer):
    """A version of the comprehensive evaluation entered for a period."""

    period: str
    version: int
    points: Money
    parts: dict[str, str] | None
    reasons: str
    entered_by: str
    entered_at: Timestamp


class EnteredEvaluationOut(EvaluationOut):
    source: Literal["supervisor"]
    derived_signal: DerivedSignalOut
    work_log: WorkLogOut


class DerivedEvaluationOut(Answer):
    source: Literal["derived"]
    points: Money
    derived_signal: DerivedSignalOut
    work_log: WorkLogOut


class ElapsedOut(PeriodOut):
    """The period's days so far."""


class PaceOut(Answer):
    """For a period not settled: where the target pro-rated to today stands."""

    elapsed: ElapsedOut | None
    expected_to_date: Money | None
    ratio: Ratio | None
    on_pace: bool | None


class AnnualOut(Answer):
    """A settled year's completion and the judgement of the years up to it."""

    year: int
    target: Money | None
    actual: Money
    completion_ratio: Ratio | None
    judgement: str | None
    not_judged: str | None


class AssessmentFigures(Answer):
    period: AssessPeriodOut
    settled: bool
    hired_at: date | None
    target: Money | None
    weighted_profit: Money
    completion_ratio: Ratio | None
    completion_cap: str = Field(description="the policy's cap on the completion ratio")
    performance_points: Money
    evaluation_points: Money
    evaluation: EnteredEvaluationOut | DerivedEvaluationOut = Field(discriminator="source")
    total_score: Money
    pace: PaceOut | None
    credit_clients: int
    grade: str
    flags: list[str]
    annual_completion: list[AnnualOut]
    as_of: Timestamp


class AssessmentOut(AssessmentFigures, ManagerKey):
    """A manager's assessment (考核): completion, points, total score, grade and flags."""

    branch_id: str


class EvaluationsOut(Page[EvaluationOut], ManagerKey):
    """Every version of the evaluation entered for the period, newest first."""


class AssessedKey(ManagerKey):
    name: str | None
    active: bool


class AssessedManagerOut(AssessmentFigures, AssessedKey):
    """A manager's row of the assessment table."""


class BranchPeriodKey(BranchKey):
    period: PeriodOut


class BranchAssessmentOut(Page[AssessedManagerOut], BranchPeriodKey):
    """The assessment table (考核表) of a branch."""


class EnteredOut(EvaluationOut, ManagerKey):
    """The evaluation version just entered."""


# --- audit, calendar feed --------------------------------------------------------------------
class AuditEntryOut(Answer):
    """Who did what, when, from where (newest first)."""

    id: int
    at: Timestamp
    actor: str
    role: str
    action: str
    subject: str | None
    detail: dict[str, Any] | None
    remote_addr: str | None


class FeedTokenOut(ManagerKey):
    """A new calendar feed token: shown once, kept only as a hash."""

    token: str
    url: str = Field(description="the feed to subscribe to (.ics)")


class FeedTokensRevokedOut(ManagerKey):
    revoked: int = Field(description="how many tokens were revoked")


# --- events ----------------------------------------------------------------------------------
class RejectedOut(Answer):
    """A dead-lettered (``rejected``) or ``held`` event: why, and the raw message."""

    id: int
    topic: str
    partition: int
    offset: int
    key: str | None
    status: Literal["rejected", "held", "released"]
    reason: str
    event_id: str | None
    event_type: str | None
    raw: str | None = Field(description="the message as text (null: not UTF-8)")
    raw_base64: str | None = Field(description="the message's bytes, base64")
    received_at: Timestamp
    released_at: Timestamp | None


# --- client book, coverage ---------------------------------------------------------------------
class BookClientOut(Answer):
    """A client of the book: tier, credit, claim ratio, last visits, next due dates, days
    overdue and this month's weighted profit."""

    client_id: str
    name: str | None
    segment: str | None
    tier: str | None
    credit_client: bool
    bad_credit: bool | None
    origin: str | None
    claim_ratio: Ratio | None = Field(
        description="the ratio applied (the origin's default if unset)"
    )
    claim_ratio_set: bool = Field(description="whether the client record sent a ratio")
    branch_id: str | None
    assigned_at: Timestamp | None
    visit_interval_days: int | None = Field(description="the interval in force")
    last_visit_at: Timestamp | None
    last_post_loan_check_at: Timestamp | None
    next_visit_due: Timestamp | None
    next_post_loan_due: Timestamp | None
    overdue_days: OverdueDaysOut
    overdue_days_max: int | None = Field(description="the larger of the two (null: neither)")
    weighted_profit_month: Money
    month: PeriodOut


class UnassignedClientOut(BookClientOut):
    """A client of a departed (inactive) manager, waiting to be reassigned."""

    manager_id: str
    manager_name: str | None


class CoverageOverdueOut(Answer):
    """Clients overdue now, by kind."""

    visit: int
    post_loan_check: int


class CoverageFigures(Answer):
    """Visit coverage (走访覆盖率) now, and visits over the period."""

    clients: int
    covered: int = Field(description="clients not overdue for a visit")
    coverage: Ratio | None = Field(description="covered / clients (null: no clients)")
    never_visited: int
    overdue: CoverageOverdueOut
    credit_clients: int
    visits: int = Field(description="visits over the period")
    visits_per_client: Money | None


class ManagerCoverageKey(ManagerKey):
    branch_id: str | None
    period: PeriodOut
    as_of: AsOf


class ManagerCoverageOut(CoverageFigures, ManagerCoverageKey):
    """A manager's visit coverage."""


class CoveredManagerOut(CoverageFigures, AssessedKey):
    """A manager's row of the branch's coverage."""


class BranchCoverageKey(BranchKey):
    period: PeriodOut
    as_of: AsOf


class BranchCoverageOut(CoverageFigures, BranchCoverageKey):
    """A branch's visit coverage (its managers' clients) and each manager's."""

    managers: list[CoveredManagerOut]


# --- plan, visits ------------------------------------------------------------------------------
class PlanItemOut(Answer):
    """A visit or post-loan check overdue or coming due."""

    client_id: str
    name: str | None
    tier: str | None
    credit_client: bool
    kind: Literal["visit", "post_loan_check"]
    due_at: Timestamp
    due_date: date = Field(description="the due instant's day, bank time")
    status: Literal["overdue", "due"]
    overdue_days: int | None = Field(description="overdue: days past due")
    days_left: int | None = Field(description="due: days until the due day")


class VisitOut(Answer):
    """A visit of the ledger (拜访记录): its notes where the caller may read them."""

    event_id: str
    occurred_at: Timestamp
    client_id: str
    manager_id: str
    method: str
    kind: str
    duration_minutes: int | None
    notes: str | None
    notes_withheld: bool = Field(description="notes exist but the caller may not read them")


# --- series ------------------------------------------------------------------------------------
class SeriesPointOut(Answer):
    """A day or month of the series."""

    from_: date = Field(alias="from")
    to: date
    value: Money | int = Field(description="money as a string, counts as integers")
    cumulative: Money | int = Field(description="the running total to this point")
    target_to_date: Money | None = Field(description="the profit target pro-rated to `to`")


class SeriesFigures(Answer):
    metric: str
    step: Literal["day", "month"]
    period: PeriodOut
    target: Money | None = Field(description="the period's profit target (null: none set)")
    points: list[SeriesPointOut]


class ManagerSeriesOut(SeriesFigures, ManagerKey):
    """A manager's metric per day or month (the burn-up)."""


class BranchSeriesOut(SeriesFigures, BranchKey):
    """A branch's metric per day or month, its managers' targets summed."""


# --- balances, tier review -----------------------------------------------------------------------
class BalanceAccountOut(Answer):
    """An account's newest end-of-day balance."""

    account_id: str
    business_line: str
    as_of_date: date
    balance: Money


class ClientBalancesOut(Answer):
    """A client's average daily balance (日均) per line over the period, and its accounts."""

    client_id: str
    period: PeriodOut
    days: int = Field(description="the days averaged over")
    average_balance: BalanceOut
    accounts: list[BalanceAccountOut]


class TierReviewItemOut(Answer):
    """A client whose sent tier differs from the one its standard deposits give."""

    client_id: str
    name: str | None
    manager_id: str | None
    branch_id: str | None
    tier: str | None = Field(description="the tier sent")
    computed_tier: str
    standard_deposits: Money
    average_deposits: Money
    average_loans: Money
    relationship_days: int | None
    bad_credit: bool
    window: PeriodOut


class TierReviewOut(Answer):
    """A page of the tier review (no ``total``: it would compute every client)."""

    items: list[TierReviewItemOut]
    next_cursor: str | None


# --- data quality, deliveries ----------------------------------------------------------------------
class QualityItemOut(Answer):
    """A data-quality exception: the rule a client breaks."""

    rule: Literal["claim_ratio_floor"]
    client_id: str
    manager_id: str | None
    branch_id: str | None
    origin: str
    claim_ratio: str = Field(description="the ratio as sent", examples=["0.3"])
    floor: str = Field(description="the origin's floor", examples=["0.5"])
    detail: str
    since: Timestamp


class DeliveryOut(Answer):
    """A reminder event's delivery to a target: attempts, last error, status."""

    id: int
    event_id: str
    event_type: str
    reminder_id: int | None
    target: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_error: str | None
    next_attempt_at: Timestamp | None = Field(description="pending only")
    delivered_at: Timestamp | None
    created_at: Timestamp | None


# --- ops, health ---------------------------------------------------------------------------------
Seconds = float | int


class LagPartitionOut(Answer):
    """A consumer group's lag on a topic partition, with its Burrow-style status."""

    group: str
    topic: str
    partition: int
    committed_offset: int | None
    end_offset: int | None
    lag: int
    time_lag_seconds: Seconds | None
    rate_per_second: Seconds | None
    consumer_alive: bool | None
    status: str
    observed_at: Timestamp
    observations: int


class LagGroupOut(Answer):
    group: str
    status: str = Field(description="the worst of its partitions'")
    lag: int
    max_time_lag_seconds: Seconds
    partitions: int


class LagKey(Answer):
    status: str = Field(description="the worst of the groups'")
    groups: list[LagGroupOut]
    window_seconds: Seconds
    sampled_at: Timestamp | None
    source: str
    error: str | None


class LagOut(Page[LagPartitionOut], LagKey):
    """Consumer lag per group, topic and partition (a page of partitions)."""


class AliveOut(Answer):
    status: Literal["ok"]


class ReadyChecksOut(Answer):
    database: str
    broker: str | None = omitted("the broker (the pipeline's readiness)")
    worker: str | None = omitted("the workers' liveness and lag (the pipeline's readiness)")


class ReadyOut(Answer):
    """Ready (200) or not (503), and what each check found."""

    status: Literal["ready", "not ready"]
    checks: ReadyChecksOut
