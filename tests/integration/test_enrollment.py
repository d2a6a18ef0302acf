"""Enrollment, connection packages and revocation, end to end, the way TAK clients do them."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from liaison.api.auth import FAILURES_BEFORE_THROTTLE
from liaison.app import Server
from liaison.cli import main
from liaison.identity import packages
from liaison.identity.certs import load_ca_cert
from liaison.identity.issue import issue_client_cert
from liaison.identity.p12 import TAK_DEFAULT_P12_PASSWORD
from liaison.identity.users import UserDirectory
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import WAIT_S, Client, clients, connect_tls, sa_event
from tests.unit.admin.admin_helpers import open_package

PASSWORD = "correct horse battery"
PUBLIC_HOST = "tak.example.org"
CORE_NS = "{http://bbn.com/marti/xml/config}"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reads LIAISON_* variables like the server does; none may leak in from outside.
    for key in list(os.environ):
        if key.startswith("LIAISON_"):
            monkeypatch.delenv(key)


def basic(username: str, secret: str) -> dict[str, str]:
    """HTTP Basic as TAK clients send it (RFC 7617): base64 of "user:secret", UTF-8."""
    token = base64.b64encode(f"{username}:{secret}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def users_of(server: Server) -> UserDirectory:
    return UserDirectory.load(server.config.resolved_users_file())


def enroll_url(server: Server, path: str) -> str:
    assert server.enroll is not None
    return f"https://127.0.0.1:{server.enroll.port}/Marti/api/tls/{path}"


async def https(server: Server, *, cert: tuple[Path, Path] | None = None) -> aiohttp.ClientSession:
    """A client session that trusts only the server's CA (what the package's truststore holds)."""
    assert server.server_pki is not None
    ctx = ssl.create_default_context(cafile=str(server.server_pki.ca_cert))
    if cert is not None:
        ctx.load_cert_chain(*cert)
    timeout = aiohttp.ClientTimeout(total=WAIT_S)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx), timeout=timeout)


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def csr_b64(key: rsa.RSAPrivateKey, entries: list[tuple[str, str]]) -> bytes:
    """A CSR as ATAK sends it: base64 DER without PEM lines (CertificateConfigOperation)."""
    oids = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME,
            "OU": NameOID.ORGANIZATIONAL_UNIT_NAME}  # fmt: skip
    name = x509.Name([x509.NameAttribute(oids[k], v) for k, v in entries])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return base64.b64encode(csr.public_bytes(serialization.Encoding.DER))


async def config_entries(
    session: aiohttp.ClientSession, server: Server, auth: dict[str, str]
) -> list[tuple[str, str]]:
    async with session.get(enroll_url(server, "config"), headers=auth) as resp:
        assert resp.status == 200, await resp.text()
        # TAK Server's type, which every TAKAware version accepts (TAKAware #132/#133)
        assert resp.content_type == "text/plain"
        root = ET.fromstring(await resp.read())
    assert root.tag == "{com.bbn.marti.config}certificateConfig"
    return [(e.attrib["name"], e.attrib["value"]) for e in root.iter(f"{CORE_NS}nameEntry")]


def write_identity(
    directory: Path, name: str, cert: x509.Certificate, key: rsa.RSAPrivateKey
) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def exchange(server: Server, a: Client, name: str) -> None:
    """``a`` and a certificate client in the same groups see each other's positions."""
    assert server.tls is not None
    directory = users_of(server)
    user = directory.get(name)
    assert user is not None
    directory.add_user(
        f"peer-of-{name}", user.org, in_groups=user.in_groups, out_groups=user.out_groups
    )
    other = issue_cert(server, f"peer-of-{name}")
    b = await connect_tls(server.tls.port, cert=other.cert, key=other.key, ca=other.ca, name="b")
    async with clients(b):
        await a.send(sa_event(f"uid-{name}", name.upper()))
        await b.wait_for(f'uid="uid-{name}"'.encode())
        await b.send(sa_event("uid-peer", "PEER"))
        await a.wait_for(b'uid="uid-peer"')


@pytest.fixture
async def running(start_server: ServerFactory) -> AsyncIterator[Server]:
    async with start_server(public_host=PUBLIC_HOST) as server:
        yield server


