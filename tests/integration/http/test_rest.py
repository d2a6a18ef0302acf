"""The REST API over real HTTPS: each organisation's users get only what they may see."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp

from liaison.app import Server
from tests.integration.conftest import ServerFactory
from tests.integration.helpers import Client, clients, connect_tls, delete_event, sa_event
from tests.integration.http.http_support import (
    cert_session,
    certs,
    data_package,
    https_url,
    sha256,
    upload_form,
    wait_until,
    write_groups,
)

ROUTE_DETAIL = (
    '<link uid="wp1" type="b-m-p-w" point="50.10,30.10" relation="c"/>'
    '<link uid="wp2" type="b-m-p-c" point="50.20,30.30" relation="c"/>'
    '<link uid="wp3" type="b-m-p-w" point="50.30,30.20" relation="c"/>'
)


async def _settle(server: Server, uids: set[str]) -> None:
    """Wait until the router's picture holds every uid and the store has written them."""
    await wait_until(
        lambda: uids <= {e.event.uid for e in server.router.latest_entries()},
        f"{sorted(uids)} in the picture",
    )
    await server.writer.flush()


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as r:
        body = await r.json() if r.content_type == "application/json" else await r.read()
        return r.status, body


async def _connect(server: Server, cert: Any, name: str) -> Client:
    assert server.tls is not None
    return await connect_tls(server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name=name)


