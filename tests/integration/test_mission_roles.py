"""Mission roles, invitations, passwords, the t-x-m-n/-d/-i/-r notices, catch-up on reconnect
and back-pressure, end to end: HTTPS with client certificates and pytak clients on the TLS stream
(tak-missions.md 3, 5.3, 5.4, 7.3); two organisations with canaries that must never reach the
other."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from liaison import missions as missions_module
from liaison.app import Server
from liaison.identity.users import UserDirectory
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import clients, sa_event
from tests.integration.http.http_support import cert_session, https_url, wait_until
from tests.integration.test_labels_e2e import POLICY, USERS, seclabel
from tests.integration.test_missions import (
    M,
    call,
    connect,
    data,
    mission_marker,
    wait_subscribed,
)


def mission_files(data_dir: Path) -> bytes:
    """Every byte of missions.db and its WAL."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("missions.db*")))


def mission_of(frame: bytes) -> ET.Element:
    found = ET.fromstring(frame).find("detail/mission")
    assert found is not None, frame
    return found


def role_of(frame: bytes) -> tuple[str | None, list[str | None]]:
    role = mission_of(frame).find("role")
    assert role is not None, frame
    return role.get("type"), [p.get("type") for p in role.iter("permission")]


async def test_roles_passwords_invitations_and_notices(
    start_server: ServerFactory, data_dir: Path
) -> None:
    async with start_server() as server:
        alice_c, bob_c, carol_c = (issue_cert(server, n) for n in ("alice", "bob", "carol"))
        alice = await connect(server, alice_c, "ANDROID-alice", "alice")
        bob = await connect(server, bob_c, "ANDROID-bob", "bob")
        carol = await connect(server, carol_c, "ANDROID-carol", "carol")
        async with (
            clients(alice, bob, carol),
            cert_session(server, alice_c) as a,
            cert_session(server, bob_c) as b,
            cert_session(server, carol_c) as c,
        ):
            await wait_subscribed(server, "ANDROID-alice", "ANDROID-bob", "ANDROID-carol")
            # Create: the creator is owner; every other device hears t-x-m-n, the creator not.
            status, body = await call(a, server, "PUT", f"{M}/ops?creatorUid=ANDROID-alice")
            assert status == 201, body
            [created] = data(body)
            owner = created["token"]
            assert created["defaultRole"]["type"] == "MISSION_SUBSCRIBER"
            for device in (bob, carol):
                notice = await device.wait_for(b'type="t-x-m-n"')
                m = mission_of(notice)
                assert (m.get("type"), m.get("name"), m.get("guid")) == (
                    "CREATE",
                    "ops",
                    created["guid"],
                )
                assert m.get("authorUid") == "ANDROID-alice" and m.get("tool") == "public"
                root = ET.fromstring(notice)
                assert root.get("how") == "h-g-i-g-o"
                assert root.find("point") is not None and root.find("point").get("ce") == "9999999"  # type: ignore[union-attr]
            assert b"t-x-m-n" not in b"".join(await alice.collect(0.3))

            # Roles: the token lifts the owner; without one everybody has the default role.
            status, body = await call(a, server, "GET", f"{M}/ops/role", token=owner)
            assert status == 200 and data(body)["type"] == "MISSION_OWNER"
            assert json.loads(body)["type"] == "com.bbn.marti.sync.model.MissionRole"
            status, body = await call(a, server, "GET", f"{M}/ops/role")
            assert data(body) == {
                "type": "MISSION_SUBSCRIBER",
                "permissions": ["MISSION_READ", "MISSION_WRITE"],
            }
            status, body = await call(b, server, "PUT", f"{M}/ops/subscription?uid=ANDROID-bob")
            assert status == 201
            bob_token = data(body)["token"]
            status, body = await call(a, server, "GET", f"{M}/ops/subscriptions", token=owner)
            assert status == 200 and set(data(body)) == {"ANDROID-alice", "ANDROID-bob"}
            status, body = await call(a, server, "GET", f"{M}/ops/subscriptions/roles")
            roles = {s["clientUid"]: s["role"]["type"] for s in data(body)}
            assert roles == {"ANDROID-alice": "MISSION_OWNER", "ANDROID-bob": "MISSION_SUBSCRIBER"}
            assert all("token" not in s for s in data(body))
            # Setting a role needs MISSION_SET_ROLE (the owner's token)...
            put_role = f"{M}/ops/role?clientUid=ANDROID-bob&role=MISSION_READONLY_SUBSCRIBER"
            status, body = await call(b, server, "PUT", put_role, token=bob_token)
            assert status == 403 and json.loads(body)["code"] == 3
            # ...and on a mission without a password no one gets less than the default role.
            status, body = await call(a, server, "PUT", put_role, token=owner)
            assert status == 403 and b"without a password" in body
            # A stray password on a public mission is refused (trap 3).
            status, _ = await call(
                c, server, "PUT", f"{M}/ops/subscription?uid=ANDROID-carol&password=x"
            )
            assert status == 403
            # With a password set, the owner demotes bob: bob hears t-x-m-r (mission type
            # INVITE, trap 8) with his new role, and can no longer write.
            status, _ = await call(a, server, "PUT", f"{M}/ops/password?password=s3cret")
            assert status == 403  # without the owner's token: no MISSION_SET_PASSWORD
            status, _ = await call(
                a, server, "PUT", f"{M}/ops/password?password=s3cret", token=owner
            )
            assert status == 200
            status, _ = await call(a, server, "PUT", put_role, token=owner)
            assert status == 200
            notice = await bob.wait_for(b'type="t-x-m-r"')
            assert mission_of(notice).get("type") == "INVITE"
            assert role_of(notice) == ("MISSION_READONLY_SUBSCRIBER", ["MISSION_READ"])
            assert b"t-x-m-r" not in b"".join(await carol.collect(0.3))
            status, body = await call(b, server, "GET", f"{M}/ops/role", token=bob_token)
            assert data(body)["type"] == "MISSION_READONLY_SUBSCRIBER"
            await bob.send(mission_marker("m-from-bob", "readonly", "ops"))
            await bob.send(mission_marker("m-probe", "x", None))
            await alice.wait_for(b'uid="m-probe"')
            status, body = await call(a, server, "GET", f"{M}/ops", token=owner)
            assert data(body)[0]["uids"] == [] and data(body)[0]["passwordProtected"] is True
            status, _ = await call(
                b, server, "PUT", f"{M}/ops/contents", token=bob_token, json={"uids": ["m-probe"]}
            )
            assert status == 403
            # Unsubscribing needs MISSION_READ: on a password-protected mission, the token.
            unsub = f"{M}/ops/subscription?uid=ANDROID-bob"
            assert (await call(b, server, "DELETE", unsub))[0] == 403
            assert (await call(b, server, "DELETE", unsub, token=bob_token))[0] == 200
            assert (await call(b, server, "PUT", unsub, token=bob_token))[0] == 201
            # Without a token a password-protected mission gives no role: reads are 403 too.
            for path in (f"{M}/ops", f"{M}/ops/cot", f"{M}/ops/changes", f"{M}/ops/role"):
                assert (await call(c, server, "GET", path))[0] == 403, path

            # Several roles at once (POST .../subscription, SET_ROLE): bob is a subscriber again.
            restore = [{"clientUid": "ANDROID-bob", "role": {"type": "MISSION_SUBSCRIBER"}}]
            post = f"{M}/ops/subscription"
            assert (await call(b, server, "POST", post, token=bob_token, json=restore))[0] == 403
            status, body = await call(a, server, "POST", post, token=owner, json=restore)
            assert status == 200, body
            assert role_of(await bob.wait_for(b'type="t-x-m-r"'))[0] == "MISSION_SUBSCRIBER"
            status, body = await call(b, server, "GET", f"{M}/ops/role", token=bob_token)
            assert data(body)["type"] == "MISSION_SUBSCRIBER"
            bad = [{"clientUid": "ANDROID-nobody", "role": "MISSION_SUBSCRIBER"}]
            assert (await call(a, server, "POST", post, token=owner, json=bad))[0] == 400

            # Passwords: hidden from the list unless asked for; subscribe needs the password.
            status, body = await call(c, server, "GET", M)
            assert data(body) == []
            status, body = await call(c, server, "GET", f"{M}?passwordProtected=true")
            assert [x["name"] for x in data(body)] == ["ops"]
            assert data(body)[0]["passwordProtected"] is True
            sub_c = f"{M}/ops/subscription?uid=ANDROID-carol"
            assert (await call(c, server, "PUT", sub_c))[0] == 403
            assert (await call(c, server, "PUT", f"{sub_c}&password=wrong"))[0] == 403
            status, body = await call(c, server, "PUT", f"{sub_c}&password=s3cret")
            assert status == 201 and data(body)["role"]["type"] == "MISSION_SUBSCRIBER"
            status, body = await call(c, server, "GET", f"{M}/ops/token?password=s3cret")
            assert status == 201 and json.loads(body)["type"] == "java.lang.String"
            access = data(body)
            status, body = await call(c, server, "GET", f"{M}/ops", token=access)
            assert status == 200
            status, body = await call(c, server, "GET", f"{M}/ops?password=s3cret")
            assert status == 200 and data(body)[0]["token"].count(".") == 2
            assert (await call(c, server, "GET", f"{M}/ops/token?password=no"))[0] == 403
            # The hash, not the password, is what the store keeps.
            await server.missions.flush()  # type: ignore[union-attr]
            kept = mission_files(data_dir)
            assert b"scrypt$" in kept and b"s3cret" not in kept

            # Invite-only: not announced, not listed; subscribe needs an invitation.
            status, body = await call(
                a, server, "PUT", f"{M}/hidden?creatorUid=ANDROID-alice&inviteOnly=true"
            )
            assert status == 201
            hidden_owner = data(body)[0]["token"]
            assert data(body)[0]["inviteOnly"] is True
            status, body = await call(c, server, "GET", f"{M}?passwordProtected=true")
            assert [x["name"] for x in data(body)] == ["ops"]
            assert (await call(c, server, "PUT", f"{M}/hidden/subscription?uid=ANDROID-carol"))[
                0
            ] == 403
            # Invite carol's device: she hears t-x-m-i with the INVITATION token and the role.
            status, _ = await call(
                a,
                server,
                "PUT",
                f"{M}/hidden/invite/clientUid/ANDROID-carol?creatorUid=ANDROID-alice",
                token=hidden_owner,
            )
            assert status == 200
            notice = await carol.wait_for(b'type="t-x-m-i"')
            m = mission_of(notice)
            assert (m.get("type"), m.get("name")) == ("INVITE", "hidden")
            assert role_of(notice)[0] == "MISSION_SUBSCRIBER"
            invitation = m.get("token")
            assert invitation is not None
            assert b"hidden" not in b"".join(await bob.collect(0.3))  # nobody else hears it
            status, body = await call(
                c, server, "GET", f"{M}/all/invitations?clientUid=ANDROID-carol"
            )
            assert status == 200 and data(body) == ["hidden"]
            assert json.loads(body)["type"] == "MissionInvitation"
            # The invitations themselves, with their tokens, for the invitee only; not a mission
            # called "invitations" (the fixed route comes first).
            status, body = await call(c, server, "GET", f"{M}/invitations?clientUid=ANDROID-carol")
            assert status == 200 and json.loads(body)["type"] == "MissionInvitation"
            [mine] = data(body)
            assert (mine["missionName"], mine["type"], mine["invitee"]) == (
                "hidden",
                "clientUid",
                "ANDROID-carol",
            )
            assert mine["token"] == invitation and mine["role"]["type"] == "MISSION_SUBSCRIBER"
            status, body = await call(b, server, "GET", f"{M}/invitations?clientUid=ANDROID-bob")
            assert status == 200 and data(body) == []
            status, body = await call(c, server, "GET", f"{M}/invitations")
            assert status == 400 and json.loads(body)["code"] == 2
            status, body = await call(
                a, server, "GET", f"{M}/hidden/invitations", token=hidden_owner
            )
            [inv] = data(body)
            assert (inv["type"], inv["invitee"], inv["missionName"]) == (
                "clientUid",
                "ANDROID-carol",
                "hidden",
            )
            assert "token" not in inv
            # A subscriber cannot invite someone as owner (it lacks the permissions).
            status, _ = await call(
                c,
                server,
                "PUT",
                f"{M}/ops/invite/userName/bob?creatorUid=ANDROID-carol&role=MISSION_OWNER",
                token=access,
            )
            assert status == 403
            status, body = await call(
                c,
                server,
                "PUT",
                f"{M}/hidden/subscription?uid=ANDROID-carol",
                token=invitation,
            )
            assert status == 201 and data(body)["role"]["type"] == "MISSION_SUBSCRIBER"
            status, body = await call(
                c, server, "GET", f"{M}/all/invitations?clientUid=ANDROID-carol"
            )
            assert data(body) == []  # subscribing used the invitation
            # A userName invitation lets that user subscribe without a token; withdrawn, not.
            invite_bob = f"{M}/hidden/invite/userName/bob?creatorUid=ANDROID-alice"
            assert (await call(a, server, "PUT", invite_bob, token=hidden_owner))[0] == 200
            await bob.wait_for(b'type="t-x-m-i"')
            assert (await call(a, server, "DELETE", invite_bob, token=hidden_owner))[0] == 200
            status, _ = await call(b, server, "PUT", f"{M}/hidden/subscription?uid=ANDROID-bob")
            assert status == 403
            assert (await call(a, server, "PUT", invite_bob, token=hidden_owner))[0] == 200
            status, body = await call(b, server, "PUT", f"{M}/hidden/subscription?uid=ANDROID-bob")
            assert status == 201
            bob_hidden = data(body)["token"]
            status, _ = await call(a, server, "PUT", f"{M}/hidden/invite/nope/x?creatorUid=A")
            assert status == 400

            # Several at once: client uids as repeated contacts (API_VERSION 2), or a JSON list
            # of MissionInvitation (API_VERSION 3), all checked before any is made.
            status, _ = await call(
                a,
                server,
                "POST",
                f"{M}/hidden/invite?creatorUid=ANDROID-alice&contacts=ANDROID-bob&contacts=X-1",
                token=hidden_owner,
            )
            assert status == 200
            assert mission_of(await bob.wait_for(b'type="t-x-m-i"')).get("name") == "hidden"
            v3 = {"API_VERSION": "3", "Authorization": f"Bearer {hidden_owner}"}
            post = https_url(server, f"{M}/hidden/invite?creatorUid=ANDROID-alice")
            lower = [
                {"type": "userName", "invitee": "dave"},
                {"type": "userName", "invitee": "erin", "role": "MISSION_READONLY_SUBSCRIBER"},
            ]
            async with a.post(post, headers=v3, json=lower) as r:
                assert r.status == 403  # less than the default role on a public mission
            ok = [{"type": "userName", "invitee": "dave", "role": {"type": "MISSION_SUBSCRIBER"}}]
            async with a.post(post, headers=v3, json=ok) as r:
                assert r.status == 200
            status, body = await call(
                a, server, "GET", f"{M}/hidden/invitations", token=hidden_owner
            )
            invitees = {(i["type"], i["invitee"]) for i in data(body)}
            assert ("userName", "dave") in invitees and ("clientUid", "X-1") in invitees
            assert ("userName", "erin") not in invitees
            # A reader without MISSION_SET_ROLE sees only the invitations addressed to it.
            status, body = await call(b, server, "GET", f"{M}/hidden/invitations", token=bob_hidden)
            assert {(i["type"], i["invitee"]) for i in data(body)} == {
                ("userName", "bob"),
                ("clientUid", "ANDROID-bob"),
            }

            # Delete: every device that may see it hears t-x-m-d.
            status, _ = await call(a, server, "DELETE", f"{M}/hidden", token=hidden_owner)
            assert status == 200
            for device in (bob, carol):
                m = mission_of(await device.wait_for(b'type="t-x-m-d"'))
                assert (m.get("type"), m.get("name")) == ("DELETE", "hidden")
            counted = server.metrics.counter("liaison_mission_notices_total", "")
            assert counted.get("t-x-m-n") == 1 and counted.get("t-x-m-r") == 2
            refused = server.metrics.counter("liaison_mission_refused_total", "")
            assert refused.get("password") >= 3 and refused.get("invite_only") >= 1


