"""The one settings object (env prefix ``CRM_``, also read from ``.env``), frozen.

Built once by the command line and never changed: a command that needs other values (``up
--demo``, ``up --postgres``) builds a new one with ``replaced``. Each component takes its own
small config derived from it (``worker``, ``api``, ``scheduler``, ``lag``); ``crmtracker.compose``
builds the engines, secrets and clients from them. No other module reads ``os.environ``, and
nothing here does I/O but reading the environment and the policy file.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.components import ApiConfig, LagConfig, SchedulerConfig, WorkerConfig, derive
from config.kafka import KafkaConfig, SaslMechanism, SecurityProtocol
from config.topics import TopicNames
from models.policy import Policy
from models.policy_file import load_policy, merge_layers

if TYPE_CHECKING:
    from models.digest import NoticeRules


PLACEHOLDER_SECRETS = frozenset(
    {"changeme", "change-me", "change_me", "secret", "default", "crm-tracker", "password"}
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CRM_", env_file=".env", extra="ignore", frozen=True
    )

    # --- Kafka ---------------------------------------------------------------------------
    kafka_bootstrap: str | None = None
    """Absent: the embedded Tansu broker (dev and tests only)."""
    kafka_port: int = 9092
    """Port of the embedded broker."""
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_session_timeout: float | None = None
    """Consumer-group session timeout (s). Default: 2 on the embedded broker (its group join
    takes half of it), 30 on a real cluster."""
    kafka_heartbeat_interval: float | None = None
    topic_partitions: int = Field(4, ge=1, le=1024)
    topic_replication: int = Field(1, ge=1)
    group_id: str = "crm-tracker"

    topic_prefix: str = ""
    topic_transactions: str = "bank.transactions"
    topic_accounts: str = "bank.accounts"
    topic_visits: str = "crm.visits"
    topic_clients: str = "crm.clients"
    topic_managers: str = "crm.managers"
    topic_balances: str = "bank.balances"
    topic_reminders: str = "crm.reminders"
    topic_deadletter: str = "crm.deadletter"

    # --- worker --------------------------------------------------------------------------
    batch_size: int = Field(4000, ge=1, le=100_000)
    """Messages a batch (one database transaction) takes at most: bigger batches spread each
    statement's and commit's cost over more events (1000 → 4000: +16-23 % at 1M events on
    both databases, README "Performance"); a partial batch waits only ``batch_within``."""
    batch_within: float = Field(0.2, gt=0)
    """Seconds a partial batch waits for more events before it is applied."""
    apply_concurrency: int = Field(2, ge=1, le=16)
    """PostgreSQL: a fetched batch is split by partition into up to this many groups, applied
    at once on as many connections (each with its own transaction, its offsets committed after
    its own commit), so one worker's database waits overlap its Python work. SQLite has one
    writer: always 1 there. README "Exactly once in effect"."""
    db_retry_max_backoff: float = Field(30.0, gt=0)
    max_future_skew: float = Field(300.0, ge=0, le=86_400)
    """Seconds an event's occurred_at may be ahead of the worker's clock; further ahead it is
    rejected (dead-letter topic and rejected list) as a future date."""
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    """The event loop of ``crm-tracker api``, ``up`` and ``worker``: ``auto`` is uvloop for the
    API and ``up`` (when installed; it is on Linux) and asyncio's own for the worker, the
    faster of the two for each as measured (README "Performance")."""
    consumer: Literal["agents", "direct"] = "direct"
    """How the worker reads its topics: ``agents`` (a faust agent per topic, faust's per-message
    stream) or ``direct`` (one aiokafka batch consumer inside the faust app; see README
    "Performance"). Both commit an offset only after its event's database transaction."""

    # --- storage -------------------------------------------------------------------------
    database_url: str | None = None
    """Absent: an embedded SQLite file in the data directory."""
    data_dir: Path = Path(".crm-data")

    # --- API -----------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    auth_secret: SecretStr | None = None
    """Token signing secret. Absent: a secret generated on first start in the data dir."""
    token_ttl: str = "8h"
    notes_keys: SecretStr | None = None
    """Visit notes keys (Fernet, comma separated, newest first: it encrypts, every one
    decrypts). Absent: a key generated on first start in the data dir (``notes-key``)."""
    api_read_cache: bool = True
    """Keep tally, leaderboard and scope answers while the data under them is unchanged
    (api/reads.py: every request still sees every write committed before it arrived)."""
    ready_max_lag: int = Field(10_000, ge=0)
    """/readyz reports not ready while the worker lags by more events than this."""

    # --- ops -----------------------------------------------------------------------------
    metrics_port: int = Field(0, ge=0, le=65535)
    """Worker (and scheduler) Prometheus endpoint port; 0: off."""
    metrics_public: bool = False
    """Serve the API's /metrics without a token (only where scrapes are network-restricted)."""
    lag_window_seconds: float = Field(60.0, gt=0)
    """Sliding window over which the lag status (OK/WARN/STALL/STOP/REWIND) is judged."""
    lag_sample_seconds: float = Field(5.0, ge=0)
    """How often the API samples committed and end offsets; 0: no background sampler."""

    # --- scheduler -----------------------------------------------------------------------
    reminder_scan_seconds: int = Field(60, ge=1)
    reminder_deliver_seconds: float = Field(2.0, gt=0)
    """How often the scheduler sends the reminder outbox (also right after each scan)."""
    reminder_recompute_on_start: bool = True
    """Recompute every client's due dates when the scheduler starts (policy changes)."""
    webhook_urls: list[str] = Field(default_factory=list)
    """Endpoints that receive every reminder event, as a JSON list:
    ``CRM_WEBHOOK_URLS='["https://notify.example/crm"]'``."""
    webhook_secret: SecretStr | None = None
    """Signs webhook bodies: ``X-CRM-Signature: sha256=<hex HMAC-SHA256 of the body>``."""
    webhook_timeout: float = Field(10.0, gt=0)
    webhook_max_attempts: int = Field(12, ge=1)
    """Attempts per delivery (Kafka or webhook) before it is marked failed (kept, listed)."""
    webhook_backoff_seconds: float = Field(1.0, gt=0)
    webhook_backoff_max_seconds: float = Field(300.0, gt=0)

    # --- reminder channels (README "Reminder channels") ----------------------------------
    wecom_robots: dict[str, SecretStr] = Field(default_factory=dict)
    """WeCom group robot webhook URL per branch id (``*``: branches without their own), JSON:
    ``{"b01": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…"}``."""
    dingtalk_robots: dict[str, SecretStr] = Field(default_factory=dict)
    """DingTalk robot webhook URL per branch id (``*`` as for WeCom)."""
    dingtalk_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    """The robots' signing secrets ("加签", ``SEC…``) per branch id (``*``: for all)."""
    smtp_host: str | None = None
    """Absent: no e-mail."""
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: bool = False
    """Implicit TLS (port 465)."""
    smtp_starttls: bool | None = None
    """STARTTLS: true requires it, false never, unset when the server offers it."""
    smtp_from: str = "crm-tracker@localhost"
    notify_lang: Literal["zh", "en"] = "zh"
    """Language of the digests and pushes."""
    digest_time: str = "08:30"
    """Local time (bank time zone) of the morning digest."""
    quiet_hours: str = "21:00-08:00"
    """``HH:MM-HH:MM`` in the bank time zone when only escalations go out; ``off`` for none."""
    quiet_weekends: bool = True
    """Saturdays and Sundays quiet all day (no digest; escalations still go)."""
    dashboard_url: str | None = None
    """The dashboard link in messages. Absent: ``http://<api host>:<api port>/dashboard``."""

    # --- policy (DOMAIN.md defaults live in models/policy.toml) -------------------------
    policy_file: Path | None = None
    """The bank's policy file (TOML); keys it leaves out keep the defaults."""
    policy_overrides: dict[str, Any] = Field(default_factory=dict)
    """A JSON object shaped like the policy file, applied last (CRM_POLICY_OVERRIDES)."""
    timezone: str | None = None
    """Overrides the policy's time zone (CRM_TIMEZONE)."""
    coefficient_asset: Decimal | None = None
    coefficient_liability: Decimal | None = None
    coefficient_intermediary: Decimal | None = None
    coefficient_off_balance: Decimal | None = None
    default_claim_ratio: Decimal | None = None
    fx_rates: dict[str, Decimal] | None = None
    """CNY per unit of a foreign currency, e.g. ``{"USD": "7.10"}``; empty: CNY only."""

    @field_validator("webhook_urls")
    @classmethod
    def _http_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"webhook URL must start with http:// or https://: {url!r}")
        return v

    @field_validator("wecom_robots", "dingtalk_robots")
    @classmethod
    def _robot_urls(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for branch, url in v.items():
            if not url.get_secret_value().startswith(("http://", "https://")):
                # the URL is not repeated: it carries the robot's key
                raise ValueError(f"robot URL of branch {branch!r} must start with http(s)://")
        return v

    @field_validator("digest_time")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        from models.digest import parse_hhmm

        parse_hhmm(v)
        return v

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, v: str) -> str:
        from models.digest import parse_quiet_hours

        parse_quiet_hours(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        if v is not None:
            ZoneInfo(v)  # raises for an unknown zone
        return v

    # --- derived -------------------------------------------------------------------------
    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def session_timeout(self) -> float:
        if self.kafka_session_timeout is not None:
            return self.kafka_session_timeout
        return 2.0 if self.embedded_broker else 30.0

    @property
    def heartbeat_interval(self) -> float:
        if self.kafka_heartbeat_interval is not None:
            return self.kafka_heartbeat_interval
        return max(0.5, self.session_timeout / 4) if self.embedded_broker else 3.0

    @cached_property
    def topics(self) -> TopicNames:
        return TopicNames.of(self)

    @cached_property
    def kafka(self) -> KafkaConfig:
        return derive(KafkaConfig, self, prefix="kafka_")

    # --- what each component takes -------------------------------------------------------
    @cached_property
    def worker(self) -> WorkerConfig:
        return derive(WorkerConfig, self)

    @cached_property
    def api(self) -> ApiConfig:
        return derive(ApiConfig, self)

    @cached_property
    def scheduler(self) -> SchedulerConfig:
        return derive(SchedulerConfig, self)

    @cached_property
    def lag(self) -> LagConfig:
        return derive(LagConfig, self)

    @property
    def tz(self) -> ZoneInfo:
        return self.policy.tz

    @property
    def notice_rules(self) -> NoticeRules:
        """Digest time, quiet hours, language and dashboard link of the messages to people."""
        from models.digest import NoticeRules, parse_hhmm, parse_quiet_hours

        start, end = parse_quiet_hours(self.quiet_hours)
        return NoticeRules(
            tz=self.tz,
            digest_time=parse_hhmm(self.digest_time),
            quiet_start=start,
            quiet_end=end,
            quiet_weekends=self.quiet_weekends,
            lang=self.notify_lang,
            dashboard_url=self.dashboard_url or f"http://{self.api_host}:{self.api_port}/dashboard",
        )

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "crm-tracker.sqlite3"

    @property
    def db_url(self) -> str:
        """The async SQLAlchemy URL (plain postgresql:// and sqlite:// are mapped)."""
        url = self.database_url or f"sqlite:///{self.sqlite_path.resolve()}"
        return async_db_url(url)

    def _policy_layers(self) -> dict[str, Any]:
        """The single CRM_ policy variables, as an override layer (then CRM_POLICY_OVERRIDES)."""
        layer: dict[str, Any] = {}
        if self.timezone is not None:
            layer["timezone"] = self.timezone
        coefficients = {
            line: str(v)
            for line, v in (
                ("asset", self.coefficient_asset),
                ("liability", self.coefficient_liability),
                ("intermediary", self.coefficient_intermediary),
                ("off_balance", self.coefficient_off_balance),
            )
            if v is not None
        }
        if coefficients:
            layer["coefficients"] = coefficients
        if self.default_claim_ratio is not None:
            layer["claim_ratio"] = {"default": str(self.default_claim_ratio)}
        if self.fx_rates is not None:
            layer["fx_rates"] = {k: str(v) for k, v in self.fx_rates.items()}
        return merge_layers(layer, self.policy_overrides)

    @cached_property
    def policy(self) -> Policy:
        """The bank's rules: models/policy.toml, the policy file, then environment overrides."""
        policy = load_policy(self.policy_file, self._policy_layers())
        return replace(policy, max_future_skew=timedelta(seconds=self.max_future_skew))

    def secret_problem(self) -> str | None:
        """Why the signing secret is not fit for production, or None.

        Production means a real Kafka cluster (``CRM_KAFKA_BOOTSTRAP`` set): there the secret
        must be configured, at least 32 characters and not a placeholder. The embedded
        single-machine setup (demo, dev) may generate one in the data directory.
        """
        if self.embedded_broker:
            return None
        if self.auth_secret is None:
            return "CRM_AUTH_SECRET is not set (required with a real Kafka cluster)"
        value = self.auth_secret.get_secret_value()
        if len(value) < 32 or value.lower().strip("-_ ") in PLACEHOLDER_SECRETS:
            return "CRM_AUTH_SECRET is a placeholder or shorter than 32 characters"
        return None

    def replaced(self, **changes: Any) -> Settings:
        """A new settings value with these fields changed (this one stays as it is)."""
        new = self.model_copy(update=changes)
        for name in _DERIVED:  # computed from the old values: computed again on use
            new.__dict__.pop(name, None)
        return new

    def child_env(self) -> dict[str, str]:
        """Environment for a child process (worker) so it sees the same configuration.

        One rule: every setting that has a value, as its ``CRM_`` variable, in the form it is
        read back (the derived ones resolved: broker address, group timing, database URL,
        absolute paths). Secrets are left out: the child reads them where this process did
        (its environment, ``.env``).
        """
        resolved: dict[str, Any] = {
            "kafka_bootstrap": self.bootstrap,
            "kafka_session_timeout": self.session_timeout,
            "kafka_heartbeat_interval": self.heartbeat_interval,
            "database_url": self.db_url,
            "data_dir": str(self.data_dir.resolve()),
            "policy_file": str(self.policy_file.resolve()) if self.policy_file else None,
        }
        values = self.model_dump(mode="json")
        env: dict[str, str] = {}
        for name, info in type(self).model_fields.items():
            if "SecretStr" in str(info.annotation):
                continue
            value = resolved[name] if name in resolved else values[name]
            if value is None:
                continue
            env[f"CRM_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return env


_DERIVED = ("topics", "kafka", "worker", "api", "scheduler", "lag", "policy")


def async_db_url(url: str) -> str:
    """Map a plain database URL to the async driver SQLAlchemy needs."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url
