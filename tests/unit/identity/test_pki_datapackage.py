"""Connection data packages opened the way a client opens them; enrollment links and QR codes."""

from __future__ import annotations

import io
import struct
import urllib.parse
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12
from hypothesis import given, settings
from hypothesis import strategies as st

from liaison.identity import packages
from liaison.identity.certs import ServerPki, load_ca_cert
from liaison.identity.issue import IssuedCert, issue_client_cert
from liaison.identity.p12 import client_p12, truststore_p12

from .pki_helpers import PUBLIC_HOST, client_verifier

SAMPLES = Path(__file__).resolve().parents[3] / ".." / "shared" / "reference" / "samples"
SAMPLES_DP = SAMPLES / "datapackage"
needs_samples = pytest.mark.skipif(
    not SAMPLES_DP.is_dir(), reason=f"reference samples not present at {SAMPLES_DP}"
)

TRUST_PW = "trust-pw-1"
CLIENT_PW = "client-pw-1"


@pytest.fixture(scope="module")
def material(module_pki: ServerPki) -> tuple[bytes, bytes, IssuedCert]:
    issued = issue_client_cert(module_pki, common_name="alice", org="Blue")
    assert issued.private_key is not None
    trust = truststore_p12(module_pki, TRUST_PW)
    client = client_p12(issued.certificate, issued.private_key, issued.chain, CLIENT_PW)
    return trust, client, issued


def _atak(material: tuple[bytes, bytes, IssuedCert], **overrides: object) -> bytes:
    trust, client, _ = material
    args: dict[str, object] = {
        "server_name": "Liaison Blue",
        "host": PUBLIC_HOST,
        "truststore": trust,
        "truststore_password": TRUST_PW,
        "client_p12": client,
        "client_password": CLIENT_PW,
        "username": "alice",
        "enroll": False,
        "package_uid": "3a1b0c2d-0000-4000-8000-000000000001",
    }
    args.update(overrides)
    return packages.connection_package_atak(**args)  # type: ignore[arg-type]


def _open_like_a_client(data: bytes) -> tuple[zipfile.ZipFile, packages.Manifest]:
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert zf.testzip() is None
    manifest = packages.parse_manifest(zf.read("MANIFEST/manifest.xml"))
    names = set(zf.namelist())
    for entry in manifest.entries:
        assert entry in names, f"manifest lists {entry} but the zip lacks it"
    files = {n for n in names if not n.endswith("/") and n != "MANIFEST/manifest.xml"}
    assert files == set(manifest.entries), "a file in the zip is not in the manifest"
    return zf, manifest


def _resolve_ref(ref: str, zip_names: set[str]) -> str:
    """Where ATAK finds a keystore named in a .pref: it moves imported .p12 files into its
    ``cert/`` directory, so ``cert/x.p12`` must be a ``.p12`` called x.p12 in the package."""
    assert ref.startswith("cert/"), f"ATAK refs must use cert/, got {ref}"
    base = PurePosixPath(ref).name
    matches = [n for n in zip_names if PurePosixPath(n).name == base]
    assert len(matches) == 1, f"{ref} matches {matches}"
    return matches[0]


def test_atak_package_with_issued_certificate(
    module_pki: ServerPki, material: tuple[bytes, bytes, IssuedCert]
) -> None:
    zf, manifest = _open_like_a_client(_atak(material))
    assert manifest.parameters == {
        "uid": "3a1b0c2d-0000-4000-8000-000000000001",
        "name": "Liaison Blue",
        "onReceiveDelete": "true",
    }
    names = set(zf.namelist())
    assert names == {
        "MANIFEST/",
        "MANIFEST/manifest.xml",
        "certs/Liaison_Blue.pref",
        "certs/truststore-Liaison_Blue.p12",
        "certs/alice-Liaison_Blue.p12",
    }
    prefs = packages.parse_pref(zf.read("certs/Liaison_Blue.pref"))
    streams = prefs["cot_streams"]
    assert streams["count"] == "1"
    assert streams["enabled0"] == "true"
    assert streams["description0"] == "Liaison Blue"
    assert streams["connectString0"] == f"{PUBLIC_HOST}:8089:ssl"
    assert "enrollForCertificateWithTrust0" not in streams
    app = prefs["com.atakmap.app_preferences"]
    assert app["displayServerConnectionWidget"] == "true"
    for ca_key, ca_pw, cert_key, cert_pw in (
        (
            streams["caLocation0"],
            streams["caPassword0"],
            streams["certificateLocation0"],
            streams["clientPassword0"],
        ),
        (app["caLocation"], app["caPassword"], app["certificateLocation"], app["clientPassword"]),
    ):
        trust_file = _resolve_ref(ca_key, names)
        client_file = _resolve_ref(cert_key, names)
        assert trust_file == "certs/truststore-Liaison_Blue.p12"
        trust = pkcs12.load_pkcs12(zf.read(trust_file), ca_pw.encode())
        client = pkcs12.load_pkcs12(zf.read(client_file), cert_pw.encode())
        assert client.cert is not None and client.key is not None
        # the client certificate chains to the CA the package tells the device to trust
        roots = [c.certificate for c in trust.additional_certs]
        client_verifier(roots, client.cert.certificate.not_valid_before_utc).verify(
            client.cert.certificate, []
        )
        assert roots == [load_ca_cert(module_pki)]


