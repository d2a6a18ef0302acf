"""The operator API (``/api/v1/admin/...``): users, certificates, status and the audit log's
check, for the operator console (docs/api.md, "Operator API").

Every route is for operators only, through the one check of ``api.roles`` (403
``{"error": "operator role required"}``, counted and recorded as for ``/metrics``). Each route
is a thin layer over what the command line already does, so a change made here is the change
``liaison user ...`` makes: ``liaison.admin`` adds users, revokes them (the session sweep then
ends their live sessions, as after ``liaison user revoke``), sets passwords, issues enrollment
links and builds connection packages; ``liaison.audit.verify`` checks the audit log;
the status is the live form of the federation status file and of ``GET /api/v1/feeds``; the
counters are read from the metrics registry.

State-changing calls are POSTs with a JSON body (``Content-Type: application/json``, which a
cross-site form cannot send), refused when a browser marks them cross-site, and, with a web
session cookie, need the session's ``X-CSRF-Token`` (checked by the auth middleware for every
such call). Each action (the POSTs and the package download, which carries a truststore) leaves
an ``admin`` record in the audit log (labels on) and a line in the server log, with the HTTP
status it was answered with; while the audit log cannot be written they are refused (503)
before anything changes.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client.metrics_core import Metric

from liaison import admin
from liaison import audit as audit_mod
from liaison.api.auth import AuthMode, client_address
from liaison.api.context import ApiContext, context
from liaison.api.files import content_disposition, refuse_cross_site
from liaison.api.geo_routes import feeds_answer
from liaison.api.geojson import iso
from liaison.api.rest import bad_request, clearance_banner, json_response, read_json
from liaison.api.roles import require_operator
from liaison.errors import PkiError, StorageError
from liaison.gate import audit_paths, load_public_key
from liaison.identity import packages
from liaison.identity.certs import ServerPki
from liaison.identity.issue import IssuedRecord, list_issued
from liaison.identity.users import User
from liaison.model.principal import Principal

log = logging.getLogger(__name__)

ADMIN = "/api/v1/admin"
# The audit record kind of an operator action.
ADMIN_RECORD = "admin"
# The longest a GET /api/v1/admin/audit spends checking the log; a longer log is answered with
# what was checked ("complete": false). About a million records a minute on one core.
AUDIT_VERIFY_BUDGET_S = 5.0
# Default and largest window of GET /api/v1/admin/certificates?within_days=.
DEFAULT_WITHIN_DAYS = admin.DOCTOR_WINDOW_DAYS
MAX_WITHIN_DAYS = 3650
# The key counters of GET /api/v1/admin/status, by the name a scraper of /metrics sees (a
# counter summed over its label); read from the registry, 0 while one is not registered.
KEY_COUNTERS = (
    "liaison_subscribers",
    "liaison_latest_uids",
    "liaison_missions",
    "liaison_events_in_total",
    "liaison_deliveries_total",
    "liaison_denied_total",
    "liaison_ingest_rejected_total",
    "liaison_connections_total",
    "liaison_connections_refused_total",
    "liaison_sessions_closed_total",
    "liaison_ws_connections_total",
    "liaison_http_auth_failed_total",
    "liaison_role_denied_total",
    "liaison_store_dropped_total",
)
# Where a user comes from: the users file (what the routes below change), or the directory
# (LDAP / Active Directory, docs/directory.md: listed only; revoked there means gone, disabled
# or no longer mapped in the directory).
USERS_FILE = "users_file"
DIRECTORY = "directory"
# The longest target (a user name, as sent) an ``admin`` record keeps; names are at most 64.
MAX_TARGET_CHARS = 128
CLIENTS = ("atak", "itak")
STYLES = ("enrollment", "certificate")
ZIP = "application/zip"

_TARGET_KEY: web.RequestKey[str] = web.RequestKey("liaison.admin.target", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_T = TypeVar("_T")


# --- shapes -------------------------------------------------------------------------------------


def _error(status: type[web.HTTPException], message: str) -> web.HTTPException:
    return status(text=json.dumps({"error": message}), content_type="application/json")


def _when(t: dt.datetime | None) -> str | None:
    return iso(int(t.timestamp() * 1000)) if t is not None else None


def certificate_json(record: IssuedRecord, now: dt.datetime, within_days: int) -> dict[str, Any]:
    return {
        "serial": f"{record.serial:x}",
        "common_name": record.common_name,
        "fingerprint_sha256": record.fingerprint_sha256,
        "not_before": _when(record.not_before),
        "not_after": _when(record.not_after),
        "revoked": record.revoked,
        "revoked_at": _when(record.revoked_at),
        "expired": record.not_after <= now,
        "expiring": not record.revoked and record.not_after <= now + dt.timedelta(days=within_days),
    }


def user_json(
    ctx: ApiContext,
    user: User,
    issued: dict[int, IssuedRecord],
    now: dt.datetime,
    source: str = USERS_FILE,
) -> dict[str, Any]:
    who = None if user.revoked else ctx.principal_from_user(user.name)
    certs = []
    for serial in user.cert_serials:
        record = issued.get(serial)
        if record is not None:
            certs.append(certificate_json(record, now, DEFAULT_WITHIN_DAYS))
    return {
        "name": user.name,
        "source": source,
        "org": user.org,
        "profile": user.profile,
        "in_groups": list(user.in_groups),
        "out_groups": list(user.out_groups),
        "clearance": clearance_banner(ctx.router.policy, who.auths) if who else None,
        "revoked": user.revoked,
        # A revoked user cannot sign in at all, whatever is still stored (users.py refuses).
        "password": user.password_hash is not None and not user.revoked,
        "live_tokens": 0 if user.revoked else sum(1 for t in user.tokens if t.live(now)),
        "created_at": _when(user.created_at),
        "certificates": certs,
    }


def _issued(server_pki: ServerPki | None) -> list[IssuedRecord]:
    if server_pki is None or not server_pki.index.exists():
        return []
    return list_issued(server_pki)


def _now(ctx: ApiContext) -> dt.datetime:
    return dt.datetime.fromtimestamp(ctx.clock_ms() / 1000, tz=dt.UTC)


# --- the role check and the audit record ----------------------------------------------------------


def _operator(request: web.Request) -> Principal:
    """The caller when an operator (api.roles: the one check, counted by route template)."""
    resource = request.match_info.route.resource
    return require_operator(request, resource.canonical if resource is not None else request.path)


def audited(action: str) -> Callable[[Handler], Handler]:
    """An operator action: refused (503) while the audit log cannot be written, else done and
    recorded with the status it was answered with (an ``admin`` record, and the server log)."""

    def wrap(handler: Handler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            who = _operator(request)
            ctx = context(request)
            gate = ctx.router.gate
            if gate is not None and gate.audit_failed:
                raise _error(web.HTTPServiceUnavailable, "audit log unavailable")
            refuse_cross_site(request)
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                _record(request, who, action, status)

        return run

    return wrap


def _record(request: web.Request, who: Principal, action: str, status: int) -> None:
    ctx = context(request)
    # Bounded: a record must stay far below the audit log's record limit whatever was sent.
    target = (request.get(_TARGET_KEY) or request.match_info.get("name", ""))[:MAX_TARGET_CHARS]
    fields: dict[str, object] = {
        "who": who.name,
        "org": who.org or "",
        "action": action,
        "target": target,
        "status": status,
        "address": client_address(request),
    }
    log.info("operator %s (%s) %s %r: %d", who.name, who.org or "-", action, target, status)
    gate = ctx.router.gate
    if gate is not None and not gate.record([(ADMIN_RECORD, fields)]):
        log.error("operator action %s %r not audited: the audit log failed", action, target)


async def _json_object(request: web.Request) -> dict[str, Any]:
    doc = await read_json(request)
    if not isinstance(doc, dict):
        raise bad_request("body must be a JSON object")
    return doc


def _string_list(doc: dict[str, Any], key: str) -> list[str] | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"{key} must be a list of strings")
    return value


def _optional_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise bad_request(f"{key} must be a string")
    return value


def _existing_user(ctx: ApiContext, name: str) -> User:
    user = ctx.users.get(name)
    if user is None:
        raise _error(web.HTTPNotFound, "no such user")
    return user


async def _admin_call(call: Callable[[], _T]) -> _T:
    """A ``liaison.admin`` function on a worker thread (file locks, scrypt, RSA keys), its
    refusals answered as the command line words them (400, 404 for an unknown user)."""
    try:
        return await asyncio.to_thread(call)
    except admin.AdminError as exc:
        raise bad_request(str(exc)) from None
    except KeyError:
        raise _error(web.HTTPNotFound, "no such user") from None
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    except PkiError as exc:
        raise bad_request(str(exc)) from None


# --- users --------------------------------------------------------------------------------------


async def get_users(request: web.Request) -> web.Response:
    _operator(request)
    ctx = context(request)
    now = _now(ctx)
    records = await asyncio.to_thread(_issued, ctx.server_pki)
    issued = {r.serial: r for r in records}
    users = await asyncio.to_thread(ctx.users.list_users)
    out = [user_json(ctx, u, issued, now) for u in users]
    if ctx.directory is not None:
        # A name of the users file is that local user, whatever the directory says.
        local = {u.name for u in users}
        for name in sorted(set(ctx.directory.names()) - local):
            found = ctx.directory.get(name)
            if found is not None:
                out.append(user_json(ctx, found, issued, now, DIRECTORY))
    return json_response({"users": out})


def _link_json(link: admin.EnrollmentLink) -> dict[str, Any]:
    png = link.qr_png.read_bytes()
    return {
        "url": link.url,
        "expires_at": _when(link.expires_at),
        "qr_png": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
    }


@audited("user_add")
async def post_user(request: web.Request) -> web.Response:
    ctx = context(request)
    doc = await _json_object(request)
    name = doc.get("name")
    org = doc.get("org")
    if not isinstance(name, str) or not isinstance(org, str):
        raise bad_request("name and org are required strings")
    request[_TARGET_KEY] = name
    groups = _string_list(doc, "groups")
    in_groups = _string_list(doc, "in_groups")
    out_groups = _string_list(doc, "out_groups")
    profile = _optional_str(doc, "profile")
    password = _optional_str(doc, "password")
    hours = doc.get("token_ttl_hours")
    if password is not None and hours is not None:
        raise bad_request("give password or token_ttl_hours, not both")
    if hours is None:
        hours = admin.DEFAULT_TOKEN_TTL_HOURS
    if isinstance(hours, bool) or not isinstance(hours, int | float):
        raise bad_request("token_ttl_hours must be a number")
    try:
        admin.check_group_args(groups, in_groups, out_groups)
        admin.check_token_hours(float(hours))
    except (admin.AdminError, ValueError) as exc:
        raise bad_request(str(exc)) from None
    if ctx.users.get(name) is not None:
        raise _error(web.HTTPConflict, "a user of that name exists")
    added = await _admin_call(
        lambda: admin.add_user(
            ctx.config,
            name=name,
            org=org,
            profile=profile,
            groups=groups or (),
            in_groups=in_groups,
            out_groups=out_groups,
            password=password,
            token_ttl_s=None if password is not None else float(hours) * 3600,
        )
    )
    records = await asyncio.to_thread(_issued, ctx.server_pki)
    issued = {r.serial: r for r in records}
    return json_response(
        {
            # As stored now: with the token the link carries.
            "user": user_json(ctx, ctx.users.get(name) or added.user, issued, _now(ctx)),
            "enrollment": _link_json(added.link) if added.link is not None else None,
        },
        status=201,
    )


@audited("user_revoke")
async def post_revoke(request: web.Request) -> web.Response:
    ctx = context(request)
    name = request.match_info["name"]
    await _json_object(request)
    _existing_user(ctx, name)
    serials = await _admin_call(lambda: admin.revoke_user(ctx.config, name))
    return json_response({"name": name, "revoked_serials": [f"{s:x}" for s in serials]})


@audited("user_password")
async def post_password(request: web.Request) -> web.Response:
    ctx = context(request)
    name = request.match_info["name"]
    doc = await _json_object(request)
    if "password" not in doc:
        raise bad_request("password is required (a string, or null to remove it)")
    password = _optional_str(doc, "password")
    _existing_user(ctx, name)
    await _admin_call(lambda: admin.set_password(ctx.config, name, password))
    return json_response({"name": name, "password": password is not None})


@audited("user_enrollment")
async def post_enrollment(request: web.Request) -> web.Response:
    ctx = context(request)
    name = request.match_info["name"]
    doc = await _json_object(request)
    hours = doc.get("token_ttl_hours")
    if hours is None:
        hours = admin.DEFAULT_TOKEN_TTL_HOURS
    if isinstance(hours, bool) or not isinstance(hours, int | float):
        raise bad_request("token_ttl_hours must be a number")
    try:
        admin.check_token_hours(float(hours))
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    user = _existing_user(ctx, name)
    if user.revoked:
        raise _error(web.HTTPConflict, "the user is revoked")
    link = await _admin_call(lambda: admin.new_link(ctx.config, name, ttl_s=float(hours) * 3600))
    return json_response({"name": name, **_link_json(link)}, status=201)


@audited("user_package")
async def get_package(request: web.Request) -> web.Response:
    ctx = context(request)
    name = request.match_info["name"]
    client = request.query.get("client", "atak")
    style = request.query.get("style", "enrollment")
    if client not in CLIENTS:
        raise bad_request("client must be atak or itak")
    if style not in STYLES:
        raise bad_request("style must be enrollment or certificate")
    user = _existing_user(ctx, name)
    if user.revoked:
        raise _error(web.HTTPConflict, "the user is revoked")
    server_pki = ctx.server_pki
    if server_pki is None:
        raise _error(web.HTTPNotFound, "no certificate authority")
    stem = packages.safe_stem(name, "user")
    if style == "certificate":
        # What `liaison user add` (here or on the command line) wrote for this user.
        path = admin.default_out_dir(ctx.config, name) / f"{stem}-{client}.zip"
        try:
            body = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise _error(web.HTTPNotFound, "no pre-issued package for this user") from None
        filename = f"{stem}-{client}.zip"
    else:
        made = await _admin_call(lambda: admin.connection_packages(ctx.config, server_pki, name))
        body = made.atak if client == "atak" else made.itak
        filename = f"{stem}-enroll-{client}.zip"
    return web.Response(
        body=body,
        headers={
            "Content-Type": ZIP,
            "Content-Disposition": content_disposition(filename),
            "Cache-Control": "no-store",
        },
    )


# --- certificates -------------------------------------------------------------------------------


async def get_certificates(request: web.Request) -> web.Response:
    _operator(request)
    ctx = context(request)
    text = request.query.get("within_days", "")
    if text == "":
        within = DEFAULT_WITHIN_DAYS
    elif text.isdigit() and 1 <= int(text) <= MAX_WITHIN_DAYS:
        within = int(text)
    else:
        raise bad_request(f"within_days must be an integer from 1 to {MAX_WITHIN_DAYS}")
    now = _now(ctx)
    records = await asyncio.to_thread(_issued, ctx.server_pki)
    report = await asyncio.to_thread(admin.doctor, ctx.config, within_days=within, now=now)
    return json_response(
        {
            "within_days": within,
            "certificates": [certificate_json(r, now, within) for r in records],
            "expiring": [
                {"what": what, "not_after": _when(when), "expired": when <= now}
                for what, when in report.expiring
            ],
            "problems": report.problems,
        }
    )


# --- status -------------------------------------------------------------------------------------


def key_counters(families: Sequence[Metric]) -> dict[str, int | float]:
    """KEY_COUNTERS from the registry's families: each sample of that name summed over its
    labels (a counter's sample is ``<base>_total``, as /metrics writes it)."""
    out: dict[str, int | float] = dict.fromkeys(KEY_COUNTERS, 0)
    for family in families:
        for sample in family.samples:
            if sample.name in out:
                out[sample.name] += sample.value
    return {k: int(v) if float(v).is_integer() else v for k, v in out.items()}


async def get_status(request: web.Request) -> web.Response:
    _operator(request)
    ctx = context(request)
    fed = ctx.federation_status() if ctx.federation_status is not None else None
    peers = fed.get("peers") if fed is not None else None
    return json_response(
        {
            "time": iso(ctx.clock_ms()),
            "federation": {
                "server_id": fed.get("server_id") if fed is not None else None,
                "peers": peers if isinstance(peers, list) else [],
            },
            "feeds": feeds_answer(ctx.feeds_status() if ctx.feeds_status else None),
            "counters": key_counters(list(ctx.metrics.registry.collect())),
        }
    )


def _verify_json(result: audit_mod.VerifyResult) -> dict[str, Any]:
    failure = result.failure
    return {
        "enabled": True,
        "ok": result.ok,
        "complete": result.complete,
        "records": result.records,
        "checkpoints": result.checkpoints,
        "head_seq": result.head.seq,
        "head_hash": result.head.hash,
        "unsigned_tail": result.unsigned_tail,
        "signatures_checked": result.signatures_checked,
        "failure": (
            {
                "line": failure.line,
                "seq": failure.seq,
                "reason": failure.reason,
                "detail": failure.detail,
            }
            if failure is not None
            else None
        ),
    }


async def get_audit(request: web.Request) -> web.Response:
    _operator(request)
    ctx = context(request)
    gate = ctx.router.gate
    log_path, _key, pub_path = audit_paths(ctx.config.data_dir)
    if gate is None or not log_path.exists():
        return json_response({"enabled": False})
    # Records are written whole on this thread (audit.AuditLog): the size read here ends at a
    # record boundary, and the check stops there whatever is appended meanwhile.
    end = os.stat(log_path).st_size
    public_key = await asyncio.to_thread(load_public_key, pub_path) if pub_path.exists() else None
    deadline = time.monotonic() + AUDIT_VERIFY_BUDGET_S
    try:
        result = await asyncio.to_thread(
            audit_mod.verify, log_path, public_key, end=end, deadline=deadline
        )
    except StorageError as exc:
        log.error("operator audit check: %s", exc)
        raise _error(web.HTTPServiceUnavailable, "audit log unreadable") from None
    return json_response(_verify_json(result))


# --- registration -------------------------------------------------------------------------------


def add_routes(app: web.Application, mode: AuthMode) -> None:
    if mode is AuthMode.ANONYMOUS:
        return  # operators are identified callers: nothing here for the anonymous listener
    r = app.router
    r.add_get(f"{ADMIN}/users", get_users)
    r.add_post(f"{ADMIN}/users", post_user)
    r.add_post(f"{ADMIN}/users/{{name}}/revoke", post_revoke)
    r.add_post(f"{ADMIN}/users/{{name}}/password", post_password)
    r.add_post(f"{ADMIN}/users/{{name}}/enrollment", post_enrollment)
    r.add_get(f"{ADMIN}/users/{{name}}/package", get_package)
    r.add_get(f"{ADMIN}/certificates", get_certificates)
    r.add_get(f"{ADMIN}/status", get_status)
    r.add_get(f"{ADMIN}/audit", get_audit)
