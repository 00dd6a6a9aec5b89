"""``crm-tracker up`` after a hard kill: ``kill -9`` of its whole process group (what the OOM
killer or a closed terminal does) takes the broker and the worker with it, and the next ``up``
on the same data directory starts at once; what a crashed ``up`` left is ended, and only that."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from crmtracker.broker import free_port, port_open
from crmtracker.procs import AlreadyRunning, ProcessRecord, cmdline, die_with_parent
from models.db import make_engine
from testkit.checks import assert_tallies, counts
from testkit.factories import load_vectors, valid_events
from testkit.paths import VECTORS

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _start_up(data: Path, api_port: int, kafka_port: int, log: Path) -> subprocess.Popen[bytes]:
    args = ["up", "--port", str(api_port), "--kafka-port", str(kafka_port), "--data-dir", str(data)]
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "crmtracker", *args],
            cwd=data.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_env(),
            start_new_session=True,  # its own process group, as in a terminal
        )


def _wait_ready(api_port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"up exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"up never ready:\n{log.read_text()[-3000:]}")


def _produce(kafka_port: int) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "crmtracker", "produce", str(VECTORS / "events.jsonl")],
        capture_output=True,
        timeout=120,
        env=_env(CRM_KAFKA_BOOTSTRAP=f"127.0.0.1:{kafka_port}"),
    )
    assert r.returncode == 0, r.stderr.decode()


async def _wait_counts(url: str, applied: int, rejected: int, timeout: float) -> tuple[int, ...]:
    engine = make_engine(url)
    try:
        deadline = time.monotonic() + timeout
        seen: tuple[int, int, int] = (0, 0, 0)
        while time.monotonic() < deadline:
            seen = await counts(engine)
            if seen[0] >= applied and seen[1] >= rejected and seen[2] == 0:
                break
            await asyncio.sleep(0.5)
        return seen
    finally:
        await engine.dispose()


async def _applied(url: str) -> int:
    engine = make_engine(url)
    try:
        return (await counts(engine))[0]
    finally:
        await engine.dispose()


@pytest.mark.kafka
@pytest.mark.slow
async def test_up_restarts_at_once_after_kill_9_of_its_process_group(tmp_path: Path) -> None:
    log = load_vectors(VECTORS)
    valid, bad = valid_events(log.messages)
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite+aiosqlite:///{data / 'crm-tracker.sqlite3'}"
    api_port, kafka_port = free_port(), free_port()
    first_log, second_log = tmp_path / "up-1.log", tmp_path / "up-2.log"

    first = _start_up(data, api_port, kafka_port, first_log)
    try:
        await asyncio.to_thread(_wait_ready, api_port, first, first_log, 90)
        children = json.loads((data / "processes.json").read_text())
        assert {c["role"] for c in children} == {"broker", "worker"}
        # kill in the middle of the stream: while it is still being produced (the worker
        # applies as fast as it comes; once produced, it is applied within a second)
        producer = subprocess.Popen(  # noqa: ASYNC220 (started and left running)
            [
                sys.executable,
                "-m",
                "crmtracker",
                "produce",
                "--quiet",
                str(VECTORS / "events.jsonl"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_env(CRM_KAFKA_BOOTSTRAP=f"127.0.0.1:{kafka_port}"),
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if await _applied(url) >= 200:
                    break
                await asyncio.sleep(0.05)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            killed_at = time.monotonic()
        finally:
            producer.kill()  # its broker is gone: everything is sent again below
            producer.wait()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    applied_at_kill = await _applied(url)

    second = _start_up(data, api_port, kafka_port, second_log)
    started_within = time.monotonic() - killed_at
    try:
        await asyncio.to_thread(_wait_ready, api_port, second, second_log, 90)
        # the first up's broker and worker are gone (never two workers on one database)
        for c in children:
            assert cmdline(c["pid"]) != c["cmdline"], f"{c['role']} survived the kill"
        # the embedded broker is memory-only: the events are sent again
        await asyncio.to_thread(_produce, kafka_port)
        seen = await _wait_counts(url, len(valid), bad, 180)
        assert seen == (len(valid), bad, 0), seen
        engine = make_engine(url)
        try:
            await assert_tallies(engine, log.tallies, log.branches)
        finally:
            await engine.dispose()
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait()
    assert started_within < 10
    assert 0 < applied_at_kill < len(valid), applied_at_kill  # the kill did land mid-stream
    assert second.returncode == 0, second_log.read_text()[-3000:]
    assert "already in use" not in second_log.read_text()
    assert not port_open("127.0.0.1", kafka_port)  # the second up's broker stopped with it
    assert not (data / "processes.json").exists()


def test_a_second_up_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    first = ProcessRecord(tmp_path)
    first.acquire()
    try:
        with pytest.raises(AlreadyRunning):
            ProcessRecord(tmp_path).acquire()
    finally:
        first.release()
    ProcessRecord(tmp_path).acquire()  # released: free again


def test_stale_children_are_ended_by_pid_and_command_line_only(tmp_path: Path) -> None:
    ours = subprocess.Popen(["sleep", "300"], start_new_session=True)
    other = subprocess.Popen(["sleep", "301"], start_new_session=True)
    try:
        crashed = ProcessRecord(tmp_path)
        crashed.add("broker", ours.pid)
        crashed.add("worker", other.pid)
        # the worker's pid now runs another program (pid reuse): the record no longer matches
        records = json.loads((tmp_path / "processes.json").read_text())
        records[1]["cmdline"] = ["python", "-m", "crmtracker", "worker"]
        (tmp_path / "processes.json").write_text(json.dumps(records))

        ended = ProcessRecord(tmp_path).acquire()
        assert ended == [f"broker (pid {ours.pid})"]
        assert ours.wait(5) == -signal.SIGTERM
        assert other.poll() is None  # not ours: left alone
    finally:
        for p in (ours, other):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_child_dies_with_its_parent_even_by_kill_9(tmp_path: Path) -> None:
    """The parent starts ``sleep`` with ``die_with_parent`` and prints its pid; then the
    parent is killed with SIGKILL."""
    code = (
        "import subprocess, sys, time, signal\n"
        "from crmtracker.procs import die_with_parent\n"
        "p = subprocess.Popen(['sleep', '300'], preexec_fn=die_with_parent(signal.SIGTERM))\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, env=_env(), cwd=ROOT
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    argv = cmdline(child)
    assert argv is not None and argv[0] == "sleep"
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while cmdline(child) == argv and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cmdline(child) != argv
    assert die_with_parent(signal.SIGTERM) is not None
