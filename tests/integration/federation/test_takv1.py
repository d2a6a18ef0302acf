"""TAK federation v1, both roles: a running Liaison server with pytak clients (mutual TLS)
federated with an independent v1 peer (tests/.../tak_v1_peer.py, written from the reference),
all on 127.0.0.1 with real mutual TLS.

The interop rows of tak-federation.md 18.2 row 27 over v1, from real CoT samples: PLI, marker,
route, CASEVAC and GeoChat to All Chat Rooms cross both ways; the latest state crosses on
connect both ways (section 12); what the peer sends gets its default label, and an event whose
provenance names us or whose label is above the peer's originate ceiling is refused; canaries
(above the peer's release ceiling, of a type not allowed) are in no frame the peer decoded and
in no plaintext byte of the link; the audit log holds release, deny and ingest records for the
v1 peer and ``liaison audit verify`` passes. A peer outside the configuration is refused and
counted; oversized and undecodable frames close the connection and are counted; a frame
received twice is applied once; a peer killed mid-stream and restarted loses nothing from the
outbox.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from liaison import cli
from liaison.app import Server
from liaison.federation import takv1
from liaison.federation.link import GateAudit
from liaison.federation.status import LinkState
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki, fingerprint_sha256, load_server_cert
from liaison.protocol import cot_xml
from liaison.protocol.tak_fed_v1 import MAX_FRAME_BYTES
from tests.integration.federation.fed_helpers import (
    Side,
    server_fingerprint,
    start_federation,
    stop_federation,
    wait_until,
)
from tests.integration.federation.tak_v1_peer import TakV1Peer, cot_to_federated
from tests.integration.federation.test_e2e_labels import (
    POLICY,
    _connect,
    _server_with_users,
    marker,
    seclabel,
)
from tests.integration.helpers import sa_event
from tests.unit.federation.fed_support import peer_table

REPO = Path(__file__).resolve().parents[3]
LOCAL_SAMPLES = REPO / "tests" / "data" / "cot" / "xml"
SHARED_SAMPLES = REPO.parent / "shared" / "reference" / "samples" / "cot" / "xml"

# The interop rows: kind -> sample (local MIT copies; CASEVAC only exists in the shared set).
SAMPLES = {
    "pli": LOCAL_SAMPLES / "atak-sa-07.xml",
    "marker": LOCAL_SAMPLES / "itak-marker-01.xml",
    "route": LOCAL_SAMPLES / "atak-route-02.xml",
    "casevac": SHARED_SAMPLES / "atak-casevac-01.xml",
    "chat": LOCAL_SAMPLES / "atak-chat-all-02.xml",
}
# What must survive the crossing of each kind (in the detail).
MARKS = {
    "pli": "JENNY",
    "marker": 'parent_callsign="FM05-iOS"',
    "route": "link_attr",
    "casevac": "_medevac_",
    "chat": "at LCC",
}
DETAILS = {
    "a-": [
        *("contact", "__group", "track", "status", "takv", "precisionlocation", "uid"),
        *("link", "remarks", "usericon", "color", "archive"),
    ],
    "b-m-r": [
        *("link", "link_attr", "strokeColor", "strokeWeight", "strokeStyle", "remarks"),
        *("contact", "archive", "labels_on", "color", "creator", "__routeinfo"),
    ],
    "b-r-f-h-c": [
        "_medevac_",
        "link",
        "contact",
        "status",
        "archive",
        "color",
        "precisionlocation",
    ],
    "b-t-f": ["__chat", "link", "remarks", "__serverdestination", "marti"],
    "*": ["contact", "link", "remarks"],
}
BOTH = seclabel("SECRET", "USA", ["USA", "UKR"])
USA_ONLY = seclabel("SECRET", "USA", ["USA"])


def sample(kind: str, uid: str, *, label: str | None = None) -> bytes:
    """The sample of ``kind`` as sent now: fresh times, our uid, ``label`` in the detail."""
    path = SAMPLES[kind]
    if not path.is_file():
        pytest.skip(f"sample {path} not found (the shared sample folder is absent)")
    root = ET.fromstring(path.read_bytes())
    now = int(time.time() * 1000)
    root.set("uid", uid)
    root.set("time", cot_xml.format_time(now))
    root.set("start", cot_xml.format_time(now))
    root.set("stale", cot_xml.format_time(now + 600_000))
    root.attrib.pop("access", None)  # "Undefined" in some samples; the label decides here
    if label is not None:
        detail = root.find("detail")
        assert detail is not None
        detail.append(ET.fromstring(label))
    return ET.tostring(root)


def _peer_pki(root: Path) -> ServerPki:
    return ensure_server_pki(root / "takv1peer", public_host="127.0.0.1", ca_name="TAK v1 CA")


def _table(pki: ServerPki, *, dial: str | None, **overrides: Any) -> dict[str, Any]:
    table = peer_table(
        name="ukr",
        dial=dial,
        accept=True if dial is None else None,
        ca_file=str(pki.ca_cert),
        fingerprint=fingerprint_sha256(load_server_cert(pki)),
        protocol="tak-v1",
        default_label={"classification": "UNCLASSIFIED", "REL": ["UKR", "USA"]},
        allow_types=["a-", "b-t-f", "b-m-r", "b-r-f-h-c"],
        details=DETAILS,
    )
    table.update(overrides)
    return table


def _tls(pki: ServerPki, usa: Server) -> dict[str, bytes]:
    assert usa.server_pki is not None
    return {
        # Leaf followed by its CA: TAK reads the issuer at index 1 (section 2.1).
        "chain": pki.server_cert.read_bytes() + pki.ca_cert.read_bytes(),
        "key": pki.server_key.read_bytes(),
        "ca": usa.server_pki.ca_cert.read_bytes(),
    }


async def _link(usa: Server, pki: ServerPki, peer: TakV1Peer, role: str, **overrides: Any) -> Side:
    """Start the federation with the v1 peer; ``role`` is Liaison's: "dial" or "accept"."""
    assert usa.router.gate is not None
    if role == "dial":
        port = await peer.listen(**_tls(pki, usa))
        table = _table(pki, dial=f"127.0.0.1:{port}", **overrides)
        listen = "off"
    else:
        table = _table(pki, dial=None, **overrides)
        listen = "127.0.0.1:0"
    side = await start_federation(
        usa,
        "usa-srv",
        [table],
        listen=listen,
        policy=POLICY,
        audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
    )
    if role == "accept":
        assert side.fed.bound is not None
        await peer.dial(side.fed.bound.port, **_tls(pki, usa))
    return side


