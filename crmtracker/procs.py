"""Child processes that die with their parent, and the record ``up`` keeps of them.

``kill -9`` of ``crm-tracker up`` (the OOM killer, a closed terminal) must not leave its
broker, PostgreSQL or worker running. Two layers:

- every child is started with ``die_with_parent``: on Linux the kernel sends it a signal
  (``PR_SET_PDEATHSIG``) when the thread that started it exits, however it exits;
- ``up`` records each child (pid and command line) in ``<data dir>/processes.json``; the next
  ``up`` on that directory ends the recorded processes still running with the same command
  line (a pid reused by someone else's process does not match, and is left alone). A lock on
  ``<data dir>/up.lock``, held for ``up``'s whole life and released by the kernel when it dies,
  tells a crashed ``up`` from a live one.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import pwd
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

log = logging.getLogger("crmtracker.procs")

PR_SET_PDEATHSIG = 1
RECORD = "processes.json"
LOCK = "up.lock"


def die_with_parent(
    sig: int = signal.SIGTERM, *, user: str | None = None
) -> Callable[[], None] | None:
    """A ``preexec_fn``: optionally become ``user``, then ask the kernel for ``sig`` when the
    parent dies (after the uid change: changing credentials clears the setting). ``None``
    where there is nothing to do (not Linux, no user)."""
    linux = sys.platform.startswith("linux")
    if not linux and user is None:
        return None
    ids = None
    if user is not None:
        entry = pwd.getpwnam(user)
        ids = (entry.pw_uid, entry.pw_gid)

    def preexec() -> None:  # runs in the child between fork and exec: keep it minimal
        if ids is not None:
            os.setgroups([])
            os.setgid(ids[1])
            os.setuid(ids[0])
        if linux:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
            if os.getppid() == 1:  # the parent died before prctl: nobody would signal us
                os.kill(os.getpid(), sig)

    return preexec


def cmdline(pid: int) -> list[str] | None:
    """The process's argv, or None when it is gone (or not readable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None  # a zombie or a kernel thread
    return [p.decode("utf-8", "replace") for p in raw.rstrip(b"\0").split(b"\0")]


class AlreadyRunning(RuntimeError):
    pass


class ProcessRecord:
    """The children of one ``up`` on one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / RECORD
        self._lock: IO[str] | None = None

    def acquire(self) -> list[str]:
        """Take the data directory for this ``up``, ending what a crashed one left behind.

        Raises ``AlreadyRunning`` if a live ``up`` holds it. Returns a line per process ended.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock = open(self.data_dir / LOCK, "a+")  # held for the process's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise AlreadyRunning(
                f"another crm-tracker up is running on {self.data_dir} "
                "(stop it first, or choose another --data-dir)"
            ) from None
        self._lock = lock
        ended = self.end_stale()
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        return ended

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _read(self) -> list[dict[str, object]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []

    def _write(self, records: list[dict[str, object]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=1))
        os.replace(tmp, self.path)

    def add(self, role: str, pid: int) -> None:
        """Record a child just started (its command line read back from /proc).

        Right after the exec the kernel may still show the parent's command line, or none:
        read again for up to a second until the child's own shows."""
        own = cmdline(os.getpid())
        argv = cmdline(pid)
        for _ in range(100):
            if argv is not None and argv != own:
                break
            time.sleep(0.01)
            argv = cmdline(pid)
        if argv is None:
            return
        records = [r for r in self._read() if r.get("pid") != pid]
        records.append({"role": role, "pid": pid, "cmdline": argv, "started": time.time()})
        self._write(records)

    def remove(self, pid: int) -> None:
        records = self._read()
        kept = [r for r in records if r.get("pid") != pid]
        if len(kept) != len(records):
            self._write(kept)

    def end_stale(self, grace: float = 5.0) -> list[str]:
        """End every recorded process that still runs with its recorded command line."""
        ended: list[str] = []
        for r in self._read():
            pid, argv = r.get("pid"), r.get("cmdline")
            if not isinstance(pid, int) or pid <= 1 or pid == os.getpid():
                continue
            if cmdline(pid) != argv:
                continue  # gone, or the pid now belongs to another program: not ours
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and cmdline(pid) == argv:
                time.sleep(0.05)
            if cmdline(pid) == argv:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                while cmdline(pid) == argv and time.monotonic() < deadline + grace:
                    time.sleep(0.05)
            ended.append(f"{r.get('role')} (pid {pid})")
            log.warning(
                "ended the %s (pid %d) left by a crashed crm-tracker up", r.get("role"), pid
            )
        with contextlib.suppress(OSError):
            self.path.unlink()
        return ended
