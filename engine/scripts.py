"""The Lua scripts in ``engine/lua/``, read once and registered per Redis client.

redis-py's ``Script`` runs EVALSHA and reloads the script by itself after NOSCRIPT (a Redis
restart), so callers never see a missing script.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


@cache
def source(name: str) -> str:
    return resources.files("engine").joinpath("lua", f"{name}.lua").read_text("utf-8")


def register(redis: Redis, name: str) -> AsyncScript:
    return redis.register_script(source(name))