def test_atak_package_for_enrollment(material: tuple[bytes, bytes, IssuedCert]) -> None:
    data = _atak(material, client_p12=None, client_password=None, enroll=True)
    zf, _ = _open_like_a_client(data)
    assert set(zf.namelist()) == {
        "MANIFEST/",
        "MANIFEST/manifest.xml",
        "certs/Liaison_Blue.pref",
        "certs/truststore-Liaison_Blue.p12",
    }
    prefs = packages.parse_pref(zf.read("certs/Liaison_Blue.pref"))
    streams = prefs["cot_streams"]
    assert streams["useAuth0"] == "true"
    assert streams["enrollForCertificateWithTrust0"] == "true"
    assert streams["username0"] == "alice"
    assert streams["cacheCreds0"] == "Cache credentials"
    assert "certificateLocation0" not in streams
    assert "certificateLocation" not in prefs["com.atakmap.app_preferences"]
    trust_file = _resolve_ref(streams["caLocation0"], set(zf.namelist()))
    pkcs12.load_pkcs12(zf.read(trust_file), streams["caPassword0"].encode())


def test_pref_entries_are_typed_as_atak_expects(
    material: tuple[bytes, bytes, IssuedCert],
) -> None:
    zf = zipfile.ZipFile(io.BytesIO(_atak(material)))
    text = zf.read("certs/Liaison_Blue.pref").decode()
    assert '<entry key="count" class="class java.lang.Integer">1</entry>' in text
    assert '<entry key="enabled0" class="class java.lang.Boolean">true</entry>' in text
    assert (
        f'<entry key="connectString0" class="class java.lang.String">{PUBLIC_HOST}:8089:ssl</entry>'
        in text
    )


def test_packages_are_deterministic(material: tuple[bytes, bytes, IssuedCert]) -> None:
    a, b = _atak(material), _atak(material)
    assert a == b
    zf = zipfile.ZipFile(io.BytesIO(a))
    assert zf.namelist() == sorted(zf.namelist())
    assert zf.namelist()[0] == "MANIFEST/"
    for info in zf.infolist():
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
    assert _atak(material, package_uid="other") != a


def test_itak_package_is_flat(
    module_pki: ServerPki, material: tuple[bytes, bytes, IssuedCert]
) -> None:
    trust, client, issued = material
    data = packages.connection_package_itak(
        server_name="Liaison Blue",
        host=PUBLIC_HOST,
        port=8089,
        truststore=trust,
        truststore_password=TRUST_PW,
        client_p12=client,
        client_password=CLIENT_PW,
        package_uid="uid-itak",
    )
    zf, manifest = _open_like_a_client(data)
    assert set(manifest.entries) == {"config.pref", "caCert.p12", "clientCert.p12"}
    prefs = packages.parse_pref(zf.read("config.pref"))
    streams = prefs["cot_streams"]
    assert streams["connectString0"] == f"{PUBLIC_HOST}:8089:ssl"
    assert streams["caLocation0"] == "caCert.p12"
    assert streams["certificateLocation0"] == "clientCert.p12"
    loaded = pkcs12.load_pkcs12(zf.read("clientCert.p12"), streams["clientPassword0"].encode())
    assert loaded.cert is not None and loaded.cert.certificate == issued.certificate
    trust_loaded = pkcs12.load_pkcs12(zf.read("caCert.p12"), streams["caPassword0"].encode())
    assert trust_loaded.additional_certs[0].certificate == load_ca_cert(module_pki)


@pytest.mark.parametrize(
    "overrides",
    [
        {"enroll": True},  # enrollment packages carry no client keystore
        {"client_p12": None},  # a pre-issued package needs one
        {"client_password": ""},
        {"truststore_password": ""},
        {"host": f"{PUBLIC_HOST}:8089"},
        {"host": "2001:db8::1"},
        {"port": 0},
        {"port": 70000},
    ],
)
def test_inconsistent_arguments_are_refused(
    material: tuple[bytes, bytes, IssuedCert], overrides: dict[str, object]
) -> None:
    with pytest.raises(ValueError):
        _atak(material, **overrides)


def test_file_names_are_sanitised(material: tuple[bytes, bytes, IssuedCert]) -> None:
    data = _atak(material, server_name="../../etc/Blue Team:1", username="a/b")
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert all(".." not in n and "\\" not in n and ":" not in n for n in names)
    assert all(n.startswith(("MANIFEST/", "certs/")) for n in names)
    (pref_name,) = [n for n in names if n.endswith(".pref")]
    prefs = packages.parse_pref(zipfile.ZipFile(io.BytesIO(data)).read(pref_name))
    assert prefs["cot_streams"]["description0"] == "../../etc/Blue Team:1"  # display name kept


