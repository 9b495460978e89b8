"""The lottery draw's hashing, and where it runs: worker processes, so a big draw uses every core.

``best_of`` is the draw's HMAC loop (pure; ``engine.lottery`` builds the draw on it).

hashlib holds the GIL for inputs as short as user ids, so threads cannot share the HMAC work of
a million entrants; processes can. The drawing process fetches the entrants page by page and
hands each page (its ids newline-joined: one bytes object, one copy to ship) to the next idle
worker, which sends back only that page's ``winners`` smallest (HMAC, id) pairs; fetching the
next page overlaps hashing the last. The drawer merges the pages' bests (``engine.lottery``).

A worker is ``python -m engine.drawpool``: a fresh interpreter that imports only this module,
reads framed pages on stdin and writes framed bests on stdout, one at a time, and exits at end
of input (so it never outlives its drawer). The frames (``struct``, network order):

- page: ``!IHI`` (ids bytes, seed bytes, winners), the seed, the newline-joined ids;
- best: ``!I`` (pairs), then the digests (32 bytes each), then the pairs' ids newline-joined.

A draw of one page (``FETCH_PAGE`` entrants or fewer) hashes in a thread of the drawer: for it a
round trip to a process costs more than it saves. The workers start at the first draw that needs
them and stay for the next. A worker that dies, answers out of frame, or does not answer within
``PAGE_TIMEOUT_S`` is dropped and its page hashed in a thread instead; a new worker takes its
place at the next page, so a lost or stuck worker never loses a draw or hangs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import struct
import sys
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

MAX_PROCESSES = 16
DIGEST_BYTES = 32


# -- pure: the HMAC loop and one page's best ------------------------------------------------


def _keyed(key: bytes) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """HMAC-SHA256's two hash states after ``key ^ ipad`` and ``key ^ opad`` (RFC 2104), as
    their ``copy`` methods: the key schedule done once for every message."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    return inner.copy, outer.copy


def best_of(key: bytes, members: Iterable[bytes], winners: int) -> list[tuple[bytes, bytes]]:
    """The ``winners`` smallest ``(HMAC-SHA256(key, member), member)`` pairs, ascending.

    Tuples compare by digest, then by member: equal HMACs fall back to the member.

    This is the draw's one HMAC loop, at about 2x the cost of one sha256 per member:
    - ``hmac.digest`` sets up a fresh HMAC context per call, which costs about as much as the
      hashing itself for short ids. Here both keyed states are copied per member instead. A
      copy is cheaper than a new sha256, since OpenSSL 3 looks the digest up for every new one.
    - The outer hash compresses one block.
    - A pair is kept only when it is no larger than the ``winners``-th smallest so far, so the
      loop does one comparison per member and no heap work.
    """
    if winners <= 0:
        return []
    copy_inner, copy_outer = _keyed(key)
    kept: list[tuple[bytes, bytes]] = []
    top = b"\xff" * (DIGEST_BYTES + 1)  # above every digest until `winners` are kept
    room = 4 * winners + 16
    for m in members:
        h = copy_inner()
        h.update(m)
        o = copy_outer()
        o.update(h.digest())
        d = o.digest()
        if d <= top:  # (equal: its member may still be the smaller)
            kept.append((d, m))
            if len(kept) >= room:
                kept.sort()
                del kept[winners:]
                top = kept[-1][0]
    kept.sort()
    return kept[:winners]


def best_of_page(seed: bytes, joined: bytes, winners: int) -> list[tuple[bytes, bytes]]:
    """``best_of`` one page of newline-joined ids (a worker's task: bytes in and a few pairs
    out, so shipping it to a process is one copy each way)."""
    return best_of(seed, joined.split(b"\n"), winners)


# -- the frames (pure) ------------------------------------------------------------------------

PAGE = struct.Struct("!IHI")
BEST = struct.Struct("!I")
MAX_PAGE_BYTES = 64 * 1024 * 1024
"""A page frame larger than this is refused (the drawer sends ~1-7 MB)."""
PAGE_TIMEOUT_S = 30.0
"""A worker that has not answered a page this long is dropped (one hashes 50,000 ids in ~40 ms)."""


def page_frame(seed: bytes, joined: bytes, winners: int) -> bytes:
    return PAGE.pack(len(joined), len(seed), winners) + seed + joined


def best_frame(best: list[tuple[bytes, bytes]]) -> bytes:
    return BEST.pack(len(best)) + b"".join(d for d, _ in best) + b"\n".join(m for _, m in best)


def parse_best(count: int, body: bytes) -> list[tuple[bytes, bytes]]:
    """The pairs of a best frame's body (after its header), or ValueError when out of frame."""
    if count == 0:
        if body:
            raise ValueError("a best frame of no pairs has a body")
        return []
    cut = count * DIGEST_BYTES
    ids = body[cut:].split(b"\n")
    if len(body) <= cut or len(ids) != count:
        raise ValueError("a best frame's ids do not match its count")
    return [(body[i * DIGEST_BYTES : (i + 1) * DIGEST_BYTES], ids[i]) for i in range(count)]


