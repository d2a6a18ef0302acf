"""The OpenAPI 3.1 description of the REST API, served at ``/api/v1/openapi.json``.

Written by hand next to the handlers in ``api.rest`` and ``api.ws``; a test validates it with
openapi-spec-validator and runs schemathesis against a live server, so the two cannot drift
apart unnoticed. The Marti API is TAK Server's and is described in docs/api.md instead.
"""

from __future__ import annotations

import copy
from typing import Any

from liaison import __version__
from liaison.api.auth import AuthMode
from liaison.query import MAX_QUERY_LIMIT

_JSON = "application/json"

_ERROR = {"$ref": "#/components/schemas/Error"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_NO_CONTROL = r"^[^\u0000-\u001f]*$"
_NULLABLE_NUMBER = {"type": ["number", "null"]}

_POSITION = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 3}

_GEOMETRY = {
    "type": "object",
    "required": ["type", "coordinates"],
    "properties": {
        "type": {"enum": ["Point", "LineString", "Polygon"]},
        "coordinates": {"type": "array"},
    },
}

_FEATURE = {
    "type": "object",
    "required": ["type", "id", "geometry", "properties"],
    "properties": {
        "type": {"const": "Feature"},
        "id": {"type": "string"},
        "geometry": {
            "type": "object",
            "required": ["type", "coordinates"],
            "properties": {"type": {"const": "Point"}, "coordinates": _POSITION},
        },
        "properties": {
            "type": "object",
            "required": [
                "uid",
                "type",
                "how",
                "callsign",
                "team",
                "role",
                "time",
                "start",
                "stale",
                "course",
                "speed",
                "remarks",
                "label",
            ],
            "properties": {
                "uid": {"type": "string"},
                "type": {"type": "string", "description": "CoT type, e.g. a-f-G-U-C"},
                "how": {"type": "string"},
                "callsign": _NULLABLE_STRING,
                "team": _NULLABLE_STRING,
                "role": _NULLABLE_STRING,
                "time": {"type": "string", "format": "date-time"},
                "start": {"type": "string", "format": "date-time"},
                "stale": {"type": "string", "format": "date-time"},
                "course": _NULLABLE_NUMBER,
                "speed": _NULLABLE_NUMBER,
                "remarks": _NULLABLE_STRING,
                "label": {
                    "type": ["string", "null"],
                    "description": "Banner of the item's confidentiality label, e.g. "
                    "SECRET//REL TO USA, UKR; null without a label policy.",
                },
                "shape": {
                    **_GEOMETRY,
                    "description": "Outline of a drawing (u-d-*) or route (b-m-r) from its "
                    "<link point=...> list: a LineString or Polygon; a range-and-bearing line "
                    "(u-rb-a) as a LineString from its point to its end.",
                },
                "creator": {
                    "type": "string",
                    "description": "Who drew the item (detail/creator@uid), when it says: "
                    "liaison-web-<name> for the web map's drawings.",
                },
                "origin": {
                    "type": "string",
                    "description": "Where the server got the item, when not from its own "
                    "clients: feed:NAME (a feed) or partner (a federation link).",
                },
                "ellipse": {
                    "type": "object",
                    "properties": {
                        "major": _NULLABLE_NUMBER,
                        "minor": _NULLABLE_NUMBER,
                        "angle": _NULLABLE_NUMBER,
                    },
                },
                "received": {
                    "type": "string",
                    "format": "date-time",
                    "description": "History only: when the server received this version.",
                },
            },
        },
    },
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "Feature": _FEATURE,
    "FeatureCollection": {
        "type": "object",
        "required": ["type", "features"],
        "properties": {
            "type": {"const": "FeatureCollection"},
            "features": {"type": "array", "items": {"$ref": "#/components/schemas/Feature"}},
        },
    },
    "Track": {
        "type": "object",
        "required": ["type", "id", "geometry", "properties"],
        "properties": {
            "type": {"const": "Feature"},
            "id": {"type": "string"},
            "geometry": {
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "required": ["type", "coordinates"],
                        "properties": {
                            "type": {"const": "LineString"},
                            "coordinates": {"type": "array", "items": _POSITION, "minItems": 2},
                        },
                    },
                ],
                "description": "null when fewer than two positions are known (RFC 7946 3.1.4).",
            },
            "properties": {
                "type": "object",
                "required": ["uid", "times"],
                "properties": {
                    "uid": {"type": "string"},
                    "times": {"type": "array", "items": {"type": "string", "format": "date-time"}},
                },
            },
        },
    },
    "Me": {
        "type": "object",
        "required": ["name", "org", "groups", "clearance", "csrf"],
        "properties": {
            "name": {"type": "string"},
            "org": _NULLABLE_STRING,
            "groups": {"type": "array", "items": {"type": "string"}},
            "in_groups": {"type": "array", "items": {"type": "string"}},
            "out_groups": {"type": "array", "items": {"type": "string"}},
            "clearance": {
                "type": ["string", "null"],
                "description": "The caller's authorizations as a banner; null without a policy.",
            },
            "csrf": {
                "type": ["string", "null"],
                "description": "Web sessions only: send it as X-CSRF-Token on every non-GET call.",
            },
            "uid": {"type": "string", "description": "CoT uid of this web user's chats."},
            "roles": {
                "type": "array",
                "items": {"type": "string", "enum": ["operator"]},
                "description": "Liaison's roles of the caller: operator for members of "
                "roles.operator_group (who may open /console and call /api/v1/admin).",
            },
            "classifications": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The label policy's classifications, lowest first; empty without.",
            },
        },
    },
    "Client": {
        "type": "object",
        "required": ["uid", "callsign", "type", "team", "role", "last_event_time", "label"],
        "properties": {
            "uid": {"type": "string"},
            "callsign": _NULLABLE_STRING,
            "type": {"type": "string"},
            "team": _NULLABLE_STRING,
            "role": _NULLABLE_STRING,
            "last_event_time": {"type": "string", "format": "date-time"},
            "connected": {"type": "boolean"},
            "label": _NULLABLE_STRING,
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "version", "uptime_s", "counts"],
        "properties": {
            "status": {"const": "ok"},
            "version": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "uptime_s": {"type": "number"},
            "counts": {
                "type": "object",
                "description": "What the caller may see, never server-wide totals.",
                "properties": {
                    "items": {"type": "integer", "minimum": 0},
                    "clients": {"type": "integer", "minimum": 0},
                },
            },
        },
    },
    "Feeds": {
        "type": "object",
        "required": ["tracks", "feeds"],
        "properties": {
            "tracks": {"type": "integer", "minimum": 0},
            "feeds": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "kind", "state", "last_error", "last_data"],
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string"},
                        "state": {"enum": ["starting", "running", "failing", "stopped"]},
                        "failures": {"type": "integer", "minimum": 0},
                        "last_error": _NULLABLE_STRING,
                        "last_data": {"type": ["string", "null"], "format": "date-time"},
                        **{
                            k: {"type": "integer", "minimum": 0}
                            for k in ("reports", "published", "refused", "invalid")
                        },
                        "failures_total": {"type": "integer", "minimum": 0},
                    },
                },
            },
        },
    },
    "ChatMessage": {
        "type": "object",
        "required": ["uid", "sender_uid", "callsign", "text", "chatroom", "time", "label"],
        "properties": {
            "uid": {"type": "string"},
            "sender_uid": _NULLABLE_STRING,
            "callsign": _NULLABLE_STRING,
            "text": {"type": "string"},
            "chatroom": _NULLABLE_STRING,
            "time": {"type": "string", "format": "date-time"},
            "label": _NULLABLE_STRING,
        },
    },
    "ChatRequest": {
        "type": "object",
        "required": ["text"],
        "properties": {
            # Not blank; no control characters but tab and newline (what post_chat checks).
            "text": {
                "type": "string",
                "minLength": 1,
                "maxLength": 4000,
                "pattern": r"^[^\u0000-\u0008\u000b-\u001f]*\S[^\u0000-\u0008\u000b-\u001f]*$",
            },
            "chatroom": {"type": "string", "maxLength": 256, "pattern": _NO_CONTROL},
            "to_uid": {"type": "string", "maxLength": 256, "pattern": _NO_CONTROL},
            "to_callsign": {"type": "string", "maxLength": 256, "pattern": _NO_CONTROL},
            "label": {
                "type": "string",
                "maxLength": 256,
                "pattern": _NO_CONTROL,
                "description": "The label to send with, as a banner (SECRET//REL TO USA, UKR);"
                " without it the listener's default label applies.",
            },
        },
    },
    "ItemRequest": {
        "type": "object",
        "required": ["kind"],
        "description": "An item drawn on the web map (docs/api.md, Drawing on the map): marker "
        "(lat, lon, type), route (points, 2 or more), polygon (points, 3 or more), circle "
        "(lat, lon, radius) or rangebearing (lat, lon, range, bearing).",
        "properties": {
            "kind": {"enum": ["marker", "route", "polygon", "circle", "rangebearing"]},
            "uid": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,128}$"},
            "type": {"type": "string", "description": "Markers: a CoT atom type (a-f-G-U-C)."},
            "lat": {"type": "number", "minimum": -90, "maximum": 90},
            "lon": {"type": "number", "minimum": -180, "maximum": 180},
            "points": {
                "type": "array",
                "maxItems": 1000,
                "items": {
                    "type": "object",
                    "required": ["lat", "lon"],
                    "properties": {
                        "lat": {"type": "number", "minimum": -90, "maximum": 90},
                        "lon": {"type": "number", "minimum": -180, "maximum": 180},
                    },
                },
            },
            "radius": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000000},
            "range": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000000},
            "bearing": {"type": "number", "minimum": 0, "maximum": 360},
            "callsign": {"type": "string", "maxLength": 64, "pattern": _NO_CONTROL},
            "remarks": {"type": "string", "maxLength": 4000},
            "label": {
                "type": "string",
                "maxLength": 256,
                "pattern": _NO_CONTROL,
                "description": "The label to draw with, as a banner; without it the listener's"
                " default label applies.",
            },
        },
    },
    "ItemResult": {
        "type": "object",
        "required": ["item", "delivered"],
        "properties": {
            "item": {"$ref": "#/components/schemas/Feature"},
            "delivered": {"type": "integer", "minimum": 0},
        },
    },
    "Login": {
        "type": "object",
        "required": ["username", "password"],
        "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
    },
}

