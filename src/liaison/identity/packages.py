"""Connection data packages for ATAK/WinTAK and iTAK, enrollment links and their QR codes.

A connection package is a zip the user opens on the device: a manifest, a ``.pref`` file that
configures the server connection, the truststore and (for pre-issued certificates) the client
keystore (tak-protocol.md 5.1 and 5.2). Zips are built deterministically: entries sorted, fixed
timestamps and permissions, stored uncompressed, so the same inputs give the same bytes.

``parse_pref`` and ``parse_manifest`` read such files back (tests, ``liaison doctor``); they
refuse DTDs and entity declarations, so a hostile package cannot expand entities or reach files.
"""

from __future__ import annotations

import io
import ipaddress
import re
import urllib.parse
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

import segno

# --- Named choices --------------------------------------------------------------------------

# Zip entry timestamp: the earliest a zip can hold (MS-DOS epoch). TAK Server likewise zeroes
# entry times in the packages it builds (TSw missionpackage/MissionPackage.java); fixed times
# make packages byte-for-byte reproducible.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

# Largest .pref or manifest we parse. Real ones are under 4 KB; a full ATAK preference export is
# under 100 KB.
MAX_PREF_BYTES = 256 * 1024

# The streaming TLS port clients connect to (tak-protocol.md 3.1: 8089 everywhere).
DEFAULT_STREAM_PORT = 8089

# What ATAK shows in the "cache credentials" field of an enrollment connection (value used by the
# TAK Server enrollment packages, tak-protocol.md 5.2 cacheCreds<i>).
CACHE_CREDS_VALUE = "Cache credentials"

# QR codes: error correction level M (15% of the code can be damaged) suits a code shown on a
# screen or printed on paper; the module scale and quiet zone give a PNG a phone camera reads
# from a metre away. ISO/IEC 18004 requires a quiet zone of at least 4 modules.
QR_ERROR = "m"
QR_PNG_SCALE = 8
QR_BORDER = 4

# File names inside packages are built from server and user names: keep a portable subset.
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM_CHARS = 64

_STRING = "class java.lang.String"
_BOOLEAN = "class java.lang.Boolean"
_INTEGER = "class java.lang.Integer"

PrefValue = str | bool | int


# --- Names and checks -----------------------------------------------------------------------


def safe_stem(name: str, fallback: str = "liaison") -> str:
    """A file-name-safe stem from a display name."""
    stem = _SAFE_NAME.sub("_", name).strip("._-")[:_MAX_STEM_CHARS]
    return stem or fallback


def connect_string(host: str, port: int, proto: str = "ssl") -> str:
    """ATAK's ``host:port:proto`` (tak-protocol.md 3.1). ATAK splits it on ':', so an IPv6
    literal cannot be expressed; use a DNS name for IPv6 servers."""
    if not host or host != host.strip() or any(ch in host for ch in ":/ "):
        raise ValueError(f"host {host!r} must be a bare host name or IPv4 address")
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    if proto not in ("ssl", "tcp", "quic"):
        raise ValueError(f"proto {proto!r} must be ssl, tcp or quic")
    return f"{host}:{port}:{proto}"


# --- .pref and manifest writing -------------------------------------------------------------


def _xml_bytes(root: ET.Element, declaration: str) -> bytes:
    ET.indent(root, space="  ")
    return (declaration + "\n" + ET.tostring(root, encoding="unicode") + "\n").encode("utf-8")


def build_pref(sections: Sequence[tuple[str, Sequence[tuple[str, PrefValue]]]]) -> bytes:
    """A ``<preferences>`` document: one ``<preference version="1" name=...>`` per section, each
    entry typed as ATAK expects (``class java.lang.String|Boolean|Integer``, tak-protocol.md 5.2).
    """
    root = ET.Element("preferences")
    for name, entries in sections:
        pref = ET.SubElement(root, "preference", {"version": "1", "name": name})
        for key, value in entries:
            if isinstance(value, bool):  # before int: bool is an int subclass
                cls, text = _BOOLEAN, "true" if value else "false"
            elif isinstance(value, int):
                cls, text = _INTEGER, str(value)
            else:
                cls, text = _STRING, value
            entry = ET.SubElement(pref, "entry", {"key": key, "class": cls})
            entry.text = text
    return _xml_bytes(root, "<?xml version='1.0' encoding='UTF-8' standalone='yes'?>")


