"""Certificate enrollment as TAK clients do it (8446), device profiles, and the published CRL.

The calls, in the order a client makes them (tak-protocol.md 5.3):

1. ``GET /Marti/api/tls/config``: which subject names to put in the CSR (``certificateConfig``);
2. ``POST /Marti/api/tls/signClient`` (v1, ATAK-CIV: a PKCS#12 answer) or
   ``POST /Marti/api/tls/signClient/v2`` (JSON or XML answer, by the Accept header);
3. ``GET /Marti/api/tls/profile/enrollment``: an enrollment data package, or 204;
4. on 8443 with the new certificate, ``GET /Marti/api/device/profile/connection``: 204 or a package.

All of these sit behind the auth middleware of their listener (``api.auth``): HTTP Basic with a
password or an enrollment token on 8446, with 401 for wrong credentials and 429 while throttled;
the client certificate on 8443. ``/crl.pem`` and ``/crl.der`` are public (no TAK convention for
publishing a CRL over HTTP was found, so the paths are ours).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from liaison.api.auth import AuthMode, parse_basic, unauthorized
from liaison.api.context import ApiContext, context, principal
from liaison.api.files import content_disposition
from liaison.errors import PkiError
from liaison.identity import packages
from liaison.identity.certs import MAX_PKI_INPUT_BYTES, ServerPki, load_chain
from liaison.identity.issue import load_csr, sign_csr, validate_csr
from liaison.identity.p12 import signed_cert_p12
from liaison.identity.revocation import current_crl
from liaison.identity.users import User

log = logging.getLogger(__name__)

# --- Named limits and choices ---------------------------------------------------------------

# Largest signClient body read: a base64 CSR is under 2 KB for RSA 4096; the PKI refuses anything
# larger than its own input limit anyway, so stop reading there.
MAX_CSR_BODY_BYTES = MAX_PKI_INPUT_BYTES
# clientUid and version query values: ATAK sends "ANDROID-<16 hex>" and "4.10.0.1 (...)"; these
# bounds only keep log lines and records sane.
MAX_CLIENT_UID_CHARS = 256
MAX_VERSION_CHARS = 128
# Device profile folders: files served in one package, and their total size. A profile carries
# preferences, maps or imagery; more than this belongs in a mission or data package.
MAX_PROFILE_FILES = 100
MAX_PROFILE_BYTES = 50 * 1024 * 1024

# The namespaces of TAK Server's /tls/config answer. TAK Server marshals its CoreConfig
# CertificateConfig under a root QName in "com.bbn.marti.config" (TSw com/bbn/tak/tls/
# CertManagerApi.java getConfig), its children in the CoreConfig schema namespace (TS
# takserver-common/src/main/xsd/CoreConfig.xsd targetNamespace, elementFormDefault qualified).
# ATAK reads it with Simple XML bound to that schema namespace (ATAK com/atakmap/net/certconfig/
# CertificateConfig.java, NameEntry.java); OpenTAKServer writes the same shape
# (blueprints/marti_api/certificate_enrollment_api.py).
CORECONFIG_NS = "http://bbn.com/marti/xml/config"
CERTCONFIG_ROOT_NS = "com.bbn.marti.config"

# Where device profiles live: <data_dir>/profiles/<profile>/{enrollment,connection}/.
PROFILES_DIR = "profiles"
ENROLLMENT_PROFILE = "enrollment"
CONNECTION_PROFILE = "connection"

# Content types. The v1 answer is what TAK Server sends (Spring's byte[] converter:
# application/octet-stream, TSw CertManagerApi.java signClientCert); the CRL types are RFC 2585
# section 4.2 (DER) and the usual PEM type.
P12_CONTENT_TYPE = "application/octet-stream"
CRL_DER_CONTENT_TYPE = "application/pkix-crl"
CRL_PEM_CONTENT_TYPE = "application/x-pem-file"


# --- Pure helpers: what goes on the wire ----------------------------------------------------


def name_entries(user: User) -> list[tuple[str, str]]:
    """The subject RDNs /tls/config asks for: exactly what ``sign_csr`` puts in the
    certificate above the CN (O = the user's organisation; no OU is issued)."""
    return [("O", user.org)]


def certificate_config_xml(entries: Sequence[tuple[str, str]]) -> bytes:
    """The ``certificateConfig`` document of ``GET /Marti/api/tls/config``.

    Shape of TAK Server's JAXB output (TSw CertManagerApi.java getConfig)::

        <ns2:certificateConfig xmlns="http://bbn.com/marti/xml/config"
                               xmlns:ns2="com.bbn.marti.config">
          <nameEntries><nameEntry name="O" value="..."/></nameEntries>
        </ns2:certificateConfig>

    No other element or attribute is written: ATAK parses it with Simple XML's strict Persister,
    which throws on anything its CertificateConfig class does not declare.
    """
    root = ET.Element(
        "ns2:certificateConfig", {"xmlns": CORECONFIG_NS, "xmlns:ns2": CERTCONFIG_ROOT_NS}
    )
    entries_el = ET.SubElement(root, "nameEntries")
    for name, value in entries:
        ET.SubElement(entries_el, "nameEntry", {"name": name, "value": value})
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>' + body).encode("utf-8")


def config_content_type(accept: str | None) -> str:
    """Content type of the /tls/config answer.

    TAK Server answers ``text/plain`` (a String body negotiated by Spring; TAKAware pull request
    #133: "TPC TAK returns text/plain ... but it actually returns XML"), and TAKAware before that
    fix refused anything else (TAKAware issue #132, against OpenTAKServer's application/xml).
    ATAK and pytak do not look at the type. So text/plain, unless the client asks for XML.
    """
    a = (accept or "").lower()
    if "application/xml" in a:
        return "application/xml"
    if "text/xml" in a:
        return "text/xml"
    return "text/plain"


def pem_body(cert: x509.Certificate) -> str:
    """The base64 DER of ``cert`` in 64-character lines, without the BEGIN/END lines: TAK
    Server's ``Util.certToPEM(cert, false)`` (TSw com/bbn/tak/tls/Util.java), which TAKAware
    wraps in its own header lines (TAKAware CSRRequestor.swift wrapCertificate). Unlike TAK
    Server no newline follows a last full line, so that wrapping never yields an empty line."""
    b64 = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
    return "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))


def v2_content_type(accept: str | None) -> str | None:
    """The content type of the ``signClient/v2`` answer for this Accept header, or None when
    none fits (406).

    TAK Server (TSw CertManagerApi.java signClientCertV2): no Accept, an empty one, or one that
    contains ``*/*`` or ``application/json`` gets JSON; else one containing ``application/xml``
    gets XML; anything else gets 400. Goatak does the same (cmd/goatak_server/cert_api.go). We
    also answer ``text/plain`` with the JSON body, as OpenTAKServer does for iTAK ("iTAK expects
    a JSON response but with the Content-Type header set to text/plain",
    certificate_enrollment_api.py), accept ``text/xml`` for XML, and answer 406 otherwise.
    """
    a = (accept or "").strip().lower()
    if not a or "*/*" in a or "application/json" in a:
        return "application/json"
    if "application/xml" in a:
        return "application/xml"
    if "text/xml" in a:
        return "text/xml"
    if "text/plain" in a:
        return "text/plain"
    return None


def v2_body(cert: x509.Certificate, chain: Sequence[x509.Certificate], content_type: str) -> bytes:
    """The ``signClient/v2`` answer: JSON ``{"signedCert": ..., "ca0": ..., ...}`` or XML
    ``<enrollment><signedCert>...</signedCert><ca>...</ca>...</enrollment>`` (TSw
    CertManagerApi.java). Values are PEM bodies without header lines (``pem_body``): the signing
    CA first (ca0), then the certificates above it."""
    if content_type.endswith("xml"):
        parts = ['<?xml version="1.0" encoding="UTF-8"?><enrollment>']
        parts.append(f"<signedCert>{pem_body(cert)}</signedCert>")
        parts.extend(f"<ca>{pem_body(ca)}</ca>" for ca in chain)
        parts.append("</enrollment>")
        return "".join(parts).encode("utf-8")
    doc = {"signedCert": pem_body(cert)}
    for i, ca in enumerate(chain):
        doc[f"ca{i}"] = pem_body(ca)
    return json.dumps(doc, indent=2).encode("utf-8")


def csr_common_names(csr: x509.CertificateSigningRequest) -> list[str]:
    out: list[str] = []
    for attr in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        v = attr.value
        out.append(v if isinstance(v, str) else v.decode("utf-8", "replace"))
    return out


def profile_dir(data_dir: Path, profile: str, kind: str) -> Path:
    """``<data_dir>/profiles/<profile>/<kind>/``; the profile name is made file-name safe, so
    no profile name can reach outside the profiles folder."""
    return data_dir / PROFILES_DIR / packages.safe_stem(profile, "default") / kind


def profile_files(directory: Path, *, modified_after: float | None = None) -> dict[str, bytes]:
    """The regular files directly in ``directory`` (hidden ones skipped), optionally only those
    changed after ``modified_after`` (seconds since the epoch). ValueError past the limits."""
    if not directory.is_dir():
        return {}
    out: dict[str, bytes] = {}
    total = 0
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        st = path.stat()
        if modified_after is not None and st.st_mtime <= modified_after:
            continue
        if len(out) >= MAX_PROFILE_FILES:
            raise ValueError(f"{directory} holds more than {MAX_PROFILE_FILES} files")
        total += st.st_size
        if total > MAX_PROFILE_BYTES:
            raise ValueError(f"{directory} holds more than {MAX_PROFILE_BYTES} bytes")
        out[path.name] = path.read_bytes()
    return out


def profile_package(
    files: dict[str, bytes], *, server: str, profile: str, kind: str
) -> bytes | None:
    """A data package of device profile files, or None when there are none.

    The manifest asks the client to import the contents and delete the zip (onReceiveImport,
    onReceiveDelete), as goatak's enrollment profile does (cmd/goatak_server/cert_api.go).
    """
    if not files:
        return None
    uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"liaison://{server}/profiles/{profile}/{kind}"))
    manifest = packages.build_manifest(
        uid=uid,
        name=f"{profile} {kind} profile",
        entries=sorted(files),
        on_receive_delete=True,
        on_receive_import=True,
    )
    return packages.build_zip({**files, "MANIFEST/manifest.xml": manifest})


