"""Web sign-in (``/login``, ``/logout``) and the web map's own files (``/``, ``/static/``).

No item passes here: the map's data comes from ``api.rest`` and ``api.ws``. Pages carry strict
security headers (:data:`PAGE_HEADERS`); static files are read once and kept in a bounded cache.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import mimetypes
from importlib.resources.abc import Traversable

from aiohttp import web

from liaison.api.auth import SESSION_COOKIE, AuthMode, check_password, client_address
from liaison.api.context import context
from liaison.api.files import refuse_cross_site
from liaison.api.rest import bad_request, json_response, read_json
from liaison.api.roles import require_operator
from liaison.api.server import SESSIONS_KEY, THROTTLE_KEY
from liaison.errors import StorageError

log = logging.getLogger(__name__)

# Static files of the web map are read once and kept in memory: the build is a few MB (bundled
# basemap included). Bounded all the same, in files and bytes; past that, read per request.
# Seconds a browser is asked to wait after a sign-out the shared sign-in table could not take.
LOGOUT_RETRY_S = 5
MAX_STATIC_CACHE_FILES = 512
MAX_STATIC_CACHE_BYTES = 64 * 1024 * 1024
# The web build (Vite) writes only content-hashed files under static/assets/ ("index-DwjGLh_i.js"):
# their content never changes under a name, so browsers keep them a year (RFC 9111 5.2.2.1;
# "immutable", RFC 8246). Everything else (index.html, login.html, favicon) is revalidated.
HASHED_ASSETS_DIR = "assets/"
CACHE_IMMUTABLE = "public, max-age=31536000, immutable"
CACHE_REVALIDATE = "no-cache"

STATIC_CACHE_KEY: web.AppKey[dict[str, tuple[bytes, str]]] = web.AppKey("liaison.web.static")


_BUILTIN_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Liaison sign-in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>Liaison</h1>
<form method="post" action="/login">
<label>Username <input name="username" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required>
</label><button type="submit">Sign in</button></form></main></body></html>
"""

# Security headers on the web pages: no framing (clickjacking), no sniffing, no referrer leaks,
# and only our own scripts and styles (the map is fully offline; nothing comes from elsewhere).
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline';"
        " connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'"
    ),
}


