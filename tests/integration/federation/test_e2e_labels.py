"""End to end with labels: a USA server and a UKR server, each with two TAK clients of its own
organisation at two clearance levels (pytak over mutual TLS), joined by the federation link.

Labelled and unlabelled events, broadcast chats and a directed message go both ways; the exact
delivery matrix of what crossed is asserted, canary strings of items not releasable to the
partner never appear in any byte written to the link (captured at the socket, in plaintext) nor
received by any partner client, and the two audit logs cross-check by content hash.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from liaison.app import Server, run_server
from liaison.audit import verify
from liaison.federation.link import GateAudit
from liaison.federation.status import LinkState
from liaison.gate import load_gate_config
from liaison.identity.users import UserDirectory
from liaison.model import labels
from tests.integration.conftest import issue_cert, make_config
from tests.integration.federation.fed_helpers import (
    start_federation,
    stop_federation,
    ukr_peer_of_usa,
    usa_peer_of_ukr,
    wait_until,
)
from tests.integration.helpers import Client, chat_event, clients, connect_tls, sa_event

POLICY_TEXT = """
[policy]
id = "LIAISON-USA-UKR"
version = 1
classifications = ["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET"]

[policy.categories.HANDLING]
type = "RESTRICTIVE"
values = ["ORCON", "ALPHA"]

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
"""
POLICY = load_gate_config(POLICY_TEXT).policy

USERS = {
    "usa": {"usa-s": "usa-secret", "usa-u": "usa-unclass"},
    "ukr": {"ukr-s": "ukr-secret", "ukr-u": "ukr-unclass"},
}


def seclabel(cls: str, orig: str, rel: list[str], handling: list[str] | None = None) -> str:
    cats = {"REL": frozenset(rel)}
    if handling:
        cats["HANDLING"] = frozenset(handling)
    label = labels.Label(
        policy_id=POLICY.id,
        classification=cls,
        categories=cats,
        originator=orig,
        created_ms=1_764_072_000_000,
    )
    return labels.seclabel_to_xml(POLICY, label)


def marker(uid: str, text: str, label: str) -> bytes:
    return sa_event(
        uid, uid.upper(), cot_type="a-h-G", extra_detail=f"<remarks>{text}</remarks>{label}"
    ).replace(b' endpoint="*:-1:stcp"', b"")


def labelled_chat(sender: str, text: str, label: str, **kw: str) -> bytes:
    return chat_event(sender, sender.upper(), text, **kw).replace(
        b"</detail>", label.encode() + b"</detail>"
    )


def seen(client: Client, needle: str) -> bool:
    return needle.encode() in client.raw


async def _server_with_users(root: Path, side: str) -> object:
    data = root / side
    users = UserDirectory.load(data / "users.json")
    org = side.upper()
    for name, profile in USERS[side].items():
        users.add_user(name, org, profile=profile)
    policy_file = root / "policy.toml"
    policy_file.write_text(POLICY_TEXT)
    return run_server(
        make_config(
            data,
            udp="off",
            https="off",
            enroll="off",
            tcp="off",
            policy_file=str(policy_file),
        )
    )


async def _connect(server: Server, side: str) -> dict[str, Client]:
    assert server.tls is not None
    out = {}
    for name in USERS[side]:
        cert = issue_cert(server, name, side.upper())
        out[name] = await connect_tls(
            server.tls.port, cert=cert.cert, key=cert.key, ca=cert.ca, name=name
        )
    return out


async def test_delivery_matrix_across_the_link(tmp_path: Path) -> None:
    usa_cm = await _server_with_users(tmp_path, "usa")
    ukr_cm = await _server_with_users(tmp_path, "ukr")
    async with usa_cm as usa, ukr_cm as ukr:  # type: ignore[attr-defined]
        assert usa.router.gate is not None and ukr.router.gate is not None
        b = await start_federation(
            ukr,
            "ukr-srv",
            [usa_peer_of_ukr(usa)],
            policy=POLICY,
            audit=GateAudit(ukr.router.gate),  # type: ignore[arg-type]
        )
        assert b.fed.bound is not None
        a = await start_federation(
            usa,
            "usa-srv",
            [ukr_peer_of_usa(ukr, b.fed.bound.port)],
            listen="off",
            policy=POLICY,
            audit=GateAudit(usa.router.gate),  # type: ignore[arg-type]
        )
        try:
            await wait_until(lambda: a.fed.status.peers["ukr"].state is LinkState.UP)
            cu = await _connect(usa, "usa")
            ck = await _connect(ukr, "ukr")
            async with clients(*cu.values(), *ck.values()):
                us, uu = cu["usa-s"], cu["usa-u"]
                ks, ku = ck["ukr-s"], ck["ukr-u"]
                for c, uid in ((us, "usa-s"), (uu, "usa-u"), (ku, "ukr-u")):
                    # Unlabelled: the listener default, UNCLASSIFIED//REL TO own org.
                    await c.send(sa_event(f"uid-{uid}", f"SA-{uid.upper()}"))
                # ukr-s shares its position with the partner: the USA server learns that
                # uid-ukr-s is a client of the UKR link, so a directed message can reach it.
                await ks.send(
                    sa_event(
                        "uid-ukr-s",
                        "SA-UKR-S",
                        extra_detail=seclabel("SECRET", "UKR", ["UKR", "USA"]),
                    )
                )
                await us.wait_for(b"SA-UKR-S")
                await us.send(
                    marker("m-both-s", "X-BOTH-S", seclabel("SECRET", "USA", ["USA", "UKR"]))
                )
                await uu.send(
                    marker("m-both-u", "X-BOTH-U", seclabel("UNCLASSIFIED", "USA", ["USA", "UKR"]))
                )
                await us.send(
                    marker("m-usa", "CANARY-USA-ONLY", seclabel("SECRET", "USA", ["USA"]))
                )
                await us.send(
                    marker(
                        "m-orcon",
                        "CANARY-ORCON",
                        seclabel("SECRET", "USA", ["USA", "UKR"], ["ORCON"]),
                    )
                )
                await us.send(
                    labelled_chat(
                        "uid-usa-s", "X-CHAT-BOTH", seclabel("UNCLASSIFIED", "USA", ["USA", "UKR"])
                    )
                )
                await us.send(
                    labelled_chat(
                        "uid-usa-s",
                        "CANARY-USA-CHAT",
                        seclabel("UNCLASSIFIED", "USA", ["USA"]),
                    )
                )
                # Directed to a partner user: it crosses with only that user's dest and reaches
                # that user alone.
                await us.send(
                    labelled_chat(
                        "uid-usa-s",
                        "X-DM-TO-UKR",
                        seclabel("SECRET", "USA", ["USA", "UKR"]),
                        to_uid="uid-ukr-s",
                    )
                )
                await ks.send(
                    marker("k-both-s", "X-K-BOTH", seclabel("SECRET", "UKR", ["UKR", "USA"]))
                )
                await ks.send(
                    marker("k-ukr", "CANARY-UKR-ONLY", seclabel("SECRET", "UKR", ["UKR"]))
                )
                await ku.send(
                    labelled_chat(
                        "uid-ukr-u", "X-K-CHAT", seclabel("UNCLASSIFIED", "UKR", ["UKR", "USA"])
                    )
                )
                await asyncio.sleep(1.0)
                for c in (us, uu, ks, ku):
                    await c.collect(0.5)

                crossing = {
                    # item: the partner's clients that must receive it
                    "X-BOTH-S": {"ukr-s"},
                    "X-BOTH-U": {"ukr-s", "ukr-u"},
                    "X-CHAT-BOTH": {"ukr-s", "ukr-u"},
                    "X-K-BOTH": {"usa-s"},
                    "X-K-CHAT": {"usa-s", "usa-u"},
                    "X-DM-TO-UKR": {"ukr-s"},
                    "SA-UKR-S": {"usa-s"},
                }
                partner = {
                    "X-BOTH-S": (ks, ku),
                    "X-BOTH-U": (ks, ku),
                    "X-CHAT-BOTH": (ks, ku),
                    "X-K-BOTH": (us, uu),
                    "X-K-CHAT": (us, uu),
                    "X-DM-TO-UKR": (ks, ku),
                    "SA-UKR-S": (us, uu),
                }
                for item, who in crossing.items():
                    got = {c.name for c in partner[item] if seen(c, item)}
                    assert got == who, (item, got)
                not_crossing = [
                    "CANARY-USA-ONLY",
                    "CANARY-ORCON",
                    "CANARY-USA-CHAT",
                    "SA-USA-S",
                    "SA-USA-U",
                ]
                for item in not_crossing:
                    assert not any(seen(c, item) for c in (ks, ku)), item
                for item in ("CANARY-UKR-ONLY", "SA-UKR-U"):
                    assert not any(seen(c, item) for c in (us, uu)), item
            wire_a, wire_b = bytes(a.wire_out), bytes(b.wire_out)
            for item in not_crossing:
                assert item.encode() not in wire_a, item
            for item in ("CANARY-UKR-ONLY", "SA-UKR-U"):
                assert item.encode() not in wire_b, item
            # The directed message crossed with its addressee's dest (so the partner routes it
            # explicitly), and the addressee received it without any dest.
            start = wire_a.rfind(b"<event", 0, wire_a.index(b"X-DM-TO-UKR"))
            dm = wire_a[start : wire_a.index(b"</event>", start)]
            assert dm.count(b"<dest ") == 1 and b'<dest uid="uid-ukr-s"' in dm
            assert b"<dest" not in ks.raw[ks.raw.index(b"X-DM-TO-UKR") - 1500 :][:3000]
            assert b"X-BOTH-S" in wire_a and b"X-K-BOTH" in wire_b
        finally:
            await stop_federation(a)
            await stop_federation(b)

        def records(server: Server) -> list[dict[str, object]]:
            path = server.config.data_dir / "audit"
            logs = sorted(path.glob("*.log")) + sorted(path.glob("*.jsonl"))
            assert logs, list(path.iterdir())
            return [json.loads(line) for f in logs for line in f.read_bytes().splitlines()]

        ra, rb = records(usa), records(ukr)

        def hashes(recs: list[dict[str, object]], kind: str, key: str, value: str) -> set[str]:
            return {
                r["fields"]["sha256"]  # type: ignore[index]
                for r in recs
                if r["kind"] == kind and r["fields"].get(key) == value  # type: ignore[union-attr]
            }

        sent_a = hashes(ra, "release", "peer", "ukr")
        sent_b = hashes(rb, "release", "peer", "usa")
        # USA released X-BOTH-S, X-BOTH-U, X-CHAT-BOTH and the directed message; UKR released
        # X-K-BOTH, X-K-CHAT and ukr-s's shared position.
        assert len(sent_a) == 4 and len(sent_b) == 3
        assert sent_a == hashes(rb, "ingest", "peer", "usa")
        assert sent_b == hashes(ra, "ingest", "peer", "ukr")
    for server in (usa, ukr):
        for f in (server.config.data_dir / "audit").glob("*.log"):
            assert verify(f, None).ok, f