def _records(server: Server) -> list[dict[str, Any]]:
    path = server.config.data_dir / "audit"
    logs = sorted(path.glob("*.log")) + sorted(path.glob("*.jsonl"))
    return [json.loads(line) for f in logs for line in f.read_bytes().splitlines()]


@pytest.mark.parametrize("role", ["dial", "accept"])
async def test_interop_rows_both_ways(tmp_path: Path, role: str) -> None:
    pki = _peer_pki(tmp_path)
    usa_cm = await _server_with_users(tmp_path, "usa")
    async with usa_cm as usa:  # type: ignore[attr-defined]
        cu = await _connect(usa, "usa")
        us = cu["usa-s"]
        # Before the link exists: only in the latest state, offered on connect.
        await us.send(sa_event("uid-usa-early", "PLI-EARLY", extra_detail=BOTH))
        await us.collect(0.3)
        # The peer's own latest state, sent as it connects (section 12).
        tak_early = cot_to_federated(sample("pli", "tak-early").replace(b"JENNY", b"TAK-EARLY"))
        peer = TakV1Peer(on_connect=[tak_early])
        side = await _link(usa, pki, peer, role)
        try:
            status = side.fed.status.peers["ukr"]
            await wait_until(lambda: status.state is LinkState.UP, what="link up")
            assert status.to_json()["protocol"] == "tak-v1"  # the wire, in the status
            # A vanished peer is found by TCP keepalive (v1 has no keepalive message).
            [link_writer] = side.fed._sessions.values()
            sock = link_writer.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            await wait_until(lambda: "uid-usa-early" in peer.uids(), what="latest state")
            await us.wait_for(b'uid="tak-early"')
            # Liaison -> peer: each kind, labelled releasable; two canaries.
            for kind in SAMPLES:
                await us.send(sample(kind, f"usa-{kind}", label=BOTH))
            await us.send(marker("m-canary", "CANARY-USA-ONLY", USA_ONLY))
            await us.send(
                sa_event("q-canary", "CANARY-TYPE", cot_type="b-i-x-i", extra_detail=BOTH)
            )
            # Peer -> Liaison: each kind, as TAK Server converts it (no label: default label).
            for kind in SAMPLES:
                await peer.send(cot_to_federated(sample(kind, f"tak-{kind}")))
            # One whose provenance already names us: a loop, refused (section 9).
            looped = cot_to_federated(sample("marker", "tak-loop").replace(b"FM05", b"LOOPED"))
            looped.federateProvenance.add(federationServerId="usa-srv")
            await peer.send(looped)
            # One labelled above what the peer may originate (ORCON is not in its ceiling).
            above = seclabel("SECRET", "UKR", ["UKR", "USA"], ["ORCON"])
            high = sample("marker", "tak-high", label=above).replace(b"FM05", b"TOO-HIGH")
            await peer.send(cot_to_federated(high))
            for kind in SAMPLES:
                frame = await us.wait_for(f'uid="tak-{kind}"'.encode())
                assert MARKS[kind].encode() in frame, (kind, frame)
            await wait_until(
                lambda: {f"usa-{k}" for k in SAMPLES} <= set(peer.uids()), what="releases"
            )
            await wait_until(lambda: status.counts["rejections"] >= 2, what="two refused")
            await us.collect(0.3)
            assert b"LOOPED" not in bytes(us.raw) and b"TOO-HIGH" not in bytes(us.raw)
            await us.close()
        finally:
            await peer.stop()
            await stop_federation(side)

        # Identity: the peer saw our leaf, presented with its CA (TAK reads index 1).
        assert peer.fingerprints == {server_fingerprint(usa)}
        assert all(n is None or n >= 2 for n in peer.chain_lengths), peer.chain_lengths
        decoded = {f.event.uid: f for f in peer.decoded()}
        for kind in SAMPLES:
            geo = decoded[f"usa-{kind}"].event
            assert MARKS[kind] in geo.other, kind
            assert geo.other.startswith("<detail") and "<__seclabel " in geo.other
            assert (geo.access, geo.releaseableTo) == ("SECRET", "REL TO USA, UKR")
            assert [p.federationServerId for p in decoded[f"usa-{kind}"].federateProvenance] == [
                "usa-srv"
            ]
        pli = decoded["usa-pli"].event
        assert "<track" not in pli.other and abs(pli.course - 80.24833892285461) < 1e-9
        assert pli.battery == 78 and (pli.ploc, pli.palt) == ("GPS", "GPS")
        assert decoded["usa-route"].event.other.count("<link ") == 10
        assert 'chatroom="All Chat Rooms"' in decoded["usa-chat"].event.other
        # The canaries: in no decoded frame and in no plaintext byte of the link.
        for payload in peer.received:
            assert b"CANARY" not in payload
        assert not {"m-canary", "q-canary"} & set(decoded)
        assert b"CANARY" not in bytes(side.wire_out)
        assert b"at LCC" in bytes(side.wire_out)

        recs = _records(usa)
        released = {
            r["fields"]["uid"]
            for r in recs
            if r["kind"] == "release" and r["fields"].get("peer") == "ukr"
        }
        assert {f"usa-{k}" for k in SAMPLES} | {"uid-usa-early"} <= released
        denied = {
            r["fields"]["uid"]: r["fields"]
            for r in recs
            if r["kind"] == "deny" and "federation:ukr" in r["fields"].get("recipients", [])
        }
        assert {"m-canary", "q-canary"} <= set(denied)
        ingested = {
            r["fields"]["uid"]: r["fields"]
            for r in recs
            if r["kind"] == "ingest" and r["fields"].get("peer") == "ukr"
        }
        assert {f"tak-{k}" for k in SAMPLES} | {"tak-early"} <= set(ingested)
        assert all(ingested[f"tak-{k}"]["origin"] == "ukr" for k in SAMPLES)
        rejected = [
            r["fields"]
            for r in recs
            if r["kind"] == "ingest_reject" and r["fields"].get("uid") == "tak-loop"
        ]
        assert rejected and "loop_own_origin" in rejected[0]["reasons"]
        assert any(
            r["kind"] == "ingest_reject" and r["fields"].get("uid") == "tak-high" for r in recs
        )
    assert cli.main(["audit", "verify", "--data-dir", str(usa.config.data_dir)]) == 0


