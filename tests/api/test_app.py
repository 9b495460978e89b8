"""The HTTP API's first endpoints (§3): rooms, live/end, config, health, OpenAPI."""

from __future__ import annotations

from sdk.client import LiveroomClient
from tests.gateway.helpers import collect_history
from tests.support import ADMIN, Api, Proc, token, unique


async def test_create_get_conflict_and_validation(api: Api) -> None:
    room = unique()
    host = token("h1", "host")
    async with api.client(host) as c:
        r = await c.post(
            "/api/rooms",
            json={
                "id": room,
                "title": "Cooking",
                "access": {
                    "mode": "paid",
                    "price_cents": 500,
                    "tiers": ["vip"],
                    "preview_seconds": 30,
                },
            },
        )
        assert r.status_code == 201
        body = r.json()
        assert body["owner"] == "h1" and body["status"] == "scheduled"
        assert body["access"] == {
            "mode": "paid",
            "price_cents": 500,
            "tiers": ["vip"],
            "preview_seconds": 30,
        }
        assert (await c.post("/api/rooms", json={"id": room, "title": "again"})).status_code == 409
        bad = await c.post("/api/rooms", json={"id": "no spaces", "title": "x"})
        assert bad.status_code == 422 and bad.json()["error"] == "invalid"
        bad = await c.post("/api/rooms", json={"title": "x", "access": {"mode": "gold"}})
        assert bad.status_code == 422
        generated = await c.post("/api/rooms", json={"title": "no id given"})
        assert generated.status_code == 201 and generated.json()["id"]
    async with api.client(token("viewer1")) as c:
        got = await c.get(f"/api/rooms/{room}")
        assert got.status_code == 200 and got.json()["title"] == "Cooking"
        assert {"online", "likes"} <= got.json().keys()
        denied = await c.post("/api/rooms", json={"title": "mine"})
        assert denied.status_code == 403 and denied.json()["error"] == "forbidden"
        missing = await c.get(f"/api/rooms/{unique('none')}")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    async with api.client(None) as c:
        r = await c.get(f"/api/rooms/{room}")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"


async def test_live_and_end_are_for_the_rooms_hosts_and_emit_events(
    api: Api, gateways: list[Proc]
) -> None:
    room = unique()
    await api.create_room(room)
    async with LiveroomClient(gateways[0].ws_url, room, token("watcher")) as w:
        for tok in (token("v", "viewer"), token("other", "host", rooms=["elsewhere"])):
            async with api.client(tok) as c:
                r = await c.post(f"/api/rooms/{room}/live")
                assert r.status_code == 403 and r.json()["error"] == "forbidden"
        async with api.client(token("h", "host", rooms=[room])) as c:
            r = await c.post(f"/api/rooms/{room}/live")
            assert r.status_code == 200 and r.json()["status"] == "live"
        async with api.client(ADMIN) as c:
            r = await c.post(f"/api/rooms/{room}/end")
            assert r.json()["status"] == "ended"
        events = await collect_history(w, 2)
        assert [e["type"] for e in events] == ["room.live", "room.ended"]


async def test_config_health_metrics_and_openapi(api: Api) -> None:
    async with api.client(None) as c:
        cfg = (await c.get("/api/config")).json()
        assert cfg["ws_url"].startswith("ws://") and "liveroom.v1.json" in cfg["subprotocols"]
        assert (await c.get("/healthz")).status_code == 200
        assert "python_info" in (await c.get("/metrics")).text
        spec = (await c.get("/openapi.json")).json()
        for path in (
            "/api/rooms",
            "/api/rooms/{room}",
            "/api/rooms/{room}/live",
            "/api/rooms/{room}/end",
            "/api/config",
            "/healthz",
        ):
            assert path in spec["paths"], path
        assert "RoomIn" in spec["components"]["schemas"]


async def test_gateway_port_answers_metrics_and_health(gateways: list[Proc]) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateways[0].ws_port}") as c:
        m = await c.get("/metrics")
        assert m.status_code == 200 and "liveroom_gateway_connections" in m.text
        h = await c.get("/healthz")
        assert h.status_code == 200 and h.json()["status"] == "ok"
        assert h.json()["pid"] == gateways[0].proc.pid  # which process answered (--workers)


async def test_healthz_is_503_when_redis_is_unreachable(spawn) -> None:
    import httpx

    from runtime.redis_server import free_port

    dead = spawn("api", args=["--redis-url", f"redis://127.0.0.1:{free_port()}/0"])
    async with httpx.AsyncClient(base_url=dead.http_url, timeout=30) as c:
        r = await c.get("/healthz")
    assert r.status_code == 503 and r.json()["error"] == "unavailable"


async def test_a_request_body_past_the_limit_is_refused_unread(api: Api) -> None:
    big = b'{"title": "' + b"x" * 1_200_000 + b'"}'
    async with api.client() as c:
        r = await c.post("/api/rooms", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"] == "too_large"

        async def chunks():
            for _ in range(1_200):
                yield b"x" * 1024

        r = await c.post(
            "/api/rooms", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        ok = await c.post("/api/rooms", json={"title": "small"})
        assert ok.status_code == 201