# --- Handlers -------------------------------------------------------------------------------


def _pki(ctx: ApiContext) -> ServerPki:
    if ctx.server_pki is None:  # the app always builds one when an HTTPS listener is on
        raise web.HTTPServiceUnavailable(text="no certificate authority configured\n")
    return ctx.server_pki


def _now(ctx: ApiContext) -> dt.datetime:
    return dt.datetime.fromtimestamp(ctx.clock_ms() / 1000, tz=dt.UTC)


def _user(ctx: ApiContext, name: str) -> User:
    user = _find_user(ctx, name)
    if user is None or user.revoked:
        raise web.HTTPForbidden(text="no enrollment for this account\n")
    return user


def _find_user(ctx: ApiContext, name: str) -> User | None:
    """The user of the users file, else the directory user who signed in (docs/directory.md)."""
    user = ctx.users.get(name)
    if user is None and ctx.directory is not None:
        user = ctx.directory.get(name)
    return user


def _unauthorized(text: str) -> web.HTTPUnauthorized:
    return unauthorized(text.strip(), {"WWW-Authenticate": 'Basic realm="Liaison"'})


async def tls_config(request: web.Request) -> web.Response:
    """``GET /Marti/api/tls/config``: the CSR template for the signed-in user."""
    ctx = context(request)
    user = _user(ctx, principal(request).name)
    body = certificate_config_xml(name_entries(user))
    ctype = config_content_type(request.headers.get("Accept"))
    return web.Response(body=body, content_type=ctype, charset="utf-8")


