"""The load tester's locust file against `liveroom up`, as docs/loadtest.md tells a user to run
it: every user kind runs, our request types show, and nothing fails but documented outcomes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from runtime.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def liveroom_up(tmp_path: Path):
    """`liveroom up` (dev mode: no LIVEROOM_SECRET, the default secret) on free ports."""
    http, ws = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEROOM_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "up", "--data-dir", str(tmp_path / "up")]
        + ["--http-port", str(http), "--ws-port", str(ws)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "up.log", "wb"),
    )
    base = f"http://127.0.0.1:{http}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()[-2000:]
        time.sleep(0.2)
    yield base, env
    proc.terminate()
    proc.wait(30)


def test_every_user_kind_runs_headless_against_liveroom_up(liveroom_up, tmp_path: Path) -> None:
    base, env = liveroom_up
    env = {**env, "LIVEROOM_LOCUST_SALE_EVERY_S": "5", "LIVEROOM_LOCUST_LOTTERY_EVERY_S": "4"}
    run = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py")]
        + ["--headless", "-u", "40", "-r", "20", "-t", "15s", "--host", base]
        + ["--csv", str(tmp_path / "run"), "--only-summary"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(tmp_path / "run_stats.csv", newline="") as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    names = {name for _, name in rows}
    # each kind of user did its thing, under our request names
    for wanted in ("connect", "danmaku deliver", "danmaku ok", "like sent", "resume recovered"):
        assert wanted in names, sorted(names)
    assert names & {"buy ok", "buy sold_out"}, sorted(names)
    assert "enter ok" in names, sorted(names)
    assert {"POST sale", "POST lottery"} <= names, sorted(names)
    assert int(rows["SEQ", "in order"]["Request Count"]) > 0
    assert ("SEQ", "gap") not in rows and ("SEQ", "duplicate") not in rows
    assert int(rows["", "Aggregated"]["Failure Count"]) == 0
    assert "gaps 0, duplicates 0" in run.stdout + run.stderr