async def test_enrol_with_v2_then_stream(running: Server, tmp_path: Path) -> None:
    server = running
    users_of(server).add_user("alice", "Blue", groups=["Cyan"], password=PASSWORD)
    key = new_key()
    auth = basic("alice", PASSWORD)
    async with await https(server) as session:
        entries = await config_entries(session, server, auth)
        assert entries == [("O", "Blue")]
        body = csr_b64(key, [("CN", "alice"), *entries])
        url = enroll_url(server, "signClient/v2?clientUid=ANDROID-0123456789abcdef&version=4.10")
        async with session.post(url, data=body, headers=auth) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.content_type == "application/json"
            answer = json.loads(await resp.read())
    assert sorted(answer) == ["ca0", "signedCert"]
    assert "BEGIN" not in answer["signedCert"]  # PEM bodies without header lines, as TAK Server
    cert = x509.load_der_x509_certificate(base64.b64decode(answer["signedCert"]))
    ca0 = x509.load_der_x509_certificate(base64.b64decode(answer["ca0"]))
    assert server.server_pki is not None
    assert ca0 == load_ca_cert(server.server_pki)
    cert.verify_directly_issued_by(ca0)
    assert cert.subject.rfc4514_string() == "CN=alice,O=Blue"
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    user = users_of(server).get("alice")
    assert user is not None and user.cert_serials == (cert.serial_number,)
    assert server.metrics.snapshot().get('liaison_enrollments_total{api="v2"}') == 1

    cert_path, key_path = write_identity(tmp_path, "alice", cert, key)
    assert server.tls is not None
    a = await connect_tls(
        server.tls.port, cert=cert_path, key=key_path, ca=server.server_pki.ca_cert, name="alice"
    )
    async with clients(a):
        await exchange(server, a, "alice")


async def test_v2_answers_xml_when_asked_and_406_when_nothing_fits(running: Server) -> None:
    server = running
    users_of(server).add_user("alice", "Blue", password=PASSWORD)
    auth = basic("alice", PASSWORD)
    body = csr_b64(new_key(), [("CN", "alice"), ("O", "Blue")])
    async with await https(server) as session:
        headers = {"Accept": "application/xml"}
        url = enroll_url(server, "signClient/v2")
        async with session.post(url, data=body, headers={**auth, **headers}) as resp:
            assert resp.status == 200
            assert resp.content_type == "application/xml"
            root = ET.fromstring(await resp.read())
        async with session.get(enroll_url(server, "config"), headers={**auth, **headers}) as resp:
            assert resp.content_type == "application/xml"
        headers = {"Accept": "image/png"}
        async with session.post(url, data=body, headers={**auth, **headers}) as resp:
            assert resp.status == 406
    assert root.tag == "enrollment" and [c.tag for c in root] == ["signedCert", "ca"]
    signed = x509.load_der_x509_certificate(base64.b64decode(root.findtext("signedCert") or ""))
    assert signed.subject.rfc4514_string() == "CN=alice,O=Blue"
    user = users_of(server).get("alice")
    assert user is not None and user.cert_serials == (signed.serial_number,)  # 406 signed nothing


async def test_enrol_with_v1_pkcs12_then_stream(running: Server, tmp_path: Path) -> None:
    server = running
    users_of(server).add_user("bob", "Red", password=PASSWORD)
    key = new_key()
    auth = basic("bob", PASSWORD)
    async with await https(server) as session:
        entries = await config_entries(session, server, auth)
        url = enroll_url(server, "signClient?clientUid=ANDROID-fedcba9876543210&version=4.8")
        # ATAK-CIV posts the bare base64 CSR as a text entity (CertificateSigningOperation)
        body = csr_b64(key, [("CN", "bob"), *entries])
        async with session.post(url, data=body, headers=auth) as resp:
            assert resp.status == 200
            assert resp.content_type == "application/octet-stream"
            p12 = await resp.read()
    # ATAK opens it with its default truststore password and looks for the alias signedCert
    store = pkcs12.load_pkcs12(p12, TAK_DEFAULT_P12_PASSWORD.encode())
    assert store.key is None
    by_alias = {c.friendly_name: c.certificate for c in store.additional_certs}
    assert sorted(by_alias) == [b"ca0", b"signedCert"]
    assert server.server_pki is not None
    assert by_alias[b"ca0"] == load_ca_cert(server.server_pki)
    cert = by_alias[b"signedCert"]
    cert.verify_directly_issued_by(by_alias[b"ca0"])
    assert cert.subject.rfc4514_string() == "CN=bob,O=Red"

    cert_path, key_path = write_identity(tmp_path, "bob", cert, key)
    assert server.tls is not None
    b = await connect_tls(
        server.tls.port, cert=cert_path, key=key_path, ca=server.server_pki.ca_cert, name="bob"
    )
    async with clients(b):
        await exchange(server, b, "bob")


