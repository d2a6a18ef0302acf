"""GeoJSON and KML feeds end to end, and the picture exported as GeoJSON, KML, KMZ and a KML
NetworkLink over HTTPS with each caller's certificate: a feature labelled above a caller's
clearance is in none of that caller's answers, nor sent to that caller's TAK client; a feature
removed from the source is deleted; an unreadable label refuses that feature; the feeds' status
is served to signed-in callers without the upstream."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from pathlib import Path

import aiohttp
from aiohttp import web
from fastkml import KML

from liaison.app import Server
from liaison.identity.users import UserDirectory
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import clients, connect_tls
from tests.integration.http.http_support import cert_session, https_url, wait_until
from tests.integration.test_feeds import POLICY

ZONES = """
[gate.listeners.https]
ceiling = { classification = "SECRET", REL = "*" }

[feeds.zones]
kind = "geojson"
path = "zones.json"
interval_s = 0.3
org = "USA"
ceiling = { classification = "SECRET", REL = "*" }
default_classification = "RESTRICTED"
label_property = "classification"
type_property = "cot"
"""


def point(ident: str, name: str, lon: float, lat: float, **props: str) -> dict[str, object]:
    return {
        "type": "Feature",
        "id": ident,
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": {"name": name, **props},
    }


FEATURES: list[dict[str, object]] = [
    point("hq", "CANARY-HQ", 30.5, 50.4, classification="SECRET//REL TO USA", cot="a-f-G-U-C"),
    point("post", "Post", 30.6, 50.5),  # the feed's default label: RESTRICTED
    point("bad", "Bad", 30.7, 50.6, classification="TOP SECRET//REL TO MARS"),
    {
        "type": "Feature",
        "id": "road",
        "geometry": {"type": "LineString", "coordinates": [[30, 50], [30.2, 50.1]]},
        "properties": {"name": "Road", "classification": "UNCLASSIFIED//REL TO USA"},
    },
    {
        "type": "Feature",
        "id": "box",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[30, 50], [31, 50], [31, 51], [30, 51], [30, 50]]],
        },
        "properties": {"name": "Box", "classification": "UNCLASSIFIED//REL TO USA"},
    },
]
# What each user may see of the feed (the "bad" feature is refused: an unreadable label).
EXPECTED = {
    "usa-s": {"zones.hq", "zones.post", "zones.road", "zones.box"},
    "usa-u": {"zones.road", "zones.box"},
}


def collection(features: list[dict[str, object]]) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes]:
    async with http.get(url) as r:
        return r.status, r.content_type, await r.read()


def _kml_uids(data: bytes) -> dict[str, str]:
    """uid -> geometry type of each Placemark, read by fastkml (not our own reader)."""
    (document,) = KML.from_string(data).features
    out = {}
    for placemark in document.features:
        fields = {d.name: d.value for d in placemark.extended_data.elements}
        out[fields["uid"]] = placemark.geometry.geom_type
    return out


async def test_geojson_feed_exports_and_status(
    start_server: ServerFactory, data_dir: Path, tmp_path: Path
) -> None:
    zones = tmp_path / "zones.json"
    zones.write_bytes(collection(FEATURES))
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY + ZONES)
    users = UserDirectory.load(data_dir / "users.json")
    users.add_user("usa-s", "USA", profile="usa-secret")
    users.add_user("usa-u", "USA", profile="usa-unclass")
    async with start_server(policy_file=str(policy)) as server:
        assert server.feeds is not None and server.tls is not None
        feeds = server.feeds
        certs = {name: issue_cert(server, name, "USA") for name in EXPECTED}
        tak = {
            name: await connect_tls(
                server.tls.port, cert=c.cert, key=c.key, ca=c.ca, name=f"tak-{name}"
            )
            for name, c in certs.items()
        }
        async with clients(*tak.values()):
            await wait_until(
                lambda: EXPECTED["usa-s"] <= {e.event.uid for e in server.router.latest_entries()},
                "the feed's features in the picture",
            )
            assert feeds.m_refused.get("zones") >= 1  # the unreadable label
            for name, cert in certs.items():
                async with cert_session(server, cert) as http:
                    await _check_exports(server, http, name)
            # A refresh with nothing changed publishes nothing again.
            published = feeds.m_published.get("zones")
            await asyncio.sleep(1.0)
            assert feeds.m_published.get("zones") == published
            # The road leaves the source: the feed deletes it, and a changed post is republished.
            moved = point("post", "Post moved", 30.65, 50.5)
            zones.write_bytes(collection([FEATURES[0], moved, FEATURES[4]]))
            delete = await tak["usa-u"].wait_for(b'type="t-x-d-d"', within=15)
            assert b'<link uid="zones.road"' in delete
            await tak["usa-s"].wait_for(b'callsign="Post moved"', within=15)
            await wait_until(
                lambda: "zones.road" not in {e.event.uid for e in server.router.latest_entries()},
                "the road deleted",
            )
            await tak["usa-u"].collect(0.5)
            async with cert_session(server, certs["usa-u"]) as http:
                _, _, body = await _get(http, https_url(server, "/api/v1/picture"))
            assert {f["id"] for f in json.loads(body)["features"]} == {"zones.box"}
        # The SECRET feature and the RESTRICTED one never reached the unclassified TAK client.
        assert b"CANARY-HQ" not in tak["usa-u"].raw and b"zones.hq" not in tak["usa-u"].raw
        assert b"zones.post" not in tak["usa-u"].raw
        assert b"zones.hq" in tak["usa-s"].raw
    # The config_load record names the feed, its principal, ceiling and default label.
    records = [
        json.loads(line)
        for line in (data_dir / "audit" / "audit.jsonl").read_bytes().splitlines()
        if b'"kind":"config_load"' in line
    ]
    (record,) = records
    assert "feed:zones" in record["fields"]["listeners"]
    assert record["fields"]["feeds"] == [
        {
            "name": "zones",
            "kind": "geojson",
            "principal": "feed:zones",
            "org": "USA",
            "groups": ["__ANON__"],
            "ceiling": {"classification": "SECRET", "held": {"REL": ["UKR", "USA"]}},
            "default_classification": "RESTRICTED",
            "label_rules": [],
        }
    ]


async def _check_exports(server: Server, http: aiohttp.ClientSession, name: str) -> None:
    expected = EXPECTED[name]
    received: list[bytes] = []
    status, ctype, body = await _get(http, https_url(server, "/api/v1/picture"))
    assert status == 200 and ctype == "application/json"
    features = {f["id"]: f for f in json.loads(body)["features"]}
    assert set(features) == expected, name
    assert features["zones.box"]["properties"]["type"] == "u-d-r"
    assert features["zones.box"]["properties"]["shape"]["type"] == "Polygon"
    assert features["zones.road"]["properties"]["shape"]["type"] == "LineString"
    assert features["zones.road"]["properties"]["label"] == "UNCLASSIFIED//REL TO USA"
    if "zones.hq" in expected:
        assert features["zones.hq"]["properties"]["type"] == "a-f-G-U-C"  # type_property
        assert features["zones.hq"]["properties"]["label"] == "SECRET//REL TO USA"
        assert features["zones.post"]["properties"]["label"] == "RESTRICTED//REL TO USA"
        assert features["zones.post"]["properties"]["type"] == "a-u-G"
    received.append(body)
    status, ctype, body = await _get(http, https_url(server, "/api/v1/picture?format=kml"))
    assert status == 200 and ctype == "application/vnd.google-earth.kml+xml"
    placemarks = _kml_uids(body)
    assert set(placemarks) == expected, name
    assert placemarks["zones.box"] == "Polygon" and placemarks["zones.road"] == "LineString"
    received.append(body)
    status, ctype, kmz = await _get(http, https_url(server, "/api/v1/picture?format=kmz"))
    assert status == 200 and ctype == "application/vnd.google-earth.kmz"
    with zipfile.ZipFile(io.BytesIO(kmz)) as archive:
        inner = archive.read("doc.kml")
    assert set(_kml_uids(inner)) == expected
    received.append(inner)
    status, _, body = await _get(http, https_url(server, "/api/v1/picture?format=kml&type=u-d"))
    assert set(_kml_uids(body)) == {"zones.road", "zones.box"}
    status, _, _ = await _get(http, https_url(server, "/api/v1/picture?format=gpx"))
    assert status == 400
    status, ctype, link = await _get(
        http, https_url(server, "/api/v1/picture/networklink.kml?interval_s=10&type=a-")
    )
    assert status == 200 and ctype == "application/vnd.google-earth.kml+xml"
    (network_link,) = KML.from_string(link).features
    assert network_link.link.href == https_url(server, "/api/v1/picture?format=kml&type=a-")
    assert network_link.link.refresh_mode.value == "onInterval"
    assert network_link.link.refresh_interval == 10
    # The link's target, fetched as a viewer would, with the same credentials.
    _, _, body = await _get(http, network_link.link.href)
    assert set(_kml_uids(body)) == expected - {"zones.road", "zones.box"}
    received.append(body)
    bad = await _get(http, https_url(server, "/api/v1/picture/networklink.kml?interval_s=0"))
    assert bad[0] == 400
    status, ctype, body = await _get(http, https_url(server, "/api/v1/feeds"))
    assert status == 200 and ctype == "application/json"
    doc = json.loads(body)
    (zones,) = doc["feeds"]
    assert (zones["name"], zones["kind"], zones["state"]) == ("zones", "geojson", "running")
    assert zones["last_error"] is None and zones["last_data"].endswith("Z")
    assert zones["published"] >= 4 and zones["refused"] >= 1 and "upstream" not in zones
    everything = b"".join(received)
    if "zones.hq" not in expected:
        assert b"CANARY-HQ" not in everything and b"zones.hq" not in everything
        assert b"zones.post" not in everything


async def test_kml_feed_over_http_failing_then_read_once(
    start_server: ServerFactory, data_dir: Path, tmp_path: Path
) -> None:
    """A KMZ served over HTTP, read once: the first request fails (retried with backoff); the
    feed's status shows the error without the URL's credentials while it fails."""
    kml = (
        b'<kml xmlns="http://www.opengis.net/kml/2.2"><Document>'
        b'<Placemark id="w1"><name>Well</name><Point><coordinates>30.1,50.2</coordinates></Point>'
        b"</Placemark></Document></kml>"
    )
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("doc.kml", kml)
    requests = 0
    first_failed = asyncio.Event()
    release = asyncio.Event()

    async def serve(_: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        if requests == 1:
            first_failed.set()
            return web.Response(status=503)
        await release.wait()
        return web.Response(
            body=archive.getvalue(), content_type="application/vnd.google-earth.kmz"
        )

    app = web.Application()
    app.router.add_get("/wells.kmz", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    policy = tmp_path / "policy.toml"
    policy.write_text(
        POLICY
        + f"""
