"""The event loop choice of the long-running processes (CRM_EVENT_LOOP)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from crmtracker.eventloop import loop_name


def test_auto_is_each_process_s_own_choice_and_a_named_loop_is_that_loop() -> None:
    assert loop_name("auto", auto="uvloop") == "uvloop"  # uvloop: a dependency on Linux
    assert loop_name("auto", auto="asyncio") == "asyncio"
    assert loop_name("uvloop", auto="asyncio") == "uvloop"
    assert loop_name("asyncio", auto="uvloop") == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert loop_name("auto", auto="uvloop") == "asyncio"
    with pytest.raises(SystemExit, match="uvloop is not installed"):
        loop_name("uvloop", auto="asyncio")


@pytest.mark.parametrize(
    ("choice", "auto", "module"),
    [("auto", "uvloop", "uvloop"), ("auto", "asyncio", "asyncio"), ("uvloop", "asyncio", "uvloop")],
)
def test_processes_create_their_loops_of_the_chosen_kind(
    choice: str, auto: str, module: str
) -> None:
    code = (
        "import asyncio\n"
        "from crmtracker.eventloop import use_event_loop\n"
        f"print(use_event_loop({choice!r}, auto={auto!r}))\n"
        "async def main():\n"
        "    print(type(asyncio.get_running_loop()).__module__.split('.')[0])\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [module, module]


def test_child_processes_get_the_same_choice(tmp_path: Path) -> None:
    from config import Settings

    s = Settings(data_dir=tmp_path, event_loop="asyncio")
    assert s.child_env()["CRM_EVENT_LOOP"] == "asyncio"
