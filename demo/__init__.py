"""The demo generator: a bank's core banking and CRM app played as events (``crm-tracker up
--demo``, the benchmarks' workloads). Plain data out; it imports nothing of the product."""

from demo.generator import ROLES, DemoGenerator, DemoMessage, run_demo

__all__ = ["ROLES", "DemoGenerator", "DemoMessage", "run_demo"]
