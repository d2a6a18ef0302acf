"""GeoJSON, KML and KMZ import (protocol.geo), the KML export (api.kml) read back by an
independent parser (fastkml), and the geo kinds of ``[feeds.NAME]``."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from fastkml import KML

from liaison.api import kml
from liaison.api.geo_routes import feeds_answer, redact
from liaison.api.geojson import event_feature
from liaison.errors import ConfigError
from liaison.feeds.config import FeedConfig, parse_feeds
from liaison.model.event import Event
from liaison.model.policy import load_policy
from liaison.protocol import cot_xml, geo

NOW = 1_765_000_000_000

COLLECTION = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "hq",
            "geometry": {"type": "Point", "coordinates": [30.5, 50.4, 120.0]},
            "properties": {"name": "HQ", "description": "main", "cot": "a-f-G-U-C", "n": 3},
        },
        {
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": [[30, 50], [30.2, 50.1], [30.4, 50]]},
            "properties": {"name": "Road"},
        },
        {
            "type": "Feature",
            "id": 7,
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[30, 50], [31, 50], [31, 51], [30, 51], [30, 50]]],
            },
            "properties": {"name": "Box"},
        },
        {
            "type": "Feature",
            "id": "tri",
            "geometry": {"type": "Polygon", "coordinates": [[[30, 50], [31, 50], [30.5, 51]]]},
            "properties": None,
        },
        {
            "type": "Feature",
            "id": "pair",
            "geometry": {"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]},
        },
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [200, 0]}},
        {"type": "Feature", "geometry": None},
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[1, 2]]}},
        {"type": "Nope"},
    ],
}

KML_DOC = b"""<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="http://www.opengis.net/kml/2.2"><Document><Folder>
  <Placemark id="pm1"><name>Well</name><description>water</description>
    <ExtendedData><Data name="label"><value>SECRET//REL TO USA</value></Data>
      <SchemaData schemaUrl="#s"><SimpleData name="cot">a-n-G</SimpleData></SchemaData>
    </ExtendedData>
    <Point><coordinates>30.1,50.2,5</coordinates></Point></Placemark>
  <Placemark><name>Field</name><Polygon><outerBoundaryIs><LinearRing><coordinates>
    30,50 30.5,50.2 30.2, 50.6 30,50
  </coordinates></LinearRing></outerBoundaryIs></Polygon></Placemark>
  <Placemark id="multi"><MultiGeometry>
    <Point><coordinates>1,2</coordinates></Point>
    <LineString><coordinates>1,2 3,4</coordinates></LineString>
  </MultiGeometry></Placemark>
  <Placemark><name>nowhere</name></Placemark>
  <Placemark><Point><coordinates>1,not</coordinates></Point></Placemark>
