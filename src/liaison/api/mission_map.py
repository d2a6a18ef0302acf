"""A mission's items as GeoJSON for the web map: ``GET /api/v1/missions/{name}/features``.

The Marti mission answers (``api/missions.py``) describe an item by its uid, type, callsign and
position only, without its label; the map needs each item's label banner to mark it and to
compute the page banner. This route hands out the same items, released the same way (the
router's mission side: ``Missions.items``, one access decision and a ``release`` record per item
of another organisation), as the Features the map draws (``api/geojson.event_feature``).
"""

from __future__ import annotations

import logging

from aiohttp import web

from liaison.api.auth import AuthMode
from liaison.api.context import context, principal
from liaison.api.geojson import event_feature, feature_collection
from liaison.api.missions import acceptable_name
from liaison.api.rest import API, json_response
from liaison.errors import PeerError
from liaison.model import labels
from liaison.protocol import cot_xml
from liaison.query import MissionError

log = logging.getLogger(__name__)


async def get_mission_features(request: web.Request) -> web.Response:
    """The visible items of one mission the caller may see, as a FeatureCollection; 404
    ``{"error": "mission not found"}`` for a mission that does not exist or that the caller may
    not see (the two are indistinguishable)."""
    ctx = context(request)
    viewer = principal(request)
    name = request.match_info["name"].strip()
    missions = ctx.query.missions
    if missions is None or not acceptable_name(name):
        return json_response({"error": "mission not found"}, status=404)
    try:
        items = missions.items(viewer, name, path="mission")
    except MissionError:
        missions.m_refused.inc("not_found")
        return json_response({"error": "mission not found"}, status=404)
    policy = ctx.router.policy
    features = []
    for item in items:
        try:
            event = cot_xml.parse_event(item.event.xml)
        except PeerError as exc:  # stored by us after parsing: a bug, not input
            log.error("mission %s item %s does not parse: %s", name, item.uid, exc)
            continue
        label = ctx.router.load_label(item.event.label)
        banner = labels.label_to_banner(policy, label) if policy and label else None
        features.append(event_feature(event, banner))
    return json_response(feature_collection(features))


def add_routes(app: web.Application, mode: AuthMode) -> None:
    app.router.add_get(f"{API}/missions/{{name}}/features", get_mission_features)