[gate.listeners.https]
ceiling = {{ classification = "SECRET", REL = "*" }}

[feeds.wells]
kind = "kml"
url = "http://reader:s3cret@127.0.0.1:{port}/wells.kmz?key=tok"
org = "USA"
ceiling = {{ classification = "RESTRICTED", REL = "*" }}
default_classification = "RESTRICTED"
"""
    )
    UserDirectory.load(data_dir / "users.json").add_user("usa-s", "USA", profile="usa-secret")
    try:
        async with start_server(policy_file=str(policy)) as server:
            assert server.feeds is not None
            cert = issue_cert(server, "usa-s", "USA")
            await asyncio.wait_for(first_failed.wait(), 15)
            await wait_until(
                lambda: server.feeds is not None and server.feeds.status["wells"].failures >= 1,
                "the failure counted",
            )
            async with cert_session(server, cert) as http:
                _, _, body = await _get(http, https_url(server, "/api/v1/feeds"))
                (wells,) = json.loads(body)["feeds"]
                assert wells["state"] == "failing" and wells["failures"] >= 1
                assert "s3cret" not in body.decode() and "tok" not in body.decode()
                assert wells["last_error"].startswith("HTTP 503 from http://***@127.0.0.1:")
                release.set()
                await wait_until(
                    lambda: "wells.w1" in {e.event.uid for e in server.router.latest_entries()},
                    "the placemark in the picture",
                )
                _, _, body = await _get(http, https_url(server, "/api/v1/feeds"))
                (wells,) = json.loads(body)["feeds"]
                assert wells["state"] == "running" and wells["last_error"] is None
                _, _, pic = await _get(http, https_url(server, "/api/v1/picture?uid=wells.w1"))
                (feature,) = json.loads(pic)["features"]
                assert feature["properties"]["callsign"] == "Well"
                assert feature["properties"]["stale"] > feature["properties"]["time"]
            # Read once: no further request however long we wait.
            await asyncio.sleep(1.0)
            assert requests == 2
    finally:
        await runner.cleanup()
