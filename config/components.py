"""What each component takes of the settings: small frozen values derived from the one
``Settings`` (``settings.worker``, ``.api``, ``.scheduler``, ``.lag``).

Each field keeps the name of the setting it comes from, so a component reads ``cfg.batch_size``
whether it was handed its own config or the whole settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from config.kafka import KafkaConfig
from config.topics import TopicNames

if TYPE_CHECKING:
    from models.digest import NoticeRules
    from models.policy import Policy


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

    @classmethod
    def of(cls, s: Any) -> LagConfig:
        return cls(s.kafka, s.topics, s.lag_window_seconds)


@dataclass(frozen=True)
class WorkerConfig:
    """The stream processor."""

    kafka: KafkaConfig
    topics: TopicNames
    policy: Policy
    db_url: str
    batch_size: int
    batch_within: float
    db_retry_max_backoff: float
    consumer: Literal["agents", "direct"]
    metrics_port: int

    @classmethod
    def of(cls, s: Any) -> WorkerConfig:
        return cls(
            kafka=s.kafka,
            topics=s.topics,
            policy=s.policy,
            db_url=s.db_url,
            batch_size=s.batch_size,
            batch_within=s.batch_within,
            db_retry_max_backoff=s.db_retry_max_backoff,
            consumer=s.consumer,
            metrics_port=s.metrics_port,
        )


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

    @classmethod
    def of(cls, s: Any) -> ApiConfig:
        return cls(
            kafka=s.kafka,
            topics=s.topics,
            policy=s.policy,
            lag=LagConfig.of(s),
            api_read_cache=s.api_read_cache,
            ready_max_lag=s.ready_max_lag,
            metrics_public=s.metrics_public,
            lag_window_seconds=s.lag_window_seconds,
            lag_sample_seconds=s.lag_sample_seconds,
        )

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
    webhook_urls: tuple[str, ...]
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

    @classmethod
    def of(cls, s: Any) -> SchedulerConfig:
        return cls(
            kafka=s.kafka,
            topics=s.topics,
            policy=s.policy,
            notice_rules=s.notice_rules,
            reminder_scan_seconds=s.reminder_scan_seconds,
            reminder_deliver_seconds=s.reminder_deliver_seconds,
            reminder_recompute_on_start=s.reminder_recompute_on_start,
            webhook_urls=tuple(s.webhook_urls),
            webhook_secret=s.webhook_secret,
            webhook_timeout=s.webhook_timeout,
            webhook_max_attempts=s.webhook_max_attempts,
            webhook_backoff_seconds=s.webhook_backoff_seconds,
            webhook_backoff_max_seconds=s.webhook_backoff_max_seconds,
            wecom_robots=dict(s.wecom_robots),
            dingtalk_robots=dict(s.dingtalk_robots),
            dingtalk_secrets=dict(s.dingtalk_secrets),
            smtp_host=s.smtp_host,
            smtp_port=s.smtp_port,
            smtp_username=s.smtp_username,
            smtp_password=s.smtp_password,
            smtp_tls=s.smtp_tls,
            smtp_starttls=s.smtp_starttls,
            smtp_from=s.smtp_from,
        )
