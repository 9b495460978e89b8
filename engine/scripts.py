"""The Lua scripts in ``engine/lua/``, read once and registered per Redis client.

redis-py's ``Script`` runs EVALSHA and reloads the script by itself after NOSCRIPT (a Redis
restart), also inside pipelines (it checks SCRIPT EXISTS before sending one), so callers never
see a missing script.

Writes that a client waits on (danmaku, buys, lottery entries) are ``GuardedScript``s: each call
carries a deadline, and Redis does nothing with a call it starts after that deadline
(``lua/deadline.lua``). The deadline is shorter than the client's reply timeout
(``engine.store``), so when a call times out and its op is answered `unavailable`, the write
cannot happen later, when a stalled Redis wakes up and runs what was queued in its socket.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from engine.errors import Unavailable
from engine.store import WRITE_DEADLINE_S


@cache
def source(name: str) -> str:
    return resources.files("engine").joinpath("lua", f"{name}.lua").read_text("utf-8")


def register(redis: Redis, name: str) -> AsyncScript:
    return redis.register_script(source(name))


def queue(pipe: Any, script: AsyncScript, keys: list[Any], args: list[Any]) -> None:
    """Queue one call of ``script`` in ``pipe``, a pipeline on one Redis or on a cluster.

    On one Redis the pipeline loads the script first if Redis lacks it. A cluster pipeline
    cannot (redis-py refuses scripts there): it sends a plain EVALSHA, routed by the keys'
    slot, and relies on ``load_everywhere`` having run; a NOSCRIPT reply raises from
    ``execute`` and the caller's retry finds the script loaded again."""
    if isinstance(pipe, Pipeline):
        pipe.scripts.add(script)
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)


async def run_pipeline(
    redis: Any, build: Callable[[Any], None], used: Sequence[AsyncScript]
) -> list[Any]:
    """A pipeline (no transaction) that ``build`` fills with commands and ``queue``d scripts,
    executed. After a NOSCRIPT (a cluster node restarted or flushed its scripts: a pipeline on
    one Redis loads them itself) the ``used`` scripts are loaded on every primary and the
    pipeline runs once more: callers only pipeline commands that are safe to repeat."""
    for attempt in range(2):
        async with redis.pipeline(transaction=False) as p:
            build(p)
            try:
                return await p.execute()  # type: ignore[no-any-return]
            except NoScriptError:
                if attempt:
                    raise
        await load_everywhere(redis, list(used))
    raise AssertionError("unreachable")


async def load_everywhere(redis: Any, scripts: list[AsyncScript | GuardedScript]) -> None:
    """SCRIPT LOAD each of ``scripts`` on every primary (a cluster's SCRIPT LOAD goes to all
    of them; on one Redis, to it)."""
    for script in scripts:
        await redis.script_load(script.script)


def is_late(exc: BaseException) -> bool:
    """Whether ``exc`` is the answer of a guarded call that Redis started after its deadline."""
    return isinstance(exc, ResponseError) and str(exc).startswith("LATE")


def late_to_unavailable(exc: BaseException) -> BaseException:
    """A LATE answer becomes ``Unavailable`` (nothing was written: resend the same ref)."""
    if is_late(exc):
        return Unavailable("state was unreachable for a moment; nothing was done; resend")
    return exc


class GuardedScript:
    """A write script that does nothing when Redis starts it after its deadline.

    Called like redis-py's script (``keys=``, ``args=``; ``queue`` in a pipeline); the deadline,
    ``deadline_s`` from the call, is appended to ``args`` and removed again by the guard, so the
    ``.lua`` file keeps its documented ARGV. Outside a pipeline a LATE answer raises
    ``Unavailable``; in a pipeline the caller passes results through ``late_to_unavailable``.
    """

    def __init__(self, redis: Redis, name: str, *, deadline_s: float = WRITE_DEADLINE_S) -> None:
        self.name = name
        self.deadline_s = deadline_s
        self._script = redis.register_script(source("deadline") + "\n" + source(name))

    @property
    def script(self) -> str:
        return self._script.script  # type: ignore[no-any-return]

    @property
    def sha(self) -> str:
        return self._script.sha  # type: ignore[no-any-return]

    def deadline_ms(self) -> int:
        # The clock is read here, at the I/O edge, as the call is handed to Redis: time spent
        # queued before this point does not count against the deadline.
        return int((time.time() + self.deadline_s) * 1000)

    def queue(self, pipe: Any, keys: list[Any], args: list[Any]) -> None:
        """Queue one call in ``pipe`` (see ``queue``); its reply goes through
        ``late_to_unavailable``."""
        queue(pipe, self._script, keys, [*args, self.deadline_ms()])

    async def __call__(self, keys: list[Any] | None = None, args: list[Any] | None = None) -> Any:
        argv = [*(args or ()), self.deadline_ms()]
        try:
            return await self._script(keys=keys or [], args=argv)
        except ResponseError as exc:
            if is_late(exc):
                raise late_to_unavailable(exc) from None
            raise


def guarded(redis: Redis, name: str) -> GuardedScript:
    return GuardedScript(redis, name)