async def test_roles_and_invitations_survive_a_restart(start_server: ServerFactory) -> None:
    async with start_server() as server:
        alice_c = issue_cert(server, "alice")
        async with cert_session(server, alice_c) as a:
            status, body = await call(
                a, server, "PUT", f"{M}/kept?creatorUid=ANDROID-alice&inviteOnly=true&password=pw"
            )
            owner = data(body)[0]["token"]
            status, _ = await call(
                a, server, "PUT", f"{M}/kept/invite/userName/bob?creatorUid=A", token=owner
            )
            assert status == 200
    async with start_server() as server:
        bob_c = issue_cert(server, "bob")
        alice_c = issue_cert(server, "alice")
        async with cert_session(server, bob_c) as b, cert_session(server, alice_c) as a:
            status, body = await call(b, server, "GET", f"{M}/all/invitations")
            assert data(body) == ["kept"]
            status, body = await call(a, server, "GET", f"{M}/kept/role", token=owner)
            assert data(body)["type"] == "MISSION_OWNER"
            # Password-protected and invite-only: bob needs the password and the invitation.
            sub = f"{M}/kept/subscription?uid=ANDROID-bob"
            assert (await call(b, server, "PUT", sub))[0] == 403
            assert (await call(b, server, "PUT", f"{sub}&password=pw"))[0] == 201