</Folder></Document></kml>"""


def test_geojson_features_and_what_they_become() -> None:
    doc = geo.parse("geojson", json.dumps(COLLECTION).encode())
    # Point, line, box, triangle, two parts of the MultiPoint; four unreadable features.
    assert [f.geometry for f in doc.features] == [
        "Point",
        "LineString",
        "Polygon",
        "Polygon",
        "Point",
        "Point",
    ]
    assert doc.invalid == 4
    hq, road, box, tri, p0, p1 = doc.features
    assert (p0.part, p1.part, p1.positions) == (0, 1, ((3.0, 4.0, None),))
    assert hq.ident == "hq" and hq.positions == ((30.5, 50.4, 120.0),)
    assert hq.properties == {"name": "HQ", "description": "main", "cot": "a-f-G-U-C", "n": "3"}
    assert (hq.name, hq.description) == ("HQ", "main")
    assert box.ident == "7" and tri.positions[0] == tri.positions[-1]  # closed by the reader
    uids = [geo.feature_uid("zones", "http://x/z.json", f) for f in doc.features]
    assert uids[0] == "zones.hq" and uids[2] == "zones.7"
    assert uids[4:] == ["zones.pair.0", "zones.pair.1"]
    # No id: a hash of the source and the feature's index, the same at every read.
    assert uids[1] == geo.feature_uid("zones", "http://x/z.json", road)
    assert uids[1] != geo.feature_uid("zones", "http://y/z.json", road)
    assert len(set(uids)) == 6

    def event(f: geo.GeoFeature) -> Event:
        return geo.feature_event(
            f,
            uid="u",
            point_type="a-u-G",
            callsign=f.name,
            now_ms=NOW,
            stale_ms=60_000,
        )

    marker = event(hq)
    assert (marker.type, marker.how, marker.lat, marker.lon, marker.hae) == (
        "a-u-G",
        "h-g-i-g-o",
        50.4,
        30.5,
        120.0,
    )
    assert (marker.callsign, marker.stale - marker.time) == ("HQ", 60_000)
    line, rect, triangle = event(road), event(box), event(tri)
    # As ATAK draws them (samples atak-shape-04.xml, atak-shape-05.xml).
    assert (line.type, rect.type, triangle.type) == ("u-d-f", "u-d-r", "u-d-f")
    assert rect.detail is not None and len(rect.detail.findall("link")) == 4
    assert rect.detail.find("fillColor") is not None and line.detail is not None
    assert line.detail.find("fillColor") is None
    assert line.detail.findall("link")[1].get("point") == "50.1,30.2"
    # What the REST API and the map make of them: the shapes come back.
    assert event_feature(line, None)["properties"]["shape"]["type"] == "LineString"
    assert event_feature(triangle, None)["properties"]["shape"]["type"] == "Polygon"
    assert event_feature(rect, None)["properties"]["shape"]["coordinates"][0][:4] == [
        [30.0, 50.0],
        [31.0, 50.0],
        [31.0, 51.0],
        [30.0, 51.0],
    ]
    # Each renders as CoT XML that our own parser reads back.
    for e in (marker, line, rect, triangle):
        again = cot_xml.parse_event(cot_xml.render_xml(e))
        assert again.uid == e.uid and again.type == e.type
    # A fingerprint ignores times: the same feature read later needs no publication.
    later = geo.feature_event(
        hq, uid="u", point_type="a-u-G", callsign="HQ", now_ms=NOW + 5000, stale_ms=60_000
    )
    assert geo.fingerprint(later, None) == geo.fingerprint(marker, None)
    assert geo.fingerprint(later, "SECRET") != geo.fingerprint(marker, None)


def test_kml_placemarks_and_kmz() -> None:
    doc = geo.parse("kml", KML_DOC)
    assert doc.invalid == 2  # no geometry; a bad coordinate
    well, field, m0, m1 = doc.features
    assert (well.ident, well.name, well.description) == ("pm1", "Well", "water")
    assert well.properties == {"label": "SECRET//REL TO USA", "cot": "a-n-G"}
    assert well.positions == ((30.1, 50.2, 5.0),)
    assert field.geometry == "Polygon" and len(field.positions) == 4  # "30.2, 50.6" tolerated
    assert (m0.part, m0.geometry, m1.part, m1.geometry) == (0, "Point", 1, "LineString")
    # The same document zipped, after an icon, is a KMZ.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("files/icon.png", b"\x89PNG")
        z.writestr("doc.kml", KML_DOC)
    assert [f.ident for f in geo.parse("kml", out.getvalue()).features] == [
        "pm1",
        None,
        "multi",
        "multi",
    ]


@pytest.mark.parametrize(
    ("kind", "data", "why"),
    [
        ("geojson", b"{nope", "not JSON"),
        ("geojson", b"[1]", "not a GeoJSON object"),
        ("geojson", b'{"type": "Point", "coordinates": [1, 2]}', "not a GeoJSON Feature"),
        ("geojson", b'{"type": "FeatureCollection"}', "without a features array"),
        ("geojson", b"[" * 100_000 + b"]" * 100_000, "not"),
        ("kml", b"<kml><Placemark>", "not KML"),
        ("kml", b"<gpx/>", "no <kml> root"),
        # DTD markup (billion laughs, XXE) is refused before any entity is expanded.
        (
            "kml",
            b'<?xml version="1.0"?><!DOCTYPE kml [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><kml>&b;</kml>',
            "not KML",
        ),
        (
            "kml",
            b'<?xml version="1.0"?><!DOCTYPE kml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<kml>&x;</kml>",
            "not KML",
        ),
        ("kml", b"PK\x03\x04garbage", "not a readable KMZ"),
    ],
)
def test_hostile_documents_are_refused_whole(kind: str, data: bytes, why: str) -> None:
    with pytest.raises(geo.GeoError, match=why):
        geo.parse(kind, data)


def test_kmz_limits() -> None:
    # A small archive that inflates past the document limit: read no further than the limit.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("doc.kml", b"<kml>" + b" " * (geo.MAX_DOCUMENT_BYTES + 10) + b"</kml>")
    bomb = out.getvalue()
    assert len(bomb) < 100_000
    with pytest.raises(geo.GeoError, match="over"):
        geo.parse("kml", bomb)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for i in range(geo.MAX_KMZ_ENTRIES + 1):
            z.writestr(f"f{i}.png", b"")
    with pytest.raises(geo.GeoError, match="entries"):
        geo.parse("kml", out.getvalue())
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("readme.txt", b"no kml here")
    with pytest.raises(geo.GeoError, match=r"without a \.kml"):
        geo.parse("kml", out.getvalue())
    with pytest.raises(geo.GeoError, match="over"):
        geo.parse("geojson", b" " * (geo.MAX_DOCUMENT_BYTES + 1))


def test_bounded_features_vertices_and_text() -> None:
    many = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}}]
        * (geo.MAX_FEATURES + 5),
    }
    doc = geo.parse_geojson(json.dumps(many).encode())
    assert (len(doc.features), doc.invalid) == (geo.MAX_FEATURES, 5)
    long_line = [[0, i / 1e5] for i in range(geo.MAX_VERTICES + 1)]
    feature = {
        "type": "Feature",
        "id": "x" * (geo.MAX_ID_CHARS + 1),
        "geometry": {"type": "LineString", "coordinates": long_line},
    }
    assert geo.parse_geojson(json.dumps(feature).encode()).invalid == 1
    feature["geometry"] = {"type": "Point", "coordinates": [0, 0]}
    feature["id"] = 'a"b<c>'
    (f,) = geo.parse_geojson(json.dumps(feature).encode()).features
    assert f.ident is None  # not a character set for a uid: the hash stands in
    feature["id"] = "x" * (geo.MAX_ID_CHARS + 1)
    feature["properties"] = {"name": "n" * 1000 + "\x00"}
    (f,) = geo.parse_geojson(json.dumps(feature).encode()).features
    assert f.ident is None  # an id too long for a uid: the hash stands in
    assert f.name == "n" * geo.MAX_NAME_CHARS


def test_kml_export_reads_back_with_fastkml() -> None:
    doc = geo.parse("geojson", json.dumps(COLLECTION).encode())
    events = [
        geo.feature_event(
            f,
            uid=geo.feature_uid("z", "s", f),
            point_type="a-u-G",
            callsign=f.name,
            now_ms=NOW,
            stale_ms=60_000,
        )
        for f in doc.features[:3]
    ]
    data = kml.picture_kml([(e, "SECRET//REL TO USA") for e in events], "Liaison picture")
    parsed = KML.from_string(data)
    (document,) = parsed.features
    placemarks = list(document.features)
    assert [p.name for p in placemarks] == ["HQ", "Road", "Box"]
    assert [p.geometry.geom_type for p in placemarks] == ["Point", "LineString", "Polygon"]
    assert placemarks[0].geometry.coords[0] == (30.5, 50.4, 120.0)
    assert placemarks[0].description == "SECRET//REL TO USA\nmain"
    data_fields = {d.name: d.value for d in placemarks[2].extended_data.elements}
    assert data_fields["uid"] == "z.7" and data_fields["type"] == "u-d-r"
    assert data_fields["label"] == "SECRET//REL TO USA"
    # KMZ: the same document as doc.kml; our own reader takes the export back in.
    with zipfile.ZipFile(io.BytesIO(kml.kmz(data))) as z:
        assert z.namelist() == ["doc.kml"] and z.read("doc.kml") == data
    again = geo.parse("kml", kml.kmz(data))
    assert [f.geometry for f in again.features] == ["Point", "LineString", "Polygon"]
    link = KML.from_string(kml.network_link("https://h:8443/api/v1/picture?format=kml", 30, "L"))
    (network_link,) = link.features
    assert network_link.link.href == "https://h:8443/api/v1/picture?format=kml"
    assert network_link.link.refresh_mode.value == "onInterval"
    assert network_link.link.refresh_interval == 30


def test_feed_status_for_the_api_has_no_secrets() -> None:
    assert redact("HTTP 401 from https://bob:pw@host:8080/a.kml?token=s3cret") == (
        "HTTP 401 from https://***@host:8080/a.kml?***"
    )
    assert redact("Cannot connect to host example.org:443") == (
        "Cannot connect to host example.org:443"
    )
    answer = feeds_answer(
        {
            "tracks": 3,
            "feeds": [
                {
                    "name": "z",
                    "kind": "geojson",
                    "upstream": "https://bob:pw@host/z.json",
                    "state": "failing",
                    "failures": 2,
                    "last_error": "HTTP 500 from https://bob:pw@host/z.json",
                    "last_data_ms": NOW,
                    "reports": 5,
                    "published": 4,
                    "refused": 1,
                    "invalid": 0,
                    "failures_total": 2,
                }
            ],
        }
    )
    assert "pw" not in json.dumps(answer)
    assert answer["feeds"] == [
        {
            "name": "z",
            "kind": "geojson",
            "state": "failing",
            "failures": 2,
            "last_error": "HTTP 500 from https://***@host/z.json",
            "last_data": "2025-12-06T05:46:40.000Z",
            "reports": 5,
            "published": 4,
            "refused": 1,
            "invalid": 0,
            "failures_total": 2,
        }
    ]
    assert feeds_answer(None) == {"tracks": 0, "feeds": []}


POLICY = """
[policy]
id = "P"
version = 1
classifications = ["UNCLASSIFIED", "SECRET"]
[policy.categories.REL]
type = "PERMISSIVE"
required = true
values = ["USA"]
"""

GEO = """
[feeds.zones]
kind = "{kind}"
{where}
org = "USA"
ceiling = {{ classification = "SECRET", REL = "*" }}
default_classification = "UNCLASSIFIED"
"""


def _feeds(extra: str, kind: str = "geojson", where: str = 'path = "z.json"') -> list[FeedConfig]:
    policy = load_policy(POLICY)
    return list(
        parse_feeds(
            POLICY + GEO.format(kind=kind, where=where) + extra, policy, base_dir=Path("/srv")
        )
    )


def test_geo_feed_config() -> None:
    (c,) = _feeds('label_property = "classification"\ntype_property = "cot"\n')
    assert c.once and c.geo and c.path == Path("/srv/z.json") and c.stale_s == 86_400
    assert (c.label_property, c.type_property, c.name_property, c.point_type) == (
        "classification",
        "cot",
        "name",
        "a-?-G",
    )
    (c,) = _feeds("interval_s = 30\n", "kml", 'url = "https://h/a.kmz"')
    assert not c.once and c.interval_s == 30 and c.url == "https://h/a.kmz"
    for extra, kind, where, key, why in [
        ("", "geojson", "", "feeds.zones.url", "needs one of url or path"),
        ('url = "http://h/"\n', "geojson", 'path = "x"', "feeds.zones.url", "one of"),
        ("min_interval_s = 1\n", "kml", 'path = "x"', "feeds.zones.min_interval_s", "not used"),
        ('point_type = "bad type"\n', "kml", 'path = "x"', "feeds.zones.point_type", "CoT"),
        ('label_property = ""\n', "kml", 'path = "x"', "feeds.zones.label_property", "non-empty"),
        (
            'label_property = "c"\n',
            "adsb-file",
            'path = "x"',
            "feeds.zones.label_property",
            "only for kinds",
        ),
    ]:
        with pytest.raises(ConfigError) as exc:
            _feeds(extra, kind, where)
        assert exc.value.key == key and why in str(exc.value), (extra, exc.value)
