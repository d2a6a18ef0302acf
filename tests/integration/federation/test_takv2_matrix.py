"""The TAK federation interop matrix (shared/reference/tak-federation.md 18.2, rows 11-13 and
15), automated on v2: every row of ``ROWS`` crosses in both directions, over one link per
(peer, role), against

* our own TAK v2 test peers (``tak_peer.py``: TAK's server side, Liaison dials;
  ``tak_client_peer.py``: TAK's client side, the peer dials Liaison), and
* ots-federation (shared/interop/ots-federation, MIT) as a separate process, in both roles.

Each row is a real CoT sample (tests/data/cot/xml, or the shared folder for GPL/EPL ones): a
pytak TLS client of a running Liaison sends it (with a label releasable to the partner) and the
peer must receive it field by field (type, uid, how, point, the detail elements the row names,
the label: ``<__seclabel>`` kept in the detail and, where the peer keeps fields 27-29,
``access``/``releaseableTo`` mapped); the peer sends it (unlabelled, as TAK does) and a Liaison
client must receive it the same way, with the peer's default label. Around the rows: canaries
above the ceiling or of a type not allowed never appear in any byte the peer received, and the
audit log holds release/deny/ingest records for the TAK peer and verifies.

**Adding rows.** A row is one entry of ``ROWS``: the sample, what must match, and the wires it
runs on. Rows for other wires (v1, branch fedv1) or other features (directed chat, contacts,
branch fedgroups) are appended there; ``LINKS`` lists the links the rows run over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from liaison import cli
from liaison.app import Server
from liaison.federation.config import DEFAULT_DETAILS
from liaison.federation.link import GateAudit
from liaison.federation.status import LinkState
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki, fingerprint_sha256, load_server_cert
from tests.integration.federation.fed_helpers import (
    Side,
    server_fingerprint,
    start_federation,
    stop_federation,
    wait_until,
)
from tests.integration.federation.ots_peer import OtsPeer, free_port, ots_python, write_config
from tests.integration.federation.tak_client_peer import TakClientPeer
from tests.integration.federation.tak_peer import TakPeer
from tests.integration.federation.takfed_matrix_support import (
    Arrival,
    MatrixPeer,
    OtsAdapter,
    OwnPeer,
    fresh,
    new_uid,
    sample_text,
)
from tests.integration.federation.test_e2e_labels import (
    POLICY,
    _connect,
    _server_with_users,
    seclabel,
)
from tests.integration.helpers import Client
from tests.unit.federation.fed_support import peer_table

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Seconds for one crossing (ots-federation's dial/health cadence is 3 s; the machine is shared).
CROSS_S = 30.0
# The label Liaison's client puts on what it sends (releasable to the partner), and its marking.
OUT_LABEL = ("SECRET", "USA", ["USA", "UKR"])
OUT_ACCESS, OUT_REL = "SECRET", "REL TO USA, UKR"
# The default label the peer's unlabelled events get (docs/protocol.md, "Inbound").
DEFAULT_LABEL = {"classification": "UNCLASSIFIED", "REL": ["UKR", "USA"]}


# --- the rows -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Element:
    """A detail element that must arrive: found by tag and (optionally) one attribute's value;
    ``attrs`` must be equal (numbers compared as numbers), ``count`` elements of that tag."""

    tag: str
    attrs: tuple[str, ...] = ()
    key: str | None = None
    count: int | None = None
    text: bool = False
    # Carried in GeoEvent fields of its own, not in ``other`` (tak-federation.md 5.1 step 3:
    # track -> 20/21, battery-only status -> 13, precisionlocation -> 14/15). A receiver that
    # does not rebuild it from those fields (ots-federation, whose codec reads only ``other``
    # when it is set) must at least not get it twice.
    moved: bool = False


@dataclass(frozen=True)
class Row:
    id: str
    sample: str  # file name in tests/data/cot/xml or the shared samples
    elements: tuple[Element, ...]
    wires: tuple[str, ...] = ("tak-v2",)
    # Detail elements the partner agreement lets cross for this row's type (beyond the defaults).
    details: tuple[str, ...] = ()
    # Extra check on (sent, received) CoT; e.g. a chat must stay a room chat.
    extra: Callable[[ET.Element, ET.Element], None] | None = None


def _room_chat(sent: ET.Element, got: ET.Element) -> None:
    # Row 13: delivered as room chat, not as a directed message.
    detail = got.find("detail")
    assert detail is not None and detail.find("marti") is None
    chat = detail.find("__chat")
    assert chat is not None and chat.get("chatroom") == chat.get("id") == "All Chat Rooms"


ROWS: tuple[Row, ...] = (
    Row(
        "pli",
        "atak-sa-07.xml",  # ATAK-CIV 4.0 SA (taky, MIT)
        (
            Element("contact", ("callsign", "endpoint", "xmppUsername")),
            Element("__group", ("name", "role")),
            Element("takv", ("os", "version", "device", "platform")),
            Element("uid", ("Droid",)),
            Element("track", ("speed", "course"), moved=True),
            Element("status", ("battery",), moved=True),
            Element("precisionlocation", ("geopointsrc", "altsrc"), moved=True),
        ),
    ),
    Row(
        "marker",
        "itak-marker-01.xml",  # iTAK 2525 marker (taky, MIT)
        (
            Element("contact", ("callsign",)),
            Element("link", ("uid", "type", "parent_callsign", "relation", "production_time")),
            Element("usericon", ("iconsetpath",)),
            Element("color", ("argb",)),
            Element("status", ("readiness",)),
        ),
    ),
    Row(
        "route",
        "atak-route-02.xml",  # ATAK 5.4 route, 10 waypoints (node-CoT, MIT)
        (
            Element("link", ("uid", "callsign", "type", "point", "relation"), key="uid", count=10),
            Element("link_attr", ("planningmethod", "method", "prefix", "routetype", "order")),
            Element("contact", ("callsign",)),
            Element("__routeinfo"),
        ),
        details=("link_attr", "__routeinfo", "strokeColor", "strokeWeight", "creator"),
    ),
    Row(
        "casevac",
        "atak-casevac-01.xml",  # ATAK 9-line MEDEVAC (FreeTAKTest, EPL-2.0: read in place)
        (
            Element(
                "_medevac_",
                (
                    "title",
                    "priority",
                    "routine",
                    "urgent",
                    "litter",
                    "ambulatory",
                    "us_military",
                    "us_civilian",
                    "ventilator",
                    "hlz_marking",
                    "freq",
                    "security",
                    "medline_remarks",
                    "terrain_rough",
                ),
            ),
            Element("link", ("uid", "type", "parent_callsign", "relation")),
            Element("contact", ("callsign",)),
        ),
        details=("_medevac_", "status", "precisionlocation", "archive", "color"),
    ),
    Row(
        "chat-all",
        "atak-chat-all-02.xml",  # ATAK GeoChat to All Chat Rooms (SwiftTAK, Apache-2.0)
        (
            Element("__chat", ("chatroom", "id", "senderCallsign", "groupOwner", "messageId")),
            Element("link", ("uid", "type", "relation")),
            Element("remarks", ("to",), text=True),
        ),
        extra=_room_chat,
    ),
    # Rows of other wires or features are added here: v1 (branch fedv1) adds "tak-v1" to
    # ``wires`` and a link to LINKS; directed chat and contacts come with branch fedgroups.
)

# The CoT type of each row's sample, needed for the peer's allow_types and details.
_TYPES = {"pli": "a-f-G-U-C", "marker": "a-u-G", "route": "b-m-r", "casevac": "b-r-f-h-c"}


def _details_table() -> dict[str, list[str]]:
    table = {k: sorted(v) for k, v in DEFAULT_DETAILS.items()}
    for row in ROWS:
        if row.details:
            prefix = _TYPES[row.id]
            table[prefix] = sorted(set(table["*"]) | set(row.details))
    return table


ALLOW_TYPES = ["a-", "b-t-f", "b-a-o", "t-x-d-d", "u-d-", "b-m-r", "b-r-f-h-c"]


# --- the links ------------------------------------------------------------------------------------


@dataclass
class Link:
    id: str
    wire: str
    usa: Server
    side: Side
    peer: MatrixPeer
    sender: Client  # Liaison client that sends (usa-s, SECRET)
    receiver: Client  # Liaison client that receives what the peer sends (usa-u, UNCLASSIFIED)
    own: bool  # our own test peer (keeps fields 27-29 and the raw messages)
    sent_uids: dict[str, str] = field(default_factory=dict)
    canaries_sent: bool = False


# (peer, role): "dials" = Liaison dials the peer, "accepts" = the peer dials Liaison.
LINKS = [("own", "dials"), ("own", "accepts"), ("ots", "dials"), ("ots", "accepts")]


def _table(pki: ServerPki, role: str, port: int | None) -> dict[str, Any]:
    return peer_table(
        name="ukr",
        dial=f"127.0.0.1:{port}" if role == "dials" else None,
        accept=True if role == "accepts" else None,
        ca_file=str(pki.ca_cert),
        fingerprint=fingerprint_sha256(load_server_cert(pki)),
        protocol="tak-v2",
        default_label=DEFAULT_LABEL,
        allow_types=ALLOW_TYPES,
        details=_details_table(),
    )


@contextlib.asynccontextmanager
async def _open_link(kind: str, role: str, root: Path) -> AsyncIterator[Link]:
    pki = ensure_server_pki(root / "peer", public_host="127.0.0.1", ca_name="TAK Peer CA")
    chain = pki.server_cert.read_bytes() + pki.ca_cert.read_bytes()
    async with await _server_with_users(root, "usa") as usa:  # type: ignore[attr-defined]
        assert usa.server_pki is not None and usa.router.gate is not None
        audit = GateAudit(usa.router.gate)
        stops: list[Callable[[], Any]] = []
        peer: MatrixPeer
        try:
            if kind == "own" and role == "dials":
                tak = TakPeer()
                port = await tak.start(
                    cert_chain=chain,
                    key=pki.server_key.read_bytes(),
                    client_ca=usa.server_pki.ca_cert.read_bytes(),
                )
                stops.append(tak.stop)
                side = await start_federation(
                    usa,
                    "usa-srv",
                    [_table(pki, role, port)],
                    listen="off",
                    policy=POLICY,
                    audit=audit,  # type: ignore[arg-type]
                )
                peer = OwnPeer("own", tak)
            elif kind == "own":
                side = await start_federation(
                    usa,
                    "usa-srv",
                    [_table(pki, role, None)],
                    listen="127.0.0.1:0",
                    policy=POLICY,
                    audit=audit,  # type: ignore[arg-type]
                )
                assert side.fed.bound is not None
                client = TakClientPeer()
                client.start(
                    f"127.0.0.1:{side.fed.bound.port}",
                    chain=chain,
                    key=pki.server_key.read_bytes(),
                    ca=usa.server_pki.ca_cert.read_bytes(),
                    host="localhost",
                )
                stops.append(client.stop)
                peer = OwnPeer("own", client)
            else:
                chain_file = root / "ots-chain.pem"
                chain_file.write_bytes(chain)
                listen = free_port() if role == "dials" else None
                side = await start_federation(
                    usa,
                    "usa-srv",
                    [_table(pki, role, listen)],
                    listen="off" if role == "dials" else "127.0.0.1:0",
                    policy=POLICY,
                    audit=audit,  # type: ignore[arg-type]
                )
                dial = free_port() if side.fed.bound is None else side.fed.bound.port
                ots = OtsPeer(
                    write_config(
                        root / "federation.ini",
                        server_id="ots-peer",
                        listen_port=listen,
                        ca_bundle=usa.server_pki.ca_cert,
                        cert_chain=chain_file,
                        key=pki.server_key,
                        peer_server_id="usa-srv",
                        peer_fingerprint=server_fingerprint(usa),
                        peer_port=dial,
                    )
                )
                await ots.start()
                stops.append(ots.stop)
                peer = OtsAdapter("ots", ots)
            stops.insert(0, lambda: stop_federation(side))
            status = side.fed.status.peers["ukr"]
            await wait_until(lambda: status.state is LinkState.UP, CROSS_S, "link up")
            cu = await _connect(usa, "usa")
            try:
                yield Link(
                    f"{kind}-{role}",
                    "tak-v2",
                    usa,
                    side,
                    peer,
                    cu["usa-s"],
                    cu["usa-u"],
                    own=kind == "own",
                )
            finally:
                for c in cu.values():
                    await c.close()
        finally:
            for stop in stops:
                await stop()


@pytest_asyncio.fixture(
    scope="module", loop_scope="module", params=LINKS, ids=lambda p: "-".join(p)
)
async def link(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Link]:
    kind, role = request.param
    if kind == "ots":
        ots_python()  # its venv, built once; skips (or fails) with the reason when impossible
    root = tmp_path_factory.mktemp(f"{kind}-{role}")
    # The link lives in a task of its own, so its server's task group opens and closes in one
    # task although the module's tests run in others.
    ready: asyncio.Future[Link] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def own() -> None:
        try:
            async with _open_link(kind, role, root) as lk:
                ready.set_result(lk)
                await done.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    task = asyncio.create_task(own())
    lk = await ready
    yield lk
    done.set()
    await task


# --- comparing what crossed -----------------------------------------------------------------------


# How precisely a receiver's CoT writes the point: our own peers keep the doubles; ots-federation
# writes lat/lon with 6 decimals (about 0.1 m) and hae with 1.
EXACT = {"lat": 0.0, "lon": 0.0, "hae": 0.0}
OTS_POINT = {"lat": 1e-6, "lon": 1e-6, "hae": 0.05}


def _same(a: str | None, b: str | None, tol: float = 0.0) -> bool:
    if a == b:
        return True
    try:
        return (
            a is not None
            and b is not None
            and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=tol)
        )
    except ValueError:
        return False


def _children(event: ET.Element, tag: str) -> list[ET.Element]:
    detail = event.find("detail")
    assert detail is not None, "no <detail>"
    return [c for c in detail if c.tag == tag]


def assert_crossed(
    row: Row,
    sent: ET.Element,
    got: ET.Element,
    *,
    restores_fields: bool = True,
    point_tol: dict[str, float] = EXACT,
) -> None:
    """The received event is the sent one, field by field, for what the row names.
    ``restores_fields``: the receiver rebuilds the moved elements from their GeoEvent fields."""
    for attr in ("uid", "type", "how"):
        assert got.get(attr) == sent.get(attr), (attr, got.get(attr), sent.get(attr))
    sp, gp = sent.find("point"), got.find("point")
    assert sp is not None and gp is not None
    for attr in ("lat", "lon", "hae"):
        assert _same(gp.get(attr), sp.get(attr), point_tol[attr]), (
            attr,
            gp.get(attr),
            sp.get(attr),
        )
    for el in row.elements:
        want, have = _children(sent, el.tag), _children(got, el.tag)
        if el.moved and not restores_fields:
            assert have == [], f"<{el.tag}> left in the detail although moved to its field"
            continue
        assert have, f"<{el.tag}> missing"
        if el.count is not None:
            assert len(have) == len(want) == el.count, (el.tag, len(have), len(want))
        pairs = (
            [(w, next(h for h in have if h.get(el.key) == w.get(el.key))) for w in want]
            if el.key
            else [(want[0], have[0])]
        )
        for w, h in pairs:
            for attr in el.attrs:
                assert _same(h.get(attr), w.get(attr)), (el.tag, attr, h.get(attr), w.get(attr))
            if el.text:
                assert (h.text or "").strip() == (w.text or "").strip(), (el.tag, h.text)
            if el.tag == "__routeinfo":
                assert len(list(h.iter("__navcue"))) == len(list(w.iter("__navcue"))) > 0
    if row.extra is not None:
        row.extra(sent, got)


def _seclabel(event: ET.Element) -> ET.Element:
    found = _children(event, "__seclabel")
    assert len(found) == 1, "exactly one <__seclabel> in the detail"
    return found[0]


def _arrival(peer: MatrixPeer, uid: str) -> Arrival | None:
    """The event ``uid`` as the peer received it. A client's position report is preceded by
    its ContactListEntry (tak-federation.md 8), which ots-federation turns into a contact event
    of the same uid; the event itself is the one that carries its label."""
    for a in peer.arrivals():
        detail = a.cot.find("detail")
        if a.cot.get("uid") == uid and detail is not None and detail.find("__seclabel") is not None:
            return a
    return None


def _row_uid(row: Row, who: str) -> str:
    if row.id == "chat-all":  # GeoChat.<sender uid>.<room>.<message id>, as ATAK names it
        return f"GeoChat.{who}-sender.All Chat Rooms.{new_uid('msg')}"
    return new_uid(f"{who}-{row.id}")


# --- the matrix -----------------------------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
async def test_liaison_to_peer(link: Link, row: Row) -> None:
    if link.wire not in row.wires:
        pytest.skip(f"row {row.id} does not run on {link.wire}")
    uid = _row_uid(row, "usa")
    xml = fresh(sample_text(row.sample), uid, extra_detail=seclabel(*OUT_LABEL))
    await link.sender.send(xml)
    link.sent_uids[row.id] = uid
    await wait_until(lambda: _arrival(link.peer, uid) is not None, CROSS_S, f"{row.id} at peer")
    got = _arrival(link.peer, uid)
    assert got is not None
    assert_crossed(
        row,
        ET.fromstring(xml),
        got.cot,
        restores_fields=link.own,
        point_tol=EXACT if link.own else OTS_POINT,
    )
    # The label crosses: <__seclabel> kept in the detail; fields 27-29 where the peer keeps them.
    label = _seclabel(got.cot)
    assert (label.get("cls"), label.get("orig")) == ("SECRET", "USA")
    assert label.find("cat") is not None and label.find("cat").get("v") == "USA UKR"  # type: ignore[union-attr]
    if got.fed is not None:
        geo = got.fed.event
        assert (geo.access, geo.releaseableTo, geo.caveat) == (OUT_ACCESS, OUT_REL, "")
        assert [p.federationServerId for p in got.fed.federateProvenance] == ["usa-srv"]
        assert got.fed.federateHops.currentHops == 1
        if row.id == "chat-all":
            assert list(geo.ptpCallsigns) == list(geo.ptpUids) == []
        if row.id == "pli":  # moved to its fields, not left twice in the detail (trap: track)
            assert geo.battery == 78 and math.isclose(geo.course, 80.24833892285461)
            assert "<track" not in geo.other and (geo.ploc, geo.palt) == ("GPS", "GPS")


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
async def test_peer_to_liaison(link: Link, row: Row) -> None:
    if link.wire not in row.wires:
        pytest.skip(f"row {row.id} does not run on {link.wire}")
    uid = _row_uid(row, "ukr")
    # What a TAK Server sends: no label of ours, no access marking of its own.
    xml = fresh(sample_text(row.sample), uid, access=False)
    await link.peer.send_cot(xml)
    frame = await link.receiver.wait_for(f'uid="{uid}"'.encode(), within=CROSS_S)
    got = ET.fromstring(frame)
    assert_crossed(row, ET.fromstring(xml), got)
    # The peer's default label, originator its organisation; provenance names the peer.
    label = _seclabel(got)
    assert (label.get("cls"), label.get("orig")) == ("UNCLASSIFIED", "UKR")
    cat = label.find("cat")
    assert cat is not None and set((cat.get("v") or "").split()) == {"UKR", "USA"}
    (prov,) = _children(got, "__federation")
    assert (prov.get("origin"), prov.get("hops")) == ("ukr", "1")


# --- canaries, audit ------------------------------------------------------------------------------

CANARY_CEILING = "CANARY-ABOVE-CEILING"
CANARY_TYPE = "CANARY-TYPE-NOT-ALLOWED"


async def _send_canaries(link: Link) -> None:
    """Once per link: the two canaries, then a releasable sentinel, which must arrive."""
    if link.canaries_sent:
        return
    link.canaries_sent = True
    marker = sample_text("itak-marker-01.xml")
    # Releasable to USA only: above the UKR peer's release ceiling.
    above = fresh(marker, "canary-ceiling", extra_detail=seclabel("SECRET", "USA", ["USA"]))
    above = above.replace(b'callsign="poop"', f'callsign="{CANARY_CEILING}"'.encode())
    # A spot-map point (b-m-p-s-m) is no type the partner agreement allows.
    other = fresh(marker, "canary-type", extra_detail=seclabel(*OUT_LABEL))
    other = other.replace(b'type="a-u-G"', b'type="b-m-p-s-m"')
    other = other.replace(b'callsign="poop"', f'callsign="{CANARY_TYPE}"'.encode())
    after = new_uid("after-canaries")
    await link.sender.send(above)
    await link.sender.send(other)
    await link.sender.send(fresh(marker, after, extra_detail=seclabel(*OUT_LABEL)))
    await wait_until(lambda: _arrival(link.peer, after) is not None, CROSS_S, "the sentinel")


async def test_canaries_never_on_the_wire(link: Link) -> None:
    """An event above the peer's release ceiling and one of a type outside its allowlist never
    appear in any byte the peer received (each serialized gRPC message our peer decoded, or
    ots-federation's decoded events) nor in the plaintext Liaison wrote to the link; a
    releasable event sent after them arrived, so they had their chance to leak."""
    await _send_canaries(link)
    raw = link.peer.raw_messages()
    assert raw, "the peer received nothing"
    for needle in (CANARY_CEILING, CANARY_TYPE, "canary-ceiling", "canary-type"):
        assert all(needle.encode() not in m for m in raw), needle
        assert needle.encode() not in bytes(link.side.wire_out), needle
    assert b"after-canaries" in bytes(link.side.wire_out)


def _audit_records(server: Server) -> list[dict[str, Any]]:
    folder = server.config.data_dir / "audit"
    return [
        json.loads(line)
        for f in sorted(folder.glob("*.jsonl")) + sorted(folder.glob("*.log"))
        for line in f.read_bytes().splitlines()
    ]


async def test_audit_records_and_verify(link: Link) -> None:
    """Release and deny records for the TAK peer (release of each row sent, the router's deny
    of the canary above the ceiling, the guard's deny of the type not allowed), ingest records
    of what the peer sent, and ``liaison audit verify`` passes on the log."""
    await _send_canaries(link)
    recs = _audit_records(link.usa)

    def of(kind: str) -> list[dict[str, Any]]:
        return [r["fields"] for r in recs if r["kind"] == kind]

    released = {f["uid"] for f in of("release") if f.get("peer") == "ukr"}
    assert set(link.sent_uids.values()) <= released
    assert "canary-ceiling" not in released and "canary-type" not in released
    assert any(
        f.get("uid") == "canary-ceiling" and "federation:ukr" in f.get("recipients", [])
        for f in of("deny")
    ), "the router's deny of the canary above the ceiling"
    type_denies = [
        f for f in of("deny") if f.get("uid") == "canary-type" and f.get("peer") == "ukr"
    ]
    assert [(f["stage"], f["reasons"], f["recipients"]) for f in type_denies] == [
        ("guard", ["type_not_allowed"], ["federation:ukr"])
    ]
    ingested = {f["uid"] for f in of("ingest") if f.get("peer") == "ukr"}
    assert any(u.startswith("ukr-") or u.startswith("GeoChat.ukr-") for u in ingested)
    assert cli.main(["audit", "verify", "--data-dir", str(link.usa.config.data_dir)]) == 0
