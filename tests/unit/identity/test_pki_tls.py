"""Real TLS handshakes on 127.0.0.1:0 with server_ssl_context and client_ssl_context."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from liaison.errors import PkiError
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import ServerPki, fingerprint_sha256, load_ca_cert, load_chain
from liaison.identity.issue import issue_client_cert
from liaison.identity.tls import client_ssl_context, peer_identity, server_ssl_context

from .pki_helpers import make_test_ca, pem

TIMEOUT_S = 5.0


@dataclass
class ServerResult:
    peer_der: bytes | None = None
    error: BaseException | None = None
    version: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


def _serve_once(listener: socket.socket, ctx: ssl.SSLContext, result: ServerResult) -> None:
    """Accept one connection, handshake, send b"ok" and close. Bounded by TIMEOUT_S."""
    try:
        conn, _ = listener.accept()
        conn.settimeout(TIMEOUT_S)
        with ctx.wrap_socket(conn, server_side=True) as tls:
            result.peer_der = tls.getpeercert(binary_form=True)
            result.version = tls.version()
            tls.sendall(b"ok")
    except (OSError, ssl.SSLError) as exc:
        result.error = exc
    finally:
        result.done.set()


def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str = "127.0.0.1"
) -> tuple[ServerResult, bytes | BaseException]:
    """One connection; returns what the server saw and what the client read (or its error)."""
    result = ServerResult()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(TIMEOUT_S)
        thread = threading.Thread(target=_serve_once, args=(listener, server_ctx, result))
        thread.start()
        client_outcome: bytes | BaseException
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=TIMEOUT_S) as raw,
                client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                client_outcome = tls.recv(16)
        except (OSError, ssl.SSLError) as exc:
            client_outcome = exc
        thread.join(TIMEOUT_S)
        assert not thread.is_alive(), "server thread did not finish"
    assert result.done.is_set()
    return result, client_outcome


@pytest.fixture(scope="module")
def alice(module_pki: ServerPki, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    issued = issue_client_cert(module_pki, common_name="alice", org="Blue")
    d = tmp_path_factory.mktemp("alice")
    assert issued.key_pem is not None
    (d / "alice.pem").write_bytes(issued.cert_pem)
    (d / "alice.key").write_bytes(issued.key_pem)
    return d / "alice.pem", d / "alice.key"


def test_mutual_tls_handshake_succeeds(module_pki: ServerPki, alice: tuple[Path, Path]) -> None:
    server_ctx = server_ssl_context(module_pki)
    client_ctx = client_ssl_context(module_pki.ca_cert, *alice)
    result, outcome = _handshake(server_ctx, client_ctx)
    assert result.error is None
    assert outcome == b"ok"
    assert result.version in ("TLSv1.2", "TLSv1.3")
    assert result.peer_der is not None
    peer = peer_identity(result.peer_der, issuers=load_chain(module_pki))
    assert peer.common_name == "alice"
    assert peer.org == "Blue"
    assert peer.issuer_fingerprint_sha256 == fingerprint_sha256(load_ca_cert(module_pki))


def test_client_verifies_the_server_by_public_host(
    module_pki: ServerPki, alice: tuple[Path, Path]
) -> None:
    # 127.0.0.1 is the socket, but the name checked is the configured public host (a SAN)
    server_ctx = server_ssl_context(module_pki)
    client_ctx = client_ssl_context(module_pki.ca_cert, *alice)
    result, outcome = _handshake(server_ctx, client_ctx, server_hostname="tak.example.org")
    assert result.error is None and outcome == b"ok"
    result, outcome = _handshake(
        server_ssl_context(module_pki), client_ctx, server_hostname="wrong.example.org"
    )
    assert isinstance(outcome, ssl.SSLCertVerificationError)


def test_handshake_without_client_cert_fails(module_pki: ServerPki) -> None:
    server_ctx = server_ssl_context(module_pki)
    client_ctx = client_ssl_context(module_pki.ca_cert)
    result, outcome = _handshake(server_ctx, client_ctx)
    assert isinstance(result.error, ssl.SSLError)
    assert result.peer_der is None
    assert outcome != b"ok"


def test_handshake_with_cert_from_another_ca_fails(module_pki: ServerPki, tmp_path: Path) -> None:
    other = ensure_server_pki(tmp_path, public_host="rogue.example.org")
    mallory = issue_client_cert(other, common_name="alice", org="Blue")
    assert mallory.key_pem is not None
    (tmp_path / "m.pem").write_bytes(mallory.cert_pem)
    (tmp_path / "m.key").write_bytes(mallory.key_pem)
    server_ctx = server_ssl_context(module_pki)
    client_ctx = client_ssl_context(module_pki.ca_cert, tmp_path / "m.pem", tmp_path / "m.key")
    result, outcome = _handshake(server_ctx, client_ctx)
    assert isinstance(result.error, ssl.SSLError)
    assert "certificate" in str(result.error).lower()
    assert outcome != b"ok"


def test_client_refuses_a_server_from_another_ca(
    module_pki: ServerPki, alice: tuple[Path, Path], tmp_path: Path
) -> None:
    other_ca, _ = make_test_ca("Other CA")
    (tmp_path / "other.pem").write_bytes(pem(other_ca))
    client_ctx = client_ssl_context(tmp_path / "other.pem", *alice)
    result, outcome = _handshake(server_ssl_context(module_pki), client_ctx)
    assert isinstance(outcome, ssl.SSLCertVerificationError)
    assert result.peer_der is None


def test_enrollment_port_context_needs_no_client_cert(module_pki: ServerPki) -> None:
    server_ctx = server_ssl_context(module_pki, require_client_cert=False)
    assert server_ctx.verify_mode == ssl.CERT_NONE
    result, outcome = _handshake(server_ctx, client_ssl_context(module_pki.ca_cert))
    assert result.error is None and outcome == b"ok"


def test_contexts_refuse_tls_below_1_2(module_pki: ServerPki, alice: tuple[Path, Path]) -> None:
    assert server_ssl_context(module_pki).minimum_version == ssl.TLSVersion.TLSv1_2
    assert server_ssl_context(module_pki).verify_mode == ssl.CERT_REQUIRED
    client_ctx = client_ssl_context(module_pki.ca_cert, *alice)
    assert client_ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_missing_material_is_a_pki_error(tmp_path: Path) -> None:
    with pytest.raises(PkiError):
        server_ssl_context(ServerPki.at(tmp_path))
    with pytest.raises(PkiError):
        client_ssl_context(tmp_path / "absent.pem")


def _server_key_type(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> str:
    """Handshake in memory; the key type of the certificate the server presented."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="tak.example.org")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):  # a handshake takes at most a few flights
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    der = client.getpeercert(binary_form=True)
    assert der is not None, "handshake did not complete"
    key = x509.load_der_x509_certificate(der).public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ecdsa-{key.curve.name}"
    assert isinstance(key, rsa.RSAPublicKey)
    return f"rsa-{key.key_size}"


def test_server_presents_ecdsa_to_clients_that_accept_it_and_rsa_to_the_others(
    module_pki: ServerPki, alice: tuple[Path, Path]
) -> None:
    server_ctx = server_ssl_context(module_pki)
    # A current client (TLS 1.3, or 1.2 with ECDHE-ECDSA suites) gets the cheap ECDSA one.
    assert _server_key_type(server_ctx, client_ssl_context(module_pki.ca_cert, *alice)) == (
        "ecdsa-secp256r1"
    )
    tls12 = client_ssl_context(module_pki.ca_cert, *alice)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _server_key_type(server_ctx, tls12) == "ecdsa-secp256r1"
    # A client that offers only RSA suites (an older TAK client's TLS 1.2) gets the RSA one.
    rsa_only = client_ssl_context(module_pki.ca_cert, *alice)
    rsa_only.maximum_version = ssl.TLSVersion.TLSv1_2
    rsa_only.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256:AES128-GCM-SHA256")
    assert _server_key_type(server_ctx, rsa_only) == "rsa-2048"
