"""Shared pieces of the latency, API-load and memory benchmarks: an embedded broker, scratch
databases, the worker and the API as child processes, tokens, percentiles."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from config import Settings
from crmtracker.broker import EmbeddedBroker, free_port
from testkit.db import scratch_database as scratch_database  # the benches take it from here

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def embedded_broker(workdir: Path) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(free_port(), log_path=workdir / "broker.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Child:
    """``python -m crmtracker <command>`` as a child process with its log in ``workdir``."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.log_path = log_path
        full = {**os.environ, **env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crmtracker", command],
            env=full,
            cwd=log_path.parent,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def api_env(settings: Settings, port: int, secret: str) -> dict[str, str]:
    env = settings.child_env()
    env.update(
        CRM_API_PORT=str(port),
        CRM_API_HOST="127.0.0.1",
        CRM_AUTH_SECRET=secret,
    )
    return env


def wait_http(url: str, timeout: float = 60.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def new_secret() -> str:
    return secrets.token_urlsafe(48)


def bearer(secret: str, role: str = "admin", **kw: object) -> dict[str, str]:
    from api.auth import mint_token

    return {"Authorization": f"Bearer {mint_token(secret, role, **kw)}"}  # type: ignore[arg-type]


def finish(
    doc: dict[str, Any], results: list[dict[str, Any]], json_path: Path | None, workdir: Path
) -> int:
    """Print the JSON, write it if asked, keep the logs only when a run failed; exit status."""
    import json
    import shutil

    print(json.dumps(doc, indent=2))
    if json_path:
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
    failed = any(r.get("error") for r in results)
    if failed:
        print(f"logs kept in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0
