"""The streaming core end to end: real TAK clients (pytak, takproto) over real sockets."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest
import takproto

from liaison.identity.ca import ensure_server_pki
from liaison.identity.issue import issue_client_cert
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import (
    chat_event,
    clients,
    connect_tcp,
    connect_tls,
    delete_event,
    negotiate_protobuf,
    proto_frame,
    sa_event,
)


async def test_tcp_clients_exchange_events_without_echo(start_server: ServerFactory) -> None:
    async with start_server() as server:
        assert server.tcp is not None
        a = await connect_tcp(server.tcp.port, "A")
        b = await connect_tcp(server.tcp.port, "B")
        async with clients(a, b):
            await a.send(sa_event("uid-A", "ALPHA"))
            got = await b.wait_for(b'uid="uid-A"')
            assert b'callsign="ALPHA"' in got
            await b.send(sa_event("uid-B", "BRAVO"))
            await a.wait_for(b'uid="uid-B"')
            # A never receives its own report back.
            assert not any(b'uid="uid-A"' in f for f in await a.collect(0.3))


async def test_mutual_tls_clients_exchange_events(start_server: ServerFactory) -> None:
    async with start_server() as server:
        assert server.tls is not None
        ca = issue_cert(server, "alice", "USA")
        cb = issue_cert(server, "bob", "USA")
        a = await connect_tls(server.tls.port, cert=ca.cert, key=ca.key, ca=ca.ca, name="alice")
        b = await connect_tls(server.tls.port, cert=cb.cert, key=cb.key, ca=cb.ca, name="bob")
        async with clients(a, b):
            await a.send(sa_event("uid-alice", "ALICE"))
            await b.wait_for(b'uid="uid-alice"')
            await b.send(chat_event("uid-bob", "BOB", "hello over tls"))
            await a.wait_for(b"hello over tls")


def _handshake(port: int, ctx: ssl.SSLContext) -> None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        # TLS 1.3 reports a refused client certificate on the first read, not in the handshake.
        tls.sendall(b"<")
        if tls.recv(1) == b"":
            raise ConnectionResetError("closed by server")


async def test_tls_refuses_clients_without_a_certificate_from_our_ca(
    start_server: ServerFactory, tmp_path: pytest.TempPathFactory
) -> None:
    async with start_server() as server:
        assert server.tls is not None and server.server_pki is not None
        no_cert = ssl.create_default_context(cafile=str(server.server_pki.ca_cert))
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            await asyncio.to_thread(_handshake, server.tls.port, no_cert)

        other = ensure_server_pki(
            server.config.data_dir.parent / "other-ca", public_host="localhost"
        )
        stranger = issue_client_cert(other, common_name="mallory", org="XXX")
        cert = server.config.data_dir / "mallory.pem"
        key = server.config.data_dir / "mallory.key"
        cert.write_bytes(stranger.cert_pem)
        assert stranger.key_pem is not None
        key.write_bytes(stranger.key_pem)
        foreign = ssl.create_default_context(cafile=str(server.server_pki.ca_cert))
        foreign.load_cert_chain(cert, key)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            await asyncio.to_thread(_handshake, server.tls.port, foreign)
        assert server.metrics.snapshot().get("liaison_subscribers") == 0


async def test_protobuf_and_xml_clients_see_each_other(start_server: ServerFactory) -> None:
    async with start_server() as server:
        assert server.tcp is not None
        pb = await connect_tcp(server.tcp.port, "protobuf")
        xml = await connect_tcp(server.tcp.port, "xml")
        async with clients(pb, xml):
            await negotiate_protobuf(pb)
            # The protobuf client sends a takproto-encoded stream frame...
            await pb.send(
                proto_frame(sa_event("uid-pb", "PROTO", extra_detail="<remarks>pb</remarks>"))
            )
            got = await xml.wait_for(b'uid="uid-pb"')
            assert b'callsign="PROTO"' in got and b"<remarks>pb</remarks>" in got
            # ...and receives the XML client's event as protobuf.
            await xml.send(sa_event("uid-xml", "XMLER", extra_detail="<remarks>x</remarks>"))
            frame = await pb.wait_for(b"uid-xml")
            msg = takproto.parse_proto(b"\xbf\x01\xbf" + frame)
            assert msg.cotEvent.uid == "uid-xml"
            assert msg.cotEvent.detail.contact.callsign == "XMLER"
            assert "<remarks>x</remarks>" in msg.cotEvent.detail.xmlDetail


async def test_directed_chat_reaches_only_its_addressee(start_server: ServerFactory) -> None:
    async with start_server() as server:
        assert server.tcp is not None
        a = await connect_tcp(server.tcp.port, "A")
        b = await connect_tcp(server.tcp.port, "B")
        c = await connect_tcp(server.tcp.port, "C")
        async with clients(a, b, c):
            for client, uid, cs in (
                (a, "uid-A", "ALPHA"),
                (b, "uid-B", "BRAVO"),
                (c, "uid-C", "CHARLIE"),
            ):
                await client.send(sa_event(uid, cs))
            for client in (a, b, c):
                await client.collect(0.4)  # everyone's SA has arrived; start clean
            await a.send(chat_event("uid-A", "ALPHA", "for bravo only", to_uid="uid-B"))
            got = await b.wait_for(b"for bravo only")
            assert b"<dest" not in got  # dest elements are removed before forwarding
            await a.send(chat_event("uid-A", "ALPHA", "by callsign", to_callsign="BRAVO"))
            await b.wait_for(b"by callsign")
            leaked = [f for f in await c.collect(0.5) if b"bravo only" in f or b"by callsign" in f]
            assert leaked == []
            # A broadcast chat reaches everyone else.
            await a.send(chat_event("uid-A", "ALPHA", "to all"))
            await b.wait_for(b"to all")
            await c.wait_for(b"to all")


async def test_late_client_gets_latest_state_contacts_first(start_server: ServerFactory) -> None:
    async with start_server() as server:
        assert server.tcp is not None
        a = await connect_tcp(server.tcp.port, "A")
        async with clients(a):
            marker = sa_event("marker-1", "OBJ", cot_type="a-h-G").replace(
                b' endpoint="*:-1:stcp"', b""
            )
            await a.send(marker)
            await a.send(sa_event("uid-A", "ALPHA", lat=50.0))
            await a.send(sa_event("uid-A", "ALPHA", lat=51.0))  # newer position wins
            await a.send(chat_event("uid-A", "ALPHA", "private", to_uid="uid-nobody"))
            await asyncio.sleep(0.3)
            late = await connect_tcp(server.tcp.port, "late")
            async with clients(late):
                frames = [f for f in await late.collect(0.5) if b"t-x-takp" not in f]
                uids = [f.split(b'uid="', 1)[1].split(b'"', 1)[0] for f in frames]
                assert uids == [b"uid-A", b"marker-1"]
                assert b'lat="51.0"' in frames[0]
                assert not any(b"private" in f for f in frames)


async def test_delete_removes_an_item_for_everyone(start_server: ServerFactory) -> None:
    async with start_server() as server:
        assert server.tcp is not None
        a = await connect_tcp(server.tcp.port, "A")
        b = await connect_tcp(server.tcp.port, "B")
        async with clients(a, b):
            await a.send(sa_event("marker-del", "GONE", cot_type="b-m-p-s-m"))
            await b.wait_for(b'uid="marker-del"')
            await a.send(delete_event("marker-del"))
            await b.wait_for(b"t-x-d-d")
            late = await connect_tcp(server.tcp.port, "late")
            async with clients(late):
                assert not any(b"marker-del" in f for f in await late.collect(0.5))


async def test_stale_items_are_not_replayed(start_server: ServerFactory) -> None:
    async with start_server() as server:
        assert server.tcp is not None
        a = await connect_tcp(server.tcp.port, "A")
        async with clients(a):
            await a.send(sa_event("short-lived", "BRIEF", stale_s=1))
            await a.send(sa_event("long-lived", "STAYS", stale_s=600))
            await asyncio.sleep(1.3)
            late = await connect_tcp(server.tcp.port, "late")
            async with clients(late):
                frames = await late.collect(0.5)
                assert any(b"long-lived" in f for f in frames)
                assert not any(b"short-lived" in f for f in frames)


async def test_restart_keeps_latest_state_and_history(start_server: ServerFactory) -> None:
    async with start_server() as server:
        assert server.tcp is not None
        a = await connect_tcp(server.tcp.port, "A")
        async with clients(a):
            await a.send(sa_event("uid-persist", "KEEP"))
            await a.send(sa_event("uid-persist", "KEEP", lat=48.5))
            await asyncio.sleep(0.2)
    async with start_server() as server:
        assert server.tcp is not None
        late = await connect_tcp(server.tcp.port, "after-restart")
        async with clients(late):
            got = await late.wait_for(b'uid="uid-persist"')
            assert b'lat="48.5"' in got
        from liaison.storage.base import Query

        history = await server.store.history(Query(uid="uid-persist"))
        assert len(history) == 2


async def test_ping_is_answered_and_never_relayed(start_server: ServerFactory) -> None:
    async with start_server() as server:
        assert server.tcp is not None
        a = await connect_tcp(server.tcp.port, "A")
        b = await connect_tcp(server.tcp.port, "B")
        async with clients(a, b):
            ping = sa_event("uid-A-ping", "ALPHA", cot_type="t-x-c-t")
            await a.send(ping)
            await a.wait_for(b"t-x-c-t-r")
            assert not any(b"uid-A-ping" in f for f in await b.collect(0.4))


async def test_groups_separate_users(
    start_server: ServerFactory, tmp_path: pytest.TempPathFactory
) -> None:
    groups = tmp_path / "groups.toml"  # type: ignore[operator]
    groups.write_text(
        '[[rule]]\no = "RED"\ngroups = ["red"]\n\n[[rule]]\no = "BLUE"\ngroups = ["blue"]\n\n'
        '[[rule]]\ncn = "hq"\nin = ["hq"]\nout = ["red", "blue"]\n'
    )
    async with start_server(groups_file=str(groups)) as server:
        assert server.tls is not None
        certs = {
            n: issue_cert(server, n, o)
            for n, o in (("r1", "RED"), ("r2", "RED"), ("b1", "BLUE"), ("hq", "HQ"))
        }
        conns = {
            n: await connect_tls(server.tls.port, cert=c.cert, key=c.key, ca=c.ca, name=n)
            for n, c in certs.items()
        }
        async with clients(*conns.values()):
            await conns["r1"].send(sa_event("uid-r1", "R1"))
            await conns["r2"].wait_for(b"uid-r1")
            await conns["hq"].wait_for(b"uid-r1")  # hq reads red and blue
            assert not any(b"uid-r1" in f for f in await conns["b1"].collect(0.4))
            await conns["hq"].send(sa_event("uid-hq", "HQ"))  # hq writes only to its own group
            for n in ("r1", "r2", "b1"):
                assert not any(b"uid-hq" in f for f in await conns[n].collect(0.3))


async def test_udp_datagrams_xml_and_mesh_protobuf(start_server: ServerFactory) -> None:
    async with start_server() as server:
        assert server.tcp is not None and server.udp is not None
        listener = await connect_tcp(server.tcp.port, "listener")
        async with clients(listener):
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=("127.0.0.1", server.udp.port)
            )
            try:
                transport.sendto(b'<?xml version="1.0"?>\n' + sa_event("udp-xml", "UDPX"))
                mesh = bytes(
                    takproto.xml2proto(sa_event("udp-mesh", "UDPM"), takproto.TAKProtoVer.MESH)
                )
                assert mesh[:3] == b"\xbf\x01\xbf"
                transport.sendto(mesh)
                transport.sendto(b"\xbf\x02\xbfgarbage")  # another version: refused
                await listener.wait_for(b"udp-xml")
                await listener.wait_for(b"udp-mesh")
            finally:
                transport.close()
        assert (
            server.metrics.snapshot().get('liaison_input_rejected_total{reason="malformed_stream"}')
            == 1
        )