async def test_picture_history_items_and_tracks_per_organisation(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        c = certs(server, ("red1", "RED"), ("blue1", "BLUE"))
        red = await _connect(server, c["red1"], "red1")
        blue = await _connect(server, c["blue1"], "blue1")
        async with (
            clients(red, blue),
            cert_session(server, c["red1"]) as red_http,
            cert_session(server, c["blue1"]) as blue_http,
        ):
            await red.send(sa_event("ANDROID-red1", "RED1", lat=50.0, lon=30.0))
            await red.send(sa_event("ANDROID-red1", "RED1", lat=50.01, lon=30.02))
            await red.send(
                sa_event(
                    "ANDROID-red1",
                    "RED1",
                    lat=50.02,
                    lon=30.04,
                    extra_detail='<track course="90.5" speed="3.2"/><remarks>on patrol</remarks>',
                )
            )
            await red.send(
                sa_event(
                    "route-red",
                    "Route 1",
                    cot_type="b-m-r",
                    lat=0.0,
                    lon=0.0,
                    extra_detail=ROUTE_DETAIL,
                )
            )
            await blue.send(sa_event("ANDROID-blue1", "BLUE1", lat=48.0, lon=35.0))
            await blue.send(
                sa_event("marker-blue", "Hostile", cot_type="a-h-G", lat=48.1, lon=35.1)
            )
            await _settle(server, {"ANDROID-red1", "route-red", "ANDROID-blue1", "marker-blue"})

            status, red_pic = await _get(red_http, https_url(server, "/api/v1/picture"))
            assert status == 200 and red_pic["type"] == "FeatureCollection"
            assert {f["id"] for f in red_pic["features"]} == {"ANDROID-red1", "route-red"}
            unit = next(f for f in red_pic["features"] if f["id"] == "ANDROID-red1")
            assert unit["geometry"] == {"type": "Point", "coordinates": [30.04, 50.02, 120.5]}
            props = unit["properties"]
            assert props["callsign"] == "RED1" and props["team"] == "Cyan"
            assert props["role"] == "Team Member" and props["type"] == "a-f-G-U-C"
            assert props["course"] == 90.5 and props["speed"] == 3.2
            assert props["remarks"] == "on patrol" and props["label"] is None
            assert props["time"].endswith("Z") and props["stale"] > props["time"]
            route = next(f for f in red_pic["features"] if f["id"] == "route-red")
            assert route["properties"]["shape"] == {
                "type": "LineString",
                "coordinates": [[30.1, 50.1], [30.3, 50.2], [30.2, 50.3]],
            }
            assert route["geometry"]["coordinates"][:2] == [30.1, 50.1]

            status, blue_pic = await _get(blue_http, https_url(server, "/api/v1/picture"))
            assert {f["id"] for f in blue_pic["features"]} == {"ANDROID-blue1", "marker-blue"}

            # Filters: bbox, type prefix, callsign; and the CoT form.
            status, boxed = await _get(
                blue_http, https_url(server, "/api/v1/picture?bbox=35.05,48.05,36,49")
            )
            assert [f["id"] for f in boxed["features"]] == ["marker-blue"]
            status, hostile = await _get(blue_http, https_url(server, "/api/v1/picture?type=a-h"))
            assert [f["id"] for f in hostile["features"]] == ["marker-blue"]
            status, by_call = await _get(
                red_http, https_url(server, "/api/v1/picture?callsign=RED1")
            )
            assert [f["id"] for f in by_call["features"]] == ["ANDROID-red1"]
            status, cot = await _get(red_http, https_url(server, "/api/v1/picture?format=cot"))
            root = ET.fromstring(cot)
            assert root.tag == "events"
            assert {e.get("uid") for e in root} == {"ANDROID-red1", "route-red"}
            status, err = await _get(red_http, https_url(server, "/api/v1/picture?bbox=1,2,3"))
            assert status == 400 and "bbox" in err["error"]

            # One item: forbidden and missing answer identically.
            status, item = await _get(red_http, https_url(server, "/api/v1/items/ANDROID-red1"))
            assert status == 200 and item["properties"]["uid"] == "ANDROID-red1"
            forbidden = await _raw(red_http, https_url(server, "/api/v1/items/ANDROID-blue1"))
            missing = await _raw(red_http, https_url(server, "/api/v1/items/no-such-uid"))
            assert forbidden == missing and forbidden[0] == 404

            # History: three reports of RED1, newest first; none of BLUE's.
            status, hist = await _get(red_http, https_url(server, "/api/v1/history"))
            uids = [f["id"] for f in hist["features"]]
            assert uids.count("ANDROID-red1") == 3 and "ANDROID-blue1" not in uids
            assert "marker-blue" not in uids
            assert all("received" in f["properties"] for f in hist["features"])
            status, hist_blue = await _get(
                red_http, https_url(server, "/api/v1/history?uid=ANDROID-blue1")
            )
            assert hist_blue["features"] == []
            status, limited = await _get(red_http, https_url(server, "/api/v1/history?limit=1"))
            assert len(limited["features"]) == 1

            # Track: RED1's positions, oldest first.
            status, track = await _get(
                red_http, https_url(server, "/api/v1/items/ANDROID-red1/track")
            )
            assert status == 200
            assert track["geometry"]["coordinates"] == [
                [30.0, 50.0],
                [30.02, 50.01],
                [30.04, 50.02],
            ]
            forbidden = await _raw(red_http, https_url(server, "/api/v1/items/ANDROID-blue1/track"))
            missing = await _raw(red_http, https_url(server, "/api/v1/items/nobody/track"))
            assert forbidden == missing and forbidden[0] == 404

            # Clients and health count only what the caller may see.
            status, red_clients = await _get(red_http, https_url(server, "/api/v1/clients"))
            assert [x["uid"] for x in red_clients] == ["ANDROID-red1"]
            assert red_clients[0]["callsign"] == "RED1" and red_clients[0]["connected"] is True
            status, health = await _get(red_http, https_url(server, "/api/v1/health"))
            assert health["status"] == "ok" and health["counts"] == {"items": 2, "clients": 1}

            # A delete removes the item from the picture (and items/ answers 404 again).
            await red.send(delete_event("route-red"))
            await wait_until(
                lambda: "route-red" not in {e.event.uid for e in server.router.latest_entries()},
                "route-red deleted",
            )
            status, _ = await _get(red_http, https_url(server, "/api/v1/items/route-red"))
            assert status == 404


async def _raw(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes, str]:
    async with http.get(url) as r:
        return r.status, await r.read(), r.content_type


async def test_metrics_are_prometheus_text(start_server: ServerFactory, tmp_path: Path) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        # An operator's certificate (api.roles; the groups file makes "ops" one).
        c = certs(server, ("ops", "OPS"))
        async with cert_session(server, c["ops"]) as http:
            async with http.get(https_url(server, "/api/v1/health")) as r:
                assert r.status == 200
            async with http.get(https_url(server, "/metrics")) as r:
                assert r.status == 200 and r.content_type == "text/plain"
                text = await r.text()
        assert "# TYPE liaison_http_responses_total counter" in text
        assert 'liaison_http_responses_total{code="200"}' in text
        assert "# TYPE liaison_subscribers gauge" in text


async def test_anonymous_listener_has_no_metrics(start_server: ServerFactory) -> None:
    async with start_server(http="127.0.0.1:0") as server:
        assert server.http is not None
        base = f"http://127.0.0.1:{server.http.port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 404
            async with http.get(f"{base}/Marti/api/version") as r:
                assert r.status == 200
            async with http.get(f"{base}/api/v1/picture") as r:
                assert r.status == 200
            # The content URL names the listener the client used: plain HTTP on its port.
            package = data_package("anon-1", "plain")
            url = f"{base}/Marti/sync/missionupload?hash={sha256(package)}&filename=anon-1"
            async with http.post(url, data=upload_form(package)) as r:
                assert r.status == 200
                link = await r.text()
            assert link == (
                f"http://localhost:{server.http.port}/Marti/sync/content?hash={sha256(package)}"
            )