@pytest.mark.parametrize("role", ["dial", "accept"])
async def test_a_peer_with_another_certificate_is_refused(tmp_path: Path, role: str) -> None:
    pki = _peer_pki(tmp_path)
    usa_cm = await _server_with_users(tmp_path, "usa")
    async with usa_cm as usa:  # type: ignore[attr-defined]
        cu = await _connect(usa, "usa")
        await cu["usa-s"].send(sa_event("uid-usa-s", "PLI-USA", extra_detail=BOTH))
        await cu["usa-s"].collect(0.3)
        peer = TakV1Peer()
        counter = usa.metrics.counter(
            "liaison_federation_unknown_peer_total",
            "Federation connections refused: the certificate is no accepted peer's",
        )
        side = await _link(usa, pki, peer, role, fingerprint="0" * 64)
        try:
            status = side.fed.status.peers["ukr"]
            if role == "dial":
                await wait_until(lambda: status.state is LinkState.REFUSED, what="refusal")
                assert "fingerprint" in (status.last_error or "")
            else:
                await wait_until(lambda: counter.get() >= 1, what="the refusal counted")
            await wait_until(lambda: not peer.connected, what="the connection closed")
            assert peer.received == []
            assert status.counts["connects"] == 0
        finally:
            await peer.stop()
            await stop_federation(side)


