"""``PUT /Marti/api/missions/{name}/contents/missionpackage`` end to end: HTTPS with client
certificates, pytak clients on the TLS stream receiving the items and notices, hostile zips, and
two organisations with different clearances sharing one mission with canary items and files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import time
import warnings
import zipfile
from pathlib import Path

import aiohttp
import pytest

from liaison.api import mission_packages
from liaison.app import Server
from liaison.identity import packages
from liaison.identity.users import UserDirectory
from liaison.protocol import cot_xml
from liaison.query import mission_padded_time
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import clients
from tests.integration.http.http_support import cert_session, https_url
from tests.integration.test_labels_e2e import POLICY, USERS, seclabel
from tests.integration.test_mission_contents import storage  # noqa: F401 (fixture)
from tests.integration.test_missions import (
    M,
    call,
    connect,
    data,
    mission_marker,
    wait_subscribed,
)


def package(files: dict[str, bytes]) -> bytes:
    """A mission package as ATAK and TAK Server write one: ``MANIFEST/manifest.xml`` naming
    every entry, the entries deflated."""
    manifest = packages.build_manifest(uid="pkg-1", name="import", entries=list(files))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("MANIFEST/manifest.xml", manifest)
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


async def put_package(
    http: aiohttp.ClientSession,
    server: Server,
    mission: str,
    body: bytes,
    *,
    creator: str | None = "ANDROID-x",
    token: str | None = None,
) -> tuple[int, bytes]:
    query = f"?creatorUid={creator}" if creator else ""
    headers = {"Content-Type": "application/x-zip-compressed"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = https_url(server, f"{M}/{mission}/contents/missionpackage{query}")
    async with http.put(url, data=body, headers=headers) as r:
        return r.status, await r.read()


def offline_changes(*changes: tuple[str, float, str | None, str | None]) -> bytes:
    """``changes.json`` as ATAK writes its offline changes: (type, when in seconds, content uid,
    file name) each."""
    out = []
    for type_, when, uid, name in changes:
        change: dict[str, object] = {
            "type": type_,
            "timestamp": mission_padded_time(int(when * 1000)),
        }
        if uid is not None:
            change["contentUid"] = uid
        if name is not None:
            change["contentResource"] = {"name": name, "mimeType": "text/plain"}
        out.append(change)
    return json.dumps({"missionChanges": out}).encode()


async def test_a_package_becomes_items_and_files_of_the_mission(
    start_server: ServerFactory,
    data_dir: Path,
    storage: dict[str, str],  # noqa: F811
) -> None:
    async with start_server(**storage) as server:
        alice_c, bob_c = (issue_cert(server, n) for n in ("alice", "bob"))
        alice = await connect(server, alice_c, "ANDROID-alice", "alice")
        bob = await connect(server, bob_c, "ANDROID-bob", "bob")
        async with (
            clients(alice, bob),
            cert_session(server, alice_c) as a,
            cert_session(server, bob_c) as b,
        ):
            await wait_subscribed(server, "ANDROID-alice", "ANDROID-bob")
            status, body = await call(a, server, "PUT", f"{M}/pkg?creatorUid=ANDROID-alice")
            assert status == 201, body
            guid = data(body)[0]["guid"]
            for who, uid in ((a, "ANDROID-alice"), (b, "ANDROID-bob")):
                status, _ = await call(who, server, "PUT", f"{M}/pkg/subscription?uid={uid}")
                assert status == 201
            photo = b"\x89PNG package attachment"
            digest = hashlib.sha256(photo).hexdigest()
            zipped = package(
                {
                    # A dest for another mission and a dest to a callsign are replaced by the
                    # mission's own (TAK SubmissionService submitMissionPackageCotAtTime).
                    "cot/pkg-item-1.cot": mission_marker("pkg-item-1", "from-package", "other"),
                    "cot/pkg-item-2.cot": b"\xef\xbb\xbf"
                    + mission_marker("pkg-item-2", "bom-prefixed", None),
                    "contents/0_photo.png": photo,
                }
            )
            status, body = await put_package(a, server, "pkg", zipped, creator="ANDROID-alice")
            assert status == 200, body
            doc = json.loads(body)
            assert doc["type"] == "MissionChange" and doc["data"] == []
            # Bob (a live subscriber) gets both items, without their dests, and the notices;
            # Alice (the author's device) gets the notices only.
            item = await bob.wait_for(b"from-package")
            assert b"<dest" not in item and b'uid="pkg-item-1"' in item
            await bob.wait_for(b"bom-prefixed")
            for client in (alice, bob):
                await client.wait_for(b"<contentUid>pkg-item-1</contentUid>")
                await client.wait_for(b"<contentUid>pkg-item-2</contentUid>")
                notice = await client.wait_for(f"<hash>{digest}</hash>".encode())
                assert b"<name>0_photo.png</name>" in notice
            assert not [f for f in alice.frames if b"from-package" in f and b"t-x-m-c" not in f]

            status, body = await call(b, server, "GET", f"{M}/pkg")
            [mission] = data(body)
            uids = {u["data"]: u for u in mission["uids"]}
            assert set(uids) == {"pkg-item-1", "pkg-item-2"}
            assert uids["pkg-item-1"]["creatorUid"] == "ANDROID-alice"
            assert uids["pkg-item-1"]["details"]["type"] == "b-m-p-s-m"
            [content] = mission["contents"]
            assert content["data"]["hash"] == digest and content["data"]["name"] == "0_photo.png"
            assert content["data"]["mimeType"] == "image/png" and content["data"]["size"] == len(
                photo
            )
            assert content["data"]["submitter"] == "alice"
            assert content["creatorUid"] == "ANDROID-alice"
            status, body = await call(b, server, "GET", f"{M}/guid/{guid}/changes")
            changes = data(body)
            assert [c["type"] for c in changes] == ["CREATE_MISSION", *["ADD_CONTENT"] * 3]
            assert {c.get("contentUid") for c in changes[1:]} == {"pkg-item-1", "pkg-item-2", None}
            status, body = await call(b, server, "GET", f"{M}/pkg/cot")
            assert body.count(b"<event ") == 2 and b"from-package" in body
            assert b"<dest" not in body
            async with b.get(https_url(server, f"/Marti/sync/content?hash={digest}")) as r:
                assert r.status == 200 and await r.read() == photo
            # An item of the mission updated by the stream keeps its mission dest rules.
            await bob.send(mission_marker("pkg-item-1", "stream-update", "pkg"))
            await alice.wait_for(b"stream-update")

            # The same package again: taken again, 200.
            status, body = await put_package(a, server, "pkg", zipped, creator="ANDROID-alice")
            assert status == 200 and data(body) == []

            # The mission as a mission package (TAK archiveMission), taken back in again.
            async with b.get(https_url(server, f"{M}/pkg/archive")) as r:
                assert r.status == 200 and r.content_type == "application/zip"
                assert 'filename="pkg.zip"' in r.headers["Content-Disposition"]
                archive = await r.read()
            with zipfile.ZipFile(io.BytesIO(archive)) as zf:
                names = zf.namelist()
                manifest = packages.parse_manifest(zf.read("MANIFEST/manifest.xml"))
                assert zf.read("contents/0_0_photo.png") == photo
                assert b"from-package" in zf.read("cot/pkg-item-1.cot")
            assert set(names) == {
                "cot/",
                "contents/",
                "cot/pkg-item-1.cot",
                "cot/pkg-item-2.cot",
                "contents/0_0_photo.png",
                "MANIFEST/",
                "MANIFEST/manifest.xml",
            }
            params = manifest.parameters
            assert params["mission_name"] == params["name"] == "pkg"
            assert params["mission_guid"] == guid and params["creatorUid"] == "ANDROID-alice"
            assert params["onReceiveImport"] == "true" and params["onReceiveDelete"] == "false"
            assert params["mission_uid"].endswith("-8443-ssl-pkg") and "password_hash" not in params
            assert set(manifest.entries) == set(names) - {
                "cot/",
                "contents/",
                "MANIFEST/",
                "MANIFEST/manifest.xml",
            }
            status, body = await put_package(a, server, "pkg", archive, creator="ANDROID-alice")
            assert status == 200, body
            status, body = await call(b, server, "GET", f"{M}/pkg")
            assert len(data(body)[0]["uids"]) == 2 and len(data(body)[0]["contents"]) == 1
            async with b.get(https_url(server, f"{M}/nope/archive")) as r:
                assert r.status == 404

            # creatorUid is required (TAK MissionApi addMissionPackage): 400.
            status, body = await put_package(a, server, "pkg", zipped, creator=None)
            assert status == 400 and json.loads(body)["code"] == 2
            # No such mission: 404 with an empty body.
            status, body = await put_package(a, server, "nope", zipped)
            assert (status, body) == (404, b"")
            # MISSION_WRITE is required: a read-only default role refuses it (403).
            status, body = await call(
                a,
                server,
                "PUT",
                f"{M}/readonly?creatorUid=ANDROID-alice&defaultRole=MISSION_READONLY_SUBSCRIBER",
            )
            assert status == 201, body
            owner_token = data(body)[0]["token"]
            status, body = await put_package(b, server, "readonly", zipped)
            assert status == 403 and json.loads(body)["status"] == "FORBIDDEN"
            status, body = await call(b, server, "GET", f"{M}/readonly")
            assert data(body)[0]["uids"] == [] and data(body)[0]["contents"] == []
            # The owner's token lifts the role; but the items belong to mission pkg (strict
            # membership, tak-missions.md 7.1): refused whole, nothing taken.
            status, body = await put_package(a, server, "readonly", zipped, token=owner_token)
            assert status == 403 and b"mission_membership" in body, body
            status, body = await call(a, server, "GET", f"{M}/readonly")
            assert data(body)[0]["uids"] == [] and data(body)[0]["contents"] == []
            fresh = package({"ro-item.cot": mission_marker("ro-item", "ro", None)})
            status, body = await put_package(a, server, "readonly", fresh, token=owner_token)
            assert status == 200, body
            status, body = await call(b, server, "GET", f"{M}/readonly")
            assert [u["data"] for u in data(body)[0]["uids"]] == ["ro-item"]
            refused = server.metrics.counter("liaison_mission_refused_total", "")
            assert refused.get("forbidden") >= 1 and refused.get("bad_request") >= 1


def _zip_with(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # a duplicate name is what one case wants
        for info, content in entries:
            zf.writestr(info, content)
    return buf.getvalue()


def _symlink() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("cot/link.cot")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


async def test_hostile_packages_are_refused_and_nothing_is_taken(
    start_server: ServerFactory, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = mission_marker("hostile-ok", "fine", None)
    async with start_server() as server:
        alice_c = issue_cert(server, "alice")
        async with cert_session(server, alice_c) as a:
            status, _ = await call(a, server, "PUT", f"{M}/hostile?creatorUid=ANDROID-alice")
            assert status == 201
            cases: list[tuple[str, bytes, int, str]] = [
                ("not a zip", b"this is not a zip archive", 400, "package_bad_zip"),
                ("empty body", b"", 400, "package_empty"),
                (
                    "path traversal",
                    _zip_with([("cot/ok.cot", good), ("../../etc/evil.cot", good)]),
                    400,
                    "package_zip_path",
                ),
                (
                    "absolute path",
                    _zip_with([("/etc/evil.txt", b"x")]),
                    400,
                    "package_zip_path",
                ),
                (
                    "symbolic link",
                    _zip_with([(_symlink(), b"/etc/passwd")]),
                    400,
                    "package_zip_symlink",
                ),
                (
                    "zip bomb",
                    _zip_with([("cot/ok.cot", good), ("contents/zeros.bin", bytes(40 << 20))]),
                    400,
                    "package_zip_bomb",
                ),
                (
                    "too many entries",
                    _zip_with([(f"contents/{i}.txt", b"x") for i in range(4_097)]),
                    400,
                    "package_zip_entries",
                ),
                (
                    "duplicate entry",
                    _zip_with([("cot/a.cot", good), ("cot/a.cot", good)]),
                    400,
                    "package_zip_duplicate",
                ),
                (
                    "not CoT",
                    _zip_with([("cot/ok.cot", good), ("cot/bad.cot", b"<event uid='x'>")]),
                    400,
                    "package_bad_cot",
                ),
                (
                    "entity expansion",
                    _zip_with(
                        [
                            (
                                "cot/dtd.cot",
                                b'<!DOCTYPE e [<!ENTITY a "aaaa">]>' + good,
                            )
                        ]
                    ),
                    400,
                    "package_bad_cot",
                ),
                (
                    "control message",
                    _zip_with(
                        [
                            (
                                "cot/ping.cot",
                                mission_marker("ping", "p", None).replace(
                                    b'type="b-m-p-s-m"', b'type="t-x-c-t"'
                                ),
                            )
                        ]
                    ),
                    400,
                    "package_bad_cot",
                ),
                (
                    "offline log entry",
                    _zip_with(
                        [
                            (
                                "changes.json",
                                json.dumps(
                                    {
                                        "missionChanges": [
                                            {
                                                "type": "ADD_CONTENT",
                                                "timestamp": "2030-01-01T00:00:00.000Z",
                                                "logEntry": {"content": "x"},
                                            }
                                        ]
                                    }
                                ).encode(),
                            )
                        ]
                    ),
                    400,
                    "package_offline_changes",
                ),
                (
                    "offline changes not JSON",
                    _zip_with([("changes.json", b"{not json")]),
                    400,
                    "package_offline_changes",
                ),
                (
                    "offline changes nested past the stack",
                    _zip_with([("changes.json", b'{"missionChanges":' + b"[" * 200_000)]),
                    400,
                    "package_offline_changes",
                ),
                (
                    "offline item of another uid",
                    _zip_with(
                        [
                            (
                                "changes.json",
                                offline_changes(("ADD_CONTENT", time.time(), "said", None)),
                            ),
                            ("0/said.cot", mission_marker("other", "x", None)),
                        ]
                    ),
                    400,
                    "package_bad_cot",
                ),
                (
                    "offline file removal without a hash",
                    _zip_with(
                        [
                            (
                                "changes.json",
                                offline_changes(("REMOVE_CONTENT", time.time(), None, "a.txt")),
                            )
                        ]
                    ),
                    400,
                    "package_offline_changes",
                ),
                (
                    "offline item missing",
                    _zip_with(
                        [
                            (
                                "changes.json",
                                offline_changes(("ADD_CONTENT", time.time(), "gone", None)),
                            )
                        ]
                    ),
                    400,
                    "package_missing_entry",
                ),
            ]
            refused = server.metrics.counter("liaison_mission_refused_total", "")
            for what, body, want, reason in cases:
                before = refused.get(reason)
                status, answer = await put_package(a, server, "hostile", body)
                assert status == want, (what, status, answer)
                error = json.loads(answer)
                assert error["status"] == "BAD_REQUEST" and error["code"] == 2, what
                assert error["message"], what
                assert refused.get(reason) == before + 1, (what, reason)
            # Past the size limit (lowered here to 4 KiB): 413, before the zip is read.
            monkeypatch.setattr(mission_packages, "MAX_PACKAGE_BYTES", 4096)
            big = _zip_with([("cot/ok.cot", good), ("contents/noise.bin", os.urandom(8192))])
            status, answer = await put_package(a, server, "hostile", big)
            assert status == 413 and json.loads(answer)["status"] == "PAYLOAD_TOO_LARGE", answer
            assert refused.get("package_too_large") == 1
            monkeypatch.undo()
            status, body = await call(a, server, "GET", f"{M}/hostile")
            [mission] = data(body)
            assert mission["uids"] == [] and mission["contents"] == []
            status, body = await call(a, server, "GET", f"{M}/hostile/changes")
            assert [c["type"] for c in data(body)] == ["CREATE_MISSION"]
            # JSON bodies of the other mission routes nested past the interpreter's stack: 400,
            # not a server error (json.loads raises RecursionError).
            deep = b"[" * 100_000
            for method, path, body in (
                ("PUT", f"{M}/hostile/contents", b'{"uids":' + deep),
                ("PUT", f"{M}/hostile/keywords", deep),
                ("POST", f"{M}/logs/entries", b'{"content":' + deep),
                ("POST", f"{M}/hostile/subscription", deep),
            ):
                status, answer = await call(a, server, method, path, data=body)
                assert status == 400 and json.loads(answer)["code"] == 2, (path, answer)
            # Still usable: a good package is taken.
            status, body = await put_package(a, server, "hostile", _zip_with([("a.cot", good)]))
            assert status == 200, body


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(POLICY)
    return p


async def test_two_organisations_a_package_item_above_a_clearance_never_reaches_it(
    start_server: ServerFactory,
    data_dir: Path,
    policy_file: Path,
    storage: dict[str, str],  # noqa: F811
) -> None:
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile)
    secret = seclabel("SECRET", ["USA"])
    shared = seclabel("UNCLASSIFIED", ["USA", "UKR"])
    async with start_server(policy_file=str(policy_file), **storage) as server:
        usa_c = issue_cert(server, "usa-s", "USA")
        ukr_c = issue_cert(server, "ukr-u", "UKR")
        usa = await connect(server, usa_c, "ANDROID-usa", "usa-s")
        ukr = await connect(server, ukr_c, "ANDROID-ukr", "ukr-u")
        async with (
            clients(usa, ukr),
            cert_session(server, usa_c) as us,
            cert_session(server, ukr_c) as ua,
        ):
            await wait_subscribed(server, "ANDROID-usa", "ANDROID-ukr")
            status, body = await call(
                us,
                server,
                "PUT",
                f"{M}/joint?creatorUid=ANDROID-usa",
                params={"classification": "UNCLASSIFIED//REL TO USA, UKR"},
            )
            assert status == 201, body
            guid = data(body)[0]["guid"]
            created_s = cot_xml.parse_time(data(body)[0]["createTime"]) / 1000
            for who, uid in ((us, "ANDROID-usa"), (ua, "ANDROID-ukr")):
                status, _ = await call(who, server, "PUT", f"{M}/joint/subscription?uid={uid}")
                assert status == 201
            # A shared package: a shared item and a file, which carries the item's label.
            shared_file = b"shared attachment"
            h_shared = hashlib.sha256(shared_file).hexdigest()
            status, body = await put_package(
                us,
                server,
                "joint",
                package(
                    {
                        "cot/pkg-shared.cot": mission_marker(
                            "pkg-shared", "shared-item", None, shared
                        ),
                        "contents/shared.txt": shared_file,
                    }
                ),
                creator="ANDROID-usa",
            )
            assert status == 200, body
            await ukr.wait_for(b"shared-item")
            await ukr.wait_for(f"<hash>{h_shared}</hash>".encode())
            # An unlabelled item from a listener without a default label (https here): refused
            # whole (no_label), the package's file not taken either.
            status, body = await put_package(
                us,
                server,
                "joint",
                package(
                    {
                        "cot/pkg-plain.cot": mission_marker("pkg-plain", "plain-item", None),
                        "contents/plain.txt": b"plain attachment",
                    }
                ),
                creator="ANDROID-usa",
            )
            assert status == 403 and b"no_label" in body, body
            # A secret package: a SECRET USA-only item and a file, which becomes SECRET too
            # (the package's dominant label).
            canary_file = b"CANARY-PKG-FILE"
            h_canary = hashlib.sha256(canary_file).hexdigest()
            status, body = await put_package(
                us,
                server,
                "joint",
                package(
                    {
                        "cot/pkg-secret.cot": mission_marker(
                            "pkg-secret", "CANARY-PKG-ITEM", None, secret
                        ),
                        "contents/canary.txt": canary_file,
                    }
                ),
                creator="ANDROID-usa",
            )
            assert status == 200, body
            await usa.wait_for(b"<contentUid>pkg-secret</contentUid>")
            await usa.wait_for(f"<hash>{h_canary}</hash>".encode())
            status, body = await call(us, server, "GET", f"{M}/joint")
            [mission] = data(body)
            assert {u["data"] for u in mission["uids"]} == {"pkg-shared", "pkg-secret"}
            assert {c["data"]["hash"] for c in mission["contents"]} == {h_shared, h_canary}

            # UKR (unclassified) may not import a SECRET item: refused whole, nothing kept.
            ukr_secret = seclabel("SECRET", ["UKR"])
            status, body = await put_package(
                ua,
                server,
                "joint",
                package(
                    {
                        "cot/ukr-ok.cot": mission_marker("ukr-ok", "ukr-fine", None, shared),
                        "cot/ukr-high.cot": mission_marker(
                            "ukr-high", "too-high", None, ukr_secret
                        ),
                    }
                ),
                creator="ANDROID-ukr",
            )
            assert status == 403, body
            assert "ukr-high" in json.loads(body)["message"]
            # A label that cannot be read is a refusal, not "unlabelled".
            broken = shared.replace("UNCLASSIFIED", "NOT-A-CLASSIFICATION")
            status, body = await put_package(
                ua,
                server,
                "joint",
                package({"cot/ukr-bad.cot": mission_marker("ukr-bad", "bad-label", None, broken)}),
                creator="ANDROID-ukr",
            )
            assert status == 403, body
            # UKR may not replace the SECRET item it cannot see through a package either.
            status, body = await put_package(
                ua,
                server,
                "joint",
                package({"cot/x.cot": mission_marker("pkg-secret", "overwrite", None, shared)}),
                creator="ANDROID-ukr",
            )
            assert status == 403, body

            # Offline changes are compared only with what the caller may see: UKR removing the
            # secret item "before" USA added it is no conflict for UKR (a 409 would tell it the
            # item exists) and removes nothing; the same change from USA is a conflict.
            old_removal = _zip_with(
                [
                    (
                        "changes.json",
                        offline_changes(("REMOVE_CONTENT", created_s + 0.001, "pkg-secret", None)),
                    )
                ]
            )
            status, body = await put_package(ua, server, "joint", old_removal)
            assert status == 200 and data(body) == [], body
            answers: list[bytes] = [body]
            status, body = await put_package(us, server, "joint", old_removal)
            assert status == 409 and data(body)[0]["contentUid"] == "pkg-secret", body
            status, body = await call(us, server, "GET", f"{M}/joint")
            assert "pkg-secret" in {u["data"] for u in data(body)[0]["uids"]}

            for path in (
                f"{M}/joint",
                f"{M}/guid/{guid}",
                f"{M}/joint?changes=true",
                f"{M}/joint/changes",
                f"{M}/joint/changes?squashed=false",
                f"{M}/joint/cot",
            ):
                status, body = await call(ua, server, "GET", path)
                assert status == 200, (path, body)
                answers.append(body)
            [mission] = data(answers[1])
            assert [u["data"] for u in mission["uids"]] == ["pkg-shared"]
            assert [c["data"]["hash"] for c in mission["contents"]] == [h_shared]
            async with ua.get(https_url(server, f"/Marti/sync/content?hash={h_canary}")) as r:
                assert r.status == 404
                answers.append(await r.read())
            async with ua.get(https_url(server, "/Marti/api/cot/xml/pkg-secret")) as r:
                assert r.status == 404
            # The archive: UKR's holds the shared item and file only; USA's the secret ones.
            async with ua.get(https_url(server, f"{M}/joint/archive")) as r:
                assert r.status == 200
                archive = await r.read()
            with zipfile.ZipFile(io.BytesIO(archive)) as zf:
                assert [n for n in zf.namelist() if n.endswith((".cot", ".txt"))] == [
                    "cot/pkg-shared.cot",
                    "contents/0_shared.txt",
                ]
                answers.extend(zf.read(n) for n in zf.namelist())
            async with us.get(https_url(server, f"{M}/joint/archive")) as r:
                assert r.status == 200
                with zipfile.ZipFile(io.BytesIO(await r.read())) as zf:
                    assert b"CANARY-PKG-ITEM" in zf.read("cot/pkg-secret.cot")
                    assert canary_file in [zf.read(n) for n in zf.namelist()]
            await ukr.collect(0.5)
            answers.append(bytes(ukr.raw))
            for body in answers:
                assert b"CANARY" not in body and h_canary.encode() not in body
                assert b"pkg-secret" not in body and b"pkg-plain" not in body
                assert b"too-high" not in body and b"ukr-high" not in body
            await server.writer.flush()
    audit = b"".join(p.read_bytes() for p in (data_dir / "audit").glob("*") if p.is_file())
    assert b'"path":"upload"' in audit and b'"path":"mission"' in audit


async def test_all_subscriptions_shows_each_caller_only_what_it_may_know(
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
        async with (
            clients(usa, ukr),
            cert_session(server, usa_c) as us,
            cert_session(server, ukr_c) as ua,
        ):
            await wait_subscribed(server, "ANDROID-usa", "ANDROID-ukr")
            for mission, banner, extra in (
                ("joint", "UNCLASSIFIED//REL TO USA, UKR", ""),
                ("usa-only", "UNCLASSIFIED//REL TO USA", ""),
                ("locked", "UNCLASSIFIED//REL TO USA, UKR", "&password=pw"),
            ):
                status, body = await call(
                    us,
                    server,
                    "PUT",
                    f"{M}/{mission}?creatorUid=ANDROID-usa{extra}",
                    params={"classification": banner},
                )
                assert status == 201, body
            status, _ = await call(ua, server, "PUT", f"{M}/joint/subscription?uid=ANDROID-ukr")
            assert status == 201
            status, _ = await call(
                ua, server, "PUT", f"{M}/locked/subscription?uid=ANDROID-ukr&password=pw"
            )
            assert status == 201
            # UKR: its own subscription in the joint mission. Not USA's device (UKR may not see
            # its position), nothing of the USA-only mission, nothing of the password-protected
            # one (no role without its token, as GET .../subscriptions answers).
            status, body = await call(ua, server, "GET", f"{M}/all/subscriptions")
            assert status == 200, body
            assert json.loads(body)["type"] == "MissionSubscription"
            assert data(body) == [{"joint": "ANDROID-ukr"}]
            assert b"usa-only" not in body and b"ANDROID-usa" not in body
            # USA: its own (the creator is subscribed as owner), not UKR's device.
            status, body = await call(us, server, "GET", f"{M}/all/subscriptions")
            assert status == 200, body
            assert data(body) == [{"joint": "ANDROID-usa"}, {"usa-only": "ANDROID-usa"}]


async def test_offline_changes_are_taken_in_order_or_answered_409_with_the_conflicts(
    start_server: ServerFactory, data_dir: Path
) -> None:
    async with start_server() as server:
        alice_c, bob_c = (issue_cert(server, n) for n in ("alice", "bob"))
        bob = await connect(server, bob_c, "ANDROID-bob", "bob")
        async with (
            clients(bob),
            cert_session(server, alice_c) as a,
            cert_session(server, bob_c) as b,
        ):
            await wait_subscribed(server, "ANDROID-bob")
            status, _ = await call(a, server, "PUT", f"{M}/offline?creatorUid=ANDROID-alice")
            assert status == 201
            status, _ = await call(b, server, "PUT", f"{M}/offline/subscription?uid=ANDROID-bob")
            assert status == 201
            first = package({"cot/off-1.cot": mission_marker("off-1", "first", None)})
            status, body = await put_package(a, server, "offline", first)
            assert status == 200, body
            await bob.wait_for(b"<contentUid>off-1</contentUid>")
            now = time.time()
            notes = b"offline notes"
            # Made offline after off-1 was added: add off-2, remove off-1, add a file.
            changes = offline_changes(
                ("ADD_CONTENT", now + 1, "off-2", None),
                ("REMOVE_CONTENT", now + 2, "off-1", None),
                ("CREATE_MISSION", now + 3, None, None),  # not a content change: skipped
                ("ADD_CONTENT", now + 4, None, "notes.txt"),
            )
            zipped = _zip_with(
                [
                    ("changes.json", changes),
                    ("0/off-2.cot", mission_marker("off-2", "made-offline", None)),
                    ("3/notes.txt", notes),
                ]
            )
            status, body = await put_package(a, server, "offline", zipped, creator="ANDROID-alice")
            assert status == 200 and data(body) == [], body
            await bob.wait_for(b"made-offline")
            await bob.wait_for(b"<type>REMOVE_CONTENT</type>")
            status, body = await call(b, server, "GET", f"{M}/offline")
            [mission] = data(body)
            assert [u["data"] for u in mission["uids"]] == ["off-2"]
            [content] = mission["contents"]
            assert content["data"]["name"] == "notes.txt"
            assert content["data"]["hash"] == hashlib.sha256(notes).hexdigest()
            status, body = await call(b, server, "GET", f"{M}/offline/changes?squashed=false")
            assert [(c["type"], c.get("contentUid")) for c in data(body)] == [
                ("CREATE_MISSION", None),
                ("ADD_CONTENT", "off-1"),
                ("ADD_CONTENT", "off-2"),
                ("REMOVE_CONTENT", "off-1"),
                ("ADD_CONTENT", None),
            ]
            # Conflicts (TAK hasConflicts): a change of off-2 made before the mission recorded
            # one, and a change made before the mission existed. 409 with those changes, and
            # nothing of the package is taken (off-3 neither).
            stale = offline_changes(
                ("ADD_CONTENT", now + 5, "off-3", None),
                ("REMOVE_CONTENT", now - 60, "off-2", None),
                ("ADD_CONTENT", 946_684_800, "off-4", None),
            )
            zipped = _zip_with(
                [
                    ("changes.json", stale),
                    ("0/off-3.cot", mission_marker("off-3", "never", None)),
                    ("2/off-4.cot", mission_marker("off-4", "never", None)),
                ]
            )
            refused = server.metrics.counter("liaison_mission_refused_total", "")
            status, body = await put_package(a, server, "offline", zipped, creator="ANDROID-alice")
            assert status == 409, body
            doc = json.loads(body)
            assert doc["type"] == "MissionChange"
            assert [(c["type"], c["contentUid"]) for c in doc["data"]] == [
                ("REMOVE_CONTENT", "off-2"),
                ("ADD_CONTENT", "off-4"),
            ]
            assert doc["data"][0]["missionName"] == "offline"
            assert doc["data"][0]["creatorUid"] == "ANDROID-alice"
            assert refused.get("package_conflict") == 1
            status, body = await call(b, server, "GET", f"{M}/offline")
            assert [u["data"] for u in data(body)[0]["uids"]] == ["off-2"]
            assert b"never" not in b"".join(await bob.collect(0.5))
