"""Open a connection package the way a TAK client does, for the CLI and enrollment tests."""

from __future__ import annotations

import datetime as dt
import zipfile
from dataclasses import dataclass
from io import BytesIO

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from liaison.identity import packages
from tests.unit.identity.pki_helpers import client_verifier


@dataclass(frozen=True)
class OpenedPackage:
    names: frozenset[str]
    manifest: packages.Manifest
    prefs: dict[str, dict[str, str]]
    roots: list[x509.Certificate]  # the truststore's certificates
    client: pkcs12.PKCS12KeyAndCertificates
    client_alias: bytes | None


def _resolve(ref: str, names: frozenset[str]) -> str:
    # ATAK moves imported .p12 files into its own cert/ folder and looks them up there by name
    # (tak-protocol.md 5.2); iTAK reads them by name from the package root.
    base = ref.rsplit("/", 1)[-1]
    matches = [n for n in names if n.rsplit("/", 1)[-1] == base]
    assert len(matches) == 1, (ref, sorted(names))
    return matches[0]


def open_package(data: bytes, pref_path: str) -> OpenedPackage:
    """Parse the manifest and .pref, open both keystores with the passwords the .pref gives,
    and check the client certificate against the truststore, as a device importing it would."""
    with zipfile.ZipFile(BytesIO(data)) as zf:
        names = frozenset(zf.namelist())
        manifest = packages.parse_manifest(zf.read("MANIFEST/manifest.xml"))
        # every content the manifest lists is in the zip
        assert set(manifest.entries) <= names
        prefs = packages.parse_pref(zf.read(pref_path))
        streams = prefs["cot_streams"]
        app = prefs["com.atakmap.app_preferences"]
        # the global defaults and connection 0 agree
        assert app["caLocation"] == streams["caLocation0"]
        assert app["certificateLocation"] == streams["certificateLocation0"]
        trust = pkcs12.load_pkcs12(
            zf.read(_resolve(streams["caLocation0"], names)), streams["caPassword0"].encode()
        )
        client = pkcs12.load_pkcs12(
            zf.read(_resolve(streams["certificateLocation0"], names)),
            streams["clientPassword0"].encode(),
        )
    assert trust.key is None and trust.cert is None  # a truststore holds no key
    roots = [c.certificate for c in trust.additional_certs]
    assert client.key is not None and client.cert is not None
    cert = client.cert.certificate
    at = cert.not_valid_before_utc + dt.timedelta(minutes=1)
    client_verifier(roots, at).verify(cert, [])
    return OpenedPackage(
        names=names,
        manifest=manifest,
        prefs=prefs,
        roots=roots,
        client=client,
        client_alias=client.cert.friendly_name,
    )
