"""The dev-only test kit, shared by ``tests/`` and ``bench/`` (not part of the product's wheel:
an editable install of the checkout makes it importable).

- :mod:`testkit.db`: scratch databases (SQLite file or a new PostgreSQL database), the test
  session's own PostgreSQL server, engines that are disposed of;
- :mod:`testkit.process`: ``python -m crmtracker <command>`` as a child process;
- :mod:`testkit.broker`: isolated settings, producing to and reading from the broker, waiting for
  the worker's counts;
- :mod:`testkit.feed`: contract envelopes, the vectors and generated logs as the worker
  receives them, reference-data builders;
- :mod:`testkit.factories`: generated event logs and the independent oracle of their figures;
- :mod:`testkit.checks`: the figures read back and compared;
- :mod:`testkit.book`, :mod:`testkit.reminders`, :mod:`testkit.ledger`: worlds several tests
  share (a client book, a frozen clock with a scheduler, visits with confidential notes);
- :mod:`testkit.api`, :mod:`testkit.serving`, :mod:`testkit.browser`, :mod:`testkit.hooks`:
  tokens and an in-process client, the API in a thread, Chromium, local HTTP receivers;
- :mod:`testkit.fakes`: stand-ins that fail on purpose;
- :mod:`testkit.faults`: the fault drills (short in ``tests/system``, long in ``bench/drills.py``);
- :mod:`testkit.paths`: where the checkout, the vectors and the artifacts are.
"""