async def _read_csr(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_CSR_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_CSR_BODY_BYTES, actual_size=request.content_length
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_CSR_BODY_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_CSR_BODY_BYTES, actual_size=size)
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Signed:
    cert: x509.Certificate
    chain: list[x509.Certificate]


async def _enroll(request: web.Request, api: str) -> _Signed:
    """Check, sign and record one enrollment request; raises the HTTP error to answer."""
    ctx = context(request)
    server_pki = _pki(ctx)
    caller = principal(request)
    basic = parse_basic(request.headers.get("Authorization"))
    # Signing needs the Basic credentials themselves (a token is used up below); a web sign-in
    # cookie alone does not enroll. TAK clients always send Basic here.
    if basic is None or basic[0] != caller.name:
        raise _unauthorized("enrollment needs HTTP Basic credentials\n")
    name, secret = basic
    client_uid = request.query.get("clientUid", request.query.get("clientUID", ""))
    version = request.query.get("version", "")
    if len(client_uid) > MAX_CLIENT_UID_CHARS or len(version) > MAX_VERSION_CHARS:
        raise web.HTTPBadRequest(text="clientUid or version too long\n")
    user = _user(ctx, name)
    body = await _read_csr(request)
    try:
        csr = load_csr(body)
    except PkiError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    cns = csr_common_names(csr)
    if cns != [name]:
        # The CSR subject must name the authenticated user: TAK Server's validateCSR requires
        # CN == the HTTP user (TSw com/bbn/tak/tls/Service/CertManagerService.java) and answers
        # 500; 403 says better that this account may not obtain that name.
        log.warning("enroll %s: CSR for CN %r refused for user %r", api, cns, name)
        raise web.HTTPForbidden(text="the CSR subject CN must be your user name\n")
    try:
        validate_csr(body, expected_cn=name)
    except PkiError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    now = _now(ctx)
    # A one-time token is used up by this call; a password stays. The middleware already
    # accepted the secret, so when it is no live token it must be the password (checked again:
    # a token used a moment ago by a parallel call still passes the middleware, not this).
    from_directory = ctx.users.get(name) is None and ctx.directory is not None
    if from_directory:
        # A directory user: no tokens; the password is checked against the directory again.
        assert ctx.directory is not None
        used_token = False
        if await ctx.directory.authenticate(name, secret) is None:
            raise _unauthorized("wrong credentials\n")
    else:
        used_token = await asyncio.to_thread(ctx.users.redeem_token, name, secret, now)
        if not used_token and (
            await asyncio.to_thread(ctx.users.verify_password, name, secret) is None
        ):
            raise _unauthorized("this enrollment token was already used\n")
    try:
        cert = await asyncio.to_thread(
            sign_csr, server_pki, body, expected_cn=name, org=user.org, now=now
        )
        chain = await asyncio.to_thread(load_chain, server_pki)
    except PkiError as exc:  # validated above; a CA problem surfaces here
        log.error("enroll %s: signing for %s failed: %s", api, name, exc)
        raise web.HTTPInternalServerError(text="signing failed\n") from None
    if from_directory:
        assert ctx.directory is not None
        await asyncio.to_thread(ctx.directory.add_cert_serial, name, cert.serial_number)
    else:
        await asyncio.to_thread(ctx.users.add_cert_serial, name, cert.serial_number)
    ctx.metrics.counter(
        "liaison_enrollments_total", "Client certificates signed by enrollment", "api"
    ).inc(api)
    log.info(
        "enroll %s: signed serial %x for %s (client %r, version %r, %s)",
        api,
        cert.serial_number,
        name,
        client_uid,
        version,
        "token" if used_token else "password",
    )
    return _Signed(cert=cert, chain=chain)


