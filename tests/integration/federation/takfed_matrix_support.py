"""What the TAK federation interop matrix (test_takv2_matrix.py) and the fault tests share:
real CoT samples made fresh, an independent CoT <-> GeoEvent conversion for our own test peers,
and peer adapters that give every peer (own test peers, ots-federation) one interface.

The conversion here is the test peers' own, written from shared/reference/tak-federation.md
section 5 (5.1 sending, 5.2 receiving), not Liaison's ``fig_codec``: a test that used the code
under test to read its own output would prove nothing.

Samples: the permissively licensed ones are read from tests/data/cot/xml (origins in
tests/data/NOTICE); GPL/EPL ones stay in the team's shared folder and a row that needs one skips
with the reason when it is absent (fails under LIAISON_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from liaison.federation.proto import fig_pb2

REPO = Path(__file__).resolve().parents[3]
LOCAL_SAMPLES = REPO / "tests" / "data" / "cot" / "xml"
_FMT = "%Y-%m-%dT%H:%M:%S.%fZ"


def _shared_dirs() -> list[Path]:
    env = os.environ.get("LIAISON_SHARED_DIR")
    roots = [Path(env)] if env else [REPO.parent / "shared", REPO.parent.parent / "shared"]
    return [r / "reference" / "samples" / "cot" / "xml" for r in roots]


def sample_text(name: str) -> str:
    """A CoT sample's text: the local copy, else the shared folder, else skip with the reason."""
    for folder in [LOCAL_SAMPLES, *_shared_dirs()]:
        path = folder / name
        if path.is_file():
            return path.read_text(encoding="utf-8")
    reason = f"sample {name} (GPL/EPL, read in place) not found in {_shared_dirs()}"
    if os.environ.get("LIAISON_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)
    raise AssertionError  # not reached


def _cot_time(when: dt.datetime) -> str:
    return when.strftime(_FMT)[:-4] + "Z"  # milliseconds


def fresh(text: str, uid: str, *, extra_detail: str = "", access: bool = True) -> bytes:
    """The sample as a client would send it now: times moved to now (stale kept in the future),
    ``uid`` replaced, ``extra_detail`` (a label) appended to the detail. Nothing else changes:
    every detail element and attribute is the sample's."""
    root = ET.fromstring(text.encode("utf-8"))
    now = dt.datetime.now(dt.UTC)
    root.set("uid", uid)
    root.set("time", _cot_time(now))
    root.set("start", _cot_time(now))
    root.set("stale", _cot_time(now + dt.timedelta(minutes=10)))
    if not access:
        root.attrib.pop("access", None)
    if extra_detail:
        detail = root.find("detail")
        assert detail is not None
        detail.append(ET.fromstring(extra_detail))
    return ET.tostring(root, encoding="unicode").encode("utf-8")


# --- an independent CoT <-> GeoEvent conversion (tak-federation.md 5.1 / 5.2) --------------------


def _ms(text: str) -> int:
    text = text.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{(frac + '000000')[:6]}"
    else:
        text += ".000000"
    when = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def cot_to_geo(xml: bytes) -> fig_pb2.GeoEvent:
    """What a TAK sender puts in a GeoEvent (5.1): times in ms, the point as doubles, ``track``,
    battery-only ``status`` and two-attribute ``precisionlocation`` moved to their fields, every
    other detail child in ``other``."""
    root = ET.fromstring(xml)
    point = root.find("point")
    assert point is not None
    geo = fig_pb2.GeoEvent(
        sendTime=_ms(root.get("time", "")),
        startTime=_ms(root.get("start", "")),
        staleTime=_ms(root.get("stale", "")),
        lat=float(point.get("lat", "0")),
        lon=float(point.get("lon", "0")),
        hae=float(point.get("hae", "0")),
        ce=float(point.get("ce", "999999")),
        le=float(point.get("le", "999999")),
        uid=root.get("uid", ""),
        type=root.get("type", ""),
        coordSource=root.get("how", ""),
        access=root.get("access", ""),
    )
    detail = root.find("detail")
    other = ET.Element("detail")
    for child in list(detail) if detail is not None else []:
        a = child.attrib
        if child.tag == "track" and {"speed", "course"} <= set(a):
            geo.speed, geo.course = float(a["speed"]), float(a["course"])
        elif child.tag == "status" and set(a) == {"battery"}:
            geo.battery = int(float(a["battery"]))
        elif child.tag == "precisionlocation" and set(a) == {"geopointsrc", "altsrc"}:
            geo.ploc, geo.palt = a["geopointsrc"], a["altsrc"]
        else:
            other.append(child)
    geo.other = ET.tostring(other, encoding="unicode")
    return geo


def geo_to_cot(geo: fig_pb2.GeoEvent) -> ET.Element:
    """What a TAK receiver makes of a GeoEvent (5.2), as an element tree to compare."""
    root = ET.Element(
        "event",
        {"version": "2.0", "uid": geo.uid, "type": geo.type, "how": geo.coordSource},
    )
    ET.SubElement(
        root,
        "point",
        {k: repr(getattr(geo, k)) for k in ("lat", "lon", "hae", "ce", "le")},
    )
    detail = ET.fromstring(geo.other) if geo.other else ET.Element("detail")
    if (geo.speed or geo.course) and detail.find("track") is None:
        ET.SubElement(detail, "track", {"speed": repr(geo.speed), "course": repr(geo.course)})
    if geo.battery and detail.find("status") is None:
        ET.SubElement(detail, "status", {"battery": str(geo.battery)})
    if (geo.ploc or geo.palt) and detail.find("precisionlocation") is None:
        ET.SubElement(detail, "precisionlocation", {"geopointsrc": geo.ploc, "altsrc": geo.palt})
    root.append(detail)
    return root


def new_uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --- peers behind one interface -------------------------------------------------------------------


@dataclass
class Arrival:
    """One event a peer received: its CoT view, and the GeoEvent when the peer is our own."""

    cot: ET.Element
    fed: fig_pb2.FederatedEvent | None = None


class MatrixPeer(Protocol):
    name: str

    async def send_cot(self, xml: bytes) -> None: ...

    def arrivals(self) -> list[Arrival]: ...

    def raw_messages(self) -> list[bytes]: ...


class OwnPeer:
    """Our own test peer (tak_peer.TakPeer or tak_client_peer.TakClientPeer): sends what a TAK
    sender would, keeps every serialized FederatedEvent it received."""

    def __init__(self, name: str, peer: object) -> None:
        self.name = name
        self.peer = peer

    async def send_cot(self, xml: bytes) -> None:
        await self.peer.send(fig_pb2.FederatedEvent(event=cot_to_geo(xml)))  # type: ignore[attr-defined]

    def raw_messages(self) -> list[bytes]:
        return list(self.peer.received)  # type: ignore[attr-defined]

    def arrivals(self) -> list[Arrival]:
        out = []
        for data in self.raw_messages():
            fed = fig_pb2.FederatedEvent.FromString(data)
            if fed.HasField("event"):
                out.append(Arrival(geo_to_cot(fed.event), fed))
        return out


class OtsAdapter:
    """ots-federation (separate process): CoT in, the CoT it delivered locally out."""

    def __init__(self, name: str, ots: object) -> None:
        self.name = name
        self.ots = ots

    async def send_cot(self, xml: bytes) -> None:
        await self.ots.send(xml.decode("utf-8"))  # type: ignore[attr-defined]

    def raw_messages(self) -> list[bytes]:
        return [x.encode("utf-8") for x in self.ots.received]  # type: ignore[attr-defined]

    def arrivals(self) -> list[Arrival]:
        return [Arrival(ET.fromstring(x)) for x in self.raw_messages()]