_BBOX = {
    "name": "bbox",
    "in": "query",
    "description": "minlon,minlat,maxlon,maxlat (WGS-84 degrees); minlon > maxlon crosses 180.",
    "schema": {"type": "string", "pattern": r"^-?[0-9.]+,-?[0-9.]+,-?[0-9.]+,-?[0-9.]+$"},
}
_TIME = {
    "schema": {"type": "string", "pattern": r"^[0-9]{1,13}$|^[0-9]{4}-[0-9]{2}-[0-9]{2}T.*$"},
    "description": "ms since the epoch, or ISO 8601 with a zone.",
}

_STR_LIST = {"type": "array", "items": {"type": "string"}}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}

_ADMIN_SCHEMAS: dict[str, Any] = {
    "AdminCertificate": {
        "type": "object",
        "required": [
            "serial",
            "common_name",
            "fingerprint_sha256",
            "not_before",
            "not_after",
            "revoked",
            "revoked_at",
            "expired",
            "expiring",
        ],
        "properties": {
            "serial": {"type": "string", "description": "Lower-case hexadecimal."},
            "common_name": {"type": "string"},
            "fingerprint_sha256": {"type": "string"},
            "not_before": {"type": "string", "format": "date-time"},
            "not_after": {"type": "string", "format": "date-time"},
            "revoked": {"type": "boolean"},
            "revoked_at": _NULLABLE_TIME,
            "expired": {"type": "boolean"},
            "expiring": {"type": "boolean"},
        },
    },
    "AdminUser": {
        "type": "object",
        "required": [
            "name",
            "source",
            "org",
            "profile",
            "in_groups",
            "out_groups",
            "clearance",
            "revoked",
            "password",
            "live_tokens",
            "created_at",
            "certificates",
        ],
        "properties": {
            "name": {"type": "string"},
            "source": {"enum": ["users_file", "directory"]},
            "org": {"type": "string"},
            "profile": _NULLABLE_STRING,
            "in_groups": _STR_LIST,
            "out_groups": _STR_LIST,
            "clearance": _NULLABLE_STRING,
            "revoked": {"type": "boolean"},
            "password": {"type": "boolean"},
            "live_tokens": {"type": "integer", "minimum": 0},
            "created_at": _NULLABLE_TIME,
            "certificates": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/AdminCertificate"},
            },
        },
    },
    "EnrollmentLink": {
        "type": "object",
        "required": ["url", "expires_at", "qr_png"],
        "properties": {
            "name": {"type": "string"},
            "url": {"type": "string", "description": "tak://com.atakmap.app/enroll?..."},
            "expires_at": {"type": "string", "format": "date-time"},
            "qr_png": {"type": "string", "description": "data:image/png;base64,..."},
        },
    },
    "NewUser": {
        "type": "object",
        "required": ["name", "org"],
        "properties": {
            "name": {"type": "string"},
            "org": {"type": "string"},
            "profile": {"type": "string"},
            "groups": _STR_LIST,
            "in_groups": _STR_LIST,
            "out_groups": _STR_LIST,
            "password": {"type": "string"},
            "token_ttl_hours": {"type": "number"},
        },
    },
}


