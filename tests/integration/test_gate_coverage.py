"""No path out bypasses the gate: every HTTP route of every listener, and every transport, is
exercised as a user who may not see a set of canary items, and no canary byte ever comes back.

The routes are enumerated from the running server's own applications, so a route added later is
exercised too; a route that cannot be exercised generically must be listed in WRITE_ONLY with the
reason it returns no items, or this test fails.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import aiohttp
import pytest

from liaison.app import Server
from liaison.identity.users import UserDirectory
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import chat_event, clients, connect_tcp, connect_tls, sa_event
from tests.integration.http.http_support import (
    cert_session,
    make_zip,
    sha256,
    upload_form,
    wait_until,
)
from tests.integration.test_labels_e2e import POLICY, USERS, marker, seclabel

CANARY = b"CANARY-GATE"
# Routes that take input and answer with no item content; each is exercised elsewhere.
WRITE_ONLY = {
    ("POST", "/login"): "signs in; answers the user's own name",
    ("POST", "/logout"): "ends a session",
    ("POST", "/oauth/token"): "issues the caller's own bearer tokens",
    ("POST", "/api/v1/chat"): "sends a chat; answers the caller's own message",
    ("POST", "/Marti/sync/missionupload"): "stores an upload; answers its own URL",
    ("POST", "/Marti/sync/upload"): "stores an upload; answers its own metadata",
    ("PUT", "/api/sync/metadata/{hash}/tool"): "sets a visible file's tool",
    ("PUT", "/Marti/api/sync/metadata/{hash}/tool"): "sets a visible file's tool",
    ("POST", "/Marti/api/tls/signClient"): "signs the caller's own CSR",
    ("POST", "/Marti/api/tls/signClient/v2"): "signs the caller's own CSR",
    ("POST", "/api/v1/items/{uid}/label"): "relabels an item the caller may see",
    # Drawing: canaries in tests/integration/http/test_items.py (a client below the label).
    ("POST", "/api/v1/items"): "draws an item; answers the caller's own drawing",
    ("DELETE", "/api/v1/items/{uid}"): "deletes a drawing the caller made and may see",
    # Mission changes answer the mission as the caller sees it: the canaries are exercised in
    # tests/integration/test_missions.py (two organisations in one mission).
    ("PUT", "/Marti/api/missions/{name}"): "creates or updates a mission",
    ("DELETE", "/Marti/api/missions/{name}"): "deletes a mission (owner token)",
    ("PUT", "/Marti/api/missions/{name}/subscription"): "subscribes the caller's device",
    ("DELETE", "/Marti/api/missions/{name}/subscription"): "unsubscribes the caller's device",
    ("PUT", "/Marti/api/missions/{name}/contents"): "adds items the caller may see",
    # Canaries of packages (items, files, offline conflicts) in test_mission_packages.py.
    ("PUT", "/Marti/api/missions/{name}/contents/missionpackage"): (
        "imports a package; answers only conflicts among changes the caller may see"
    ),
    ("DELETE", "/Marti/api/missions/{name}/contents"): "removes an item the caller may see",
    # Files, keywords and guid twins: canaries in tests/integration/test_mission_contents.py.
    ("POST", "/Marti/api/missions/{name}"): "creates or updates a mission, as PUT",
    ("DELETE", "/Marti/api/missions"): "deletes a mission by guid (owner token)",
    ("PUT", "/Marti/api/missions/{name}/keywords"): "sets a visible mission's keywords",
    ("DELETE", "/Marti/api/missions/{name}/keywords"): "clears a visible mission's keywords",
    ("DELETE", "/Marti/api/missions/{name}/keywords/{keyword}"): "removes a mission keyword",
    ("PUT", "/Marti/api/missions/{name}/content/{hash}/keywords"): "tags a visible file",
    ("DELETE", "/Marti/api/missions/{name}/content/{hash}/keywords"): "untags a visible file",
    ("PUT", "/Marti/api/missions/{name}/uid/{uid}/keywords"): "tags a visible item",
    ("DELETE", "/Marti/api/missions/{name}/uid/{uid}/keywords"): "untags a visible item",
    ("PUT", "/Marti/api/missions/guid/{guid}/subscription"): "subscribes, by guid",
    ("DELETE", "/Marti/api/missions/guid/{guid}/subscription"): "unsubscribes, by guid",
    ("PUT", "/Marti/api/missions/guid/{guid}/contents"): "adds what the caller may see, by guid",
    ("DELETE", "/Marti/api/missions/guid/{guid}/contents"): "removes a visible one, by guid",
    # Log entries: canaries in tests/integration/test_mission_logs.py.
    ("POST", "/Marti/api/missions/logs/entries"): "posts an entry; answers the caller's own",
    ("PUT", "/Marti/api/missions/logs/entries"): "updates an entry the caller may see",
    ("DELETE", "/Marti/api/missions/logs/entries/{id}"): "deletes an entry the caller may see",
    # Roles, passwords, invitations: canaries in tests/integration/test_mission_roles.py.
    # The operator API (operators only; tests/integration/http/test_operator_api.py) answers
    # users, never items.
    ("POST", "/api/v1/admin/users"): "adds a user; answers that user",
    ("POST", "/api/v1/admin/users/{name}/revoke"): "revokes a user; answers the serials",
    ("POST", "/api/v1/admin/users/{name}/password"): "sets a user's password",
    ("POST", "/api/v1/admin/users/{name}/enrollment"): "answers a new enrollment link",
}
for _base in ("/Marti/api/missions/{name}", "/Marti/api/missions/guid/{guid}"):
    WRITE_ONLY[("PUT", f"{_base}/role")] = "sets a subscriber's role (owner)"
    WRITE_ONLY[("POST", f"{_base}/subscription")] = "sets several roles (owner)"
    WRITE_ONLY[("POST", f"{_base}/invite")] = "invites several to a visible mission"
    WRITE_ONLY[("PUT", f"{_base}/password")] = "sets the mission's password (owner)"
    WRITE_ONLY[("DELETE", f"{_base}/password")] = "removes the mission's password (owner)"
    WRITE_ONLY[("PUT", f"{_base}/invite/{{type}}/{{invitee}}")] = "invites to a visible mission"
    WRITE_ONLY[("DELETE", f"{_base}/invite/{{type}}/{{invitee}}")] = "withdraws an invitation"
POLICY_WITH_HTTP = (
    POLICY
    + """
