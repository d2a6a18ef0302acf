"""Bearer tokens (issue 16) against a running server over TLS: ``/oauth/token`` as CloudTAK and
ATAK call it, the tokens checked with jwcrypto (not the library that signs them), bearer on Marti,
REST and ``/takproto/1``, refresh, rotation, tampered, expired and revoked tokens, and the
operator role on ``/metrics``."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import takproto
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwk, jws, jwt

from liaison.app import Server
from liaison.cli import main
from liaison.errors import StorageError
from liaison.gate import audit_paths
from liaison.identity.tokens import TokenService, keyring_path
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import WAIT_S, clients, connect_tls, sa_event
from tests.integration.http.http_support import (
    PASSWORD,
    add_user,
    browser_session,
    cert_session,
    certs,
    enroll_url,
    https_url,
    write_groups,
)
from tests.integration.test_labels_e2e import POLICY

TOKEN_CONTENT_TYPE = "application/json;charset=UTF-8"


def _where(server: Server) -> list[str]:
    return ["--data-dir", str(server.config.data_dir), "--public-host", "localhost"]


def _keyring(server: Server) -> list[dict[str, Any]]:
    doc = json.loads(keyring_path(server.config.data_dir).read_bytes())
    return list(doc["keys"])


def _public_jwk(pem: str) -> jwk.JWK:
    """The public half of a keyring key, as jwcrypto reads it (independently of PyJWT)."""
    private = jwk.JWK.from_pem(pem.encode("ascii"))
    return jwk.JWK.from_json(private.export_public())


def _verify(server: Server, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of ``token``, its signature checked by jwcrypto with the key its ``kid``
    names in the keyring; raises when it does not verify."""
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    [pem] = [k["pem"] for k in _keyring(server) if k["kid"] == header["kid"]]
    checked = jwt.JWT(jwt=token, key=_public_jwk(pem), algs=["RS256"])
    return header, json.loads(checked.claims)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _forge(header: dict[str, Any], claims: dict[str, Any], key: jwk.JWK | None) -> str:
    """A compact JWS made with jwcrypto (``key`` None: unsigned, ``alg: none``)."""
    if key is None:
        return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."
    token = jws.JWS(json.dumps(claims).encode())
    token.add_signature(key, alg=header["alg"], protected=json.dumps(header))
    return str(token.serialize(compact=True))


async def _grant(
    http: aiohttp.ClientSession, server: Server, form: dict[str, str], **kw: Any
) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    async with http.post(enroll_url(server, "/oauth/token"), data=form, **kw) as r:
        return r.status, await r.json(content_type=None), r


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _status(http: aiohttp.ClientSession, url: str, token: str) -> int:
    async with http.get(url, headers=_bearer(token)) as r:
        await r.read()
        return r.status