def _q(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": schema or {"type": "string", "maxLength": 256},
    }


def _limit(default: int, maximum: int) -> dict[str, Any]:
    return _q(
        "limit",
        "Most items returned.",
        {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
    )


_FORMAT = _q("format", "geojson (default) or cot (<events> XML).", {"enum": ["geojson", "cot"]})


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_BAD = _json(_ERROR, "A parameter is invalid.")
_NOT_FOUND = _json(_ERROR, "No such item, or not one the caller may see (identical answers).")
_GEOJSON_OR_COT = {
    "description": "GeoJSON, or CoT XML with format=cot.",
    "content": {
        _JSON: {"schema": _ref("FeatureCollection")},
        "application/xml": {"schema": {"type": "string"}},
    },
}

_PATHS: dict[str, Any] = {
    "/api/v1/me": {
        "get": {
            "summary": "Who the caller is: name, organisation, groups, clearance, CSRF token.",
            "operationId": "getMe",
            "responses": {"200": _json(_ref("Me"), "The caller.")},
        }
    },
    "/api/v1/picture": {
        "get": {
            "summary": "The current picture the caller may see (latest state of each item).",
            "operationId": "getPicture",
            "parameters": [
                _BBOX,
                _q("type", "CoT type prefix, e.g. a-f."),
                _q("uid", "Exact uid."),
                _q("callsign", "Exact callsign."),
                _q(
                    "format",
                    "geojson (default), cot (<events> XML), kml (KML 2.2) or kmz (zipped KML).",
                    {"enum": ["geojson", "cot", "kml", "kmz"]},
                ),
            ],
            "responses": {
                "200": {
                    "description": "GeoJSON; CoT XML with format=cot; KML or KMZ.",
                    "content": {
                        _JSON: {"schema": _ref("FeatureCollection")},
                        "application/xml": {"schema": {"type": "string"}},
                        "application/vnd.google-earth.kml+xml": {"schema": {"type": "string"}},
                        "application/vnd.google-earth.kmz": {
                            "schema": {"type": "string", "contentMediaType": "application/zip"}
                        },
                    },
                },
                "400": _BAD,
            },
        }
    },
    "/api/v1/picture/networklink.kml": {
        "get": {
            "summary": "A KML NetworkLink that fetches the KML picture every interval_s seconds.",
            "operationId": "getPictureNetworkLink",
            "parameters": [
                _q(
                    "interval_s",
                    "Refresh period in seconds (default 30).",
                    {"type": "integer", "minimum": 1, "maximum": 86400},
                ),
                _BBOX,
                _q("type", "CoT type prefix, passed on to the picture."),
                _q("uid", "Exact uid, passed on to the picture."),
                _q("callsign", "Exact callsign, passed on to the picture."),
            ],
            "responses": {
                "200": {
                    "description": "The NetworkLink document.",
                    "content": {
                        "application/vnd.google-earth.kml+xml": {"schema": {"type": "string"}}
                    },
                },
                "400": _BAD,
            },
        }
    },
    "/api/v1/history": {
        "get": {
            "summary": "Stored history the caller may see, newest first.",
            "operationId": "getHistory",
            "parameters": [
                _q("uid", "Exact uid."),
                _q("type", "CoT type prefix."),
                _q("callsign", "Exact callsign."),
                {"name": "since", "in": "query", **_TIME},
                {"name": "until", "in": "query", **_TIME},
                _BBOX,
                _limit(1000, MAX_QUERY_LIMIT),
                _FORMAT,
            ],
            "responses": {"200": _GEOJSON_OR_COT, "400": _BAD},
        }
    },
    "/api/v1/items/{uid}": {
        "get": {
            "summary": "The latest state of one item.",
            "operationId": "getItem",
            "parameters": [
                {"name": "uid", "in": "path", "required": True, "schema": {"type": "string"}},
                _FORMAT,
            ],
            "responses": {
                "200": {
                    "description": "The item as a Feature, or CoT XML with format=cot.",
                    "content": {
                        _JSON: {"schema": _ref("Feature")},
                        "application/xml": {"schema": {"type": "string"}},
                    },
                },
                "400": _BAD,
                "404": _NOT_FOUND,
            },
        },
        "delete": {
            "summary": "Delete an item the caller drew on the web map (a t-x-d-d).",
            "operationId": "deleteItem",
            "parameters": [
                {"name": "uid", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["uid", "delivered"],
                        "properties": {
                            "uid": {"type": "string"},
                            "delivered": {"type": "integer", "minimum": 0},
                        },
                    },
                    "Deleted; delivered counts the recipients the delete was handed to.",
                ),
                "403": {
                    "description": "Missing CSRF token, a cross-site request, not drawn by the"
                    " caller (reasons: not_creator), or refused by the ingest rules."
                },
                "404": _NOT_FOUND,
            },
        },
    },
    "/api/v1/items": {
        "post": {
            "summary": "Draw an item into the picture as the caller (or replace one it drew).",
            "operationId": "postItem",
            "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("ItemRequest")}}},
            "responses": {
                "201": _json(_ref("ItemResult"), "Drawn."),
                "200": _json(_ref("ItemResult"), "Replaced the caller's item of that uid."),
                "400": _BAD,
                "403": {
                    "description": "Missing CSRF token, a cross-site request, a uid of an item"
                    " the caller did not draw (reasons: not_creator), or refused by the label"
                    " rules."
                },
                "413": {"description": "Body too large."},
                "415": {"description": "The body must be application/json."},
            },
        }
    },
    "/api/v1/items/{uid}/track": {
        "get": {
            "summary": "An item's positions over time, as a LineString Feature.",
            "operationId": "getTrack",
            "parameters": [
                {"name": "uid", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "since", "in": "query", **_TIME},
                {"name": "until", "in": "query", **_TIME},
                _limit(1000, MAX_QUERY_LIMIT),
            ],
            "responses": {
                "200": _json(_ref("Track"), "The track."),
                "400": _BAD,
                "404": _NOT_FOUND,
            },
        }
    },
    "/api/v1/missions/{name}/features": {
        "get": {
            "summary": "The items of one mission the caller may see, with their labels (web map).",
            "operationId": "getMissionFeatures",
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": _json(_ref("FeatureCollection"), "The mission's visible items."),
                "404": _NOT_FOUND,
            },
        }
    },
    "/api/v1/clients": {
        "get": {
            "summary": "Connected TAK clients whose position the caller may see.",
            "operationId": "getClients",
            "responses": {"200": _json({"type": "array", "items": _ref("Client")}, "The clients.")},
        }
    },
    "/api/v1/health": {
        "get": {
            "summary": "Server status, uptime and counts of what the caller may see.",
            "operationId": "getHealth",
            "responses": {"200": _json(_ref("Health"), "Healthy.")},
        }
    },
    "/api/v1/chat": {
        "get": {
            "summary": "Recent GeoChat messages the caller may see, oldest first.",
            "operationId": "getChat",
            "parameters": [_limit(100, 1000), {"name": "since", "in": "query", **_TIME}],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["messages"],
                        "properties": {"messages": {"type": "array", "items": _ref("ChatMessage")}},
                    },
                    "The messages.",
                ),
                "400": _BAD,
            },
        },
        "post": {
            "summary": "Send a GeoChat message as the caller (to everyone, a room or one client).",
            "operationId": "postChat",
            "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("ChatRequest")}}},
            "responses": {
                "201": _json(
                    {
                        "type": "object",
                        "required": ["message", "delivered"],
                        "properties": {
                            "message": _ref("ChatMessage"),
                            "delivered": {"type": "integer", "minimum": 0},
                        },
                    },
                    "Sent; delivered counts the recipients it was handed to.",
                ),
                "400": _BAD,
                "403": {
                    "description": "Missing CSRF token, a cross-site request, or refused by"
                    " the label rules."
                },
                "413": {"description": "Body too large."},
                "415": {"description": "The body must be application/json."},
            },
        },
    },
    "/api/v1/stream": {
        "get": {
            "summary": "WebSocket feed of live events the caller may see.",
            "description": "Upgrade to a WebSocket. JSON text messages: first "
            '{"kind":"snapshot","features":[Feature]}, then {"kind":"update","feature":Feature}, '
            '{"kind":"delete","uid":string} and {"kind":"chat","message":ChatMessage}. A socket '
            "that falls too far behind is closed with code 1013.",
            "operationId": "getStream",
            "responses": {
                "101": {"description": "Switching to the WebSocket protocol."},
                "400": {"description": "Not a WebSocket upgrade request."},
                "403": {"description": "Cross-site request refused."},
            },
        }
    },
    "/api/v1/items/{uid}/label": {
        "post": {
            "summary": "Relabel an item (a new version): raising is open to the"
            " originating organisation's users who may see it (partners: policy partner_updates);"
            " lowering or widening REL needs a release authority and a justification.",
            "operationId": "postItemLabel",
            "parameters": [
                {"name": "uid", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "requestBody": {
                "required": True,
                "content": {
                    _JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["label"],
                            "properties": {
                                "label": {"type": "string", "maxLength": 256},
                                "justification": {"type": "string", "maxLength": 1024},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["uid", "label", "direction"],
                        "properties": {
                            "uid": {"type": "string"},
                            "label": {"type": "string"},
                            "direction": {"type": "string"},
                        },
                    },
                    "Relabelled; the new version was released to who may now see it.",
                ),
                "400": _BAD,
                "403": {"description": "Refused by the relabelling rules (reasons in the body)."},
                "404": {
                    "description": "No such item, or not visible to the caller; or labels off."
                },
            },
        }
    },
    "/api/v1/tiles": {
        "get": {
            "summary": "The operator's MBTiles set (web.mbtiles): format, vector, zooms, bounds.",
            "operationId": "getTiles",
            "responses": {
                "200": _json({"type": "object"}, "MBTiles metadata."),
                "204": {"description": "No tile set is configured (no body)."},
            },
        }
    },
    "/api/v1/tiles/{z}/{x}/{y}": {
        "get": {
            "summary": "One tile (raster, or a Mapbox Vector Tile), XYZ numbering.",
            "operationId": "getTile",
            "parameters": [
                {"name": n, "in": "path", "required": True, "schema": {"type": "integer"}}
                for n in ("z", "x", "y")
            ],
            "responses": {
                "200": {
                    "description": "The tile: image/png, image/jpeg, image/webp, or "
                    "application/vnd.mapbox-vector-tile (gzip as stored when accepted)."
                },
                "400": {"description": "z, x or y is not an integer."},
                "404": {"description": "No such tile, or no tile set."},
            },
        }
    },
    "/api/v1/pmtiles": {
        "get": {
            "summary": "The operator's PMTiles archive (web.pmtiles), read with HTTP range "
            "requests (RFC 9110 14).",
            "operationId": "getPmtiles",
            "responses": {
                "200": {"description": "The whole archive (application/vnd.pmtiles)."},
                "206": {"description": "The byte range asked for (Content-Range)."},
                "404": {"description": "No PMTiles archive is configured."},
                "416": {"description": "The range is outside the archive."},
            },
        }
    },
    "/api/v1/openapi.json": {
        "get": {
            "summary": "This document.",
            "operationId": "getOpenApi",
            "responses": {"200": _json({"type": "object"}, "The OpenAPI description.")},
        }
    },
}

_METRICS_PATH = {
    "/metrics": {
        "get": {
            "summary": "Server metrics in the Prometheus text format.",
            "operationId": "getMetrics",
            "responses": {
                "200": {
                    "description": (
                        "Prometheus text exposition format 0.0.4; with --workers, every "
                        'worker\'s samples labelled worker="wI" and liaison_worker_up.'
                    ),
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "403": _json(_ERROR, "The caller is not an operator (roles.operator_group)."),
            },
        }
    }
}

_TOKEN_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": ["password", "refresh_token"]},
        "username": {"type": "string"},
        "password": {"type": "string"},
        "refresh_token": {"type": "string"},
    },
}