def build_manifest(
    *,
    uid: str,
    name: str,
    entries: Sequence[str],
    on_receive_delete: bool = True,
    on_receive_import: bool | None = None,
) -> bytes:
    """``MANIFEST/manifest.xml``: MissionPackageManifest version 2 (TSw missionpackage/mp.xsd).

    ``on_receive_import`` adds the onReceiveImport parameter (device profile packages set it so
    the client imports their contents without asking; GO cmd/goatak_server/cert_api.go).
    """
    root = ET.Element("MissionPackageManifest", {"version": "2"})
    conf = ET.SubElement(root, "Configuration")
    ET.SubElement(conf, "Parameter", {"name": "uid", "value": uid})
    ET.SubElement(conf, "Parameter", {"name": "name", "value": name})
    if on_receive_import is not None:
        ET.SubElement(
            conf,
            "Parameter",
            {"name": "onReceiveImport", "value": "true" if on_receive_import else "false"},
        )
    ET.SubElement(
        conf,
        "Parameter",
        {"name": "onReceiveDelete", "value": "true" if on_receive_delete else "false"},
    )
    contents = ET.SubElement(root, "Contents")
    for entry in sorted(entries):
        ET.SubElement(contents, "Content", {"ignore": "false", "zipEntry": entry})
    return _xml_bytes(root, '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>')


def build_zip(files: dict[str, bytes]) -> bytes:
    """A deterministic zip: a ``MANIFEST/`` directory entry when a manifest is present (as TAK
    Server writes it), entries in sorted order, fixed time and modes, stored uncompressed (the
    .p12 files do not compress and the rest is a few KB)."""
    names = sorted(files)
    if any(n.startswith("MANIFEST/") for n in names):
        names = sorted({*names, "MANIFEST/"})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.create_system = 3  # Unix, so the mode bits below are meaningful
            info.compress_type = zipfile.ZIP_STORED
            if name.endswith("/"):
                info.external_attr = (0o40755 << 16) | 0x10  # directory, MS-DOS dir flag
                zf.writestr(info, b"")
            else:
                info.external_attr = 0o100644 << 16
                zf.writestr(info, files[name])
    return buf.getvalue()


# --- Connection packages --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Layout:
    pref_path: str  # path of the .pref inside the zip
    truststore_path: str  # path of the truststore inside the zip
    client_path: str  # path of the client keystore inside the zip
    truststore_ref: str  # how the .pref refers to the truststore
    client_ref: str  # how the .pref refers to the client keystore


def _stream_prefs(
    *,
    server_name: str,
    host: str,
    port: int,
    layout: _Layout,
    truststore_password: str,
    client_password: str | None,
    with_client: bool,
    username: str | None,
    enroll: bool,
) -> bytes:
    stream: list[tuple[str, PrefValue]] = [
        ("count", 1),
        ("description0", server_name),
        ("enabled0", True),
        ("connectString0", connect_string(host, port, "ssl")),
        ("caLocation0", layout.truststore_ref),
        ("caPassword0", truststore_password),
    ]
    app: list[tuple[str, PrefValue]] = [
        ("displayServerConnectionWidget", True),
        ("caLocation", layout.truststore_ref),
        ("caPassword", truststore_password),
    ]
    if with_client:
        assert client_password is not None
        stream += [
            ("certificateLocation0", layout.client_ref),
            ("clientPassword0", client_password),
        ]
        app += [("certificateLocation", layout.client_ref), ("clientPassword", client_password)]
    if enroll:
        # Enrollment style (tak-protocol.md 5.2 (b)): the device asks for the password or token,
        # then enrolls on 8446 with a CSR, trusting the server through this truststore.
        stream += [("useAuth0", True), ("enrollForCertificateWithTrust0", True)]
        if username:
            stream.append(("username0", username))
        stream.append(("cacheCreds0", CACHE_CREDS_VALUE))
    return build_pref([("cot_streams", stream), ("com.atakmap.app_preferences", app)])