async def sign_client_v1(request: web.Request) -> web.Response:
    """``POST /Marti/api/tls/signClient``: a PKCS#12 with ``signedCert`` and ``ca0``.. under
    the password ``atakatak`` (TSw CertManagerApi.java signClientCert; ATAK
    CertificateSigningOperation.java opens it with R.string.defaultTrustStorePassword)."""
    signed = await _enroll(request, "v1")
    p12 = await asyncio.to_thread(signed_cert_p12, signed.cert, signed.chain)
    return web.Response(body=p12, content_type=P12_CONTENT_TYPE)


async def sign_client_v2(request: web.Request) -> web.Response:
    """``POST /Marti/api/tls/signClient/v2``: JSON or XML by the Accept header
    (``v2_content_type``, ``v2_body``)."""
    ctype = v2_content_type(request.headers.get("Accept"))
    if ctype is None:  # refused before anything is signed or a token used up
        raise web.HTTPNotAcceptable(text="Accept application/json or application/xml\n")
    signed = await _enroll(request, "v2")
    body = v2_body(signed.cert, signed.chain, ctype)
    return web.Response(body=body, content_type=ctype, charset="utf-8")


async def _profile(request: web.Request, kind: str, modified_after: float | None) -> web.Response:
    ctx = context(request)
    user = _find_user(ctx, principal(request).name)
    if user is None or user.profile is None:
        return web.Response(status=204)
    directory = profile_dir(ctx.config.data_dir, user.profile, kind)
    try:
        files = await asyncio.to_thread(profile_files, directory, modified_after=modified_after)
    except (ValueError, OSError) as exc:
        log.error("profile %s for %s cannot be served: %s", kind, user.name, exc)
        raise web.HTTPInternalServerError(text="profile cannot be served\n") from None
    package = profile_package(files, server=ctx.config.public_host, profile=user.profile, kind=kind)
    if package is None:
        return web.Response(status=204)  # "no content" is what ATAK expects when none
    return web.Response(
        body=package,
        content_type="application/zip",
        headers={"Content-Disposition": content_disposition(f"{kind}-profile.zip")},
    )