_OAUTH_ERROR = {
    "type": "object",
    "required": ["error", "error_description"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
}

_TOKEN_RESPONSES: dict[str, Any] = {
    "200": _json(
        {
            "type": "object",
            "required": [
                "access_token",
                "token_type",
                "refresh_token",
                "expires_in",
                "scope",
                "jti",
            ],
            "properties": {
                "access_token": {"type": "string"},
                "token_type": {"const": "bearer"},
                "refresh_token": {"type": "string"},
                "expires_in": {"type": "integer"},
                "scope": {"type": "string"},
                "jti": {"type": "string"},
            },
        },
        "Tokens (RFC 6749 5.1).",
    ),
    "400": _json(
        _OAUTH_ERROR,
        "RFC 6749 5.2 error: invalid_request, invalid_grant, unsupported_grant_type.",
    ),
    "429": _json(
        _OAUTH_ERROR, "Too many failed attempts (temporarily_unavailable); see Retry-After."
    ),
}

_TOKEN_PATHS = {
    "/oauth/token": {
        "post": {
            "summary": "Bearer tokens for a password (RFC 6749 4.3) or a refresh token (6).",
            "operationId": "postOauthToken",
            "security": [],
            "requestBody": {
                "required": True,
                "content": {"application/x-www-form-urlencoded": {"schema": _TOKEN_FORM}},
            },
            "responses": _TOKEN_RESPONSES,
        },
        # The same grants with the parameters in the query string (CloudTAK sends them so).
        "get": {
            "summary": "The same, with the parameters in the query string.",
            "operationId": "getOauthToken",
            "security": [],
            "parameters": [
                {"name": name, "in": "query", "required": name == "grant_type", "schema": schema}
                for name, schema in _TOKEN_FORM["properties"].items()
            ],
            "responses": _TOKEN_RESPONSES,
        },
    }
}

_LOGIN_PATHS = {
    "/login": {
        "get": {
            "summary": "The sign-in page.",
            "operationId": "getLogin",
            "security": [],
            "responses": {
                "200": {
                    "description": "HTML form.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        },
        "post": {
            "summary": "Sign in with username and password; starts a web session (cookie).",
            "operationId": "postLogin",
            "security": [],
            "requestBody": {
                "required": True,
                "content": {
                    _JSON: {"schema": _ref("Login")},
                    "application/x-www-form-urlencoded": {"schema": _ref("Login")},
                },
            },
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["name", "csrf"],
                        "properties": {"name": {"type": "string"}, "csrf": {"type": "string"}},
                    },
                    "Signed in (JSON request): the session cookie is set.",
                ),
                "303": {"description": "Signed in (form request): redirect to the map."},
                "400": _BAD,
                "401": _json(_ERROR, "Wrong credentials."),
                "429": {"description": "Too many failed attempts; see Retry-After."},
            },
        },
    },
    "/logout": {
        "post": {
            "summary": "End the web session.",
            "operationId": "postLogout",
            "responses": {
                "204": {"description": "Signed out; the cookie is cleared."},
                "503": _json(
                    _ERROR,
                    "Sign-ins shared in PostgreSQL and the database unreachable: signed out on"
                    " this node only, the cookie cleared; see Retry-After.",
                ),
            },
        }
    },
}

_FEEDS_PATH: dict[str, Any] = {
    "/api/v1/feeds": {
        "get": {
            "summary": "Each feed's state, last error and counts (docs/feeds.md).",
            "operationId": "getFeeds",
            "responses": {"200": _json(_ref("Feeds"), "The feeds.")},
        }
    }
}

_OPERATOR_ONLY = _json(_ERROR, "The caller is not an operator (roles.operator_group).")
_ADMIN_BAD = _json(_ERROR, "A parameter or the body is invalid.")
_ADMIN_UNKNOWN = _json(_ERROR, "No such user.")
_ADMIN_AUDIT_DOWN = _json(_ERROR, "The audit log cannot be written: nothing was done.")


def _admin_post(
    summary: str, operation: str, body: dict[str, Any], answers: dict[str, Any]
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "operationId": operation,
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "requestBody": {"required": True, "content": {_JSON: {"schema": body}}},
            "responses": {
                **answers,
                "400": _ADMIN_BAD,
                "403": _OPERATOR_ONLY,
                "404": _ADMIN_UNKNOWN,
                "415": {"description": "The body is not application/json."},
                "503": _ADMIN_AUDIT_DOWN,
            },
        }
    }