# --- .pref and manifest parsing ---------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    entries=st.dictionaries(
        st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,20}", fullmatch=True),
        st.one_of(
            st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40),
            st.booleans(),
            st.integers(min_value=0, max_value=10**6),
        ),
        max_size=8,
    )
)
def test_pref_round_trip(entries: dict[str, str | bool | int]) -> None:
    data = packages.build_pref([("cot_streams", list(entries.items()))])
    parsed = packages.parse_pref(data)
    expected = {
        k: ("true" if v else "false") if isinstance(v, bool) else str(v) for k, v in entries.items()
    }
    assert parsed == {"cot_streams": expected}


@pytest.mark.parametrize(
    "hostile",
    [
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
        b'<preferences><preference name="x"><entry key="k">&lol2;</entry></preference>'
        b"</preferences>",
        b'<!DOCTYPE p SYSTEM "file:///etc/passwd"><preferences/>',
        b"<preferences><preference name='x'><entry key='k'>",  # not well-formed
        b"<other/>",
        b"<preferences><preference><entry key='k'>v</entry></preference></preferences>",
        b"x" * (packages.MAX_PREF_BYTES + 1),
    ],
)
def test_hostile_or_broken_pref_is_refused(hostile: bytes) -> None:
    with pytest.raises(ValueError):
        packages.parse_pref(hostile)


@needs_samples
@pytest.mark.parametrize("name", ["pytak-test_pref.pref", "swifttak-tak-server.pref"])
def test_parse_real_pref_files(name: str) -> None:
    prefs = packages.parse_pref((SAMPLES_DP / name).read_bytes())
    streams = prefs["cot_streams"]
    assert streams["count"] == "1"
    assert streams["connectString0"].endswith(":8089:ssl")
    assert prefs["com.atakmap.app_preferences"]["caPassword"] == "atakatak"


@needs_samples
def test_parse_real_manifests() -> None:
    pytak_manifest = packages.parse_manifest((SAMPLES_DP / "pytak-manifest.xml").read_bytes())
    assert pytak_manifest.parameters["uid"] == "123"
    assert pytak_manifest.entries == (
        "test_user_cert.p12",
        "test_truststore-root.p12",
        "test_pref.pref",
    )
    atak = packages.parse_manifest((SAMPLES_DP / "atak-cot-types-manifest.xml").read_bytes())
    assert atak.parameters["name"] == "CoT Types"
    assert len(atak.entries) == 14
    with zipfile.ZipFile(SAMPLES_DP / "GrandJunctionAOI.zip") as zf:
        real = packages.parse_manifest(zf.read("MANIFEST/manifest.xml"))
        assert set(real.entries) <= set(zf.namelist())


# --- enrollment links and QR codes ----------------------------------------------------------


def test_enrollment_url_encodes_every_value() -> None:
    token = "a+b/c=d&e f#g%"
    url = packages.enrollment_url(PUBLIC_HOST, "alice@blue", token, port=8446)
    assert url.startswith("tak://com.atakmap.app/enroll?host=")
    parsed = urllib.parse.urlsplit(url)
    assert (parsed.scheme, parsed.netloc, parsed.path) == ("tak", "com.atakmap.app", "/enroll")
    assert parsed.fragment == ""  # '#' was encoded
    query = urllib.parse.parse_qs(parsed.query, strict_parsing=True)
    assert query == {
        "host": [f"{PUBLIC_HOST}:8446"],
        "username": ["alice@blue"],
        "token": [token],
    }
    assert " " not in url and "+" not in url.split("?", 1)[1]


def test_enrollment_url_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        packages.enrollment_url("", "alice", "t")
    with pytest.raises(ValueError):
        packages.enrollment_url("2001:db8::1", "alice", "t")


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: list[tuple[bytes, bytes]] = []
    pos = 8
    while pos < len(data) and len(chunks) < 1000:
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    return chunks


def test_qr_png_is_a_sane_png() -> None:
    url = packages.enrollment_url(PUBLIC_HOST, "alice", "x" * 43)
    png = packages.qr_png(url)
    chunks = _png_chunks(png)
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, color, _, _, _ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert width == height  # a QR code is square
    modules = width // packages.QR_PNG_SCALE - 2 * packages.QR_BORDER
    assert width % packages.QR_PNG_SCALE == 0
    assert 21 <= modules <= 177 and (modules - 17) % 4 == 0  # QR versions 1..40
    assert depth in (1, 8) and color in (0, 3)  # grey or palette
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(raw) > 0


def test_qr_terminal_is_a_block_of_lines() -> None:
    text = packages.qr_terminal("tak://com.atakmap.app/enroll?host=a&username=b&token=c")
    lines = [line for line in text.splitlines() if line]
    assert len(lines) >= 10
    assert len({len(line) for line in lines}) == 1  # every line the same width
    assert any(ch in text for ch in "█▀▄")


def test_qr_refuses_text_that_cannot_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        packages.qr_png("x" * 5000)
