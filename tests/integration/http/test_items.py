"""Drawing from the web map: POST /api/v1/items and DELETE /api/v1/items/{uid}.

A user signed in with a password (session cookie and CSRF header, as the page sends them) draws a
marker, route, polygon, circle and range-and-bearing line with a chosen label; each reaches the
TAK clients (pytak over mutual TLS) that may read that label as the CoT ATAK writes, and never a
client below it (canaries). The label rules, the ownership of drawings and the refusals are
checked through the same requests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from liaison import cli
from liaison.app import Server
from liaison.identity.users import UserDirectory
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import Client, clients, connect_tls, sa_event
from tests.integration.http.http_support import PASSWORD, browser_session, enroll_url
from tests.integration.test_labels_e2e import POLICY, USERS

# The password listener may carry up to SECRET; without a chosen label a drawing gets the
# listener's default (UNCLASSIFIED, REL TO the sender's organisation).
WEB_POLICY = (
    POLICY
    + """
[gate.listeners.enroll]
ceiling = { classification = "SECRET", REL = "*", HANDLING = "*" }
default_classification = "UNCLASSIFIED"
"""
)
SECRET_BOTH = "SECRET//REL TO USA, UKR"
UNCLASS_BOTH = "UNCLASSIFIED//REL TO USA, UKR"


async def _tls(server: Server, name: str, org: str) -> Client:
    assert server.tls is not None
    cert = issue_cert(server, name, org)
    return await connect_tls(server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name=name)


async def _sign_in(server: Server, http: aiohttp.ClientSession, name: str) -> dict[str, str]:
    """Sign in as the page does; the headers its later calls carry."""
    async with http.post(
        enroll_url(server, "/login"), json={"username": name, "password": PASSWORD}
    ) as r:
        assert r.status == 200, await r.text()
        csrf = (await r.json())["csrf"]
    return {"X-CSRF-Token": csrf, "X-Requested-With": "liaison-map"}


async def _post(
    server: Server, http: aiohttp.ClientSession, headers: dict[str, str], body: Any
) -> tuple[int, Any]:
    async with http.post(enroll_url(server, "/api/v1/items"), json=body, headers=headers) as r:
        return r.status, await r.json()


async def _delete(
    server: Server, http: aiohttp.ClientSession, headers: dict[str, str], uid: str
) -> tuple[int, Any]:
    async with http.delete(enroll_url(server, f"/api/v1/items/{uid}"), headers=headers) as r:
        return r.status, await r.json()


def _frame_of(client: Client, uid: str) -> list[bytes]:
    """Every event the client received whose uid is ``uid``."""
    marker = f'uid="{uid}"'.encode()
    return [f for f in bytes(client.raw).split(b"</event>") if marker in f.split(b">", 1)[0]]


async def test_drawings_reach_the_clients_cleared_for_their_label(
    start_server: ServerFactory, data_dir: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(WEB_POLICY)
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile, password=PASSWORD)
    async with start_server(policy_file=str(policy)) as server:
        ukr_s = await _tls(server, "ukr-s", "UKR")
        ukr_u = await _tls(server, "ukr-u", "UKR")
        async with (
            clients(ukr_s, ukr_u),
            browser_session(server) as web,
            browser_session(server) as other,
        ):
            # Both clients' sessions run (each sees the other) before anything is drawn.
            await ukr_s.send(sa_event("uid-ukr-s", "UKR-S"))
            await ukr_u.send(sa_event("uid-ukr-u", "UKR-U"))
            await ukr_s.wait_for(b'uid="uid-ukr-u"')
            await ukr_u.wait_for(b'uid="uid-ukr-s"')
            headers = await _sign_in(server, web, "usa-s")

            # Without the CSRF header the session may not draw.
            async with web.post(
                enroll_url(server, "/api/v1/items"),
                json={"kind": "marker", "lat": 1, "lon": 1},
                headers={"X-Requested-With": "liaison-map"},
            ) as r:
                assert r.status == 403

            # A SECRET marker: the cleared UKR client gets ATAK's CoT with the label.
            marker = {
                "kind": "marker",
                "uid": "web-marker-1",
                "type": "a-h-G-U-C-I",
                "lat": 50.45,
                "lon": 30.52,
                "callsign": "ENEMY INF",
                "remarks": "CANARY-DRAW-MARKER",
                "label": SECRET_BOTH,
            }
            status, answer = await _post(server, web, headers, marker)
            assert status == 201, answer
            feature = answer["item"]
            assert feature["id"] == "web-marker-1"
            assert feature["geometry"]["coordinates"] == [30.52, 50.45]
            assert feature["properties"]["type"] == "a-h-G-U-C-I"
            assert feature["properties"]["label"] == SECRET_BOTH
            assert feature["properties"]["creator"] == "liaison-web-usa-s"
            assert answer["delivered"] >= 1
            got = await ukr_s.wait_for(b"CANARY-DRAW-MARKER")
            assert b'uid="web-marker-1"' in got and b'type="a-h-G-U-C-I"' in got
            assert b'lat="50.45" lon="30.52"' in got and b'callsign="ENEMY INF"' in got
            assert b'access="SECRET"' in got and b'releasableTo="REL TO USA, UKR"' in got
            assert b"<__seclabel" in got
            assert b'<creator uid="liaison-web-usa-s" callsign="usa-s"' in got
            assert b'relation="p-p"' in got  # the link to its creator, as ATAK writes

            # Every other shape, with the same label.
            shapes: list[tuple[dict[str, Any], bytes]] = [
                (
                    {
                        "kind": "route",
                        "uid": "web-route-1",
                        "points": [{"lat": 50.0, "lon": 30.0}, {"lat": 50.1, "lon": 30.2}],
                        "callsign": "Route 7",
                    },
                    b'type="b-m-r"',
                ),
                (
                    {
                        "kind": "polygon",
                        "uid": "web-poly-1",
                        "points": [
                            {"lat": 50.0, "lon": 30.0},
                            {"lat": 50.0, "lon": 30.1},
                            {"lat": 50.1, "lon": 30.1},
                        ],
                    },
                    b'type="u-d-f"',
                ),
                (
                    {
                        "kind": "circle",
                        "uid": "web-circle-1",
                        "lat": 50.2,
                        "lon": 30.2,
                        "radius": 300,
                    },
                    b'type="u-d-c-c"',
                ),
                (
                    {
                        "kind": "rangebearing",
                        "uid": "web-rb-1",
                        "lat": 50.3,
                        "lon": 30.3,
                        "range": 1500,
                        "bearing": 90,
                    },
                    b'type="u-rb-a"',
                ),
            ]
            for body, cot_type in shapes:
                body = {**body, "label": SECRET_BOTH, "remarks": f"CANARY-DRAW-{body['kind']}"}
                status, answer = await _post(server, web, headers, body)
                assert status == 201, answer
                got = await ukr_s.wait_for(f"CANARY-DRAW-{body['kind']}".encode())
                assert cot_type in got and b'access="SECRET"' in got
            route = _frame_of(ukr_s, "web-route-1")[0]
            assert b'type="b-m-p-w" point="50.0,30.0"' in route
            assert b'callsign="Route 7 SP"' in route
            assert b'point="50.1,30.2"' in route
            circle = _frame_of(ukr_s, "web-circle-1")[0]
            assert b'<ellipse major="300.0" minor="300.0" angle="360"' in circle
            rb = _frame_of(ukr_s, "web-rb-1")[0]
            assert b'<range value="1500.0"' in rb and b'<bearing value="90.0"' in rb
            poly = _frame_of(ukr_s, "web-poly-1")[0]
            assert poly.count(b'<link point="50.0,30.0"') == 2  # closed

            # Editing: the same uid again replaces the marker (200), moved.
            status, answer = await _post(server, web, headers, {**marker, "lat": 50.5})
            assert status == 200, answer
            assert answer["item"]["geometry"]["coordinates"] == [30.52, 50.5]
            await ukr_s.wait_for(b'lat="50.5" lon="30.52"')

            # Unparsable label: 400, nothing sent. Above the user's clearance: 403.
            status, answer = await _post(
                server, web, headers, {**marker, "uid": "web-x", "label": "SECRET//REL TO MARS"}
            )
            assert status == 400 and answer["error"].startswith("label:")
            status, answer = await _post(server, web, headers, {"kind": "marker", "lat": 91})
            assert status == 400 and "lat" in answer["error"]
            other_headers = await _sign_in(server, other, "usa-u")
            status, answer = await _post(
                server,
                other,
                other_headers,
                {
                    "kind": "marker",
                    "lat": 1,
                    "lon": 1,
                    "label": "SECRET//REL TO USA",
                    "remarks": "CANARY-DRAW-TOO-HIGH",
                },
            )
            assert status == 403 and answer["error"] == "refused" and answer["reasons"]

            # Without a label: the listener's default.
            status, answer = await _post(
                server,
                web,
                headers,
                {"kind": "marker", "uid": "web-plain", "lat": 1, "lon": 1, "label": UNCLASS_BOTH},
            )
            assert status == 201 and answer["item"]["properties"]["label"] == UNCLASS_BOTH
            status, answer = await _post(
                server, web, headers, {"kind": "marker", "uid": "web-default", "lat": 2, "lon": 2}
            )
            assert status == 201
            assert answer["item"]["properties"]["label"] == "UNCLASSIFIED//REL TO USA"

            # Only the one who drew an item may change or delete it here.
            status, answer = await _post(
                server,
                other,
                other_headers,
                {"kind": "marker", "uid": "web-plain", "lat": 3, "lon": 3},
            )
            assert status == 403 and answer["reasons"] == ["not_creator"]
            status, answer = await _delete(server, other, other_headers, "web-plain")
            assert status == 403 and answer["reasons"] == ["not_creator"]
            # An item the user may not see is answered as a missing one.
            status, answer = await _delete(server, other, other_headers, "web-marker-1")
            assert status == 404 and answer == {"error": "not found"}
            status, answer = await _delete(server, other, other_headers, "no-such-item")
            assert status == 404 and answer == {"error": "not found"}

            # Not without the session's CSRF token.
            async with web.delete(
                enroll_url(server, "/api/v1/items/web-marker-1"),
                headers={"X-Requested-With": "liaison-map"},
            ) as r:
                assert r.status == 403

            # The owner deletes: a t-x-d-d naming it reaches the cleared client.
            status, answer = await _delete(server, web, headers, "web-marker-1")
            assert status == 200 and answer["uid"] == "web-marker-1"
            got = await ukr_s.wait_for(b'type="t-x-d-d"')
            assert b'<link uid="web-marker-1" relation="p-p" type="a-h-G-U-C-I"' in got
            async with web.get(enroll_url(server, "/api/v1/items/web-marker-1")) as r:
                assert r.status == 404
            status, _ = await _delete(server, web, headers, "web-marker-1")
            assert status == 404

            # History keeps both versions of the marker and the delete, as for a TAK client.
            await server.writer.flush()
            async with web.get(
                enroll_url(server, "/api/v1/history?uid=web-marker-1&limit=10")
            ) as r:
                versions = (await r.json())["features"]
            assert [v["geometry"]["coordinates"][1] for v in versions] == [50.5, 50.45]

            # The unclassified UKR client got the UNCLASSIFIED drawing and nothing SECRET: no
            # canary, no uid of a SECRET drawing, not even its delete.
            await ukr_u.wait_for(b'uid="web-plain"')
            await ukr_u.collect(0.5)
            raw = bytes(ukr_u.raw)
            assert b"CANARY-DRAW" not in raw
            for uid in ("web-marker-1", "web-route-1", "web-poly-1", "web-circle-1", "web-rb-1"):
                assert uid.encode() not in raw
            assert b"t-x-d-d" not in raw
            assert b"CANARY-DRAW-TOO-HIGH" not in bytes(ukr_s.raw)

    # The audit log records each drawing's ingest as the web user's, its releases to UKR, and
    # the refusal of the one above the user's clearance; and it verifies.
    assert cli.main(["audit", "verify", "--data-dir", str(data_dir)]) == 0
    lines = (data_dir / "audit" / "audit.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    ingests = [r["fields"] for r in records if r["kind"] == "ingest"]
    marker_ingests = [f for f in ingests if f["uid"] == "web-marker-1"]
    assert len(marker_ingests) == 2  # drawn, then moved
    assert all(f["sender"] == "usa-s" and f["accepted"] for f in marker_ingests)
    assert any(
        f["type"] == "t-x-d-d" and f.get("link_uid") == "web-marker-1" and f["accepted"]
        for f in ingests
    )
    assert any(f["sender"] == "usa-u" and not f["accepted"] for f in ingests)
    released = [
        r["fields"]
        for r in records
        if r["kind"] == "release" and r["fields"]["uid"] == "web-marker-1"
    ]
    assert released and all(f["to_org"] == "UKR" for f in released)
    assert all("ukr-u" not in f["recipients"] for f in released)