@pytest.mark.parametrize("bad", ["too_large", "undecodable"])
async def test_a_bad_frame_closes_the_connection_and_is_counted(tmp_path: Path, bad: str) -> None:
    pki = _peer_pki(tmp_path)
    usa_cm = await _server_with_users(tmp_path, "usa")
    async with usa_cm as usa:  # type: ignore[attr-defined]
        peer = TakV1Peer()
        side = await _link(usa, pki, peer, "accept")
        refused = usa.metrics.counter(takv1.REFUSED_METRIC, takv1.REFUSED_HELP, "reason")
        try:
            status = side.fed.status.peers["ukr"]
            await wait_until(lambda: status.state is LinkState.UP, what="link up")
            if bad == "too_large":
                # Only the length prefix: refused before any of the payload is read.
                await peer.send_raw((MAX_FRAME_BYTES + 1).to_bytes(4, "big"))
            else:
                await peer.send_raw(b"\x00\x00\x00\x03\xff\xff\xff")
            await wait_until(lambda: refused.get(bad) == 1, what="the refusal counted")
            await wait_until(lambda: not peer.connected, what="the connection closed")
            await wait_until(lambda: status.state is not LinkState.UP, what="link down")
            assert bad.replace("too_large", "frame_too_large") in (status.last_error or "")
        finally:
            await peer.stop()
            await stop_federation(side)
        if bad == "undecodable":
            rejects = [
                r["fields"]
                for r in _records(usa)
                if r["kind"] == "ingest_reject" and r["fields"].get("peer") == "ukr"
            ]
            assert rejects and rejects[0]["reasons"] == ["undecodable"]


