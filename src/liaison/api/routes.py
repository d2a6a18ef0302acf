"""Every route module of the HTTP side, in one list the app hands to ``api.server.start_http``.

A route module exposes ``add_routes(app: web.Application, mode: AuthMode) -> None`` and adds only
the routes that make sense for that listener's way of knowing the caller.
"""

from __future__ import annotations

from liaison.api import (
    enrollment,
    geo_routes,
    items,
    marti,
    mission_contents,
    mission_logs,
    mission_map,
    mission_packages,
    mission_roles,
    missions,
    oauth,
    operator,
    relabel,
    rest,
    takproto,
    tiles,
    web,
    ws,
)
from liaison.api.server import RouteAdder

ROUTE_ADDERS: tuple[RouteAdder, ...] = (
    enrollment.add_routes,
    marti.add_routes,
    mission_logs.add_routes,
    mission_map.add_routes,
    missions.add_routes,
    mission_contents.add_routes,
    mission_packages.add_routes,
    mission_roles.add_routes,
    rest.add_routes,
    web.add_routes,
    ws.add_routes,
    takproto.add_routes,
    oauth.add_routes,
    operator.add_routes,
    relabel.add_routes,
    items.add_routes,
    tiles.add_routes,
    geo_routes.add_routes,
)
