"""The topics: their resolved names and how each is created (one rule for every creator)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

COMPACT: Mapping[str, str] = MappingProxyType({"cleanup.policy": "compact"})


@dataclass(frozen=True)
class TopicSpec:
    """A topic as the product creates it when it is missing (``crm-tracker up``'s admin client
    and the worker's faust topics alike)."""

    name: str
    partitions: int
    replication: int
    config: Mapping[str, str] = field(default_factory=dict)

    @property
    def compacted(self) -> bool:
        return self.config.get("cleanup.policy") == "compact"


@dataclass(frozen=True)
class TopicNames:
    """Resolved topic names (prefix applied), partitions and replication of new topics."""

    transactions: str
    accounts: str
    visits: str
    clients: str
    managers: str
    balances: str
    reminders: str
    deadletter: str
    partitions: int = 4
    replication: int = 1

    @classmethod
    def of(cls, settings: Any) -> TopicNames:
        p = settings.topic_prefix
        return cls(
            transactions=p + settings.topic_transactions,
            accounts=p + settings.topic_accounts,
            visits=p + settings.topic_visits,
            clients=p + settings.topic_clients,
            managers=p + settings.topic_managers,
            balances=p + settings.topic_balances,
            reminders=p + settings.topic_reminders,
            deadletter=p + settings.topic_deadletter,
            partitions=settings.topic_partitions,
            replication=settings.topic_replication,
        )

    @property
    def inputs(self) -> list[str]:
        return [
            self.managers,
            self.clients,
            self.transactions,
            self.accounts,
            self.visits,
            self.balances,
        ]

    @property
    def outputs(self) -> list[str]:
        return [self.reminders, self.deadletter]

    @property
    def reference(self) -> set[str]:
        """The reference-data topics (who the clients and managers are)."""
        return {self.clients, self.managers}

    @property
    def compacted(self) -> set[str]:
        """Topics created compacted: the reference data (the latest record per key counts)."""
        return self.reference

    def spec(self, name: str) -> TopicSpec:
        """How ``name`` is created: compacted if it is reference data."""
        return TopicSpec(
            name, self.partitions, self.replication, COMPACT if name in self.compacted else {}
        )

    @property
    def specs(self) -> list[TopicSpec]:
        """Every topic the product reads or writes, as it is created."""
        return [self.spec(name) for name in [*self.inputs, *self.outputs]]
