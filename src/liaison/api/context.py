"""What every HTTP handler may use, passed in by the app (no globals, no imports of the app)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from liaison.config import Config
from liaison.identity.certs import ServerPki
from liaison.identity.directory import Directory
from liaison.identity.listeners import Listener
from liaison.identity.users import UserDirectory
from liaison.metrics import Metrics
from liaison.model.principal import Principal
from liaison.query import Query
from liaison.router import Router
from liaison.session import SessionRegistry, StreamSession

# Request key under which the auth middleware leaves the caller's Principal. A RequestKey, not a
# string: aiohttp 3.14 warns (NotAppKeyWarning) on string keys, an error under pytest.
PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("liaison.principal", Principal)
# Application key under which the ApiContext is stored.
CONTEXT_KEY: web.AppKey[ApiContext] = web.AppKey("liaison.context")


@dataclass(slots=True, kw_only=True)
class ApiContext:
    """The server's parts the HTTP side works with."""

    config: Config
    router: Router
    # History and files for a caller, through the router's decision and release records: the
    # HTTP side never holds a Store or the file store itself.
    query: Query
    metrics: Metrics
    server_pki: ServerPki | None
    users: UserDirectory
    clock_ms: Callable[[], int]
    # Turns a TLS peer certificate into a Principal (same rules as the streaming TLS listener).
    principal_from_certificate: Callable[[bytes | None, str], Principal | None]
    # Turns a username into a Principal after its password was checked (web sign-in, Basic).
    principal_from_user: Callable[[str], Principal | None]
    # An anonymous caller of a listener (peer address, listener kind), as the stream listeners
    # build them: groups file defaults and the gate's anonymous profile for that listener.
    principal_anonymous: Callable[[str, Listener], Principal]
    # Closes every live streaming session of a user (revocation).
    close_sessions_of: Callable[[str], int]
    # Every live stream session and feed: the WebSocket feeds register here so that revocation
    # (seen by the registry's sweep, also when the CLI revokes from another process) ends them.
    registry: SessionRegistry | None = None
    # A stream session for a caller the HTTP side already identified (``/takproto/1``): the same
    # StreamSession as the 8089 listener, in the same registry, speaking TAK protocol v1.
    stream_session: Callable[[Principal], StreamSession] | None = None
    # The feeds' status document (docs/feeds.md, "Status"), for GET /api/v1/feeds; None when
    # no feed is configured.
    feeds_status: Callable[[], Mapping[str, object]] | None = None
    # The partner links' status document (the one ``liaison federation status`` reads from
    # DATA_DIR/federation/status.json, taken live), for the operator API; None without peers.
    federation_status: Callable[[], Mapping[str, object]] | None = None
    # LDAP / Active Directory sign-in (docs/directory.md): asked for a name not in the users file.
    directory: Directory | None = None
    # What GET /metrics answers with when it is more than this server's own metrics: with
    # --workers, every worker's (worker_metrics.py); None for one node.
    metrics_text: Callable[[], Awaitable[str]] | None = None


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT_KEY]


def principal(request: web.Request) -> Principal:
    """The authenticated caller. Handlers behind the auth middleware always have one."""
    p = request.get(PRINCIPAL_KEY)
    if not isinstance(p, Principal):
        raise web.HTTPUnauthorized(
            text='{"error": "authentication required"}', content_type="application/json"
        )
    return p
