"""The command line: tokens for scripts, and `up` starting and stopping cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.auth import decode_token
from crmtracker.broker import free_port
from testkit.process import child_environ

ROOT = Path(__file__).resolve().parents[2]


def run(
    *args: str, data_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crmtracker", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        cwd=data_dir,
        timeout=60,
        env=child_environ(env or {}),
    )


def test_token_prints_the_token_alone_and_up_accepts_it(tmp_path: Path) -> None:
    r = run(
        "token",
        "--role",
        "supervisor",
        "--branch",
        "b01",
        "--branch",
        "b02",
        "--ttl",
        "30m",
        data_dir=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert r.stdout == token + "\n"
    secret = (tmp_path / "signing-secret").read_text().strip()
    p = decode_token(secret, token)
    assert p.role == "supervisor" and p.branches == {"b01", "b02"}


def test_token_refuses_bad_arguments(tmp_path: Path) -> None:
    r = run("token", "--role", "manager", data_dir=tmp_path)
    assert r.returncode == 2 and r.stdout == "" and "--manager" in r.stderr


@pytest.mark.kafka
def test_up_starts_answers_and_stops_cleanly(tmp_path: Path) -> None:
    api_port, kafka_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crmtracker",
            "up",
            "--port",
            str(api_port),
            "--kafka-port",
            str(kafka_port),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_environ({}),
    )
    try:
        deadline = time.monotonic() + 60
        ok = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ok = httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                break
            time.sleep(0.3)
        assert ok, proc.stderr.read() if proc.poll() is not None else "no answer"
        # ready once the worker has joined and reported
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=2).status_code == 200:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("never ready")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=40)
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{api_port}" in out
    assert f"127.0.0.1:{kafka_port}" in out
    assert "admin token" in out
    assert "stopped" in err
    # the broker child is gone with it
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=1)


def test_replay_after_a_policy_change_equals_a_fresh_computation(tmp_path: Path) -> None:
    """Raise the intermediary coefficient, replay, and compare with the vectors applied from
    scratch under the new policy; a second replay changes nothing."""
    import asyncio
    from decimal import Decimal

    from models.db import make_engine, upgrade
    from models.policy import Policy
    from streams.apply import Applier
    from testkit.checks import buckets
    from testkit.feed import vector_batches

    new_policy = Policy(coefficients={**Policy().coefficients, "intermediary": Decimal("3.0")})

    async def fill(url: str, policy: Policy) -> None:
        engine = make_engine(url, writer=True)
        applier = Applier(engine, policy)
        for batch in vector_batches():
            await applier.apply(batch)
        await engine.dispose()

    async def figures(url: str) -> object:
        engine = make_engine(url)
        try:
            return await buckets(engine)
        finally:
            await engine.dispose()

    live, fresh = tmp_path / "live.sqlite3", tmp_path / "fresh.sqlite3"
    for path, policy in ((live, Policy()), (fresh, new_policy)):
        upgrade(f"sqlite+aiosqlite:///{path}")
        asyncio.run(fill(f"sqlite+aiosqlite:///{path}", policy))
    env = {"CRM_DATABASE_URL": f"sqlite:///{live}", "CRM_COEFFICIENT_INTERMEDIARY": "3.0"}
    before = asyncio.run(figures(f"sqlite+aiosqlite:///{live}"))
    r = run("replay", data_dir=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "100%" in r.stderr and "re-credited" in r.stderr
    assert "balance day-changes rebuilt" in r.stderr
    after = asyncio.run(figures(f"sqlite+aiosqlite:///{live}"))
    assert after != before
    assert after == asyncio.run(figures(f"sqlite+aiosqlite:///{fresh}"))
    again = run("replay", "--from", "2026-10-01", "--quiet", data_dir=tmp_path, env=env)
    assert again.returncode == 0 and " 0 re-credited" in again.stderr
    assert asyncio.run(figures(f"sqlite+aiosqlite:///{live}")) == after
    bad = run("replay", "--from", "yesterday", data_dir=tmp_path, env=env)
    assert bad.returncode == 2 and "--from" in bad.stderr


def test_api_refuses_a_missing_or_placeholder_secret_outside_the_demo(tmp_path: Path) -> None:
    real = {"CRM_KAFKA_BOOTSTRAP": "kafka.bank.internal:9093"}
    for secret in (None, "changeme", "short-secret"):
        env = {**real, **({"CRM_AUTH_SECRET": secret} if secret else {})}
        r = run("api", data_dir=tmp_path, env=env)
        assert r.returncode == 2, (secret, r.stderr)
        assert "CRM_AUTH_SECRET" in r.stderr


def test_minting_a_token_is_audited(tmp_path: Path) -> None:
    import sqlite3

    r = run("token", "--role", "manager", "--manager", "m-7", "--ttl", "30m", data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    db = sqlite3.connect(tmp_path / "crm-tracker.sqlite3")
    rows = db.execute("SELECT action, role, subject, detail FROM audit_log").fetchall()
    assert len(rows) == 1
    action, role, subject, detail = rows[0]
    assert (action, role, subject) == ("token.minted", "cli", "role:manager")
    assert '"manager_id": "m-7"' in detail and '"ttl": "30m"' in detail
    assert r.stdout.strip().count(".") == 2  # still the token alone on stdout
