"""Labels end to end: four TAK clients over mutual TLS (USA and UKR, two clearance levels each).

Asserts the exact delivery matrix on live delivery and on replay, that the ingest rules refuse
what they must, that canary strings of denied items never appear in any byte a client receives,
and that the audit log verifies (and fails on a tampered copy).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from liaison import cli
from liaison.gate import load_gate_config
from liaison.identity.users import UserDirectory
from liaison.model import labels
from tests.integration.conftest import ServerFactory, issue_cert
from tests.integration.helpers import Client, chat_event, clients, connect_tls, sa_event

POLICY = """
[policy]
id = "LIAISON-USA-UKR"
version = 1
classifications = ["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET"]

[policy.categories.HANDLING]
type = "RESTRICTIVE"
values = ["ORCON"]

[policy.categories.REL]
type = "PERMISSIVE"
required = true
values = ["USA", "UKR", "LIAISON"]

[authz.profiles.usa-secret]
classification = "SECRET"
REL = ["USA", "LIAISON"]
HANDLING = ["ORCON"]

[authz.profiles.usa-unclass]
classification = "UNCLASSIFIED"
REL = ["USA", "LIAISON"]

[authz.profiles.ukr-secret]
classification = "SECRET"
REL = ["UKR", "LIAISON"]

[authz.profiles.ukr-unclass]
classification = "UNCLASSIFIED"
REL = ["UKR", "LIAISON"]

[gate.listeners.tls]
ceiling = { classification = "SECRET", REL = "*", HANDLING = "*" }
default_classification = "UNCLASSIFIED"