async def test_a_subscriber_who_reconnects_is_sent_what_it_missed(
    start_server: ServerFactory,
) -> None:
    async with start_server() as server:
        alice_c, bob_c = issue_cert(server, "alice"), issue_cert(server, "bob")
        alice = await connect(server, alice_c, "ANDROID-alice", "alice")
        bob = await connect(server, bob_c, "ANDROID-bob", "bob")
        async with (
            clients(alice),
            cert_session(server, bob_c) as b,
            cert_session(server, alice_c) as a,
        ):
            await wait_subscribed(server, "ANDROID-alice", "ANDROID-bob")
            assert (await call(a, server, "PUT", f"{M}/feed?creatorUid=ANDROID-alice"))[0] == 201
            assert (await call(b, server, "PUT", f"{M}/feed/subscription?uid=ANDROID-bob"))[
                0
            ] == 201
            await alice.send(mission_marker("m-before", "seen live", "feed"))
            await bob.wait_for(b'uid="m-before"')
            await bob.close()
            await wait_until(
                lambda: "ANDROID-bob" not in {s.client_uid for s in server.router.subscribers},
                "bob gone",
            )
            await alice.send(mission_marker("m-away-1", "missed one", "feed"))
            await alice.send(mission_marker("m-away-2", "missed two", "feed"))
            await alice.wait_for(b"<contentUid>m-away-2</contentUid>")
            assert (
                await call(a, server, "DELETE", f"{M}/feed/contents?uid=m-before&creatorUid=A")
            )[0] == 200
            # Bob's device comes back (same uid): it is sent the missed items and changes.
            bob = await connect(server, bob_c, "ANDROID-bob", "bob")
            async with clients(bob):
                for uid in (b"m-away-1", b"m-away-2"):
                    item = await bob.wait_for(b'uid="' + uid + b'"')
                    assert b"missed" in item and b"<marti" not in item
                    await bob.wait_for(b"<contentUid>" + uid + b"</contentUid>")
                removed = await bob.wait_for(b"<contentUid>m-before</contentUid>")
                assert b"REMOVE_CONTENT" in removed
                rest = b"".join(await bob.collect(0.5))
                assert b'uid="m-before"' not in rest  # a removed item is not re-sent
            counted = server.metrics.counter("liaison_mission_catchup_total", "")
            assert counted.get("event") == 5  # two items, three notices


