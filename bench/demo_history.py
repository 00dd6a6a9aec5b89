"""How long `crm-tracker up --demo` takes to send and apply its year of history, and what the
first screen then shows (b01's months, assessments, coverage).

    .venv/bin/python bench/demo_history.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx

from crmtracker.broker import free_port

TZ = ZoneInfo("Asia/Shanghai")


def main() -> int:
    api, kafka = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="crm-demo-")
    env = {
        k: v for k, v in os.environ.items() if k not in ("CRM_DATABASE_URL", "CRM_KAFKA_BOOTSTRAP")
    }
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "crmtracker", "up", "--demo", "--port", str(api)]
    cmd += ["--kafka-port", str(kafka), "--data-dir", data]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: list[str] = []
    assert proc.stdout is not None
    out = proc.stdout
    threading.Thread(target=lambda: lines.extend(out), daemon=True).start()
    token = None
    sent_after = None
    try:
        while time.monotonic() - t0 < 900:
            for line in list(lines):
                if token is None and "dashboard" in line and "#token=" in line:
                    token = line.split("#token=", 1)[1].split()[0]
                if sent_after is None and "history sent" in line:
                    sent_after = time.monotonic() - t0
                    print(f"history sent after {sent_after:.1f} s: {line.strip()}", flush=True)
            if token and sent_after is not None:
                h = {"Authorization": f"Bearer {token}"}
                base = f"http://127.0.0.1:{api}"
                lag = httpx.get(f"{base}/v1/ops/lag", headers=h, timeout=5).json()
                if lag.get("status") == "OK" and all(
                    (i.get("lag") or 0) < 50 for i in lag["items"]
                ):
                    print(
                        f"applied (every partition within 50) after {time.monotonic() - t0:.1f} s"
                    )
                    today = datetime.now(TZ).date()
                    months = httpx.get(
                        f"{base}/v1/branches/b01/series",
                        params={
                            "step": "month",
                            "from": f"{today.year}-01-01",
                            "to": today.isoformat(),
                        },
                        headers=h,
                    ).json()
                    print("b01 months:", [(p["from"][:7], p["value"]) for p in months["points"]])
                    table = httpx.get(f"{base}/v1/branches/b01/assessment", headers=h).json()
                    for i in table["items"]:
                        print(
                            " ",
                            i["manager_id"],
                            i["completion_ratio"],
                            i["total_score"],
                            i["flags"],
                        )
                    cov = httpx.get(f"{base}/v1/branches/b01/coverage", headers=h).json()
                    print("b01 coverage", cov["coverage"], "overdue", cov["overdue"])
                    return 0
            time.sleep(2)
        print("not applied in time", file=sys.stderr)
        return 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


if __name__ == "__main__":
    sys.exit(main())