async def test_password_grant_as_atak_and_cloudtak(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        add_user(server, "webred", "RED", ["red"])
        async with browser_session(server) as http:
            # ATAK-style: a form POST (some clients add their own Basic client credentials,
            # which are not a user's and do not get in the way).
            form = {"grant_type": "password", "username": "webred", "password": PASSWORD}
            status, body, r = await _grant(
                http, server, form, headers=_basic("tak-client", "client-secret")
            )
            assert status == 200, body
            assert r.headers["Content-Type"] == TOKEN_CONTENT_TYPE
            assert r.headers["Cache-Control"] == "no-store"
            assert r.headers["Pragma"] == "no-cache"
            assert set(body) == {
                "access_token",
                "token_type",
                "refresh_token",
                "expires_in",
                "scope",
                "jti",
            }
            assert body["token_type"] == "bearer"
            assert body["expires_in"] == server.config.token_access_ttl_s == 600
            assert body["scope"] == "liaison"
            assert not http.cookie_jar.filter_cookies(enroll_url(server, "/"))  # no session

            header, claims = _verify(server, body["access_token"])
            assert header["alg"] == "RS256" and header["typ"] == "at+jwt"
            assert header["kid"] == _keyring(server)[-1]["kid"]
            assert claims["sub"] == "webred"
            assert claims["jti"] == body["jti"]
            assert claims["groups"] == ["red"] and claims["roles"] == []
            assert claims["exp"] - claims["iat"] == 600
            assert claims["nbf"] == claims["iat"] and abs(claims["iat"] - time.time()) < 60
            assert claims["aud"] == "liaison" and claims["iss"] == "https://localhost"
            rheader, rclaims = _verify(server, body["refresh_token"])
            assert rheader["typ"] == "rt+jwt" and rclaims["sub"] == "webred"
            assert rclaims["ati"] == body["jti"]
            assert rclaims["exp"] - rclaims["iat"] == server.config.token_refresh_ttl_s

            # CloudTAK-style: the parameters in the query string (GET in its api/lib/api/oauth.ts).
            query = "grant_type=password&username=webred&password=" + PASSWORD.replace(" ", "+")
            async with http.get(enroll_url(server, f"/oauth/token?{query}")) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == TOKEN_CONTENT_TYPE
                cloudtak = await r.json(content_type=None)
            # CloudTAK reads sub, aud, nbf, exp and iat from the payload.
            _, claims = _verify(server, cloudtak["access_token"])
            assert {"sub", "aud", "nbf", "exp", "iat"} <= set(claims)
            assert claims["jti"] != body["jti"]

            # Errors are RFC 6749 5.2's, as CloudTAK reads them.
            form["password"] = "wrong password, quite long"
            status, err, r = await _grant(http, server, form)
            assert status == 400 and r.headers["Content-Type"] == TOKEN_CONTENT_TYPE
            assert err == {"error": "invalid_grant", "error_description": "Bad credentials"}
            status, err, _ = await _grant(http, server, {"grant_type": "client_credentials"})
            assert (status, err["error"]) == (400, "unsupported_grant_type")
            status, err, _ = await _grant(http, server, {"grant_type": "password"})
            assert (status, err["error"]) == (400, "invalid_request")
            status, err, _ = await _grant(http, server, {})
            assert (status, err["error"]) == (400, "invalid_request")
        snap = server.metrics.snapshot()
        assert snap.get('liaison_http_auth_failed_total{listener="oauth"}') == 1


async def test_wrong_passwords_are_throttled(start_server: ServerFactory, tmp_path: Path) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        add_user(server, "webred", "RED", ["red"])
        async with browser_session(server) as http:
            form = {"grant_type": "password", "username": "webred", "password": "not it at all!"}
            answers: list[int] = []
            for _ in range(12):  # bounded: the throttle starts after 5 failures
                status, _, r = await _grant(http, server, form)
                answers.append(status)
                if status == 429:
                    assert int(r.headers["Retry-After"]) >= 1
                    break
            assert answers[:5] == [400] * 5 and answers[-1] == 429, answers
            # The right password is refused too while the throttle holds.
            form["password"] = PASSWORD
            assert (await _grant(http, server, form))[0] == 429


async def test_bearer_on_marti_rest_and_takproto_then_revocation(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        add_user(server, "webred", "RED", ["red"])
        c = certs(server, ("red1", "RED"))
        assert server.tls is not None
        red1 = await connect_tls(
            server.tls.port, cert=c["red1"].cert, key=c["red1"].key, ca=c["red1"].ca, name="red1"
        )
        async with clients(red1), browser_session(server) as http:
            form = {"grant_type": "password", "username": "webred", "password": PASSWORD}
            status, body, _ = await _grant(http, server, form)
            assert status == 200
            access, refresh = body["access_token"], body["refresh_token"]

            # REST: the same principal the password gives.
            async with http.get(enroll_url(server, "/api/v1/me"), headers=_bearer(access)) as r:
                assert r.status == 200
                me = await r.json()
            async with http.get(
                enroll_url(server, "/api/v1/me"), headers=_basic("webred", PASSWORD)
            ) as r:
                by_password = await r.json()
            assert me == by_password and me["name"] == "webred" and me["csrf"] is None
            # Marti.
            async with http.get(
                enroll_url(server, "/Marti/api/groups/all"), headers=_bearer(access)
            ) as r:
                assert r.status == 200
                names = {g["name"] for g in (await r.json())["data"]}
            assert names == {"red"}
            assert await _status(http, enroll_url(server, "/Marti/api/version"), access) == 200
            # A token does not enroll a certificate (signClient needs Basic credentials).
            async with http.post(
                enroll_url(server, "/Marti/api/tls/signClient/v2?clientUid=x"),
                headers=_bearer(access),
                data=b"",
            ) as r:
                assert r.status == 401
            # No credentials: 401 as before.
            async with http.get(enroll_url(server, "/api/v1/me")) as r:
                assert r.status == 401

            # /takproto/1 with the bearer token: a TAK stream client as webred.
            ws = await http.ws_connect(
                enroll_url(server, "/takproto/1").replace("https://", "wss://"),
                headers=_bearer(access),
            )
            await red1.wait_for(b"t-x-takp-v")
            xml = sa_event("WEB-webred", "WEBRED")
            await ws.send_bytes(bytes(takproto.xml2proto(xml, takproto.TAKProtoVer.STREAM)))
            await red1.wait_for(b"WEB-webred")
            # The web map's feed with the same token: its snapshot comes first.
            feed = await http.ws_connect(
                enroll_url(server, "/api/v1/stream").replace("https://", "wss://"),
                headers=_bearer(access),
            )
            first = await feed.receive(timeout=WAIT_S)
            assert json.loads(first.data)["kind"] == "snapshot"

            # Revoking the user: the token, the refresh token and the live sockets end.
            assert await asyncio.to_thread(main, ["user", "revoke", "webred", *_where(server)]) == 0
            revoked = time.monotonic()
            for sock in (ws, feed):
                for _ in range(1000):  # bounded
                    msg = await sock.receive(timeout=WAIT_S)
                    if msg.type is aiohttp.WSMsgType.CLOSE:
                        break
                assert (msg.type, msg.data, msg.extra) == (
                    aiohttp.WSMsgType.CLOSE,
                    4403,
                    "revoked",
                )
                await sock.close()
            assert time.monotonic() - revoked < 3.0  # the sweep runs every 0.5 s
            async with http.get(enroll_url(server, "/api/v1/me"), headers=_bearer(access)) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"] == (
                    'Bearer realm="Liaison", error="invalid_token"'
                )
                assert await r.json() == {"error": "invalid token"}
            status, err, _ = await _grant(
                http, server, {"grant_type": "refresh_token", "refresh_token": refresh}
            )
            assert (status, err["error"]) == (400, "invalid_grant")
            status, err, _ = await _grant(http, server, form)
            assert (status, err["error"]) == (400, "invalid_grant")
        snap = server.metrics.snapshot()
        assert snap.get('liaison_http_auth_failed_total{listener="bearer"}') == 1


async def test_refresh_tampering_and_expiry(start_server: ServerFactory, tmp_path: Path) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        add_user(server, "webred", "RED", ["red"])
        add_user(server, "webblue", "BLUE", ["blue"])
        me = enroll_url(server, "/api/v1/me")
        async with browser_session(server) as http:
            form = {"grant_type": "password", "username": "webred", "password": PASSWORD}
            _, first, _ = await _grant(http, server, form)

            # Refresh: a new pair; the refresh token is single use.
            refresh_form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
            status, second, r = await _grant(http, server, refresh_form)
            assert status == 200 and r.headers["Content-Type"] == TOKEN_CONTENT_TYPE
            assert second["jti"] != first["jti"]
            assert second["refresh_token"] != first["refresh_token"]
            _, c1 = _verify(server, first["access_token"])
            _, c2 = _verify(server, second["access_token"])
            assert c2["sub"] == "webred" and c2["auth_time"] == c1["auth_time"]
            assert await _status(http, me, second["access_token"]) == 200
            status, err, _ = await _grant(http, server, refresh_form)
            assert (status, err) == (
                400,
                {"error": "invalid_grant", "error_description": "Invalid refresh token"},
            )
            # Neither kind of token stands in for the other.
            assert await _status(http, me, second["refresh_token"]) == 401
            swapped = {"grant_type": "refresh_token", "refresh_token": second["access_token"]}
            assert (await _grant(http, server, swapped))[0] == 400

            header, claims = _verify(server, second["access_token"])
            [pem] = [k["pem"] for k in _keyring(server) if k["kid"] == header["kid"]]
            server_key = jwk.JWK.from_pem(pem.encode("ascii"))
            # A changed claim (another user) under the old signature.
            parts = second["access_token"].split(".")
            other = _b64(json.dumps({**claims, "sub": "webblue"}).encode())
            assert await _status(http, me, f"{parts[0]}.{other}.{parts[2]}") == 401
            # alg "none".
            none = _forge({**header, "alg": "none"}, claims, None)
            assert await _status(http, me, none) == 401
            # Signed by another RSA key under the same kid.
            stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            wrong = jwk.JWK.from_pem(
                stranger.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            assert await _status(http, me, _forge(header, claims, wrong)) == 401
            # HS256 keyed with the server's public key (algorithm confusion).
            public_pem = server_key.export_to_pem(private_key=False, password=None)
            hmac_key = jwk.JWK(kty="oct", k=_b64(public_pem))
            confused = _forge({**header, "alg": "HS256"}, claims, hmac_key)
            assert await _status(http, me, confused) == 401
            # Expired: signed with the server's own key, every claim good but exp past.
            now = int(time.time())
            expired = {**claims, "iat": now - 700, "nbf": now - 700, "exp": now - 100}
            assert await _status(http, me, _forge(header, expired, server_key)) == 401
            # The same forge with a live exp is accepted: the refusals above are for the reason
            # each one tests, not for how the token was made.
            live = {**claims, "iat": now, "nbf": now, "exp": now + 300}
            assert await _status(http, me, _forge(header, live, server_key)) == 200


async def test_rotation_keeps_old_tokens_valid(start_server: ServerFactory, tmp_path: Path) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        add_user(server, "webred", "RED", ["red"])
        me = enroll_url(server, "/api/v1/me")
        async with browser_session(server) as http:
            form = {"grant_type": "password", "username": "webred", "password": PASSWORD}
            _, before, _ = await _grant(http, server, form)
            old_kid = _keyring(server)[-1]["kid"]
            assert await asyncio.to_thread(main, ["oauth", "rotate", *_where(server)]) == 0
            keys = _keyring(server)
            assert keys[0]["kid"] == old_kid and len(keys) == 2
            assert keys[0]["retired"] is not None and keys[1]["retired"] is None
            _, after, _ = await _grant(http, server, form)
            header, _ = _verify(server, after["access_token"])
            assert header["kid"] == keys[1]["kid"] != old_kid
            # Tokens of the old key still work until they expire, new ones too; so does the
            # old key's refresh token.
            assert await _status(http, me, before["access_token"]) == 200
            assert await _status(http, me, after["access_token"]) == 200
            refresh_form = {"grant_type": "refresh_token", "refresh_token": before["refresh_token"]}
            status, renewed, _ = await _grant(http, server, refresh_form)
            assert status == 200
            assert _verify(server, renewed["access_token"])[0]["kid"] == keys[1]["kid"]
            assert await asyncio.to_thread(main, ["oauth", "keys", *_where(server)]) == 0


async def test_metrics_are_for_operators_only(start_server: ServerFactory, tmp_path: Path) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        add_user(server, "webred", "RED", ["red"])
        add_user(server, "webops", "OPS", [])
        c = certs(server, ("red1", "RED"), ("ops", "OPS"))
        async with (
            cert_session(server, c["red1"]) as http,
            http.get(https_url(server, "/metrics")) as r,
        ):
            assert r.status == 403
            assert await r.json() == {"error": "operator role required"}
        async with (
            cert_session(server, c["ops"]) as http,
            http.get(https_url(server, "/metrics")) as r,
        ):
            assert r.status == 200
            assert "liaison_role_denied_total" in await r.text()
        async with browser_session(server) as http:
            metrics = enroll_url(server, "/metrics")
            async with http.get(metrics, headers=_basic("webred", PASSWORD)) as r:
                assert r.status == 403
            async with http.get(metrics, headers=_basic("webops", PASSWORD)) as r:
                assert r.status == 200
            for name, expected, roles in (("webred", 403, []), ("webops", 200, ["operator"])):
                form = {"grant_type": "password", "username": name, "password": PASSWORD}
                _, body, _ = await _grant(http, server, form)
                assert _verify(server, body["access_token"])[1]["roles"] == roles
                assert await _status(http, metrics, body["access_token"]) == expected
        snap = server.metrics.snapshot()
        assert snap.get('liaison_role_denied_total{route="/metrics"}') == 3


async def test_refusals_for_want_of_a_role_are_audited(
    start_server: ServerFactory, data_dir: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    async with start_server(policy_file=str(policy)) as server:
        usa = issue_cert(server, "usa-s", "USA")
        async with (
            cert_session(server, usa) as http,
            http.get(https_url(server, "/metrics")) as r,
        ):
            assert r.status == 403
    # The gate's audit log (labels on), read once the server has closed it.
    log_path, _key, _pub = audit_paths(server.config.data_dir)
    found = [
        json.loads(line)["fields"]
        for line in log_path.read_bytes().splitlines()
        if json.loads(line)["kind"] == "access_denied"
    ]
    assert found == [
        {
            "who": "usa-s",
            "org": "USA",
            "route": "/metrics",
            "method": "GET",
            "need": "operator",
            "address": "127.0.0.1",
        }
    ]


async def test_a_refresh_the_token_store_cannot_take_is_503_and_the_token_stays_good(
    start_server: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store of used refresh tokens unreachable (with PostgreSQL: the shared database):
    503 temporarily_unavailable with Retry-After, counted; the token was not used up, so the
    same refresh works once the store is back."""
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        add_user(server, "webred", "RED", ["red"])
        async with browser_session(server) as http:
            form = {"grant_type": "password", "username": "webred", "password": PASSWORD}
            _, first, _ = await _grant(http, server, form)
            refresh_form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}

            def unreachable(self: TokenService, token: str) -> None:
                raise StorageError("identity database: connection refused")

            with monkeypatch.context() as patch:
                patch.setattr(TokenService, "redeem_refresh", unreachable)
                status, err, r = await _grant(http, server, refresh_form)
            assert status == 503 and r.headers["Retry-After"] == "5"
            assert err["error"] == "temporarily_unavailable"
            assert r.headers["Cache-Control"] == "no-store"
            registry = server.metrics.registry
            assert registry.get_sample_value("liaison_http_oauth_unavailable_total") == 1
            status, second, _ = await _grant(http, server, refresh_form)
            assert status == 200 and second["refresh_token"] != first["refresh_token"]