async def test_catch_up_survives_a_restart(start_server: ServerFactory) -> None:
    async with start_server() as server:
        alice_c, bob_c = issue_cert(server, "alice"), issue_cert(server, "bob")
        alice = await connect(server, alice_c, "ANDROID-alice", "alice")
        bob = await connect(server, bob_c, "ANDROID-bob", "bob")
        async with (
            clients(alice, bob),
            cert_session(server, bob_c) as b,
            cert_session(server, alice_c) as a,
        ):
            await wait_subscribed(server, "ANDROID-alice", "ANDROID-bob")
            assert (await call(a, server, "PUT", f"{M}/feed?creatorUid=ANDROID-alice"))[0] == 201
            sub = f"{M}/feed/subscription?uid=ANDROID-bob"
            assert (await call(b, server, "PUT", sub))[0] == 201
    # The server stopped while bob was connected: where bob stood is kept.
    async with start_server() as server:
        alice_c, bob_c = issue_cert(server, "alice"), issue_cert(server, "bob")
        alice = await connect(server, alice_c, "ANDROID-alice", "alice")
        async with clients(alice):
            await wait_subscribed(server, "ANDROID-alice")
            await alice.send(mission_marker("m-later", "after the restart", "feed"))
            await alice.wait_for(b"<contentUid>m-later</contentUid>")
            bob = await connect(server, bob_c, "ANDROID-bob", "bob")
            async with clients(bob):
                assert b"after the restart" in await bob.wait_for(b'uid="m-later"')
                await bob.wait_for(b"<contentUid>m-later</contentUid>")