# The operator console (``/console``, docs/web.md "Console"): its own, stricter policy. Images
# from this server and ``data:`` (the enrollment QR code comes from the operator API as a
# ``data:image/png`` URL; exactly that is allowed), no inline style, no blob: and no workers,
# never cached (it is only for operators).
CONSOLE_PATH = "/console"
CONSOLE_FILE = "console.html"
CONSOLE_HEADERS = {
    **PAGE_HEADERS,
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; connect-src 'self';"
        " base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
}
_CONSOLE_REFUSED = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Liaison console</title></head>
<body><main><h1>Operators only</h1>
<p>The console is for Liaison operators. <a href="/">Back to the map</a></p></main></body></html>
"""


def static_root() -> Traversable:
    """The built web map inside the package (``liaison/web/static``)."""
    return importlib.resources.files("liaison").joinpath("web", "static")


def _static_file(app: web.Application, path: str) -> tuple[bytes, str] | None:
    """The bytes and ETag of a static file, or None. Paths are checked part by part."""
    cache = app[STATIC_CACHE_KEY]
    hit = cache.get(path)
    if hit is not None:
        return hit
    parts = path.split("/")
    if any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
        return None
    node = static_root()
    for part in parts:
        node = node.joinpath(part)
    if not node.is_file():
        return None
    data = node.read_bytes()
    entry = (data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"')
    cached_bytes = sum(len(d) for d, _ in cache.values())
    if len(cache) < MAX_STATIC_CACHE_FILES and cached_bytes + len(data) <= MAX_STATIC_CACHE_BYTES:
        cache[path] = entry
    return entry


def _serve_static(request: web.Request, path: str, cache_control: str) -> web.Response:
    found = _static_file(request.app, path)
    if found is None:
        raise web.HTTPNotFound(text="not found\n")
    data, etag = found
    headers = {"ETag": etag, "Cache-Control": cache_control, **PAGE_HEADERS}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return web.Response(body=data, content_type=ctype, headers=headers)


async def get_index(request: web.Request) -> web.Response:
    if _static_file(request.app, "index.html") is None:
        return web.Response(
            text="Liaison is running; the web map is not built into this package.\n",
            headers=PAGE_HEADERS,
        )
    return _serve_static(request, "index.html", CACHE_REVALIDATE)


async def get_static(request: web.Request) -> web.Response:
    path = request.match_info["path"]
    if path == CONSOLE_FILE:
        # The console page is served at /console, to operators only.
        raise web.HTTPNotFound(text="not found\n")
    cache = CACHE_IMMUTABLE if path.startswith(HASHED_ASSETS_DIR) else CACHE_REVALIDATE
    return _serve_static(request, path, cache)


async def get_login(request: web.Request) -> web.Response:
    if _static_file(request.app, "login.html") is not None:
        return _serve_static(request, "login.html", CACHE_REVALIDATE)
    return web.Response(text=_BUILTIN_LOGIN, content_type="text/html", headers=PAGE_HEADERS)


async def get_console(request: web.Request) -> web.Response:
    """The operator console: operators only (the one role check of ``api.roles``, counted and
    recorded); anyone else gets a 403 page. Its data comes from the operator API."""
    try:
        require_operator(request, CONSOLE_PATH)
    except web.HTTPForbidden:
        return web.Response(
            status=403, text=_CONSOLE_REFUSED, content_type="text/html", headers=CONSOLE_HEADERS
        )
    found = _static_file(request.app, CONSOLE_FILE)
    if found is None:
        raise web.HTTPNotFound(text="the console is not built into this package\n")
    data, etag = found
    return web.Response(
        body=data, content_type="text/html", headers={"ETag": etag, **CONSOLE_HEADERS}
    )


def _set_session_cookie(response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, secure=True, samesite="Strict", path="/"
    )


async def post_login(request: web.Request) -> web.StreamResponse:
    refuse_cross_site(request)
    as_json = request.content_type == "application/json"
    if as_json:
        doc = await read_json(request)
        if not isinstance(doc, dict):
            raise bad_request("body must be a JSON object")
        username, password = doc.get("username"), doc.get("password")
    else:
        form = await request.post()
        username, password = form.get("username"), form.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise bad_request("username and password are required")
    try:
        who = await check_password(request, username, password, request.app[THROTTLE_KEY])
    except web.HTTPUnauthorized:
        if as_json:
            return json_response({"error": "wrong credentials"}, status=401)
        raise web.HTTPSeeOther("/login?failed=1") from None
    if who is None:
        return json_response({"error": "wrong credentials"}, status=401)
    token, csrf = await request.app[SESSIONS_KEY].sign_in(who.name)
    response = (
        json_response({"name": who.name, "csrf": csrf})
        if as_json
        else web.Response(status=303, headers={"Location": "/"})
    )
    _set_session_cookie(response, token)
    return response


async def post_logout(request: web.Request) -> web.Response:
    """204 when signed out. With sign-ins shared in PostgreSQL and the database unreachable,
    503 with Retry-After: the sign-ins ended on this node (and were announced), their rows could
    not be deleted (WebSessions.sign_out). The cookie is cleared either way: this node refuses
    it from now on, and a browser without it cannot be signed in anywhere."""
    refuse_cross_site(request)
    try:
        await request.app[SESSIONS_KEY].sign_out(request.cookies.get(SESSION_COOKIE))
        response = web.Response(status=204)
    except StorageError as exc:
        context(request).metrics.counter(
            "liaison_http_logout_unavailable_total",
            "Sign-outs answered 503 because the shared sign-in table could not be reached",
        ).inc()
        log.error("http %s: sign-out not recorded: %s", client_address(request), exc)
        response = json_response(
            {"error": "the sign-in store cannot be reached; signed out on this node only"},
            status=503,
        )
        response.headers["Retry-After"] = str(LOGOUT_RETRY_S)
    response.del_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
    return response


def add_routes(app: web.Application, mode: AuthMode) -> None:
    """Sign-in (password listener only) and the web map on one listener."""
    app[STATIC_CACHE_KEY] = {}
    r = app.router
    if mode is AuthMode.PASSWORD:
        r.add_get("/login", get_login)
        r.add_post("/login", post_login)
        r.add_post("/logout", post_logout)
    r.add_get("/", get_index)
    r.add_get("/static/{path:.+}", get_static)
    if mode is not AuthMode.ANONYMOUS:
        # Operators are identified callers, as for the operator API it runs on.
        r.add_get(CONSOLE_PATH, get_console)