# -- the worker (``python -m engine.drawpool``) -----------------------------------------------


def worker_main() -> int:
    """Answer page frames on stdin with best frames on stdout until stdin ends."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while header := stdin.read(PAGE.size):
        if len(header) < PAGE.size:
            return 1
        size, seed_len, winners = PAGE.unpack(header)
        if size > MAX_PAGE_BYTES:
            return 1
        seed, joined = stdin.read(seed_len), stdin.read(size)
        if len(seed) < seed_len or len(joined) < size:
            return 1
        out = best_frame(best_of_page(seed, joined, winners))
        stdout.write(BEST.pack(len(out)) + out)
        stdout.flush()
    return 0


# -- the edge: the drawer's pool of workers ------------------------------------------------------


def default_processes() -> int:
    """One worker per CPU this process may run on, at most ``MAX_PROCESSES``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_PROCESSES))


class DrawPool:
    """Hashes draw pages in up to ``processes`` worker processes (0: ``default_processes()``)."""

    def __init__(self, processes: int = 0, *, page_timeout_s: float = PAGE_TIMEOUT_S) -> None:
        if not 0 <= processes <= MAX_PROCESSES:
            raise ValueError(f"draw processes must be 0-{MAX_PROCESSES}")
        self.processes = processes or default_processes()
        self.page_timeout_s = page_timeout_s
        self._idle: list[asyncio.subprocess.Process] = []
        self._all: set[asyncio.subprocess.Process] = set()
        self._freed = asyncio.Condition()

    async def best(
        self, seed: bytes, joined: bytes, winners: int, *, alone: bool = False
    ) -> list[tuple[bytes, bytes]]:
        """The ``winners`` smallest (HMAC, id) pairs of one page of newline-joined ids.

        ``alone``: the draw has just this page, so it is hashed in a thread.
        """
        if not alone:
            worker = await self._take()
            if worker is not None:
                got = await self._ask(worker, page_frame(seed, joined, winners))
                if got is not None:
                    return got
        return await asyncio.to_thread(best_of_page, seed, joined, winners)

    async def _take(self) -> asyncio.subprocess.Process | None:
        """An idle worker, a new one while fewer than ``processes`` run, else the next freed."""
        freed = self._freed
        async with freed:
            while not self._idle and len(self._all) >= self.processes:
                await freed.wait()
            if self._idle:
                return self._idle.pop()
            try:
                worker = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    __name__,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            except OSError as exc:
                log.warning("cannot start a draw worker (%s): hashing in a thread", exc)
                return None
            self._all.add(worker)
            return worker

    async def _ask(
        self, worker: asyncio.subprocess.Process, frame: bytes
    ) -> list[tuple[bytes, bytes]] | None:
        """One page's best from ``worker``; None (and the worker dropped) when it failed."""
        assert worker.stdin is not None and worker.stdout is not None
        ok = False
        try:
            async with asyncio.timeout(self.page_timeout_s):
                worker.stdin.write(frame)
                await worker.stdin.drain()
                (size,) = BEST.unpack(await worker.stdout.readexactly(BEST.size))
                if size > MAX_PAGE_BYTES:
                    raise ValueError("a best frame too large")
                body = await worker.stdout.readexactly(size)
            (count,) = BEST.unpack_from(body)
            got = parse_best(count, body[BEST.size :])
            ok = True
            return got
        except (
            OSError,
            TimeoutError,
            asyncio.IncompleteReadError,
            ValueError,
            struct.error,
        ) as exc:
            log.warning("a draw worker failed (%r): its page hashes in a thread", exc)
            return None
        finally:  # a worker cancelled mid-frame is out of step: dropped like a dead one
            await self._give_back(worker, ok)

    async def _give_back(self, worker: asyncio.subprocess.Process, ok: bool) -> None:
        if ok:
            self._idle.append(worker)
        else:
            self._all.discard(worker)
            _kill(worker)
        async with self._freed:
            self._freed.notify()

    @property
    def started(self) -> bool:
        return bool(self._all)

    def worker_pids(self) -> list[int]:
        """The pids of the running workers (none before the first big draw)."""
        return [w.pid for w in self._all]

    async def aclose(self) -> None:
        """Stop the workers: idle ones end at end of input; one busy past a second is killed."""
        workers, self._all, self._idle = self._all, set(), []
        for worker in workers:
            if worker.stdin is not None:
                worker.stdin.close()
        for worker in workers:
            try:
                await asyncio.wait_for(worker.wait(), 1.0)
            except TimeoutError:
                _kill(worker)
                await worker.wait()


def _kill(worker: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        worker.kill()


if __name__ == "__main__":
    sys.exit(worker_main())