[gate.listeners.http]
ceiling = { classification = "UNCLASSIFIED", REL = "*" }
profile = "ukr-unclass"
org = "UKR"
"""
)


def fill(path: str, uid: str, digest: str) -> str:
    """A concrete URL for a route, pointing at the canary items wherever it takes an id."""
    path = path.replace("{uid}", uid).replace("{hash}", digest)
    for name in ("{tail:.*}", "{filename:.*}", "{path:.*}"):
        path = path.replace(name, "index.html")
    sep = "&" if "?" in path else "?"
    return f"{path}{sep}hash={digest}&uid={uid}&limit=100"


async def test_every_route_and_transport_passes_the_gate(
    start_server: ServerFactory, data_dir: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY_WITH_HTTP)
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile, password="a long test password")
    async with start_server(policy_file=str(policy), http="127.0.0.1:0") as server:
        assert server.tls is not None and server.tcp is not None
        certs = {name: issue_cert(server, name, org) for name, (org, _) in USERS.items()}
        # The viewer (UKR, unclassified) connects first on every transport.
        v = certs["ukr-u"]
        viewer_tls = await connect_tls(server.tls.port, cert=v.cert, key=v.key, ca=v.ca)
        viewer_tcp = await connect_tcp(server.tcp.port)
        usa = certs["usa-s"]
        sender = await connect_tls(server.tls.port, cert=usa.cert, key=usa.key, ca=usa.ca)
        async with clients(viewer_tls, viewer_tcp, sender):
            await viewer_tls.send(sa_event("uid-viewer", "VIEWER"))
            # Canary items: a SECRET//REL TO USA marker, a directed chat to the viewer with
            # the same label, and a data package carrying it.
            secret_usa = seclabel("SECRET", ["USA"])
            await sender.send(marker("m-gate", "CANARY-GATE-MARKER", secret_usa))
            await sender.send(
                chat_event("uid-usa", "USA", "CANARY-GATE-DM", to_uid="uid-viewer").replace(
                    b"</detail>", secret_usa.encode() + b"</detail>"
                )
            )
            package = make_zip({"m.cot": marker("m-gate-dp", "CANARY-GATE-DP", secret_usa)})
            async with cert_session(server, usa) as http:
                url = _url(server, "https", f"/Marti/sync/missionupload?hash={sha256(package)}")
                async with http.post(url, data=upload_form(package)) as r:
                    assert r.status == 200, await r.text()
            await wait_until(
                lambda: any(e.event.uid == "m-gate" for e in server.router.latest_entries()),
                "the canary marker in the picture",
            )
            await server.writer.flush()
            bodies = await _exercise_every_route(server, v, sha256(package))
            # The WebSocket feed, as the viewer, while a new canary arrives live.
            async with (
                cert_session(server, v) as http,
                http.ws_connect(_url(server, "https", "/api/v1/stream")) as ws,
            ):
                snapshot = await ws.receive_str(timeout=10)
                await sender.send(marker("m-gate-live", "CANARY-GATE-LIVE", secret_usa))
                await asyncio.sleep(0.5)
                frames = [snapshot]
                while True:
                    try:
                        frames.append(await ws.receive_str(timeout=0.3))
                    except (TimeoutError, TypeError):
                        break
                bodies.append(("ws", "/api/v1/stream", "\n".join(frames).encode()))
            await viewer_tls.collect(0.5)
            await viewer_tcp.collect(0.3)
        bodies.append(("stream", "tls", bytes(viewer_tls.raw)))
        bodies.append(("stream", "tcp", bytes(viewer_tcp.raw)))
        # A replay after everything arrived, on a fresh connection.
        late = await connect_tls(server.tls.port, cert=v.cert, key=v.key, ca=v.ca)
        async with clients(late):
            await late.collect(0.5)
        bodies.append(("stream", "tls replay", bytes(late.raw)))

    leaks = [(where, what) for where, what, body in bodies if CANARY in body]
    assert leaks == []
    exercised = {what for _, what, _ in bodies}
    assert "/api/v1/picture" in exercised and "/Marti/sync/content" in exercised


def _url(server: Server, listener: str, path: str) -> str:
    ep = {"https": server.https, "enroll": server.enroll, "http": server.http}[listener]
    assert ep is not None
    scheme = "http" if listener == "http" else "https"
    return f"{scheme}://localhost:{ep.port}{path}"


async def _exercise_every_route(
    server: Server, viewer_cert: object, digest: str
) -> list[tuple[str, str, bytes]]:
    """GET (and HEAD) every route of every listener as the viewer; list what each answered."""
    from tests.integration.conftest import ClientCert

    assert isinstance(viewer_cert, ClientCert) and server.http_runtime is not None
    bodies: list[tuple[str, str, bytes]] = []
    unclassified: list[tuple[str, str]] = []
    names = [n for n in ("https", "enroll", "http") if getattr(server, n) is not None]
    listeners = dict(zip(names, server.http_runtime.runners, strict=True))
    token = base64.b64encode(b"ukr-u:a long test password").decode()
    basic = {"Authorization": f"Basic {token}"}
    for listener, runner in listeners.items():
        routes = []
        for route in runner.app.router.routes():
            info = route.resource.get_info() if route.resource is not None else {}
            path = info.get("path") or info.get("formatter") or info.get("prefix")
            if isinstance(path, str):
                routes.append((route.method, path))
        async with _session(server, listener, viewer_cert) as http:
            for method, path in sorted(set(routes)):
                if method in ("GET", "HEAD"):
                    if path == "/api/v1/stream":
                        continue  # exercised as a WebSocket above
                    url = _url(server, listener, fill(path, "m-gate", digest))
                    async with http.request(
                        method, url, headers=basic if listener == "enroll" else None
                    ) as r:
                        body = await r.read()
                        assert r.status < 500, (listener, path, r.status, body[:200])
                    bodies.append((listener, path.split("{", 1)[0].rstrip("/") or path, body))
                elif (method, path) not in WRITE_ONLY:
                    unclassified.append((method, path))
    assert unclassified == [], "routes neither exercised nor listed in WRITE_ONLY"
    return bodies


def _session(server: Server, listener: str, cert: object) -> aiohttp.ClientSession:
    from liaison.identity.tls import client_ssl_context
    from tests.integration.conftest import ClientCert

    assert isinstance(cert, ClientCert) and server.server_pki is not None
    if listener == "https":
        ctx = client_ssl_context(server.server_pki.ca_cert, cert.cert, cert.key)
    elif listener == "enroll":
        ctx = client_ssl_context(server.server_pki.ca_cert)
    else:
        return aiohttp.ClientSession()
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))


def test_write_only_routes_are_documented() -> None:
    assert all(reason for reason in WRITE_ONLY.values())
    assert json.dumps(sorted(WRITE_ONLY, key=str))  # the table stays plain data
    pytest.importorskip("aiohttp")
