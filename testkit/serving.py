"""The API as a real HTTP server (uvicorn) in a background thread of this process, on a free
port (for the stream, the fuzzing and the browser tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from config import Settings
from crmtracker.broker import free_port
from crmtracker.compose import api_app as create_app


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # runs in a thread
        pass


class ApiThread:
    """The real API app (built from ``settings``, or given) under uvicorn, in a thread."""

    def __init__(self, app: Settings | Any, log_level: str = "warning") -> None:
        if isinstance(app, Settings):
            app = create_app(app)
        self.port = free_port()
        self.server = _Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level=log_level, lifespan="on"
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` on a free port; yields the base URL; stops the server afterwards."""
    server = ApiThread(app)
    server.start()
    try:
        yield server.base
    finally:
        server.stop()
