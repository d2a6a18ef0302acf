"""TAK federation v2, Liaison in the server role: a TAK v2 client (our own test peer,
tests/.../tak_client_peer.py, written from the reference) dials a running Liaison server's
federation listener over mutual TLS on 127.0.0.1, as a TAK Server does.

On subscription the peer gets the latest state it may see (an event sent before the link
existed), never the canary above its release ceiling; live events cross both ways; health is
answered SERVING. A certificate that is no configured peer's is refused, logged and counted; a
peer that stops its health checks is dropped.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from liaison.federation import takv2_server
from liaison.federation.link import GateAudit
from liaison.federation.proto import fig_pb2
from liaison.federation.status import LinkState
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki, fingerprint_sha256, load_server_cert
from tests.integration.federation.fed_helpers import start_federation, stop_federation, wait_until
from tests.integration.federation.tak_client_peer import TakClientPeer
from tests.integration.federation.test_e2e_labels import (
    POLICY,
    _connect,
    _server_with_users,
    marker,
    seclabel,
)
from tests.integration.federation.test_takv2 import _geo
from tests.integration.helpers import sa_event
from tests.unit.federation.fed_support import peer_table


def _peer_pki(root: Path) -> ServerPki:
    return ensure_server_pki(root / "takpeer", public_host="127.0.0.1", ca_name="TAK Peer CA")


def _table(pki: ServerPki, **overrides: Any) -> dict[str, Any]:
    table = peer_table(
        name="ukr",
        dial=None,
        accept=True,
        ca_file=str(pki.ca_cert),
        fingerprint=fingerprint_sha256(load_server_cert(pki)),
        protocol="tak-v2",
        default_label={"classification": "UNCLASSIFIED", "REL": ["UKR", "USA"]},
    )
    table.update(overrides)
    return table


def _dial(tak: TakClientPeer, usa: Any, side: Any, pki: ServerPki) -> None:
    assert side.fed.bound is not None
    tak.start(
        f"127.0.0.1:{side.fed.bound.port}",
        chain=pki.server_cert.read_bytes() + pki.ca_cert.read_bytes(),
        key=pki.server_key.read_bytes(),
        ca=usa.server_pki.ca_cert.read_bytes(),
        host="localhost",
    )


async def test_a_tak_server_dials_liaison(tmp_path: Path) -> None:
    pki = _peer_pki(tmp_path)
    usa_cm = await _server_with_users(tmp_path, "usa")
    async with usa_cm as usa:  # type: ignore[attr-defined]
        assert usa.server_pki is not None and usa.router.gate is not None
        cu = await _connect(usa, "usa")
        us = cu["usa-s"]
        both = seclabel("SECRET", "USA", ["USA", "UKR"])
        # Before the link exists: only in the latest state.
        await us.send(sa_event("uid-usa-early", "PLI-EARLY", extra_detail=both))
        await us.send(marker("m-canary", "CANARY-USA-ONLY", seclabel("SECRET", "USA", ["USA"])))
        await us.collect(0.3)
        side = await start_federation(
            usa,
            "usa-srv",
            [_table(pki)],
            listen="127.0.0.1:0",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        tak = TakClientPeer()
        try:
            _dial(tak, usa, side, pki)
            status = side.fed.status.peers["ukr"]
            await wait_until(lambda: status.state is LinkState.UP, what="link up")

            def uids() -> set[str]:
                return {f.event.uid for f in tak.decoded()}

            await wait_until(lambda: "uid-usa-early" in uids(), what="the latest state")
            await us.send(marker("m-usa-live", "X-MARKER-USA", both))
            await wait_until(lambda: "m-usa-live" in uids(), what="a live event")
            await tak.send(fig_pb2.FederatedEvent(event=_geo("tak-pli", "a-f-G-U-C", "PLI-TAK")))
            await tak.send(
                fig_pb2.FederatedEvent(
                    event=_geo("tak-marker", "a-h-G", "MK-TAK", remarks="X-MARKER-TAK")
                )
            )
            await us.wait_for(b"PLI-TAK")
            await us.wait_for(b"X-MARKER-TAK")
            await wait_until(lambda: "ClientROLStream" in tak.calls, what="health SERVING")
            assert set(tak.health_answers) == {fig_pb2.ServerHealth.SERVING}
            await us.close()
        finally:
            await tak.stop()
            await stop_federation(side)
        decoded = tak.decoded()
        early = next(f.event for f in decoded if f.event.uid == "uid-usa-early")
        assert (early.access, early.releaseableTo) == ("SECRET", "REL TO USA, UKR")
        assert "<__seclabel " in early.other
        assert all(f.event.uid != "m-canary" for f in decoded)
        assert all("CANARY-USA-ONLY" not in f.event.other for f in decoded)
        assert b"CANARY-USA-ONLY" not in bytes(side.wire_out)
        assert b"X-MARKER-USA" in bytes(side.wire_out)


async def test_an_unknown_certificate_is_refused(tmp_path: Path) -> None:
    pki = _peer_pki(tmp_path)
    usa_cm = await _server_with_users(tmp_path, "usa")
    async with usa_cm as usa:  # type: ignore[attr-defined]
        assert usa.server_pki is not None and usa.router.gate is not None
        side = await start_federation(
            usa,
            "usa-srv",
            [_table(pki, fingerprint="0" * 64)],  # its CA is trusted, its leaf is not the one
            listen="127.0.0.1:0",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        tak = TakClientPeer()
        counter = usa.metrics.counter(
            "liaison_federation_unknown_peer_total",
            "Federation connections refused: the certificate is no accepted peer's",
        )
        try:
            _dial(tak, usa, side, pki)
            await wait_until(lambda: counter.get() >= 1, what="the refusal counted")
            await asyncio.sleep(0.5)
            assert tak.received == [] and tak.health_answers == []
            assert side.fed.status.peers["ukr"].state is not LinkState.UP
        finally:
            await tak.stop()
            await stop_federation(side)


async def test_a_silent_peer_is_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(takv2_server, "SILENT_TIMEOUT_S", 1.5)  # 15 s in production
    pki = _peer_pki(tmp_path)
    usa_cm = await _server_with_users(tmp_path, "usa")
    async with usa_cm as usa:  # type: ignore[attr-defined]
        assert usa.server_pki is not None and usa.router.gate is not None
        side = await start_federation(
            usa,
            "usa-srv",
            [_table(pki)],
            listen="127.0.0.1:0",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        tak = TakClientPeer(health_interval=0.3)
        try:
            _dial(tak, usa, side, pki)
            status = side.fed.status.peers["ukr"]
            await wait_until(lambda: status.state is LinkState.UP, what="link up")
            await wait_until(lambda: len(tak.health_answers) >= 3, what="health checks")
            tak.health = False
            started = time.monotonic()
            await wait_until(lambda: "health_timeout" in (status.last_error or ""), what="the drop")
            assert status.state is not LinkState.UP
            assert time.monotonic() - started >= 1.0
        finally:
            await tak.stop()
            await stop_federation(side)


async def test_refusals_reach_a_grpcio_client_as_grpc_statuses(tmp_path: Path) -> None:
    """The server role frames gRPC itself (federation/fig_h2.py): a stock grpcio client reads its
    answers, refusals included (Trailers-Only statuses with a percent-encoded message), on one
    connection: health before the subscription, a nameless subscription, methods TAK leaves
    unimplemented or of another service, a second ClientEventStream."""
    import grpc
    import grpc.aio

    pki = _peer_pki(tmp_path)
    usa_cm = await _server_with_users(tmp_path, "usa")
    async with usa_cm as usa:  # type: ignore[attr-defined]
        assert usa.server_pki is not None and usa.router.gate is not None
        side = await start_federation(
            usa,
            "usa-srv",
            [_table(pki)],
            listen="127.0.0.1:0",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        assert side.fed.bound is not None
        creds = grpc.ssl_channel_credentials(
            root_certificates=usa.server_pki.ca_cert.read_bytes(),
            private_key=pki.server_key.read_bytes(),
            certificate_chain=pki.server_cert.read_bytes() + pki.ca_cert.read_bytes(),
        )
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{side.fed.bound.port}",
            creds,
            options=[("grpc.ssl_target_name_override", "localhost")],
        )
        service = "/com.atakmap.FederatedChannel/"
        sub = fig_pb2.Subscription(
            identity=fig_pb2.Identity(name="tak", serverId="tak"),
            version=fig_pb2.TakServerVersion(major=5),
        ).SerializeToString()
        health = fig_pb2.ClientHealth(status=fig_pb2.ClientHealth.SERVING).SerializeToString()

        def unary(method: str) -> Any:
            return channel.unary_unary(service + method)

        held: Any = None
        try:
            async with asyncio.timeout(60):
                answer = await unary("HealthCheck")(health)
                status = fig_pb2.ServerHealth.FromString(answer).status
                assert status == fig_pb2.ServerHealth.NOT_CONNECTED
                nameless = channel.unary_stream(service + "ServerFederateGroupsStream")(b"")
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    async for _msg in nameless:
                        pass
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert refused.value.details() == "identity.name is required"
                for path in (service + "SendOneEvent", "/other.Service/HealthCheck"):
                    with pytest.raises(grpc.aio.AioRpcError) as unknown:
                        await channel.unary_unary(path)(b"")
                    assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
                held = channel.unary_stream(service + "ClientEventStream")(sub)
                status_ = side.fed.status.peers["ukr"]
                await wait_until(lambda: status_.state is LinkState.UP, what="link up")
                second = channel.unary_stream(service + "ClientEventStream")(sub)
                with pytest.raises(grpc.aio.AioRpcError) as twice:
                    async for _msg in second:
                        pass
                assert twice.value.code() == grpc.StatusCode.ALREADY_EXISTS
                answer = await unary("HealthCheck")(health)
                assert fig_pb2.ServerHealth.FromString(answer).status == (
                    fig_pb2.ServerHealth.SERVING
                )
        finally:
            if held is not None:
                held.cancel()
            await channel.close()
            await stop_federation(side)
