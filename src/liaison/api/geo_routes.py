"""The picture as a KML NetworkLink, and the feeds' status (``GET /api/v1/feeds``) for signed-in
callers (docs/api.md). The KML and KMZ picture itself is ``GET /api/v1/picture?format=kml|kmz``
(``api.rest``), through the same router query as the GeoJSON picture."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlencode

from aiohttp import web

from liaison.api.auth import AuthMode
from liaison.api.context import context, principal
from liaison.api.geojson import iso
from liaison.api.kml import KML_CONTENT_TYPE, network_link
from liaison.api.rest import bad_request, json_response

API = "/api/v1"
# NetworkLink refresh period: default and bounds (seconds).
DEFAULT_REFRESH_S = 30
MAX_REFRESH_S = 86_400
# Query parameters of the picture a NetworkLink passes on to the KML it points at.
PASSED_ON = ("bbox", "type", "uid", "callsign")
# Counts of a feed that GET /api/v1/feeds reports (as in the status file).
COUNTS = ("reports", "published", "refused", "invalid", "failures_total")
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]*@")
_QUERY = re.compile(r"(://[^\s?#]*)[?#][^\s]*")


def redact(text: str) -> str:
    """A message without what a URL may carry as a secret: its user information
    (``user:password@``) and its query and fragment (tokens), each written ``***``."""
    return _QUERY.sub(r"\1?***", _USERINFO.sub(r"\1***@", text))


async def get_network_link(request: web.Request) -> web.Response:
    principal(request)  # a caller the listener identified (any, as for the picture)
    q = request.query
    text = q.get("interval_s", "")
    if text == "":
        interval = DEFAULT_REFRESH_S
    elif text.isdigit() and 1 <= int(text) <= MAX_REFRESH_S:
        interval = int(text)
    else:
        raise bad_request(f"interval_s must be an integer from 1 to {MAX_REFRESH_S}")
    params = [("format", "kml"), *((k, q[k]) for k in PASSED_ON if q.get(k))]
    href = f"{request.url.origin()}{API}/picture?{urlencode(params)}"
    return web.Response(
        body=network_link(href, interval, "Liaison picture"),
        headers={
            "Content-Type": KML_CONTENT_TYPE,
            "Content-Disposition": 'attachment; filename="liaison-picture-link.kml"',
        },
    )


def feeds_answer(snapshot: Mapping[str, object] | None) -> dict[str, object]:
    """The feeds' status for the REST API: no upstream (a URL may carry credentials) and the
    last error redacted."""
    if snapshot is None:
        return {"tracks": 0, "feeds": []}
    feeds = []
    raw_feeds = snapshot.get("feeds")
    for feed in raw_feeds if isinstance(raw_feeds, list) else []:
        error = feed.get("last_error")
        last = feed.get("last_data_ms")
        feeds.append(
            {
                "name": feed.get("name"),
                "kind": feed.get("kind"),
                "state": feed.get("state"),
                "failures": feed.get("failures"),
                "last_error": redact(error) if isinstance(error, str) else None,
                "last_data": iso(last) if isinstance(last, int) else None,
                **{k: feed.get(k, 0) for k in COUNTS},
            }
        )
    return {"tracks": snapshot.get("tracks", 0), "feeds": feeds}


async def get_feeds(request: web.Request) -> web.Response:
    ctx = context(request)
    principal(request)
    return json_response(feeds_answer(ctx.feeds_status() if ctx.feeds_status else None))


def add_routes(app: web.Application, mode: AuthMode) -> None:
    app.router.add_get(f"{API}/picture/networklink.kml", get_network_link)
    if mode is not AuthMode.ANONYMOUS:
        # Operational state, as /metrics: for callers the listener signed in.
        app.router.add_get(f"{API}/feeds", get_feeds)
