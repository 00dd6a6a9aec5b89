"""The configuration: frozen settings, what each component takes of them, Kafka client
arguments and topic specs. The bottom of the house: no I/O, and it imports nothing of the
product but the policy's own modules (``models.policy``, ``models.policy_file``)."""

from config.components import ApiConfig, KafkaTopics, LagConfig, SchedulerConfig, WorkerConfig
from config.kafka import KafkaConfig
from config.settings import PLACEHOLDER_SECRETS, Settings, async_db_url
from config.topics import TopicNames, TopicSpec

__all__ = [
    "PLACEHOLDER_SECRETS",
    "ApiConfig",
    "KafkaConfig",
    "KafkaTopics",
    "LagConfig",
    "SchedulerConfig",
    "Settings",
    "TopicNames",
    "TopicSpec",
    "WorkerConfig",
    "async_db_url",
]
