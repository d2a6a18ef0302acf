"""The OpenAPI document: valid OpenAPI 3.1 for every listener, and it describes every REST route."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from liaison.api import (
    geo_routes,
    items,
    mission_map,
    oauth,
    openapi,
    operator,
    relabel,
    rest,
    tiles,
    ws,
)
from liaison.api import web as web_pages
from liaison.api.auth import AuthMode
from liaison.api.bearer import TOKENS_KEY
from liaison.api.context import CONTEXT_KEY, ApiContext
from liaison.api.server import make_token_service
from liaison.config import Config
from liaison.identity.users import UserDirectory
from liaison.latest import MemoryLatestState
from liaison.metrics import Metrics
from liaison.model.principal import Principal
from liaison.query import Query
from liaison.router import Router
from liaison.storage.files import FileStore
from liaison.storage.memory import MemoryStore


def _context(tmp_path: Path) -> ApiContext:
    metrics = Metrics()
    router = Router(metrics=metrics, clock_ms=lambda: 0, latest=MemoryLatestState())
    return ApiContext(
        config=Config(data_dir=tmp_path),
        router=router,
        query=Query(router, MemoryStore(), lambda: FileStore.open(tmp_path / "files")),
        metrics=metrics,
        server_pki=None,
        users=UserDirectory.in_memory(),
        clock_ms=lambda: 0,
        principal_from_certificate=lambda der, peer: None,
        principal_from_user=lambda name: None,
        principal_anonymous=lambda peer, listener: Principal(name=f"{listener}:{peer}"),
        close_sessions_of=lambda name: 0,
    )


def _rest_routes(ctx: ApiContext, mode: AuthMode) -> set[tuple[str, str]]:
    """(method, path) of every route the REST and WebSocket modules add on a listener."""
    app = web.Application()
    app[CONTEXT_KEY] = ctx
    app[TOKENS_KEY] = make_token_service(ctx)
    rest.add_routes(app, mode)
    web_pages.add_routes(app, mode)
    ws.add_routes(app, mode)
    relabel.add_routes(app, mode)
    items.add_routes(app, mode)
    tiles.add_routes(app, mode)
    mission_map.add_routes(app, mode)
    geo_routes.add_routes(app, mode)
    oauth.add_routes(app, mode)
    operator.add_routes(app, mode)
    routes: set[tuple[str, str]] = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD" and isinstance(path, str):
            routes.add((route.method.lower(), path))
    return routes


@pytest.mark.parametrize("mode", list(AuthMode))
def test_spec_is_valid_and_covers_every_route(mode: AuthMode, tmp_path: Path) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    doc = openapi.spec(mode)
    validator.validate(doc)
    described = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    served = {
        (m, p)
        for m, p in _rest_routes(_context(tmp_path), mode)
        # The web map's and the console's own pages and files are not API.
        if p not in ("/", "/console") and not p.startswith("/static/")
    }
    assert served == described


def test_spec_is_a_fresh_copy_each_time() -> None:
    first = openapi.spec(AuthMode.MTLS)
    first["paths"].clear()
    assert openapi.spec(AuthMode.MTLS)["paths"]
