"""Shared material for federation tests: the example policy, peer configs and labelled events."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from liaison.federation.config import FederationConfig, PeerConfig, federation_from_table
from liaison.model import labels
from liaison.model.labels import Label
from liaison.model.policy import load_policy
from liaison.protocol import cot_xml

REPO = Path(__file__).resolve().parents[3]
POLICY = load_policy((REPO / "examples" / "policy.toml").read_text())
T0 = 1_764_072_000_000  # 2025-11-25T12:00:00.000Z
FP_A = "a" * 64
FP_B = "b" * 64


def peer_table(**overrides: Any) -> dict[str, Any]:
    """A [[federation.peer]] table for the UKR partner, as the USA side configures it."""
    table: dict[str, Any] = {
        "name": "ukr",
        "dial": "127.0.0.1:9001",
        "ca_file": "/nonexistent/ukr-ca.pem",
        "fingerprint": FP_B,
        "release_ceiling": {"classification": "SECRET", "REL": ["UKR", "LIAISON"]},
        "originate": {"org": "UKR", "classification": "SECRET", "REL": ["UKR", "LIAISON"]},
        "allow_types": ["a-", "b-t-f", "b-a-o", "t-x-d-d", "u-d-"],
    }
    table.update(overrides)
    return {k: v for k, v in table.items() if v is not None}


def fed_config(
    server_id: str = "usa-srv", peers: list[dict[str, Any]] | None = None, **top: Any
) -> FederationConfig:
    table: dict[str, Any] = {"server_id": server_id, "peer": peers or [peer_table()]}
    table.update(top)
    return federation_from_table(table, POLICY, default_server_id="localhost")


def peer(**overrides: Any) -> PeerConfig:
    return fed_config(peers=[peer_table(**overrides)]).peers[0]


def lab(classification: str = "SECRET", *, originator: str = "USA", **cats: list[str]) -> Label:
    return Label(
        policy_id=POLICY.id,
        classification=classification,
        categories={k: frozenset(v) for k, v in cats.items()},
        originator=originator,
        created_ms=T0,
    )


def seclabel(label: Label) -> str:
    return labels.seclabel_to_xml(POLICY, label)


def cot(
    *,
    uid: str | None = None,
    cot_type: str = "a-f-G-U-C",
    label: Label | None = None,
    detail: str = '<contact callsign="ALPHA" endpoint="*:-1:stcp"/><__group name="Cyan"/>',
    root_attrs: str = "",
    time_ms: int | None = None,
) -> bytes:
    """A CoT event's bytes; ``label`` adds its <__seclabel> to the detail."""
    t = cot_xml.format_time(time_ms if time_ms is not None else int(time.time() * 1000))
    stale = cot_xml.format_time((time_ms or int(time.time() * 1000)) + 600_000)
    uid = uid or f"uid-{uuid.uuid4()}"
    lbl = seclabel(label) if label is not None else ""
    return (
        f'<event version="2.0" uid="{uid}" type="{cot_type}" how="m-g" time="{t}" start="{t}"'
        f' stale="{stale}"{root_attrs}><point lat="50.45" lon="30.52" hae="120.0" ce="9.9"'
        f' le="9999999.0"/><detail>{detail}{lbl}</detail></event>'
    ).encode()


def event(**kwargs: Any) -> Any:
    return cot_xml.parse_event(cot(**kwargs))


REL_BOTH = lab("SECRET", REL=["USA", "UKR"])
USA_ONLY = lab("SECRET", REL=["USA"])
ORCON = lab("SECRET", REL=["USA", "UKR"], HANDLING=["ORCON"])
UNCLASS_LIAISON = lab("UNCLASSIFIED", REL=["LIAISON"])
UKR_ORIG = lab("SECRET", originator="UKR", REL=["UKR", "USA"])
