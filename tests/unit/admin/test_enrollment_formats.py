"""What the enrollment endpoints put on the wire, checked the way clients read it."""

from __future__ import annotations

import base64
import json
import os
import time
import xml.etree.ElementTree as ET
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from cryptography import x509

from liaison.api import enrollment
from liaison.identity import packages
from liaison.identity.ca import ensure_server_pki
from liaison.identity.certs import load_chain
from liaison.identity.issue import issue_client_cert
from liaison.identity.users import User

CORE_NS = "{http://bbn.com/marti/xml/config}"


@pytest.fixture(scope="module")
def issued(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    server_pki = ensure_server_pki(tmp_path_factory.mktemp("d"), public_host="tak.example.org")
    cert = issue_client_cert(server_pki, common_name="alice", org="Blue").certificate
    return cert, load_chain(server_pki)


def test_certificate_config_is_tak_servers_shape() -> None:
    user = User(name="alice", org="Blue & <Co>")
    body = enrollment.certificate_config_xml(enrollment.name_entries(user))
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>')
    root = ET.fromstring(body)
    # Root in com.bbn.marti.config, children in the CoreConfig namespace (what ATAK binds).
    assert root.tag == "{com.bbn.marti.config}certificateConfig"
    assert not root.attrib  # ATAK's strict Simple XML reader refuses unknown attributes
    entries = root.findall(f"{CORE_NS}nameEntries/{CORE_NS}nameEntry")
    assert [(e.get("name"), e.get("value")) for e in entries] == [("O", "Blue & <Co>")]
    assert [c.tag for c in root] == [f"{CORE_NS}nameEntries"]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "text/plain"),
        ("*/*", "text/plain"),
        ("text/plain", "text/plain"),
        ("application/xml", "application/xml"),
        ("text/xml", "text/xml"),
    ],
)
def test_config_content_type_defaults_to_text_plain(accept: str | None, expected: str) -> None:
    assert enrollment.config_content_type(accept) == expected


def test_pem_body_has_no_header_and_64_char_lines(
    issued: tuple[x509.Certificate, list[x509.Certificate]],
) -> None:
    cert, _ = issued
    body = enrollment.pem_body(cert)
    assert "-----" not in body and not body.endswith("\n")
    lines = body.split("\n")
    assert all(len(line) == 64 for line in lines[:-1]) and 0 < len(lines[-1]) <= 64
    # TAKAware wraps the body in its own header lines (CSRRequestor.swift wrapCertificate).
    wrapped = f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"
    assert x509.load_pem_x509_certificate(wrapped.encode()) == cert
    assert x509.load_der_x509_certificate(base64.b64decode(body)) == cert


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("application/xml, */*", "application/json"),  # TAK Server checks JSON first
        ("application/xml", "application/xml"),
        ("text/xml", "text/xml"),
        ("text/plain", "text/plain"),
        ("image/png", None),
    ],
)
def test_v2_content_type_follows_tak_server(accept: str | None, expected: str | None) -> None:
    assert enrollment.v2_content_type(accept) == expected


def test_v2_json_body(issued: tuple[x509.Certificate, list[x509.Certificate]]) -> None:
    cert, chain = issued
    doc = json.loads(enrollment.v2_body(cert, chain, "application/json"))
    assert list(doc) == ["signedCert", "ca0"]
    signed = x509.load_der_x509_certificate(base64.b64decode(doc["signedCert"]))
    ca0 = x509.load_der_x509_certificate(base64.b64decode(doc["ca0"]))
    assert signed == cert and ca0 == chain[0]
    signed.verify_directly_issued_by(ca0)


def test_v2_xml_body(issued: tuple[x509.Certificate, list[x509.Certificate]]) -> None:
    cert, chain = issued
    body = enrollment.v2_body(cert, chain, "application/xml")
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?><enrollment>')
    root = ET.fromstring(body)
    assert root.tag == "enrollment"
    assert [c.tag for c in root] == ["signedCert", "ca"]
    signed_text = root.findtext("signedCert")
    ca_text = root.findtext("ca")
    assert signed_text is not None and ca_text is not None
    assert x509.load_der_x509_certificate(base64.b64decode(signed_text)) == cert
    assert x509.load_der_x509_certificate(base64.b64decode(ca_text)) == chain[0]


def test_profile_dir_stays_inside_the_profiles_folder(tmp_path: Path) -> None:
    d = enrollment.profile_dir(tmp_path, "../../etc", "enrollment")
    assert d.resolve().is_relative_to((tmp_path / "profiles").resolve())
    assert enrollment.profile_dir(tmp_path, "field", "connection") == (
        tmp_path / "profiles" / "field" / "connection"
    )


def test_profile_files_skips_hidden_and_folders_and_filters_by_time(tmp_path: Path) -> None:
    assert enrollment.profile_files(tmp_path / "missing") == {}
    (tmp_path / "a.pref").write_bytes(b"<preferences/>")
    (tmp_path / ".hidden").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    old = tmp_path / "old.txt"
    old.write_bytes(b"old")
    past = time.time() - 3600
    os.utime(old, (past, past))
    assert sorted(enrollment.profile_files(tmp_path)) == ["a.pref", "old.txt"]
    recent = enrollment.profile_files(tmp_path, modified_after=time.time() - 60)
    assert recent == {"a.pref": b"<preferences/>"}


def test_profile_files_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enrollment, "MAX_PROFILE_FILES", 2)
    for i in range(3):
        (tmp_path / f"{i}.txt").write_bytes(b"x")
    with pytest.raises(ValueError, match="more than 2 files"):
        enrollment.profile_files(tmp_path)
    monkeypatch.setattr(enrollment, "MAX_PROFILE_FILES", 10)
    monkeypatch.setattr(enrollment, "MAX_PROFILE_BYTES", 2)
    with pytest.raises(ValueError, match="more than 2 bytes"):
        enrollment.profile_files(tmp_path)


def test_profile_package_imports_and_deletes() -> None:
    assert enrollment.profile_package({}, server="s", profile="p", kind="enrollment") is None
    zipped = enrollment.profile_package(
        {"a.pref": b"<preferences/>"}, server="s", profile="p", kind="enrollment"
    )
    assert zipped is not None
    with zipfile.ZipFile(BytesIO(zipped)) as zf:
        assert zf.read("a.pref") == b"<preferences/>"
        manifest = packages.parse_manifest(zf.read("MANIFEST/manifest.xml"))
    assert manifest.parameters["onReceiveImport"] == "true"
    assert manifest.parameters["onReceiveDelete"] == "true"
    assert manifest.entries == ("a.pref",)
    again = enrollment.profile_package(
        {"a.pref": b"<preferences/>"}, server="s", profile="p", kind="enrollment"
    )
    assert again == zipped  # same uid and bytes: a re-import replaces, never duplicates
