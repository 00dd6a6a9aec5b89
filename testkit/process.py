"""``python -m crmtracker <command>`` as a real child process (so it can be stopped with
SIGTERM or killed with -9), its output appended to a log file: the one process wrapper of the
tests, the drills and the benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from config import Settings
from testkit.paths import ROOT


def child_environ(env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment, ``env`` over it, the checkout first on the path."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, **env, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


class Child:
    """``python -m crmtracker *args`` with ``env`` over this process's environment, in
    ``cwd`` (by default the log's folder: no stray ``.env``). Started at once unless
    ``start=False``; ``new_session`` puts it in a session of its own (the benchmarks: a
    Ctrl-C of theirs does not reach it, and :meth:`stop` may kill its whole group)."""

    def __init__(
        self,
        args: str | Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        start: bool = True,
        new_session: bool = False,
    ) -> None:
        self.args = [args] if isinstance(args, str) else list(args)
        self.command = self.args[0]
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd or log_path.parent
        self.new_session = new_session
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_mono = 0.0
        self.started_wall = 0.0
        if start:
            self.start()

    def child_env(self) -> Mapping[str, str]:
        return self.env

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.started_wall = time.time()
            self.started_mono = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "crmtracker", *self.args],
                env=child_environ(self.child_env()),
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.new_session,
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 20.0, group: bool = False) -> int | None:
        """SIGTERM, then SIGKILL (to its whole session with ``group``) after ``timeout``
        seconds; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(
                    f"{self.command} did not stop in {timeout:.0f}s after SIGTERM: killing it",
                    file=sys.stderr,
                )
                if group and self.new_session:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                else:
                    self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc})"

    log_tail = tail


class WorkerProcess(Child):
    """``crm-tracker worker`` (or another ``command``) with ``settings`` as its environment
    (read when it starts), plus ``env``; started by :meth:`start`."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        command: str = "worker",
        env: Mapping[str, str] | None = None,
        **kw: object,
    ) -> None:
        self.settings = settings
        super().__init__(command, env or {}, log_path, start=False, **kw)  # type: ignore[arg-type]

    def child_env(self) -> Mapping[str, str]:
        return {**self.settings.child_env(), **self.env}