def _check_style(client_p12: bytes | None, client_password: str | None, enroll: bool) -> bool:
    if enroll:
        if client_p12 is not None:
            raise ValueError("an enrollment package carries no client certificate")
        return False
    if client_p12 is None or not client_password:
        raise ValueError("a pre-issued package needs client_p12 and client_password")
    return True


def _package(
    *,
    layout: _Layout,
    server_name: str,
    host: str,
    port: int,
    truststore: bytes,
    truststore_password: str,
    client_p12: bytes | None,
    client_password: str | None,
    username: str | None,
    enroll: bool,
    package_uid: str,
) -> bytes:
    if not truststore or not truststore_password:
        raise ValueError("a connection package needs the truststore and its password")
    with_client = _check_style(client_p12, client_password, enroll)
    files: dict[str, bytes] = {
        layout.pref_path: _stream_prefs(
            server_name=server_name,
            host=host,
            port=port,
            layout=layout,
            truststore_password=truststore_password,
            client_password=client_password,
            with_client=with_client,
            username=username,
            enroll=enroll,
        ),
        layout.truststore_path: truststore,
    }
    if with_client:
        assert client_p12 is not None
        files[layout.client_path] = client_p12
    files["MANIFEST/manifest.xml"] = build_manifest(
        uid=package_uid,
        name=server_name,
        entries=[n for n in files if n != "MANIFEST/manifest.xml"],
        # The package holds keystore passwords: let the client delete it once imported.
        on_receive_delete=True,
    )
    return build_zip(files)


def connection_package_atak(
    *,
    server_name: str,
    host: str,
    port: int = DEFAULT_STREAM_PORT,
    truststore: bytes,
    truststore_password: str,
    client_p12: bytes | None,
    client_password: str | None,
    username: str | None,
    enroll: bool,
    package_uid: str,
) -> bytes:
    """The ATAK/WinTAK connection package (tak-protocol.md 5.2).

    Zip layout: ``MANIFEST/manifest.xml``, ``certs/<server>.pref``,
    ``certs/truststore-<server>.p12`` and, unless ``enroll``, ``certs/<user>-<server>.p12``.
    The .pref refers to the keystores as ``cert/<file>``, not ``certs/``: ATAK moves imported
    .p12 files into its ``atak/cert/`` directory, and a mismatch breaks the connection
    (myTeckNet/installTAK#23; GO cert/make_connect_dp.sh; PY onboarding_packages.py).

    With ``enroll`` the package carries only the truststore and asks the device to enroll for a
    certificate with ``username`` (style (b)); otherwise ``client_p12`` is the issued keystore
    (style (a)) and ``username`` is not used.
    """
    stem = safe_stem(server_name)
    user_stem = safe_stem(username or "client", "client")
    trust_file = f"truststore-{stem}.p12"
    client_file = f"{user_stem}-{stem}.p12"
    layout = _Layout(
        pref_path=f"certs/{stem}.pref",
        truststore_path=f"certs/{trust_file}",
        client_path=f"certs/{client_file}",
        truststore_ref=f"cert/{trust_file}",
        client_ref=f"cert/{client_file}",
    )
    return _package(
        layout=layout,
        server_name=server_name,
        host=host,
        port=port,
        truststore=truststore,
        truststore_password=truststore_password,
        client_p12=client_p12,
        client_password=client_password,
        username=username,
        enroll=enroll,
        package_uid=package_uid,
    )


# iTAK reads a flat package with fixed names (tak-protocol.md 5.2; TK build_client_cmd.py; PY
# onboarding_packages.py) and refers to the keystores by those names.
_ITAK_LAYOUT = _Layout(
    pref_path="config.pref",
    truststore_path="caCert.p12",
    client_path="clientCert.p12",
    truststore_ref="caCert.p12",
    client_ref="clientCert.p12",
)


def connection_package_itak(
    *,
    server_name: str,
    host: str,
    port: int = DEFAULT_STREAM_PORT,
    truststore: bytes,
    truststore_password: str,
    client_p12: bytes | None,
    client_password: str | None,
    username: str | None = None,
    enroll: bool = False,
    package_uid: str,
) -> bytes:
    """The iTAK connection package: ``config.pref``, ``caCert.p12`` and ``clientCert.p12`` at the
    zip root. The manifest is kept (as pytak does; taky omits it): iTAK ignores it, and ATAK can
    still import the same file."""
    return _package(
        layout=_ITAK_LAYOUT,
        server_name=server_name,
        host=host,
        port=port,
        truststore=truststore,
        truststore_password=truststore_password,
        client_p12=client_p12,
        client_password=client_password,
        username=username,
        enroll=enroll,
        package_uid=package_uid,
    )


