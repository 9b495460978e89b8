"""Runs the roles of one process (gateway, api, or all) until SIGTERM/SIGINT, then drains."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable

import uvicorn

from api.app import create_app
from engine.services import Services
from engine.settings import Settings
from gateway.wsserver import Gateway
from runtime import metrics
from runtime.scheduler import Scheduler

log = logging.getLogger("liveroom")

ROLES = ("all", "gateway", "api", "media")
MEDIA_IN_ALL = True  # `liveroom up` serves WHEP/WHIP for the demo room


async def serve(
    settings: Settings,
    role: str = "all",
    *,
    on_ready: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run ``role`` until a signal; SIGTERM drains the gateway (close 1001) within its timeout.

    The composition root of the process: one ``Services`` (the Redis client, the ledgers, the
    settings), built here and handed to every role."""
    services = Services.build(settings)
    await services.start()
    metrics.watch(services, role)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    gateway: Gateway | None = None
    api: uvicorn.Server | None = None
    api_task: asyncio.Task[None] | None = None
    scheduler = Scheduler(services)
    scheduler.start()
    media = None
    try:
        if role == "media" or (role == "all" and MEDIA_IN_ALL):
            from media.service import MediaService  # aiortc is heavy: only where media runs

            media = MediaService(services)
            await media.start()
        if role in ("all", "gateway"):
            gateway = Gateway(services)
            await gateway.start()
            log.info("gateway %s on ws://%s:%d", gateway.id, settings.host, gateway.port)
        if role in ("all", "api", "media"):
            config = uvicorn.Config(
                create_app(services, media=media),
                host=settings.host,
                port=settings.http_port,
                log_level="warning",
                lifespan="off",
                access_log=False,
            )
            api = uvicorn.Server(config)
            api.install_signal_handlers = lambda: None  # type: ignore[method-assign]
            api_task = loop.create_task(api.serve())
            while not api.started:
                if api_task.done():
                    await api_task  # raises the bind error
                    raise RuntimeError("HTTP API stopped while starting")
                await asyncio.sleep(0.02)
            log.info("api on http://%s:%d", settings.host, settings.http_port)
        # Long-lived objects (modules, settings, servers) leave the GC's view, and young
        # collections run less often: per-message garbage is short-lived, and the cyclic GC
        # was 10-20% of a busy gateway's CPU (see docs/BENCHMARKS.md, flash sales).
        gc.freeze()
        gc.set_threshold(50_000, 50, 1_000)
        print("ready", flush=True)
        if on_ready is not None:
            await on_ready()
        await stop.wait()
        log.info("stopping")
    finally:
        await scheduler.stop()
        if gateway is not None:
            await gateway.drain()
        if api is not None and api_task is not None:
            api.should_exit = True
            try:
                await asyncio.wait_for(api_task, 5)
            except (TimeoutError, asyncio.CancelledError):
                pass
        if media is not None:
            await media.stop()
        metrics.unwatch(services)
        await services.aclose()
