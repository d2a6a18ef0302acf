"""A stand-in for Liaison's web routes, for working on the map without a real server.

Serves the built page (src/liaison/web/static/) and fakes the contract the page uses: sign-in,
/api/v1/me, /api/v1/picture, /api/v1/chat, /api/v1/items (drawings, built by Liaison's own
protocol/drawings.py; no labels checked), /api/v1/tiles (204: no tile set) and the
/api/v1/stream WebSocket, with synthetic units moving around Kyiv. Plain HTTP on 127.0.0.1
only. Not used by the tests, which run the real server; this is for looking at the page while
changing it:

    .venv/bin/python web/dev/fake_server.py --units 200 --port 8446
    (then open http://127.0.0.1:8446/login, any user name, password "pw")
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import random
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web

from liaison.api.geojson import event_feature
from liaison.protocol import cot_xml, drawings

STATIC = Path(__file__).resolve().parents[2] / "src" / "liaison" / "web" / "static"
LABELS = [
    "UNCLASSIFIED//REL TO USA, UKR",
    "SECRET//REL TO USA, UKR",
    "CONFIDENTIAL//REL TO UKR",
    None,
]
TYPES = ["a-f-G-U-C-I", "a-f-G-E-V-A", "a-h-G-U-C-A", "a-n-G", "a-u-G", "a-f-A-M-F-Q", "a-h-S"]


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


class World:
    def __init__(self, n: int, seed: int = 7) -> None:
        rnd = random.Random(seed)
        now = dt.datetime.now(dt.UTC).timestamp()
        self.units: dict[str, dict[str, Any]] = {}
        for i in range(n):
            uid = f"unit-{i}"
            self.units[uid] = {
                "lat": 50.45 + rnd.uniform(-0.6, 0.6),
                "lon": 30.52 + rnd.uniform(-0.9, 0.9),
                "course": rnd.uniform(0, 360),
                "speed": rnd.choice([0.0, 3.0, 8.0, 15.0]),
                "type": TYPES[i % len(TYPES)],
                "label": LABELS[i % len(LABELS)],
                "callsign": f"UNIT-{i:04d}",
                "stale": now + (20 if i % 17 == 0 else 600),
            }
        self.drawn: dict[str, dict[str, Any]] = {}  # uid -> Feature, from POST /api/v1/items
        self.extra = [
            {
                "type": "Feature",
                "geometry": {
                    "type": "LineString",
                    "coordinates": [[30.2, 50.3], [30.4, 50.35], [30.6, 50.3], [30.8, 50.4]],
                },
                "properties": self.props("route-1", "b-m-r", "Route Alpha", None, now),
            },
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[30.3, 50.55], [30.5, 50.55], [30.5, 50.65], [30.3, 50.65],
                                     [30.3, 50.55]]],
                },
                "properties": self.props("shape-1", "u-d-r", "Objective", LABELS[1], now),
            },
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [30.7, 50.5, 0]},
                "properties": self.props("spot-1", "b-m-p-s-m", "Spot 1", LABELS[0], now),
            },
        ]

    @staticmethod
    def props(uid: str, typ: str, callsign: str, label: str | None, now: float) -> dict[str, Any]:
        return {
            "uid": uid, "type": typ, "how": "h-e", "callsign": callsign, "team": None,
            "time": iso(now), "start": iso(now), "stale": iso(now + 3600), "course": None,
            "speed": None, "remarks": None, "label": label,
        }

    def feature(self, uid: str, now: float) -> dict[str, Any]:
        u = self.units[uid]
        return {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [u["lon"], u["lat"], 120.0]},
            "properties": {
                "uid": uid, "type": u["type"], "how": "m-g", "callsign": u["callsign"],
                "team": "Cyan", "time": iso(now), "start": iso(now), "stale": iso(u["stale"]),
                "course": u["course"], "speed": u["speed"], "remarks": None, "label": u["label"],
            },
        }

    def step(self, uid: str, dt_s: float) -> None:
        u = self.units[uid]
        d = u["speed"] * dt_s * 20  # exaggerated so movement shows
        u["lat"] += d * math.cos(math.radians(u["course"])) / 111_000
        u["lon"] += d * math.sin(math.radians(u["course"])) / 71_000

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        return [self.feature(uid, now) for uid in self.units] + self.extra + list(self.drawn.values())


def build(world: World) -> web.Application:
    sessions: dict[str, str] = {}
    chats: list[dict[str, Any]] = []
    sockets: set[web.WebSocketResponse] = set()

    def user(request: web.Request) -> str | None:
        return sessions.get(request.cookies.get("liaison_session", ""))

    async def login_page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "login.html")

    async def login(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if form.get("password") != "pw":
            raise web.HTTPFound("/login?error=1")
        token = secrets.token_urlsafe(16)
        sessions[token] = str(form.get("username"))
        resp = web.HTTPFound("/")
        resp.set_cookie("liaison_session", token, httponly=True, samesite="Strict")
        raise resp

    async def logout(request: web.Request) -> web.StreamResponse:
        sessions.pop(request.cookies.get("liaison_session", ""), None)
        raise web.HTTPFound("/login")

    async def index(request: web.Request) -> web.StreamResponse:
        if user(request) is None:
            raise web.HTTPFound("/login")
        return web.FileResponse(STATIC / "index.html")

    async def me(request: web.Request) -> web.StreamResponse:
        name = user(request)
        if name is None:
            raise web.HTTPUnauthorized()
        return web.json_response({"name": name, "org": "USA", "groups": ["Cyan"],
                                  "clearance": "SECRET//REL TO USA, LIAISON", "csrf": "x",
                                  "uid": f"liaison-web-{name}",
                                  "classifications": ["UNCLASSIFIED", "SECRET", "TOP SECRET"]})

    async def picture(request: web.Request) -> web.StreamResponse:
        if user(request) is None:
            raise web.HTTPUnauthorized()
        now = dt.datetime.now(dt.UTC).timestamp()
        return web.json_response({"type": "FeatureCollection", "features": world.snapshot(now)})

    async def chat_get(request: web.Request) -> web.StreamResponse:
        return web.json_response({"messages": chats[-int(request.query.get("limit", "100")):]})

    async def chat_post(request: web.Request) -> web.StreamResponse:
        if user(request) is None:
            raise web.HTTPUnauthorized()
        body = await request.json()
        now = dt.datetime.now(dt.UTC).timestamp()
        msg = {"uid": secrets.token_hex(8), "sender_uid": "web", "callsign": user(request),
               "text": body.get("text", ""), "chatroom": body.get("chatroom") or "direct",
               "time": iso(now), "label": LABELS[0]}
        chats.append(msg)
        for ws in list(sockets):
            await ws.send_str(json.dumps({"kind": "chat", "message": msg}))
        return web.json_response({"message": msg})

    async def broadcast(message: dict[str, Any]) -> None:
        for ws in list(sockets):
            await ws.send_str(json.dumps(message))

    async def item_post(request: web.Request) -> web.StreamResponse:
        name = user(request)
        if name is None:
            raise web.HTTPUnauthorized()
        body = await request.json()
        try:
            drawing = drawings.parse_drawing(body)
            uid = drawings.check_uid(body["uid"]) if body.get("uid") else secrets.token_hex(8)
        except drawings.DrawingError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        creator = drawings.Creator(f"liaison-web-{name}", name)
        xml = drawings.drawing_xml(drawing, uid=uid, creator=creator, now_ms=now_ms)
        feature = event_feature(cot_xml.parse_event(xml), body.get("label") or LABELS[0])
        status = 200 if uid in world.drawn else 201
        world.drawn[uid] = feature
        await broadcast({"kind": "update", "feature": feature})
        return web.json_response({"item": feature, "delivered": 0}, status=status)

    async def item_delete(request: web.Request) -> web.StreamResponse:
        if user(request) is None:
            raise web.HTTPUnauthorized()
        uid = request.match_info["uid"]
        if world.drawn.pop(uid, None) is None:
            return web.json_response({"error": "not found"}, status=404)
        await broadcast({"kind": "delete", "uid": uid})
        return web.json_response({"uid": uid, "delivered": 0})

    async def tiles(request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)  # no tile set, as a server without web.mbtiles

    async def stream(request: web.Request) -> web.StreamResponse:
        if user(request) is None:
            raise web.HTTPUnauthorized()
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        sockets.add(ws)
        now = dt.datetime.now(dt.UTC).timestamp()
        await ws.send_str(json.dumps({"kind": "snapshot", "features": world.snapshot(now)}))
        try:
            uids = list(world.units)
            while not ws.closed:
                await asyncio.sleep(0.5)
                now = dt.datetime.now(dt.UTC).timestamp()
                for uid in random.sample(uids, min(len(uids), max(1, len(uids) // 4))):
                    world.step(uid, 0.5)
                    await ws.send_str(json.dumps({"kind": "update", "feature": world.feature(uid, now)}))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            sockets.discard(ws)
        return ws

    app = web.Application()
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", index)
    app.router.add_get("/api/v1/me", me)
    app.router.add_get("/api/v1/picture", picture)
    app.router.add_get("/api/v1/chat", chat_get)
    app.router.add_post("/api/v1/chat", chat_post)
    app.router.add_post("/api/v1/items", item_post)
    app.router.add_delete("/api/v1/items/{uid}", item_delete)
    app.router.add_get("/api/v1/tiles", tiles)
    app.router.add_get("/api/v1/stream", stream)
    app.router.add_static("/static/", STATIC)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=200)
    parser.add_argument("--port", type=int, default=8446)
    args = parser.parse_args()
    web.run_app(build(World(args.units)), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
