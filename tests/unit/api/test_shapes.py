"""The REST and WebSocket shapes: GeoJSON features, chat messages, feed messages, parameters."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from aiohttp import web

from liaison.api import geojson, rest
from liaison.api.ws import FeedEncoder, WsSubscriber, feed_message
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.model.event import Event, make_event
from liaison.model.labels import AuthSet
from liaison.model.policy import load_policy
from liaison.model.principal import Principal
from liaison.protocol import cot_xml
from liaison.router import Outgoing, Router

T = 1_700_000_000_000
REPO = Path(__file__).resolve().parents[3]


def ev(
    uid: str,
    cot_type: str = "a-f-G-U-C",
    detail: str = "",
    *,
    lat: float = 50.0,
    lon: float = 30.0,
    hae: float = 9999999.0,
) -> Event:
    return make_event(
        uid=uid,
        type=cot_type,
        how="m-g",
        time=T,
        start=T,
        stale=T + 60_000,
        lat=lat,
        lon=lon,
        hae=hae,
        detail=ET.fromstring(f"<detail>{detail}</detail>"),
    )


def test_a_unit_becomes_a_point_feature_with_its_details() -> None:
    e = ev(
        "u1",
        detail='<contact callsign="ALPHA" endpoint="*:-1:stcp"/><__group name="Cyan" role="HQ"/>'
        '<track course="271.5" speed="4.25"/><remarks source="x">two <b>lines</b></remarks>',
        hae=120.5,
    )
    f = geojson.event_feature(e, "SECRET//REL TO USA")
    assert f == {
        "type": "Feature",
        "id": "u1",
        "geometry": {"type": "Point", "coordinates": [30.0, 50.0, 120.5]},
        "properties": {
            "uid": "u1",
            "type": "a-f-G-U-C",
            "how": "m-g",
            "callsign": "ALPHA",
            "team": "Cyan",
            "role": "HQ",
            "time": "2023-11-14T22:13:20.000Z",
            "start": "2023-11-14T22:13:20.000Z",
            "stale": "2023-11-14T22:14:20.000Z",
            "course": 271.5,
            "speed": 4.25,
            "remarks": "two lines",
            "label": "SECRET//REL TO USA",
        },
    }
    json.dumps(f, allow_nan=False)


def test_unknown_height_and_bad_track_values_are_left_out() -> None:
    f = geojson.event_feature(ev("u2", detail='<track course="NaN" speed="fast"/>'), None)
    assert f["geometry"]["coordinates"] == [30.0, 50.0]
    assert f["properties"]["course"] is None and f["properties"]["speed"] is None
    assert f["properties"]["callsign"] is None and f["properties"]["remarks"] is None
    assert "shape" not in f["properties"]


def _links(*points: str) -> str:
    return "".join(f'<link point="{p}"/>' for p in points)


def test_drawings_and_routes_carry_their_outline() -> None:
    rect = ev("r", "u-d-r", _links("50,30", "50,31", "51,31", "51,30"))
    assert geojson.shape_geometry(rect) == {
        "type": "Polygon",
        "coordinates": [[[30.0, 50.0], [31.0, 50.0], [31.0, 51.0], [30.0, 51.0], [30.0, 50.0]]],
    }
    closed = ev("c", "u-d-f", _links("50,30", "50,31", "51,31", "50,30"))
    assert geojson.shape_geometry(closed)["type"] == "Polygon"  # type: ignore[index]
    line = ev("l", "u-d-f", _links("50,30", "50,31,100", "bogus", "95,30", "51,31"))
    assert geojson.shape_geometry(line) == {
        "type": "LineString",
        "coordinates": [[30.0, 50.0], [31.0, 50.0], [31.0, 51.0]],
    }
    route = ev("rt", "b-m-r", _links("50.1,30.1", "50.2,30.2"), lat=0.0, lon=0.0)
    f = geojson.event_feature(route, None)
    assert f["properties"]["shape"]["type"] == "LineString"
    # A route's 0,0 point is replaced by its first vertex, so the map can place it.
    assert f["geometry"]["coordinates"] == [30.1, 50.1]
    # Not a drawing: links are ignored; a lone point is no shape.
    assert geojson.shape_geometry(ev("a", "a-f-G", _links("50,30", "51,31"))) is None
    assert geojson.shape_geometry(ev("one", "u-d-f", _links("50,30"))) is None
    circle = ev("ci", "u-d-c-c", '<shape><ellipse major="200" minor="100" angle="360"/></shape>')
    ellipse = geojson.event_feature(circle, None)["properties"]["ellipse"]
    assert ellipse == {"major": 200.0, "minor": 100.0, "angle": 360.0}


def test_web_chat_round_trips_through_the_cot_parser() -> None:
    e = rest.build_chat(
        sender_uid="liaison-web-alice", callsign="alice", text='a < b & "c"', now_ms=T
    )
    assert e.type == "b-t-f" and e.how == "h-g-i-g-o" and e.stale == T + rest.CHAT_STALE_MS
    assert e.uid.startswith("GeoChat.liaison-web-alice.All Chat Rooms.")
    assert e.dests == () and e.link_uid == "liaison-web-alice"
    reparsed = cot_xml.parse_event(cot_xml.render_xml(e))
    msg = geojson.chat_message(reparsed, None)
    assert msg["text"] == 'a < b & "c"'
    assert msg["sender_uid"] == "liaison-web-alice" and msg["callsign"] == "alice"
    assert msg["chatroom"] == "All Chat Rooms" and msg["time"] == "2023-11-14T22:13:20.000Z"

    direct = rest.build_chat(
        sender_uid="liaison-web-alice", callsign="alice", text="hi", now_ms=T, to_uid="ANDROID-1"
    )
    assert [d.uid for d in direct.dests] == ["ANDROID-1"]
    by_call = rest.build_chat(
        sender_uid="w", callsign="alice", text="hi", now_ms=T, to_callsign="BRAVO"
    )
    assert [d.callsign for d in by_call.dests] == ["BRAVO"]
    assert geojson.chat_message(by_call, None)["chatroom"] == "BRAVO"


def test_atak_chat_sample_reads_as_a_message() -> None:
    sample = REPO.parent / "shared" / "reference" / "samples" / "cot" / "xml"
    path = sample / "atak-chat-all-02.xml"
    if not path.exists():
        pytest.skip("shared/reference/samples is not present (GPL sample read in place)")
    msg = geojson.chat_message(cot_xml.parse_event(path.read_bytes()), None)
    assert msg["text"] == "at LCC" and msg["callsign"] == "TRACKER01"
    assert msg["sender_uid"] == "ANDROID-f33ec5af20765447"


def test_feed_messages_by_kind() -> None:
    delete = ev("d", "t-x-d-d", '<link uid="gone"/>')
    assert feed_message(delete, None) == {"kind": "delete", "uid": "gone"}
    assert feed_message(ev("d2", "t-x-d-d"), None) is None
    chat = rest.build_chat(sender_uid="w", callsign="c", text="yo", now_ms=T)
    assert feed_message(chat, "L")["kind"] == "chat"  # type: ignore[index]
    for skipped in ("b-t-f-d", "b-f-t-r", "t-x-c-t"):
        assert feed_message(ev("x", skipped), None) is None
    update = feed_message(ev("u"), None)
    assert update is not None and update["kind"] == "update"
    # Mission notices: which mission, so the page re-reads it; one without a name: nothing.
    notice = ev("n", "t-x-m-c-l", '<mission type="CHANGE" name="ops" guid="g"/>')
    assert feed_message(notice, None) == {"kind": "mission", "notice": "t-x-m-c-l", "name": "ops"}
    assert feed_message(ev("n2", "t-x-m-c", '<mission type="CHANGE"/>'), None) is None


def viewer(name: str = "v") -> Principal:
    return Principal(name=name, in_groups=frozenset({"g"}), out_groups=frozenset({"g"}))


async def test_subscriber_coalesces_positions_and_keeps_order() -> None:
    sub = WsSubscriber(viewer(), client_uid="liaison-web-v", callsign="v", max_pending=10)
    a1, b1, a2 = Outgoing(ev("a")), Outgoing(ev("b")), Outgoing(ev("a", lat=51.0))
    chat = Outgoing(rest.build_chat(sender_uid="w", callsign="c", text="x", now_ms=T))
    for out in (a1, chat, b1, a2):
        sub.deliver(out)
    assert sub.pending == 3
    taken = await sub.take()
    assert taken == [a2, chat, b1]  # a2 replaced a1 in a1's place
    assert sub.pending == 0 and not sub.overflowed


def test_subscriber_overflows_past_its_limit() -> None:
    sub = WsSubscriber(viewer(), client_uid="u", callsign="v", max_pending=3)
    for i in range(4):
        sub.deliver(Outgoing(rest.build_chat(sender_uid="w", callsign="c", text=str(i), now_ms=T)))
    assert sub.overflowed and sub.pending == 0
    sub.deliver(Outgoing(ev("late")))
    assert sub.pending == 0  # nothing more is queued for a socket being closed


def test_encoder_encodes_each_event_once() -> None:
    router = Router(metrics=Metrics(), clock_ms=lambda: T, latest=MemoryLatestState())
    enc = FeedEncoder(router, size=2)
    e = ev("a")
    first = enc.encode(Outgoing(e))
    assert first is not None and json.loads(first)["feature"]["id"] == "a"
    assert enc.encode(Outgoing(e)) is first  # the same text object: encoded once
    enc.encode(Outgoing(ev("b")))
    enc.encode(Outgoing(ev("c")))
    assert enc.encode(Outgoing(e)) is not first  # evicted, encoded again
    assert enc.encode(Outgoing(ev("x", "b-f-t-r"))) is None


def test_clearance_banner_lists_what_counts() -> None:
    policy = load_policy((REPO / "examples" / "policy.toml").read_text())
    auths = AuthSet(
        policy_id=policy.id,
        ceiling="SECRET",
        held={
            "REL": frozenset({"LIAISON", "USA"}),
            "HANDLING": frozenset({"ORCON"}),
            "TLP": frozenset({"AMBER"}),
        },
    )
    assert rest.clearance_banner(policy, auths) == "SECRET//HANDLING ORCON//REL TO USA, LIAISON"
    assert rest.clearance_banner(None, auths) is None
    none = AuthSet(policy_id=policy.id, ceiling=None, held={})
    assert rest.clearance_banner(policy, none) is None


def test_query_parameters() -> None:
    assert rest.parse_bbox("170,-10,-170,10") == (170.0, -10.0, -170.0, 10.0)
    assert rest.in_bbox(179.0, 0.0, (170.0, -10.0, -170.0, 10.0))
    assert rest.in_bbox(-175.0, 0.0, (170.0, -10.0, -170.0, 10.0))
    assert not rest.in_bbox(0.0, 0.0, (170.0, -10.0, -170.0, 10.0))
    assert rest.parse_bbox(None) is None and rest.parse_bbox("") is None
    for bad in ("1,2,3", "a,b,c,d", "0,10,1,5", "0,0,200,1", "nan,0,1,1", "0,-91,1,1"):
        with pytest.raises(web.HTTPBadRequest):
            rest.parse_bbox(bad)
    assert rest.parse_time_param("since", "1700000000000") == T
    assert rest.parse_time_param("since", "2023-11-14T22:13:20Z") == T
    assert rest.parse_time_param("since", "2023-11-14T23:13:20+01:00") == T
    for bad in ("2023-11-14T22:13:20", "yesterday", "99999999999999"):
        with pytest.raises(web.HTTPBadRequest):
            rest.parse_time_param("since", bad)
    assert rest.parse_limit(None, 5, 10) == 5 and rest.parse_limit("10", 5, 10) == 10
    for bad in ("0", "11", "-1", "x"):
        with pytest.raises(web.HTTPBadRequest):
            rest.parse_limit(bad, 5, 10)


def test_range_and_bearing_line_ends_where_range_and_bearing_say() -> None:
    rb = ev("rb", "u-rb-a", '<range value="1000"/><bearing value="90"/>')
    shape = geojson.event_feature(rb, None)["properties"]["shape"]
    assert shape["type"] == "LineString"
    (lon0, lat0), (lon1, lat1) = shape["coordinates"]
    assert (lon0, lat0) == (30.0, 50.0)
    # Due east, 1 km at 50° N: 1000 / (R cos 50°) radians of longitude, the same latitude to
    # within the great circle's curvature (under 1e-4 degrees here).
    expected = math.degrees(1000 / (6_371_008.8 * math.cos(math.radians(50))))
    assert abs((lon1 - 30.0) - expected) < 1e-6 and abs(lat1 - 50.0) < 1e-4
    # North 111.2 km is one degree of latitude; wraps across 180.
    assert geojson.destination(0.0, 0.0, 6_371_008.8 * math.pi / 180, 0.0) == [0.0, 1.0]
    assert geojson.destination(0.0, 179.9, 30_000, 90.0)[0] < -179.0
    assert (
        "shape"
        not in geojson.event_feature(ev("x", "u-rb-a", '<range value="-1"/>'), None)["properties"]
    )


def test_the_creator_of_a_drawing_is_a_property() -> None:
    drawn = ev("d", "u-d-f", '<creator uid="liaison-web-alice" callsign="alice"/>')
    assert geojson.event_feature(drawn, None)["properties"]["creator"] == "liaison-web-alice"
    assert "creator" not in geojson.event_feature(ev("n"), None)["properties"]
