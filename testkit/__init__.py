"""The dev-only test kit, shared by ``tests/`` and ``bench/`` (not part of the product's wheel:
an editable install of the checkout makes it importable).

- :mod:`testkit.db`: scratch databases (SQLite file or a new PostgreSQL database), the test
  session's own PostgreSQL server, engines that are disposed of;
- :mod:`testkit.process`: ``python -m crmtracker <command>`` as a child process;
- :mod:`testkit.broker`: isolated settings, producing to and reading from the broker, waiting for
  the worker's counts;
- :mod:`testkit.feed`: contract envelopes and the vectors as the worker receives them;
- :mod:`testkit.factories`: generated event logs and the independent oracle of their figures;
- :mod:`testkit.checks`: the figures read back and compared;
- :mod:`testkit.serving`: the API as a real HTTP server in a thread;
- :mod:`testkit.faults`: the fault drills (short in ``tests/system``, long in ``bench/drills.py``).
"""