_TTL_BODY = {"type": "object", "properties": {"token_ttl_hours": {"type": "number"}}}

_ADMIN_PATHS: dict[str, Any] = {
    "/api/v1/admin/users": {
        "get": {
            "summary": "Every user of the users file (operators only).",
            "operationId": "getAdminUsers",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["users"],
                        "properties": {"users": {"type": "array", "items": _ref("AdminUser")}},
                    },
                    "The users.",
                ),
                "403": _OPERATOR_ONLY,
            },
        },
        "post": {
            "summary": "Add a user, as `liaison user add` (operators only).",
            "operationId": "postAdminUser",
            "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("NewUser")}}},
            "responses": {
                "201": _json(
                    {
                        "type": "object",
                        "required": ["user", "enrollment"],
                        "properties": {
                            "user": _ref("AdminUser"),
                            "enrollment": {"oneOf": [_ref("EnrollmentLink"), {"type": "null"}]},
                        },
                    },
                    "Added.",
                ),
                "400": _ADMIN_BAD,
                "403": _OPERATOR_ONLY,
                "409": _json(_ERROR, "A user of that name exists."),
                "415": {"description": "The body is not application/json."},
                "503": _ADMIN_AUDIT_DOWN,
            },
        },
    },
    "/api/v1/admin/users/{name}/revoke": _admin_post(
        "Revoke a user and their certificates, as `liaison user revoke` (operators only).",
        "postAdminRevoke",
        {"type": "object"},
        {
            "200": _json(
                {
                    "type": "object",
                    "required": ["name", "revoked_serials"],
                    "properties": {"name": {"type": "string"}, "revoked_serials": _STR_LIST},
                },
                "Revoked.",
            )
        },
    ),
    "/api/v1/admin/users/{name}/password": _admin_post(
        "Set or remove a user's password (operators only).",
        "postAdminPassword",
        {
            "type": "object",
            "required": ["password"],
            "properties": {"password": _NULLABLE_STRING},
        },
        {
            "200": _json(
                {
                    "type": "object",
                    "required": ["name", "password"],
                    "properties": {"name": {"type": "string"}, "password": {"type": "boolean"}},
                },
                "Set (true) or removed (false).",
            )
        },
    ),
    "/api/v1/admin/users/{name}/enrollment": _admin_post(
        "A new one-time enrollment link and its QR code, as `liaison user token`.",
        "postAdminEnrollment",
        _TTL_BODY,
        {
            "201": _json(_ref("EnrollmentLink"), "The link (its token is shown only here)."),
            "409": _json(_ERROR, "The user is revoked."),
        },
    ),
    "/api/v1/admin/users/{name}/package": {
        "get": {
            "summary": "A user's connection package (operators only).",
            "operationId": "getAdminPackage",
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                _q("client", "atak (default; also WinTAK) or itak.", {"enum": ["atak", "itak"]}),
                _q(
                    "style",
                    "enrollment (default): truststore only; certificate: the package "
                    "`user add` wrote, with the client certificate and key.",
                    {"enum": ["enrollment", "certificate"]},
                ),
            ],
            "responses": {
                "200": {
                    "description": "The zip.",
                    "content": {"application/zip": {"schema": {"type": "string"}}},
                },
                "400": _ADMIN_BAD,
                "403": _OPERATOR_ONLY,
                "404": _json(_ERROR, "No such user, or no pre-issued package."),
                "409": _json(_ERROR, "The user is revoked."),
                "503": _ADMIN_AUDIT_DOWN,
            },
        }
    },
    "/api/v1/admin/certificates": {
        "get": {
            "summary": "Issued client certificates and what expires soon (operators only).",
            "operationId": "getAdminCertificates",
            "parameters": [
                _q(
                    "within_days",
                    "The expiry window in days.",
                    {"type": "integer", "minimum": 1, "maximum": 3650, "default": 30},
                )
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["within_days", "certificates", "expiring", "problems"],
                        "properties": {
                            "within_days": {"type": "integer"},
                            "certificates": {
                                "type": "array",
                                "items": _ref("AdminCertificate"),
                            },
                            "expiring": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["what", "not_after", "expired"],
                                    "properties": {
                                        "what": {"type": "string"},
                                        "not_after": {"type": "string", "format": "date-time"},
                                        "expired": {"type": "boolean"},
                                    },
                                },
                            },
                            "problems": _STR_LIST,
                        },
                    },
                    "The certificates.",
                ),
                "400": _ADMIN_BAD,
                "403": _OPERATOR_ONLY,
            },
        }
    },
    "/api/v1/admin/status": {
        "get": {
            "summary": "Partner links, feeds and key counters (operators only).",
            "operationId": "getAdminStatus",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["time", "federation", "feeds", "counters"],
                        "properties": {
                            "time": {"type": "string", "format": "date-time"},
                            "federation": {
                                "type": "object",
                                "required": ["server_id", "peers"],
                                "properties": {
                                    "server_id": _NULLABLE_STRING,
                                    "peers": {"type": "array", "items": {"type": "object"}},
                                },
                            },
                            "feeds": _ref("Feeds"),
                            "counters": {
                                "type": "object",
                                "additionalProperties": {"type": "number"},
                            },
                        },
                    },
                    "The status.",
                ),
                "403": _OPERATOR_ONLY,
            },
        }
    },
    "/api/v1/admin/audit": {
        "get": {
            "summary": "The audit log's check, as `liaison audit verify` (operators only).",
            "operationId": "getAdminAudit",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["enabled"],
                        "properties": {
                            "enabled": {"type": "boolean"},
                            "ok": {"type": "boolean"},
                            "complete": {"type": "boolean"},
                            "records": {"type": "integer"},
                            "checkpoints": {"type": "integer"},
                            "head_seq": {"type": "integer"},
                            "head_hash": {"type": "string"},
                            "unsigned_tail": {"type": "integer"},
                            "signatures_checked": {"type": "boolean"},
                            "failure": {"type": ["object", "null"]},
                        },
                    },
                    'The result; {"enabled": false} without an audit log.',
                ),
                "403": _OPERATOR_ONLY,
                "503": _json(_ERROR, "The audit log cannot be read."),
            },
        }
    },
}

