"""The draw's hashing: the HMAC loop against the stdlib, and the worker processes that run it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.drawpool import BEST, DrawPool, best_frame, best_of, best_of_page, parse_best

IDS = st.lists(st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True), min_size=1, unique=True)


@given(key=st.binary(min_size=0, max_size=100), ids=IDS)
def test_the_hmac_loop_is_rfc_2104(key: bytes, ids: list[str]) -> None:
    msgs = [i.encode() for i in ids]
    want = sorted((hmac.digest(key, m, "sha256"), m) for m in msgs)
    assert best_of(key, msgs, len(msgs)) == want
    assert best_of(key, msgs, 0) == []


@given(ids=IDS, winners=st.integers(min_value=0, max_value=20))
def test_a_page_keeps_its_smallest_hmacs(ids: list[str], winners: int) -> None:
    seed = hashlib.sha256(b"seed").digest()
    joined = "\n".join(ids).encode()
    want = sorted((hmac.digest(seed, i.encode(), "sha256"), i.encode()) for i in ids)[:winners]
    assert best_of_page(seed, joined, winners) == want


@pytest.mark.parametrize("winners", [1, 3, 50, 20_000])
def test_a_big_page_keeps_its_smallest_hmacs(winners: int) -> None:
    """Enough ids that the loop drops what can no longer win many times over."""
    seed, ids = os.urandom(32), [f"user{i:07d}".encode() for i in range(20_000)]
    want = sorted((hmac.digest(seed, m, "sha256"), m) for m in ids)[:winners]
    assert best_of(seed, ids, winners) == want


def _page(n: int, salt: str = "") -> bytes:
    return "\n".join(f"u{salt}{i:06d}" for i in range(n)).encode()


async def test_pages_hash_in_worker_processes_and_agree_with_a_thread() -> None:
    pool, seed = DrawPool(2), os.urandom(32)
    try:
        pages = [_page(5_000, str(k)) for k in range(4)]
        got = await asyncio.gather(*(pool.best(seed, p, 7) for p in pages))
        alone = await asyncio.gather(*(pool.best(seed, p, 7, alone=True) for p in pages))
        assert got == alone == [best_of_page(seed, p, 7) for p in pages]
        pids = pool.worker_pids()
        assert pids and os.getpid() not in pids and len(pids) <= 2
    finally:
        await pool.aclose()
    assert not pool.started


async def test_a_dead_worker_costs_no_draw_and_the_next_draw_gets_new_workers() -> None:
    pool, seed = DrawPool(2), os.urandom(32)
    page = _page(20_000)
    try:
        want = await pool.best(seed, page, 3)
        dead = pool.worker_pids()
        for pid in dead:
            os.kill(pid, signal.SIGKILL)
        # pages in flight or sent while the pool breaks are hashed in a thread instead
        assert await asyncio.gather(*(pool.best(seed, page, 3) for _ in range(3))) == [want] * 3
        assert await pool.best(seed, page, 3) == want
        assert pool.worker_pids() and not set(pool.worker_pids()) & set(dead)
    finally:
        await pool.aclose()


def test_the_pool_size_is_bounded() -> None:
    assert 1 <= DrawPool().processes <= 16
    with pytest.raises(ValueError):
        DrawPool(17)


def test_best_frames_round_trip_and_bad_ones_are_refused() -> None:
    best = best_of_page(b"k", _page(50), 4)
    frame = best_frame(best)
    (count,) = BEST.unpack_from(frame)
    assert parse_best(count, frame[BEST.size :]) == best
    assert parse_best(0, b"") == []
    digests_only = frame[BEST.size : BEST.size + 4 * 32]
    for count, body in ((4, digests_only), (5, frame[BEST.size :]), (0, b"x")):
        with pytest.raises(ValueError):
            parse_best(count, body)


async def test_a_cancelled_draw_leaves_no_worker_behind() -> None:
    pool = DrawPool(1)
    page = _page(400_000)
    task = asyncio.create_task(pool.best(b"k", page, 3))
    while not pool.worker_pids():
        await asyncio.sleep(0.001)
    (pid,) = pool.worker_pids()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.worker_pids() == []  # out of step mid-page: dropped, not reused
    for _ in range(200):
        if not os.path.exists(f"/proc/{pid}") or "zombie" in _state(pid):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the cancelled page's worker still runs")
    assert await pool.best(b"k", _page(10), 2) == best_of_page(b"k", _page(10), 2)
    await pool.aclose()


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(line for line in f if line.startswith("State:")).lower()
    except FileNotFoundError:
        return "zombie"


async def test_a_worker_that_stops_answering_is_dropped_and_its_page_still_drawn() -> None:
    pool, seed = DrawPool(1, page_timeout_s=0.5), os.urandom(32)
    page = _page(2_000)
    try:
        want = await pool.best(seed, page, 3)
        (pid,) = pool.worker_pids()
        os.kill(pid, signal.SIGSTOP)  # alive, holding its pipes, never answering
        assert await pool.best(seed, page, 3) == want
        assert pid not in pool.worker_pids()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        await pool.aclose()
