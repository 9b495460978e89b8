"""One minute of chaos (loadtest/chaos.py): gateway SIGKILLs and a Redis SIGKILL lose nothing.

The run is the real command, as a subprocess in its own process group (so that a timeout takes
its redis-server and gateways with it). The audit's rules are checked first on made-up logs, so
that a run that passes is known to be able to fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.chaos_audit import (
    StreamIndex,
    ViewerLog,
    Welcome,
    audit_sale,
    audit_viewer,
    latency_summary_ms,
)

ROOT = Path(__file__).resolve().parents[2]
STREAM = StreamIndex([f"100-{i}" for i in range(10)])


def _log(welcomes: list[tuple[str, bool]], received: list[tuple[int, int]]) -> ViewerLog:
    return ViewerLog(
        "v", [Welcome(i, r) for i, r in welcomes], [(c, f"100-{n}") for c, n in received]
    )


def test_the_audit_counts_a_gap_and_a_duplicate_across_a_recovered_resume() -> None:
    log = _log([("100-1", False), ("100-4", True)], [(1, 2), (1, 3), (1, 4), (2, 4), (2, 6)])
    a = audit_viewer(log, STREAM, "100-6")
    assert (a.expected, a.gaps, a.duplicates, a.out_of_order) == (5, 1, 1, 0)
    assert a.first_gaps == ("100-5",)


def test_the_audit_excuses_only_what_an_unrecovered_resume_skipped() -> None:
    # had up to 3; the snapshot at 6 stands for 4..6; 7 missing after it is a real gap
    log = _log([("100-1", False), ("100-6", False)], [(1, 2), (1, 3), (2, 8), (2, 9)])
    a = audit_viewer(log, STREAM, "100-9")
    assert (a.unrecovered, a.skipped_unrecovered, a.gaps) == (1, 3, 1)
    assert a.first_gaps == ("100-7",)


def test_the_audit_counts_oversold_lost_and_unknown_orders() -> None:
    sale = {"id": "s1", "stock": 2, "per_user_limit": 1, "sold": 3}
    orders = [{"id": f"o{i}", "user": u, "qty": 1} for i, u in enumerate(["a", "b", "b"])]
    acked = {"o0": ("a", "r"), "o9": ("c", "r")}
    a = audit_sale(sale, orders, acked, attempts=4, answers={}, answer_changed=0)
    assert (a.oversold, a.over_user_limit, a.lost_acked, a.unknown_to_buyers) == (1, 1, 1, 2)


def test_latency_percentiles_are_nearest_rank() -> None:
    got = latency_summary_ms([0.001 * i for i in range(1, 101)])
    assert got == {"n": 100, "p50": 50.0, "p99": 99.0, "max": 100.0}


@pytest.mark.timeout(300)
def test_a_minute_of_gateway_and_redis_kills_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    cmd = [
        sys.executable,
        "-m",
        "loadtest.chaos",
        "--seconds",
        "60",
        "--kill-every",
        "20",
        "--redis-restarts",
        "1",
        "--viewers",
        "40",
        "--json",
        str(out),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output = proc.communicate(timeout=270)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the run's own group: its children too
            proc.wait()
    assert out.exists(), output[-4000:]
    report = json.loads(out.read_text())
    summary = output.split("\n{", 1)[0]

    # the faults really happened, and clients really lived through them
    assert report["faults_done"] == {"gateway_kill": 2, "redis_restart": 1}, summary
    assert report["notes"]["resumes"] > 0, summary
    assert report["viewers"]["received"] > 0, summary

    failures = report["failures"]
    for check in (
        "gaps",
        "duplicates",
        "out_of_order",
        "unknown_ids",
        "lost_acked_danmaku",
        "double_published_danmaku",
        "lost_acked_orders",
        "oversold",
        "over_user_limit",
        "buy_answer_changed",
        "lost_acked_lottery_entries",
        "lotteries_not_verified",
        "refunds_not_closed",
        "harness_errors",
    ):
        assert failures[check] == 0, f"{check}: {failures[check]}\n{summary}"
    assert report["danmaku"]["acked"] > 0, summary
    assert len(report["sales"]) >= 2, summary
    for sale in report["sales"]:
        assert sale["sold_qty"] <= sale["stock"], summary
        assert sale["acked"] > 0, summary
    refunds = report["refunds"]
    assert refunds["count"] > 0, summary
    assert refunds["outcomes"] == {"closed_4403": refunds["count"]}, summary
    assert report["ok"] is True and proc.returncode == 0, summary