[gate.listeners.https]
ceiling = { classification = "SECRET", REL = "*", HANDLING = "*" }
"""

USERS = {
    "usa-s": ("USA", "usa-secret"),
    "usa-u": ("USA", "usa-unclass"),
    "ukr-s": ("UKR", "ukr-secret"),
    "ukr-u": ("UKR", "ukr-unclass"),
}


def seclabel(classification: str, rel: list[str], handling: list[str] | None = None) -> str:
    policy = load_gate_config(POLICY).policy
    cats: dict[str, frozenset[str]] = {"REL": frozenset(rel)}
    if handling:
        cats["HANDLING"] = frozenset(handling)
    label = labels.Label(
        policy_id=policy.id,
        classification=classification,
        categories=cats,
        originator=rel[0],
        created_ms=1_700_000_000_000,
    )
    return labels.seclabel_to_xml(policy, label)


def marker(uid: str, text: str, label: str = "") -> bytes:
    return sa_event(
        uid, uid.upper(), cot_type="b-m-p-s-m", extra_detail=f"<remarks>{text}</remarks>{label}"
    ).replace(b' endpoint="*:-1:stcp"', b"")


def seen(client: Client, needle: str) -> bool:
    """Whether the client received the item (by event uid) or the text (canaries)."""
    if needle.startswith(("uid-", "m-")):
        return f'<event version="2.0" uid="{needle}"'.encode() in client.raw
    return needle.encode() in client.raw


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(POLICY)
    return p


async def connect_all(server: object, data_dir: Path) -> dict[str, Client]:
    from liaison.app import Server

    assert isinstance(server, Server) and server.tls is not None
    conns: dict[str, Client] = {}
    for name, (org, _) in USERS.items():
        cert = issue_cert(server, name, org)
        conns[name] = await connect_tls(
            server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name=name
        )
    return conns


async def test_delivery_matrix_live_replay_and_audit(
    start_server: ServerFactory, data_dir: Path, policy_file: Path
) -> None:
    users = UserDirectory.load(data_dir / "users.json")
    for name, (org, profile) in USERS.items():
        users.add_user(name, org, profile=profile)

    async with start_server(policy_file=str(policy_file)) as server:
        conns = await connect_all(server, data_dir)
        async with clients(*conns.values()):
            us, uu, ks, ku = (conns[n] for n in ("usa-s", "usa-u", "ukr-s", "ukr-u"))
            for c, uid in (
                (us, "uid-usa-s"),
                (uu, "uid-usa-u"),
                (ks, "uid-ukr-s"),
                (ku, "uid-ukr-u"),
            ):
                await c.send(sa_event(uid, uid.upper()))  # unlabelled: UNCLASSIFIED//REL TO own org
            await us.send(
                marker("m-secret-both", "CANARY-SECRET-BOTH", seclabel("SECRET", ["USA", "UKR"]))
            )
            await us.send(
                marker("m-orcon", "CANARY-ORCON", seclabel("SECRET", ["USA", "UKR"], ["ORCON"]))
            )
            await uu.send(
                marker(
                    "m-unclass-both",
                    "CANARY-UNCLASS-BOTH",
                    seclabel("UNCLASSIFIED", ["USA", "UKR"]),
                )
            )
            # Refused at ingest: a label the sender could not read, one excluding its own org,
            # and one that does not parse.
            await uu.send(marker("m-too-high", "CANARY-TOO-HIGH", seclabel("SECRET", ["USA"])))
            await ks.send(marker("m-not-own-org", "CANARY-NOT-OWN", seclabel("SECRET", ["USA"])))
            await ks.send(marker("m-garbage", "CANARY-GARBAGE", '<__seclabel policy="nope"/>'))
            # Chats: broadcast from UKR unclassified (default label: REL TO UKR), a directed chat
            # releasable to both, and a directed chat to a UKR user that is REL TO USA only.
            await ku.send(chat_event("uid-ukr-u", "UKR-U", "CANARY-UKR-CHAT"))
            await ks.send(
                chat_event("uid-ukr-s", "UKR-S", "CANARY-DM-BOTH", to_uid="uid-usa-s").replace(
                    b"</detail>", seclabel("SECRET", ["UKR", "USA"]).encode() + b"</detail>"
                )
            )
            await us.send(
                chat_event("uid-usa-s", "USA-S", "CANARY-DM-USA-ONLY", to_uid="uid-ukr-u").replace(
                    b"</detail>", seclabel("UNCLASSIFIED", ["USA"]).encode() + b"</detail>"
                )
            )
            await asyncio.sleep(0.5)
            for c in conns.values():
                await c.collect(0.3)

            expected_live = {
                "usa-s": {"uid-usa-u", "m-unclass-both", "CANARY-DM-BOTH"},
                "usa-u": {"uid-usa-s"},  # it sent m-unclass-both itself: never echoed
                "ukr-s": {"uid-ukr-u", "m-secret-both", "m-unclass-both", "CANARY-UKR-CHAT"},
                "ukr-u": {"uid-ukr-s", "m-unclass-both"},
            }
            everything = set().union(*expected_live.values()) | {
                "uid-usa-s",
                "uid-usa-u",
                "uid-ukr-s",
                "uid-ukr-u",
                "m-orcon",
                "m-too-high",
                "m-not-own-org",
                "m-garbage",
                "CANARY-DM-USA-ONLY",
                "CANARY-ORCON",
            }
            for name, c in conns.items():
                got = {n for n in everything if seen(c, n)}
                own = {f"uid-{name}"}
                assert got - own == expected_live[name], name
            # Canaries of items nobody may see never appear in any byte any client received.
            for c in conns.values():
                for canary in (
                    "CANARY-ORCON",
                    "CANARY-TOO-HIGH",
                    "CANARY-NOT-OWN",
                    "CANARY-GARBAGE",
                    "CANARY-DM-USA-ONLY",
                ):
                    assert not seen(c, canary), (c.name, canary)
            snap = server.metrics.snapshot()
            assert (
                sum(v for k, v in snap.items() if k.startswith("liaison_ingest_rejected_total"))
                == 3
            )

        # Replay: each user reconnects and gets the latest state it may see. Broadcast chats are
        # part of the state (until stale); directed messages never are.
        conns = await connect_all(server, data_dir)
        async with clients(*conns.values()):
            await asyncio.sleep(0.3)
            for c in conns.values():
                await c.collect(0.3)
            expected_replay = {
                "usa-s": {"uid-usa-s", "uid-usa-u", "m-secret-both", "m-orcon", "m-unclass-both"},
                "usa-u": {"uid-usa-s", "uid-usa-u", "m-unclass-both"},
                "ukr-s": {"uid-ukr-s", "uid-ukr-u", "m-secret-both", "m-unclass-both"},
                "ukr-u": {"uid-ukr-s", "uid-ukr-u", "m-unclass-both"},
            }
            items = {
                "uid-usa-s",
                "uid-usa-u",
                "uid-ukr-s",
                "uid-ukr-u",
                "m-secret-both",
                "m-orcon",
                "m-unclass-both",
            }
            for name, c in conns.items():
                assert {n for n in items if seen(c, n)} == expected_replay[name], name
                assert not seen(c, "CANARY-DM")
                assert seen(c, "CANARY-UKR-CHAT") == name.startswith("ukr")

    # The audit log of this run verifies; a copy with one record edited or removed does not.
    assert cli.main(["audit", "verify", "--data-dir", str(data_dir)]) == 0
    log_path = data_dir / "audit" / "audit.jsonl"
    lines = log_path.read_bytes().splitlines(keepends=True)
    kinds = [line for line in lines if b'"kind":"release"' in line]
    assert kinds, "cross-organisation releases were recorded"
    edited = data_dir / "edited.jsonl"
    i = lines.index(kinds[0])
    edited.write_bytes(
        b"".join([*lines[:i], kinds[0].replace(b'"to_org":"', b'"to_org":"X'), *lines[i + 1 :]])
    )
    assert cli.main(["audit", "verify", "--data-dir", str(data_dir), "--log", str(edited)]) == 1
    removed = data_dir / "removed.jsonl"
    removed.write_bytes(b"".join(lines[:i] + lines[i + 1 :]))
    assert cli.main(["audit", "verify", "--data-dir", str(data_dir), "--log", str(removed)]) == 1
    shutil.rmtree(data_dir / "test-clients", ignore_errors=True)