async def test_token_enrols_once_and_refused_requests_do_not_use_it(running: Server) -> None:
    server = running
    directory = users_of(server)
    directory.add_user("carol", "Green")
    code = await asyncio.to_thread(
        main, ["user", "token", "carol", "--data-dir", str(server.config.data_dir),
               "--public-host", PUBLIC_HOST],
    )  # fmt: skip
    assert code == 0
    carol = directory.get("carol")
    assert carol is not None and len(carol.tokens) == 1
    # the token from the QR code is not printed back by the directory: issue a known one too
    token = directory.issue_token("carol", 600, _utcnow())
    auth = basic("carol", token)
    key = new_key()
    url = enroll_url(server, "signClient/v2?clientUid=ios-1")
    async with await https(server) as session:
        entries = await config_entries(session, server, auth)  # showing it uses nothing
        # a CSR for someone else: refused (TAK Server refuses it too, with a 500), token kept
        async with session.post(
            url, data=csr_b64(key, [("CN", "alice"), *entries]), headers=auth
        ) as r:
            assert r.status == 403
        two_cns = csr_b64(key, [("CN", "carol"), ("CN", "alice")])
        async with session.post(url, data=two_cns, headers=auth) as r:
            assert r.status == 403
        async with session.post(url, data=b"not a csr", headers=auth) as r:
            assert r.status == 400
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        async with session.post(url, data=csr_b64(weak, [("CN", "carol")]), headers=auth) as r:
            assert r.status == 400
        good = csr_b64(key, [("CN", "carol"), *entries])
        async with session.post(url, data=good, headers=auth) as r:
            assert r.status == 200
        # used up: it never signs again...
        async with session.post(url, data=good, headers=auth) as r:
            assert r.status == 401
            assert "already used" in await r.text()
        # ...though the client's follow-up calls with it still pass for a short while
        async with session.get(enroll_url(server, "profile/enrollment"), headers=auth) as r:
            assert r.status == 204
    carol = users_of(server).get("carol")
    assert carol is not None and len(carol.cert_serials) == 1
    assert server.metrics.snapshot().get('liaison_enrollments_total{api="v2"}') == 1


async def test_wrong_credentials_get_401_then_429(running: Server) -> None:
    server = running
    users_of(server).add_user("dave", "Blue", password=PASSWORD)
    async with await https(server) as session:
        async with session.get(enroll_url(server, "config")) as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
        statuses = []
        for _ in range(FAILURES_BEFORE_THROTTLE + 1):  # bounded: six attempts
            wrong = basic("dave", "not the password")
            async with session.get(enroll_url(server, "config"), headers=wrong) as r:
                statuses.append(r.status)
                retry_after = r.headers.get("Retry-After")
        assert statuses == [401] * FAILURES_BEFORE_THROTTLE + [429]
        assert retry_after is not None and int(retry_after) >= 1
        # while throttled even the right password waits
        right = basic("dave", PASSWORD)
        async with session.get(enroll_url(server, "config"), headers=right) as r:
            assert r.status == 429


