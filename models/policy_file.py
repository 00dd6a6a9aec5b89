"""The policy file: the bank's rules as validated data (TOML), turned into a ``Policy``.

Layers, each overriding the one before: the defaults shipped in ``models/policy.toml``
(DOMAIN.md), the bank's own file, then overrides given by the caller (the settings object
passes ``CRM_POLICY_OVERRIDES`` and the single ``CRM_`` policy variables). A bad value stops
the program at start with a message naming the key; nothing here reads the environment.
"""

from __future__ import annotations

import itertools
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from models.policy import ACCOUNT_TYPES, TIERS, Policy

DEFAULTS = Path(__file__).with_name("policy.toml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Coefficients(_Section):
    asset: Decimal = Field(ge=0)
    liability: Decimal = Field(ge=0)
    intermediary: Decimal = Field(ge=0)
    off_balance: Decimal = Field(ge=0)


class ClaimRatios(_Section):
    default: Decimal = Field(ge=0, le=1)
    origin_defaults: bool
    marketed: Decimal = Field(ge=0, le=1)
    natural: Decimal = Field(ge=0, le=1)
    public_resource: Decimal | None = Field(None, ge=0, le=1)
    """公共资源户: negotiated, no floor unless the bank sets one."""

    def floors(self) -> dict[str, Decimal]:
        """The claim-ratio floors by origin ("不应低于"): marketed and natural always."""
        out = {"marketed": self.marketed, "natural": self.natural}
        if self.public_resource is not None:
            out["public_resource"] = self.public_resource
        return out


class Handover(_Section):
    """他人移交的客户 (DOMAIN.md "Hand-over"): 增量认领, or a full transfer."""

    mode: Literal["increment", "full"]
    deposit_ratio: Decimal = Field(ge=0, le=1)
    other_ratio: Decimal = Field(ge=0, le=1)


class Visits(_Section):
    interval_days: dict[Literal["diamond", "platinum", "gold", "silver", "bronze"], int]
    default_interval_days: int = Field(ge=1, le=3660)
    post_loan_interval_days: int = Field(ge=1, le=3660)
    escalation_grace_days: int = Field(ge=0, le=366)
    max_snooze_days: int = Field(ge=0, le=366)
    heads_up_enabled: bool
    heads_up_days: int = Field(ge=1, le=366)

    @field_validator("interval_days")
    @classmethod
    def _every_tier(cls, v: dict[str, int]) -> dict[str, int]:
        missing = [t for t in TIERS if t not in v]
        if missing:
            raise ValueError(f"missing tiers: {', '.join(missing)}")
        bad = [t for t, days in v.items() if not 1 <= days <= 3660]
        if bad:
            raise ValueError(f"interval days must be 1-3660 (tiers {', '.join(bad)})")
        return v


class Targets(_Section):
    weekly_corporate_settlement: int = Field(ge=0)
    monthly_corporate_settlement: int = Field(ge=0)
    monthly_basic_settlement: int = Field(ge=0)
    corporate_settlement_types: list[str]

    @field_validator("corporate_settlement_types")
    @classmethod
    def _known_types(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in ACCOUNT_TYPES]
        if unknown:
            raise ValueError(f"unknown account types: {', '.join(unknown)}")
        return v


class Judgement(_Section):
    low_below: Decimal = Field(gt=0)
    met_at: Decimal = Field(gt=0)
    reminder_mid_years: int = Field(ge=1, le=20)
    demote_low_years: int = Field(ge=1, le=20)
    demote_mid_years: int = Field(ge=1, le=20)
    reappoint_low_years: int = Field(ge=1, le=20)
    reappoint_mid_years: int = Field(ge=1, le=20)
    min_share_of_year: Decimal = Field(ge=0, le=1)

    @field_validator("met_at")
    @classmethod
    def _above_low(cls, v: Decimal, info: ValidationInfo) -> Decimal:
        low = info.data.get("low_below")
        if low is not None and v <= low:
            raise ValueError("met_at must be above low_below")
        return v


class Assessment(_Section):
    performance_points: Decimal = Field(ge=0, le=100)
    evaluation_points: Decimal = Field(ge=0, le=100)
    completion_cap: Decimal = Field(gt=0)
    conversion_mode: Literal["linear", "step"]
    conversion: list[tuple[Decimal, Decimal]] = []
    work_log_late_hours: int = Field(ge=1, le=8784)
    judgement: Judgement
    grade_min_credit_clients: dict[str, int]

    @field_validator("conversion")
    @classmethod
    def _breakpoints(cls, v: list[tuple[Decimal, Decimal]]) -> list[tuple[Decimal, Decimal]]:
        completions = [c for c, _ in v]
        if any(b <= a for a, b in itertools.pairwise(completions)):
            raise ValueError("completions must increase from one breakpoint to the next")
        if any(c < 0 or p < 0 for c, p in v):
            raise ValueError("completions and points must not be negative")
        return v

    def check_points(self) -> None:
        if any(p > self.performance_points for _, p in self.conversion):
            raise ValueError("conversion points must not exceed performance_points")


class Balances(_Section):
    standard_window_days: int = Field(ge=1, le=3660)
    relationship_min_days: int = Field(ge=0, le=3660)
    outflow_share: Decimal = Field(gt=0, le=1)
    outflow_amount: Decimal = Field(gt=0)
    standard_coefficients: dict[Literal["liability", "asset", "fee_income"], Decimal]
    tier_thresholds: dict[Literal["diamond", "platinum", "gold", "silver"], Decimal]

    @field_validator("tier_thresholds")
    @classmethod
    def _ordered(cls, v: dict[str, Decimal]) -> dict[str, Decimal]:
        order = ("diamond", "platinum", "gold", "silver")
        missing = [t for t in order if t not in v]
        if missing:
            raise ValueError(f"missing tiers: {', '.join(missing)}")
        values = [v[t] for t in order]
        if values != sorted(values, reverse=True):
            raise ValueError("thresholds must not grow from diamond down to silver")
        return v


class PolicyFile(_Section):
    timezone: str
    coefficients: Coefficients
    claim_ratio: ClaimRatios
    handover: Handover
    fx_rates: dict[str, Decimal] = {}
    visits: Visits
    targets: Targets
    assessment: Assessment
    balances: Balances

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @field_validator("fx_rates")
    @classmethod
    def _rates(cls, v: dict[str, Decimal]) -> dict[str, Decimal]:
        bad = [c for c, r in v.items() if r <= 0 or len(c) != 3 or not c.isupper()]
        if bad:
            raise ValueError(f"fx rates need ISO currency codes and positive rates: {bad}")
        return v

    @field_validator("assessment")
    @classmethod
    def _points_within(cls, v: Assessment) -> Assessment:
        v.check_points()
        return v

    def to_policy(self) -> Policy:
        c, cr, v, t, a = (
            self.coefficients,
            self.claim_ratio,
            self.visits,
            self.targets,
            self.assessment,
        )
        return Policy(
            timezone=self.timezone,
            coefficients=c.model_dump(),
            default_claim_ratio=cr.default,
            fx_rates=dict(self.fx_rates),
            visit_interval_days={tier: days for tier, days in v.interval_days.items()},
            default_visit_interval_days=v.default_interval_days,
            post_loan_interval_days=v.post_loan_interval_days,
            escalation_grace_days=v.escalation_grace_days,
            max_snooze_days=v.max_snooze_days,
            heads_up_enabled=v.heads_up_enabled,
            heads_up_days=v.heads_up_days,
            origin_claim_defaults=cr.origin_defaults,
            claim_marketed=cr.marketed,
            claim_natural=cr.natural,
            handover_mode=self.handover.mode,
            handover_deposit_ratio=self.handover.deposit_ratio,
            handover_other_ratio=self.handover.other_ratio,
            branch_weekly_corporate_settlement=t.weekly_corporate_settlement,
            branch_monthly_corporate_settlement=t.monthly_corporate_settlement,
            branch_monthly_basic_settlement=t.monthly_basic_settlement,
            corporate_settlement_types=tuple(t.corporate_settlement_types),
            performance_points=a.performance_points,
            evaluation_points=a.evaluation_points,
            completion_cap=a.completion_cap,
            conversion=tuple((c, p) for c, p in a.conversion),
            conversion_mode=a.conversion_mode,
            judgement_low_below=a.judgement.low_below,
            judgement_met_at=a.judgement.met_at,
            reminder_mid_years=a.judgement.reminder_mid_years,
            demote_low_years=a.judgement.demote_low_years,
            demote_mid_years=a.judgement.demote_mid_years,
            reappoint_low_years=a.judgement.reappoint_low_years,
            reappoint_mid_years=a.judgement.reappoint_mid_years,
            judgement_min_share_of_year=a.judgement.min_share_of_year,
            work_log_late_hours=a.work_log_late_hours,
            grade_min_credit_clients=dict(a.grade_min_credit_clients),
            claim_floors=cr.floors(),
            standard_coefficients=dict(self.balances.standard_coefficients.items()),
            tier_thresholds=dict(self.balances.tier_thresholds.items()),
            standard_window_days=self.balances.standard_window_days,
            relationship_min_days=self.balances.relationship_min_days,
            outflow_share=self.balances.outflow_share,
            outflow_amount=self.balances.outflow_amount,
        )


class PolicyError(ValueError):
    """The policy file or an override is not valid; the message names the key."""


def merge_layers(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_layers(out[k], v)
        else:
            out[k] = v
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise PolicyError(f"policy file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy file {path} is not valid TOML: {exc}") from exc


def policy_data(
    path: Path | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The merged (not yet validated) policy: defaults, then the file, then overrides."""
    data = _read(DEFAULTS)
    if path is not None:
        data = merge_layers(data, _read(path))
    if overrides:
        data = merge_layers(data, overrides)
    return data


def load_policy(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Policy:
    """Validate the layered policy and build the ``Policy`` the rules use."""
    data = policy_data(path, overrides)
    try:
        return PolicyFile.model_validate(data).to_policy()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        where = f" ({path})" if path is not None else ""
        raise PolicyError(f"invalid policy{where}: {problems}") from None