async def test_a_busy_mission_store_answers_503_and_refuses_stream_writes(
    start_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_server() as server:
        alice_c = issue_cert(server, "alice")
        alice = await connect(server, alice_c, "ANDROID-alice", "alice")
        async with clients(alice), cert_session(server, alice_c) as a:
            await wait_subscribed(server, "ANDROID-alice")
            assert (await call(a, server, "PUT", f"{M}/busy?creatorUid=ANDROID-alice"))[0] == 201
            monkeypatch.setattr(missions_module, "MAX_PENDING_WRITES", 0)
            async with a.put(https_url(server, f"{M}/other?creatorUid=ANDROID-alice")) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "1"
                assert (await r.json())["status"] == "SERVICE_UNAVAILABLE"
            await alice.send(mission_marker("m-busy", "busy", "busy"))
            await alice.send(mission_marker("m-after", "x", None))
            await alice.collect(0.5)
            monkeypatch.setattr(missions_module, "MAX_PENDING_WRITES", 10_000)
            _, body = await call(a, server, "GET", f"{M}/busy")
            assert data(body)[0]["uids"] == []  # not kept, and counted:
            refused = server.metrics.counter("liaison_mission_refused_total", "")
            assert refused.get("store_busy") == 2
            assert (await call(a, server, "GET", f"{M}/other"))[0] == 404  # nothing was made


def secret_position(server: Server) -> str | None:
    """The classification of USA's device position, as the USA user sees it."""
    usa = next(s.principal for s in server.router.subscribers if s.client_uid == "ANDROID-usa")
    found = server.router.find(usa, "ANDROID-usa")
    return found.access if found is not None else None


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(POLICY)
    return p


async def test_notices_invitations_and_catch_up_respect_labels(
    start_server: ServerFactory, data_dir: Path, policy_file: Path
) -> None:
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile)
    async with start_server(policy_file=str(policy_file)) as server:
        usa_c = issue_cert(server, "usa-s", "USA")
        ukr_c = issue_cert(server, "ukr-u", "UKR")
        usa = await connect(server, usa_c, "ANDROID-usa", "usa-s")
        ukr = await connect(server, ukr_c, "ANDROID-ukr", "ukr-u")
        async with cert_session(server, usa_c) as us, cert_session(server, ukr_c) as ua:
            async with clients(usa):
                await wait_subscribed(server, "ANDROID-usa", "ANDROID-ukr")
                joint = "UNCLASSIFIED//REL TO USA, UKR"
                status, body = await call(
                    us,
                    server,
                    "PUT",
                    f"{M}/joint?creatorUid=ANDROID-usa",
                    params={"classification": joint},
                )
                assert status == 201, body
                await ukr.wait_for(b'name="joint"')  # t-x-m-n of a mission UKR may see
                # A USA-only mission: its t-x-m-n and an invitation of UKR's device never
                # reach UKR, and UKR's invitation list does not name it.
                status, body = await call(
                    us,
                    server,
                    "PUT",
                    f"{M}/CANARY-USA-ONLY?creatorUid=ANDROID-usa",
                    params={"classification": "UNCLASSIFIED//REL TO USA"},
                )
                assert status == 201, body
                usa_owner = data(body)[0]["token"]
                status, _ = await call(
                    us,
                    server,
                    "PUT",
                    f"{M}/CANARY-USA-ONLY/invite/clientUid/ANDROID-ukr?creatorUid=ANDROID-usa",
                    token=usa_owner,
                )
                assert status == 200
                status, body = await call(
                    ua, server, "GET", f"{M}/all/invitations?clientUid=ANDROID-ukr"
                )
                assert status == 200 and data(body) == []
                status, _ = await call(ua, server, "PUT", f"{M}/joint/subscription?uid=ANDROID-ukr")
                assert status == 201
                seen = b"".join(await ukr.collect(0.5))
                # UKR leaves; USA publishes a secret and a shared item to the joint mission.
                await ukr.close()
                await wait_until(
                    lambda: "ANDROID-ukr" not in {s.client_uid for s in server.router.subscribers},
                    "ukr gone",
                )
                secret = seclabel("SECRET", ["USA"])
                shared = seclabel("UNCLASSIFIED", ["USA", "UKR"])
                await usa.send(mission_marker("m-secret", "CANARY-MISSION-SECRET", "joint", secret))
                await usa.send(mission_marker("m-shared", "shared-text", "joint", shared))
                await usa.wait_for(b"<contentUid>m-shared</contentUid>")
                # USA's device position is USA-only: UKR's answers do not betray its subscription.
                await usa.send(sa_event("ANDROID-usa", "USA-S", extra_detail=secret))
                await wait_until(
                    lambda: secret_position(server) == "SECRET", "USA's secret position"
                )
                status, body = await call(ua, server, "GET", f"{M}/joint/subscriptions")
                assert status == 200 and data(body) == ["ANDROID-ukr"]
                status, body = await call(ua, server, "GET", f"{M}/joint/subscriptions/roles")
                assert [s["clientUid"] for s in data(body)] == ["ANDROID-ukr"]
                status, body = await call(us, server, "GET", f"{M}/joint/subscriptions")
                assert "ANDROID-usa" in data(body)
            # UKR returns: it catches up on the shared item only.
            ukr = await connect(server, ukr_c, "ANDROID-ukr", "ukr-u")
            async with clients(ukr):
                await ukr.wait_for(b'uid="m-shared"')
                await ukr.wait_for(b"<contentUid>m-shared</contentUid>")
                # Deleting the USA-only mission tells UKR nothing.
                status, _ = await call(
                    us, server, "DELETE", f"{M}/CANARY-USA-ONLY", token=usa_owner
                )
                assert status == 200
                notices = server.metrics.counter("liaison_mission_notices_total", "")
                assert notices.get("t-x-m-d") == 1  # built, and refused to UKR by the router
                seen += b"".join(await ukr.collect(0.5))
                assert b"CANARY" not in seen and b"m-secret" not in seen