# --- Reading .pref and manifest files -------------------------------------------------------


def _safe_root(data: bytes, what: str) -> ET.Element:
    if len(data) > MAX_PREF_BYTES:
        raise ValueError(f"{what} is larger than {MAX_PREF_BYTES} bytes")
    lowered = data.lower()
    # A DTD is the door to entity expansion ("billion laughs") and external entities; real
    # .pref and manifest files never carry one, so refuse the whole document.
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        raise ValueError(f"{what} contains a DTD or entity declaration")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"{what} is not well-formed XML: {exc}") from exc


def parse_pref(data: bytes) -> dict[str, dict[str, str]]:
    """Read a ``.pref`` file: ``{preference name: {entry key: text}}``."""
    root = _safe_root(data, ".pref")
    if root.tag != "preferences":
        raise ValueError(f".pref root element is <{root.tag}>, not <preferences>")
    out: dict[str, dict[str, str]] = {}
    for pref in root.findall("preference"):
        name = pref.get("name")
        if name is None:
            raise ValueError("<preference> without a name")
        section = out.setdefault(name, {})
        for entry in pref.findall("entry"):
            key = entry.get("key")
            if key is None:
                raise ValueError(f"<entry> without a key in preference {name!r}")
            section[key] = entry.text or ""
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    parameters: dict[str, str]  # Configuration/Parameter name -> value
    entries: tuple[str, ...]  # Contents/Content zipEntry values, in document order


def parse_manifest(data: bytes) -> Manifest:
    """Read ``MANIFEST/manifest.xml`` (TSw missionpackage/mp.xsd)."""
    root = _safe_root(data, "manifest")
    if root.tag != "MissionPackageManifest":
        raise ValueError(f"manifest root element is <{root.tag}>")
    params = {
        p.get("name", ""): p.get("value", "")
        for p in root.findall("Configuration/Parameter")
        if p.get("name")
    }
    entries = tuple(
        c.get("zipEntry", "") for c in root.findall("Contents/Content") if c.get("zipEntry")
    )
    return Manifest(parameters=params, entries=entries)


# --- Enrollment links and QR codes ----------------------------------------------------------


def enrollment_url(host: str, username: str, token: str, *, port: int | None = None) -> str:
    """``tak://com.atakmap.app/enroll?host=..&username=..&token=..`` (PY client_functions.py
    parse_tak_url; tak-protocol.md 5.2). Values are percent-encoded; ':' stays literal (RFC 3986
    allows it in a query) so ``host:port`` reads naturally."""
    if not host or not username or not token:
        raise ValueError("host, username and token are all required")
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        addr = None  # a DNS name
    if isinstance(addr, ipaddress.IPv6Address) or "/" in host or " " in host:
        raise ValueError(f"host {host!r} must be a DNS name or an IPv4 address")
    host_value = host if port is None else f"{host}:{port}"
    query = urllib.parse.urlencode(
        [("host", host_value), ("username", username), ("token", token)],
        quote_via=urllib.parse.quote,
        safe=":",
    )
    return f"tak://com.atakmap.app/enroll?{query}"


def _qr(text: str) -> segno.QRCode:
    try:
        return segno.make(text, error=QR_ERROR, micro=False)
    except segno.DataOverflowError as exc:
        raise ValueError(f"text of {len(text)} characters does not fit in a QR code") from exc


def qr_png(text: str, *, scale: int = QR_PNG_SCALE) -> bytes:
    """A PNG of the QR code for ``text`` (black on white)."""
    buf = io.BytesIO()
    _qr(text).save(buf, kind="png", scale=scale, border=QR_BORDER)
    return buf.getvalue()


def qr_terminal(text: str) -> str:
    """The QR code as Unicode half blocks for a terminal (two module rows per text line)."""
    out = io.StringIO()
    _qr(text).terminal(out=out, border=QR_BORDER, compact=True)
    return out.getvalue()
