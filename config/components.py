"""What each component takes of the settings: small frozen values derived from the one
``Settings`` (``settings.worker``, ``.api``, ``.scheduler``, ``.lag``).

Each field keeps the name of the setting it comes from (``derive`` fills them by name), so a
component reads ``cfg.batch_size`` whether it was handed its own config or the whole settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from config.kafka import KafkaConfig
from config.topics import TopicNames

if TYPE_CHECKING:
    from models.digest import NoticeRules
    from models.policy import Policy


C = TypeVar("C")


def derive(config: type[C], settings: Any, prefix: str = "") -> C:
    """A config from the settings: each field from the setting (or derived value) of its
    name, else of its name with ``prefix``."""
    values = {
        f.name: getattr(settings, f.name if hasattr(settings, f.name) else prefix + f.name)
        for f in fields(config)  # type: ignore[arg-type]
    }
    return config(**values)


class KafkaTopics(Protocol):
    """Anything that knows the broker and the topics: the settings or a component's config."""

    @property
    def kafka(self) -> KafkaConfig: ...

    @property
    def topics(self) -> TopicNames: ...


@dataclass(frozen=True)
class LagConfig:
    """The consumer-lag monitor (the API's sampler, ``crm-tracker lag --direct``)."""

    kafka: KafkaConfig
    topics: TopicNames
    lag_window_seconds: float


@dataclass(frozen=True)
class WorkerConfig:
    """The stream processor."""

    kafka: KafkaConfig
    topics: TopicNames
    policy: Policy
    db_url: str
    batch_size: int
    batch_within: float
    apply_concurrency: int
    db_retry_max_backoff: float
    consumer: Literal["agents", "direct"]
    metrics_port: int


@dataclass(frozen=True)
class ApiConfig:
    """The HTTP API (what its routes read of the configuration)."""

    kafka: KafkaConfig
    topics: TopicNames
    policy: Policy
    lag: LagConfig
    api_read_cache: bool
    ready_max_lag: int
    metrics_public: bool
    lag_window_seconds: float
    lag_sample_seconds: float

    @property
    def tz(self) -> ZoneInfo:
        return self.policy.tz

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    @property
    def group_id(self) -> str:
        return self.kafka.group_id


@dataclass(frozen=True)
class SchedulerConfig:
    """The reminder scheduler: its clock, the deliveries and the channels to people."""

    kafka: KafkaConfig
    topics: TopicNames
    policy: Policy
    notice_rules: NoticeRules
    reminder_scan_seconds: int
    reminder_deliver_seconds: float
    reminder_recompute_on_start: bool
    webhook_urls: list[str]
    webhook_secret: SecretStr | None
    webhook_timeout: float
    webhook_max_attempts: int
    webhook_backoff_seconds: float
    webhook_backoff_max_seconds: float
    wecom_robots: dict[str, SecretStr] = field(default_factory=dict)
    dingtalk_robots: dict[str, SecretStr] = field(default_factory=dict)
    dingtalk_secrets: dict[str, SecretStr] = field(default_factory=dict)
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: bool = False
    smtp_starttls: bool | None = None
    smtp_from: str = "crm-tracker@localhost"