async def test_a_frame_received_twice_is_applied_once(tmp_path: Path) -> None:
    pki = _peer_pki(tmp_path)
    usa_cm = await _server_with_users(tmp_path, "usa")
    async with usa_cm as usa:  # type: ignore[attr-defined]
        cu = await _connect(usa, "usa")
        us = cu["usa-s"]
        peer = TakV1Peer()
        side = await _link(usa, pki, peer, "accept")
        try:
            status = side.fed.status.peers["ukr"]
            await wait_until(lambda: status.state is LinkState.UP, what="link up")
            event = cot_to_federated(sample("marker", "tak-twice"))
            await peer.send(event)
            await us.wait_for(b'uid="tak-twice"')
            await peer.send(event)  # the same bytes again (a resend)
            other = cot_to_federated(sample("marker", "tak-other"))
            await peer.send(other)
            await us.wait_for(b'uid="tak-other"')
            # Across a reconnect too (the memory is the link's, not the connection's).
            peer.kill()
            await wait_until(lambda: status.state is not LinkState.UP, what="link down")
            assert side.fed.bound is not None
            await peer.dial(side.fed.bound.port, **_tls(pki, usa))
            await wait_until(lambda: status.state is LinkState.UP, what="link up again")
            await peer.send(event)
            last = cot_to_federated(sample("marker", "tak-last"))
            await peer.send(last)
            await us.wait_for(b'uid="tak-last"')
            await us.collect(0.3)
            assert b'uid="tak-twice"' not in b"".join(us.frames)
            assert status.counts["duplicates"] == 2
            ingests = [
                r
                for r in _records(usa)
                if r["kind"] == "ingest"
                and r["fields"].get("uid") == "tak-twice"
                and r["fields"].get("peer") == "ukr"
            ]
            assert len(ingests) == 1
            await us.close()
        finally:
            await peer.stop()
            await stop_federation(side)


def numbers(peer: TakV1Peer) -> set[int]:
    """The numbers of the X-<n> markers the peer received."""
    return {
        int(m.group(1))
        for f in peer.decoded()
        for m in re.finditer(r"<remarks>X-(\d+)</remarks>", f.event.other)
    }


@pytest.mark.parametrize("role", ["dial", "accept"])
async def test_peer_killed_mid_stream_loses_nothing(tmp_path: Path, role: str) -> None:
    pki = _peer_pki(tmp_path)
    usa_cm = await _server_with_users(tmp_path, "usa")
    count = 300
    async with usa_cm as usa:  # type: ignore[attr-defined]
        cu = await _connect(usa, "usa")
        us = cu["usa-s"]
        peer = TakV1Peer(frame_delay=0.005)  # 300 frames take at least 1.5 s to read
        side = await _link(usa, pki, peer, role)

        async def restart(*, kill: bool) -> None:
            if kill:
                await wait_until(lambda: peer.connected, what="the peer's side up")
                peer.kill()
            elif role == "dial":  # Liaison redials the same port
                await peer.listen(**_tls(pki, usa), port=peer.port)
            else:
                assert side.fed.bound is not None
                await peer.dial(side.fed.bound.port, **_tls(pki, usa))

        try:
            status = side.fed.status.peers["ukr"]
            await wait_until(lambda: status.state is LinkState.UP, what="link up")
            # The peer goes away; meanwhile 300 markers queue in the outbox. Markers are never
            # coalesced, and of five uids, so the latest state offered again on reconnect holds
            # only the last of each: every one must come from the outbox.
            await restart(kill=True)
            await wait_until(lambda: status.state is not LinkState.UP, what="link down")
            for n in range(count):
                await us.send(marker(f"m-{n % 5}", f"X-{n}", BOTH))
            await wait_until(lambda: status.backlog == count, what="the backlog queued")
            await restart(kill=False)
            # Killed while the backlog streams: frames written and taken by its TCP, unread.
            await wait_until(lambda: len(peer.received) >= 20, what="the stream started")
            peer.kill()
            assert len(numbers(peer)) < count, "the stream finished before the kill"
            await wait_until(lambda: status.state is not LinkState.UP, what="link down")
            peer.frame_delay = 0.0
            await restart(kill=False)
            await wait_until(
                lambda: numbers(peer) == set(range(count)), within=30.0, what="every marker"
            )
            await wait_until(lambda: status.backlog == 0, what="the outbox drained")
            assert peer.connections == 3
            await us.close()
        finally:
            await peer.stop()
            await stop_federation(side)


def test_the_v1_wire_never_loads_grpc_or_h2() -> None:
    code = (
        "import sys\n"
        "import liaison.app, liaison.federation.supervisor, liaison.federation.takv1\n"
        "assert not [m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')], 'grpc'\n"
        "assert 'h2' not in sys.modules, 'h2'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_uid_marks_are_in_the_samples() -> None:
    """The marks the interop rows look for are really in the samples (else the rows prove
    nothing)."""
    for kind, path in SAMPLES.items():
        if path.is_file():
            assert re.search(re.escape(MARKS[kind].encode()), path.read_bytes()), kind