async def enrollment_profile(request: web.Request) -> web.Response:
    """``GET /Marti/api/tls/profile/enrollment?clientUid=``: the user's enrollment profile
    package, or 204 (TSw com/bbn/marti/device/profile/api/ProfileAPI.java; ATAK
    DeviceProfileOperation.java treats 204 as "nothing to import")."""
    return await _profile(request, ENROLLMENT_PROFILE, None)


async def connection_profile(request: web.Request) -> web.Response:
    """``GET /Marti/api/device/profile/connection?syncSecago=&clientUid=`` on 8443, which ATAK
    calls on every (re)connect (ATAK DeviceProfileOperation.java). ``syncSecago`` is the age in
    seconds of the client's last sync: only files changed since then are sent; absent or
    negative sends everything."""
    raw = request.query.get("syncSecago", "")
    modified_after: float | None = None
    try:
        secago = int(raw) if raw else -1
    except ValueError:
        raise web.HTTPBadRequest(text="syncSecago must be a whole number\n") from None
    if secago >= 0:
        modified_after = context(request).clock_ms() / 1000 - secago
    return await _profile(request, CONNECTION_PROFILE, modified_after)


async def _crl(request: web.Request, der: bool) -> web.Response:
    server_pki = _pki(context(request))
    # With PostgreSQL storage, the newest CRL any node signed (identity/shared_db.py).
    data = await asyncio.to_thread(current_crl, server_pki, der=der)
    if data is None:
        raise web.HTTPNotFound(text="no CRL yet\n")
    ctype = CRL_DER_CONTENT_TYPE if der else CRL_PEM_CONTENT_TYPE
    # Revocations must reach consumers quickly: tell caches not to keep the file.
    return web.Response(body=data, content_type=ctype, headers={"Cache-Control": "no-cache"})


async def crl_pem(request: web.Request) -> web.Response:
    return await _crl(request, der=False)


async def crl_der(request: web.Request) -> web.Response:
    return await _crl(request, der=True)


def add_routes(app: web.Application, mode: AuthMode) -> None:
    """Enrollment on the password listener (8446), the connection profile on the certificate
    listener (8443), the CRL on both."""
    if mode is AuthMode.PASSWORD:
        app.router.add_get("/Marti/api/tls/config", tls_config)
        app.router.add_post("/Marti/api/tls/signClient", sign_client_v1)
        app.router.add_post("/Marti/api/tls/signClient/v2", sign_client_v2)
        app.router.add_get("/Marti/api/tls/profile/enrollment", enrollment_profile)
    if mode is AuthMode.MTLS:
        app.router.add_get("/Marti/api/device/profile/connection", connection_profile)
    if mode in (AuthMode.PASSWORD, AuthMode.MTLS):
        app.router.add_get("/crl.pem", crl_pem)
        app.router.add_get("/crl.der", crl_der)
