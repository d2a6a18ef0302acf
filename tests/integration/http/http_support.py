"""Helpers for the HTTP tests: HTTPS sessions as TAK clients and browsers make them, zips."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp

from liaison.app import Server
from liaison.identity.tls import client_ssl_context
from liaison.identity.users import UserDirectory
from tests.integration.conftest import ClientCert, issue_cert
from tests.integration.helpers import WAIT_S

# Seconds any single HTTP call in these tests may take.
HTTP_TIMEOUT_S = 15.0

# RED and BLUE partners: each organisation reads and writes only its own group.
GROUPS_TOML = (
    '[[rule]]\no = "RED"\ngroups = ["red"]\n\n'
    '[[rule]]\no = "BLUE"\ngroups = ["blue"]\n\n'
    '[[rule]]\nuser = "webred"\ngroups = ["red"]\n\n'
    '[[rule]]\nuser = "webblue"\ngroups = ["blue"]\n\n'
    # Operators (roles.operator_group's default): the certificate "ops" and the user "webops".
    '[[rule]]\ncn = "ops"\ngroups = ["liaison-operators"]\n\n'
    '[[rule]]\nuser = "webops"\ngroups = ["liaison-operators"]\n'
)
PASSWORD = "correct horse battery staple"


def write_groups(tmp_path: Path) -> Path:
    path = tmp_path / "groups.toml"
    path.write_text(GROUPS_TOML)
    return path


def add_user(server: Server, name: str, org: str, groups: list[str]) -> None:
    users = UserDirectory.load(server.config.resolved_users_file())
    users.add_user(name, org, groups=groups, password=PASSWORD)


def https_url(server: Server, path: str) -> str:
    assert server.https is not None
    return f"https://localhost:{server.https.port}{path}"


def enroll_url(server: Server, path: str) -> str:
    assert server.enroll is not None
    return f"https://localhost:{server.enroll.port}{path}"


@contextlib.asynccontextmanager
async def cert_session(server: Server, cert: ClientCert) -> AsyncIterator[aiohttp.ClientSession]:
    """A session that presents a client certificate on the mTLS listener (as ATAK does)."""
    ctx = client_ssl_context(cert.ca, cert.cert, cert.key)
    connector = aiohttp.TCPConnector(ssl=ctx)
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield session


@contextlib.asynccontextmanager
async def browser_session(server: Server) -> AsyncIterator[aiohttp.ClientSession]:
    """A session without a client certificate (the password listener), keeping cookies."""
    assert server.server_pki is not None
    ctx = client_ssl_context(server.server_pki.ca_cert)
    connector = aiohttp.TCPConnector(ssl=ctx)
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    # unsafe=True: keep cookies for "localhost" (aiohttp drops cookies of bare host names).
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=jar
    ) as session:
        yield session


def certs(server: Server, *names_orgs: tuple[str, str]) -> dict[str, ClientCert]:
    return {name: issue_cert(server, name, org) for name, org in names_orgs}


def make_zip(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def data_package(uid: str, text: str) -> bytes:
    """A small ATAK data package: a manifest and one CoT file (tak-protocol.md 5.1)."""
    manifest = (
        '<MissionPackageManifest version="2"><Configuration>'
        f'<Parameter name="uid" value="{uid}"/><Parameter name="name" value="{uid}"/>'
        '</Configuration><Contents><Content ignore="false" zipEntry="notes/note.txt"/>'
        "</Contents></MissionPackageManifest>"
    ).encode()
    return make_zip({"MANIFEST/manifest.xml": manifest, "notes/note.txt": text.encode()})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload_form(data: bytes, filename: str = "package.zip") -> aiohttp.FormData:
    """The multipart body ATAK sends to sync/missionupload: one part named ``assetfile``."""
    form = aiohttp.FormData()
    form.add_field(
        "assetfile", data, filename=filename, content_type="application/x-zip-compressed"
    )
    return form


# Seconds between checks while waiting for the server to reach a state.
POLL_S = 0.02


async def wait_until(predicate: Callable[[], bool], what: str, within: float = WAIT_S) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``within`` seconds."""
    for _ in range(int(within / POLL_S) + 1):
        if predicate():
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"{what} within {within}s")