_SECURITY_SCHEMES: dict[AuthMode, dict[str, Any]] = {
    AuthMode.MTLS: {
        "clientCertificate": {
            "type": "mutualTLS",
            "description": "A client certificate issued by this server's CA.",
        }
    },
    AuthMode.PASSWORD: {
        "basic": {"type": "http", "scheme": "basic"},
        "session": {
            "type": "apiKey",
            "in": "cookie",
            "name": "liaison_session",
            "description": "Web session from POST /login; non-GET calls also need X-CSRF-Token.",
        },
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access token from POST /oauth/token.",
        },
    },
    AuthMode.ANONYMOUS: {},
}


def spec(mode: AuthMode) -> dict[str, Any]:
    """The OpenAPI document for a listener (paths differ slightly between listeners)."""
    paths = copy.deepcopy(_PATHS)
    if mode is AuthMode.ANONYMOUS:
        # No drawing on the anonymous listener (api/items.py).
        del paths["/api/v1/items"]
        del paths["/api/v1/items/{uid}"]["delete"]
    if mode is not AuthMode.ANONYMOUS:
        paths.update(copy.deepcopy(_METRICS_PATH))
        paths.update(copy.deepcopy(_FEEDS_PATH))
        paths.update(copy.deepcopy(_ADMIN_PATHS))
    if mode is AuthMode.PASSWORD:
        paths.update(copy.deepcopy(_LOGIN_PATHS))
        paths.update(copy.deepcopy(_TOKEN_PATHS))
    schemes = copy.deepcopy(_SECURITY_SCHEMES[mode])
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Liaison REST API",
            "version": __version__,
            "description": "The picture, history, clients and chat of a Liaison server, filtered "
            "for the caller by the same access decision as live delivery. Items the caller may "
            "not see are answered exactly like items that do not exist.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": paths,
        "components": {
            "schemas": copy.deepcopy({**_SCHEMAS, **_ADMIN_SCHEMAS}),
            "securitySchemes": schemes,
        },
    }
    if schemes:
        doc["security"] = [{name: []} for name in schemes]
    return doc
