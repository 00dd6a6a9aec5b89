"""Reminders in one package: the rules (plain functions), the store (rows and their state
changes), the outbox (envelopes, live-stream rows, messages to people) and the service the
worker and the scheduler call (reminders/service.py).

Imports point down: this package reads ``models`` (tables, policy, visit rules, message
texts) and nothing above it; ``streams``, ``scheduler`` and ``api`` call into it.
"""
