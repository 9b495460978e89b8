"""The ``liveroom`` command (PROTOCOL.md §0, §1): up, serve, token."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path

from engine.errors import Conflict, LiveroomError
from engine.ids import RoomId
from engine.rooms import Access, NewRoom, RoomStatus, RoomStore
from engine.settings import DEV_SECRET, Settings
from engine.tokens import Role, issue
from runtime.logs import configure as configure_logs

DEMO_ROOM = RoomId("demo")


def _settings(args: argparse.Namespace, *, dev: bool = False) -> Settings:
    return Settings.from_env(
        os.environ,
        redis_url=getattr(args, "redis_url", None),
        host=getattr(args, "host", None),
        http_port=getattr(args, "http_port", None),
        ws_port=getattr(args, "ws_port", None),
        tick_ms=getattr(args, "tick_ms", None),
        workers=getattr(args, "workers", None),
        dev=True if dev or getattr(args, "dev", False) else None,
    )


def _run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - uvloop is a dependency; this is for odd platforms
        asyncio.run(coro)  # type: ignore[arg-type]


def cmd_token(args: argparse.Namespace) -> int:
    settings = Settings.from_env(os.environ)
    if settings.secret == DEV_SECRET:
        print(
            "liveroom: LIVEROOM_SECRET is not set; signing with the development secret",
            file=sys.stderr,
        )
    rooms = [r for r in (args.rooms or "").split(",") if r]
    print(
        issue(
            settings.secret,
            args.user,
            args.role,
            ttl_s=args.ttl,
            name=args.name,
            rooms=rooms or None,
        )
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from runtime.runner import serve

    settings = _settings(args).check()
    configure_logs(settings.log_format, args.role)
    if settings.workers > 1:
        from runtime.workers import supervise

        return supervise(args.argv, settings.workers, args.role)
    _run(serve(settings, args.role))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from runtime.redis_server import RedisServer
    from runtime.runner import serve

    dev = os.environ.get("LIVEROOM_SECRET") in (None, "", DEV_SECRET)
    settings = _settings(args, dev=dev).check()
    configure_logs(settings.log_format, "all")
    redis_child = None
    if not (args.redis_url or os.environ.get("REDIS_URL")):
        data = Path(args.data_dir)
        redis_child = RedisServer(data / "redis").start()
        settings = settings.with_(redis_url=redis_child.url)

    async def ready() -> None:
        from engine.access import EntitlementCheck, Membership
        from engine.store import connect

        redis = connect(settings.redis_url)
        store = RoomStore(redis)
        try:
            await store.create(
                NewRoom(DEMO_ROOM, "liveroom demo", Access(), {"source": "pattern"}), "host"
            )
        except Conflict:
            pass
        room = await store.get(DEMO_ROOM)
        if room.status is not RoomStatus.LIVE:
            await store.set_status(DEMO_ROOM, RoomStatus.LIVE)
        # A VIP member, so the demo shows tier prices in flash sales.
        await EntitlementCheck(redis).set_membership("vip1", Membership("vip", None))
        await redis.aclose()
        viewer = issue(settings.secret, "viewer1", "viewer", ttl_s=86400, name="Viewer 1")
        vip = issue(settings.secret, "vip1", "viewer", ttl_s=86400, name="VIP 1")
        host = issue(settings.secret, "host", "host", ttl_s=86400, name="Host", rooms=["demo"])
        http = f"http://{settings.host}:{settings.http_port}"
        ws = f"ws://{settings.host}:{settings.ws_port}"
        print(
            "\nliveroom is up"
            + (" (dev mode: default token secret)" if settings.dev else "")
            + f"\n  redis          {settings.redis_url}"
            + f"\n  web player     {http}/rooms/demo?token={viewer}"
            + f"\n  as a VIP       {http}/rooms/demo?token={vip}"
            + f"\n  host console   {http}/host/demo?token={host}"
            + f"\n  websocket      {ws}/ws/rooms/demo?token={viewer}"
            + f"\n  http api       {http}/api/rooms/demo   (docs: {http}/docs)"
            + "\n  more tokens    liveroom token --user NAME --role viewer|host|admin"
            + "\nCtrl-C stops everything.\n",
            flush=True,
        )

    try:
        _run(serve(settings, "all", on_ready=ready))
    finally:
        if redis_child is not None:
            redis_child.stop()
    return 0


def cmd_verify_lottery(args: argparse.Namespace) -> int:
    """Recompute a draw from its public record (PROTOCOL.md §5): exit 0 when it holds."""
    import json
    import urllib.error
    import urllib.request

    from engine.lottery import verify

    if args.file:
        with open(args.file, encoding="utf-8") as f:
            record = json.load(f)
        source = args.file
    else:
        if not args.target:
            print("liveroom: name ROOM LOTTERY, a URL, or --file", file=sys.stderr)
            return 2
        if args.target[0].startswith(("http://", "https://")):
            url = args.target[0]
        elif len(args.target) == 2:
            room, lottery = args.target
            url = f"{args.api.rstrip('/')}/api/rooms/{room}/lotteries/{lottery}"
        else:
            print("liveroom: name ROOM LOTTERY, a URL, or --file", file=sys.stderr)
            return 2
        token = args.token or os.environ.get("LIVEROOM_TOKEN")
        if not token:  # any valid token may read a record; sign one if we hold the secret
            token = issue(Settings.from_env(os.environ).secret, "verifier", "viewer", ttl_s=300)
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                record = json.load(resp)
        except urllib.error.HTTPError as exc:
            print(
                f"liveroom: {url}: HTTP {exc.code} {exc.read().decode(errors='replace')}",
                file=sys.stderr,
            )
            return 2
        except urllib.error.URLError as exc:
            print(f"liveroom: {url}: {exc.reason}", file=sys.stderr)
            return 2
        source = url
    if record.get("status") not in (None, "drawn"):
        print(
            f"NOT DRAWN YET: lottery {record.get('id')} is {record.get('status')}; "
            f"commit {record.get('commit')}"
        )
        return 1
    result = verify(record)
    if result.ok:
        print(
            f"OK: {source}\n  sha256(seed) == commit {record['commit']}\n"
            f"  {len(record['entrants'])} entrants; winners recomputed: "
            f"{', '.join(record['winners']) or '(none)'}"
        )
        return 0
    print(f"FAILED ({result.failed}): {result.message}")
    return 1


def cmd_version(_: argparse.Namespace) -> int:
    print("liveroom 0.1.0 (protocol v1)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="liveroom", description="Live-room interaction engine.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--redis-url", help="Redis URL (default: REDIS_URL or LIVEROOM_REDIS_URL)")
        sp.add_argument("--host", help="interface to bind (default 127.0.0.1)")
        sp.add_argument("--http-port", type=int, help="HTTP API port (default 8080)")
        sp.add_argument("--ws-port", type=int, help="WebSocket gateway port (default 8081)")
        sp.add_argument("--tick-ms", type=int, help="batching tick in ms (default 50)")
        sp.add_argument("--log-level", default=os.environ.get("LIVEROOM_LOG_LEVEL", "INFO"))

    up = sub.add_parser("up", help="development: private Redis, all roles, a demo room")
    common(up)
    up.add_argument("--data-dir", default=".liveroom", help="where the private Redis keeps data")
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="production: one role per process")
    common(serve)
    serve.add_argument("--role", choices=("all", "gateway", "api", "media"), default="all")
    serve.add_argument("--dev", action="store_true", help="allow the default token secret")
    serve.add_argument(
        "--workers", type=int, help="gateway processes on the WebSocket port (default 1)"
    )
    serve.set_defaults(func=cmd_serve)

    tok = sub.add_parser("token", help="print a token signed with LIVEROOM_SECRET")
    tok.add_argument("--user", required=True)
    tok.add_argument("--role", choices=[r.value for r in Role], default="viewer")
    tok.add_argument("--ttl", type=int, default=3600, help="seconds until expiry")
    tok.add_argument("--rooms", help="comma-separated rooms a host controls")
    tok.add_argument("--name", help="display name (default: the user id)")
    tok.set_defaults(func=cmd_token)

    ver_l = sub.add_parser("verify-lottery", help="recompute a lottery draw and check it")
    ver_l.add_argument("target", nargs="*", help="ROOM LOTTERY, or the record's URL")
    ver_l.add_argument("--api", default="http://127.0.0.1:8080", help="HTTP API base URL")
    ver_l.add_argument("--token", help="a token to read the record (default: LIVEROOM_TOKEN)")
    ver_l.add_argument("--file", help="a saved JSON record instead of fetching one")
    ver_l.set_defaults(func=cmd_verify_lottery)

    ver = sub.add_parser("version", help="print the version")
    ver.set_defaults(func=cmd_version)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])  # what follows the command
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.Formatter.converter = time.gmtime
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except LiveroomError as exc:
        print(f"liveroom: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
