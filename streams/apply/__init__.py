"""The write path: Kafka messages in, one database transaction per batch, exactly once in
effect (README "Exactly once in effect").

- ``credit``: the one credit rule (pure);
- ``ledger``: the database work per backend (claim, bucket upserts, named locks);
- ``reference``, ``transfer``, ``held``, ``visits``: what each kind of event changes;
- ``applier``: the ``Applier`` composing them, returning what a batch did.
"""

from streams.apply.applier import Applier
from streams.apply.credit import (
    ClientTerms,
    Credit,
    ManagerTerms,
    Wait,
    attributed_manager,
    attribution,
    credit,
)
from streams.apply.messages import BatchResult, Incoming

__all__ = [
    "Applier",
    "BatchResult",
    "ClientTerms",
    "Credit",
    "Incoming",
    "ManagerTerms",
    "Wait",
    "attributed_manager",
    "attribution",
    "credit",
]