async def test_package_from_the_cli_connects_and_revocation_closes_it(
    running: Server, tmp_path: Path
) -> None:
    server = running
    data_dir = str(server.config.data_dir)
    where = ["--data-dir", data_dir, "--public-host", PUBLIC_HOST]
    code = await asyncio.to_thread(main, ["user", "add", "erin", "--org", "Blue", *where])
    assert code == 0
    package = server.config.data_dir / "packages" / "erin" / "erin-atak.zip"
    opened = open_package(package.read_bytes(), f"certs/{PUBLIC_HOST}.pref")
    assert opened.prefs["cot_streams"]["connectString0"] == f"{PUBLIC_HOST}:8089:ssl"
    assert opened.manifest.parameters["onReceiveDelete"] == "true"
    assert server.server_pki is not None
    assert opened.roots == [load_ca_cert(server.server_pki)]
    assert opened.client.cert is not None and isinstance(opened.client.key, rsa.RSAPrivateKey)
    cert = opened.client.cert.certificate
    cert_path, key_path = write_identity(tmp_path, "erin", cert, opened.client.key)
    ca_path = tmp_path / "truststore.pem"
    ca_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in opened.roots))

    assert server.tls is not None
    erin = await connect_tls(server.tls.port, cert=cert_path, key=key_path, ca=ca_path, name="e")
    async with clients(erin):
        await exchange(server, erin, "erin")
        code = await asyncio.to_thread(main, ["user", "revoke", "erin", *where])
        assert code == 0
        revoked_at = time.monotonic()
        assert await erin.closed_by_server(within=5.0)
        closed_after = time.monotonic() - revoked_at
    assert closed_after < 5.0
    # a new connection with the revoked certificate is refused right after the handshake
    try:
        again = await connect_tls(server.tls.port, cert=cert_path, key=key_path, ca=ca_path)
    except (ssl.SSLError, ConnectionError, OSError):
        pass
    else:
        async with clients(again):
            assert await again.closed_by_server(within=5.0)
    # the CRL is published, without authentication, and lists the certificate
    assert server.enroll is not None
    async with await https(server) as session:
        base = f"https://127.0.0.1:{server.enroll.port}"
        async with session.get(f"{base}/crl.der") as r:
            assert r.status == 200 and r.content_type == "application/pkix-crl"
            crl = x509.load_der_x509_crl(await r.read())
        async with session.get(f"{base}/crl.pem") as r:
            assert r.status == 200
            assert x509.load_pem_x509_crl(await r.read()) == crl
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    assert crl.is_signature_valid(opened.roots[0].public_key())  # type: ignore[arg-type]


async def test_device_profiles_or_204(running: Server, tmp_path: Path) -> None:
    server = running
    directory = users_of(server)
    directory.add_user("frank", "Blue", password=PASSWORD, profile="field")
    directory.add_user("gina", "Blue", password=PASSWORD)
    profiles = server.config.data_dir / "profiles" / "field"
    (profiles / "enrollment").mkdir(parents=True)
    (profiles / "enrollment" / "field.pref").write_bytes(b"<preferences/>")
    async with await https(server) as session:
        url = enroll_url(server, "profile/enrollment?clientUid=ANDROID-1")
        async with session.get(url, headers=basic("gina", PASSWORD)) as r:
            assert r.status == 204
        async with session.get(url, headers=basic("frank", PASSWORD)) as r:
            assert r.status == 200 and r.content_type == "application/zip"
            package = await r.read()
    entries = _zip_entries(package)
    assert entries["field.pref"] == b"<preferences/>"
    manifest = packages.parse_manifest(entries["MANIFEST/manifest.xml"])
    assert manifest.parameters["onReceiveImport"] == "true"

    # the connection profile on 8443, with the client certificate
    assert server.server_pki is not None and server.https is not None
    issued = issue_client_cert(server.server_pki, common_name="frank", org="Blue")
    assert issued.key_pem is not None
    (tmp_path / "f.pem").write_bytes(issued.cert_pem)
    (tmp_path / "f.key").write_bytes(issued.key_pem)
    url = f"https://127.0.0.1:{server.https.port}/Marti/api/device/profile/connection"
    async with await https(server, cert=(tmp_path / "f.pem", tmp_path / "f.key")) as session:
        async with session.get(f"{url}?syncSecago=-1&clientUid=ANDROID-1") as r:
            assert r.status == 204
        (profiles / "connection").mkdir()
        (profiles / "connection" / "maps.pref").write_bytes(b"<preferences/>")
        async with session.get(f"{url}?syncSecago=-1&clientUid=ANDROID-1") as r:
            assert r.status == 200
            assert "maps.pref" in _zip_entries(await r.read())
        past = time.time() - 7200
        os.utime(profiles / "connection" / "maps.pref", (past, past))
        async with session.get(f"{url}?syncSecago=3600&clientUid=ANDROID-1") as r:
            assert r.status == 204  # nothing changed since the last sync an hour ago
        async with session.get(f"{url}?syncSecago=soon") as r:
            assert r.status == 400


def _zip_entries(data: bytes) -> dict[str, bytes]:
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
