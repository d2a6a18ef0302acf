"""Peer configuration parsing (errors name the key), Backoff, and the status file and command."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from liaison.cli import main
from liaison.errors import ConfigError
from liaison.federation.backoff import Backoff
from liaison.federation.config import DetailPolicy, parse_federation
from liaison.federation.status import (
    FederationStatus,
    LinkState,
    render_status,
    standby_may_write,
    status_path,
)
from liaison.metrics import Metrics
from tests.unit.federation.fed_support import FP_B, POLICY, fed_config, peer, peer_table

FULL = f"""
[federation]
server_id = "usa-liaison"
listen = ":9001"

[[federation.peer]]
name = "ukr"
dial = "ukr.example.net:9001"
ca_file = "peers/ukr-ca.pem"
fingerprint = "{":".join(FP_B[i : i + 2].upper() for i in range(0, 64, 2))}"
release_ceiling = {{ classification = "SECRET", REL = ["UKR", "LIAISON"] }}
originate = {{ org = "UKR", classification = "SECRET", REL = ["UKR", "LIAISON"] }}
allow_types = ["a-", "b-t-f"]
detail_policy = "deny"
in_groups = ["ukr-partner"]
coalesce = false
[federation.peer.details]
"a-" = ["contact", "track"]
"a-f-G-U-C-I" = ["contact"]
"*" = ["remarks"]
[federation.peer.priority]
"b-t-f" = 0
"a-" = 3
"""


def test_a_full_peer_table_parses() -> None:
    fed = parse_federation(FULL, POLICY, default_server_id="localhost", base_dir=Path("/etc/l"))
    assert fed is not None and fed.server_id == "usa-liaison"
    assert fed.listen is not None and fed.listen.port == 9001 and fed.listen.host == "0.0.0.0"
    p = fed.peers[0]
    assert p.dial is not None and str(p.dial) == "ukr.example.net:9001"
    assert p.ca_file == Path("/etc/l/peers/ukr-ca.pem")
    assert p.fingerprint == FP_B
    assert p.release_ceiling.ceiling == "SECRET"
    assert p.originate_org == "UKR" and p.detail_policy is DetailPolicy.DENY
    assert p.in_groups == frozenset({"ukr-partner"}) and not p.coalesce
    # Longest prefix wins; the label always survives.
    assert p.allowed_details("a-f-G-U-C-I") == frozenset({"contact", "__seclabel"})
    assert p.allowed_details("a-h-G") == frozenset({"contact", "track", "__seclabel"})
    assert p.allowed_details("b-t-f") == frozenset({"remarks", "__seclabel"})
    assert p.priority("b-t-f") == 0 and p.priority("a-f") == 3 and p.priority("t-x-d-d") == 2


def test_no_federation_table_means_no_federation() -> None:
    assert parse_federation("[other]\nx = 1\n", POLICY, default_server_id="h") is None


ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"name": "UKR!"}, "federation.peer[0].name"),
    ({"dial": None}, "federation.peer[0].dial"),
    ({"accept": True}, "federation.peer[0].dial"),
    ({"dial": "nohost"}, "federation.peer[0].dial"),
    ({"fingerprint": "abc"}, "federation.peer[0].fingerprint"),
    ({"release_ceiling": None}, "federation.peer[0].release_ceiling"),
    ({"release_ceiling": {"classification": "TOP"}}, "federation.peer[0].release_ceiling"),
    ({"release_ceiling": {"classification": "SECRET", "REL": ["FRA"]}}, "release_ceiling.REL"),
    ({"originate": {"org": "FRA", "classification": "SECRET"}}, "federation.peer[0].originate"),
    ({"allow_types": None}, "federation.peer[0].allow_types"),
    ({"detail_policy": "strip"}, "federation.peer[0].detail_policy"),
    ({"details": {"a-": ["bad name"]}}, "federation.peer[0].details"),
    ({"priority": {"b-t-f": 99}}, "federation.peer[0].priority"),
    ({"relay": True}, "federation.peer[0].relay"),
    ({"max_hops": 0}, "federation.peer[0].max_hops"),
    ({"surprise": 1}, "federation.peer[0].surprise"),
]


@pytest.mark.parametrize(
    ("change", "key"), ERRORS, ids=[e[1] + str(i) for i, e in enumerate(ERRORS)]
)
def test_configuration_errors_name_the_key(change: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        fed_config(peers=[peer_table(**change)])
    assert key in str(info.value)


def test_duplicate_peers_and_accept_without_listener_are_refused() -> None:
    with pytest.raises(ConfigError, match="duplicate peer name"):
        fed_config(peers=[peer_table(), peer_table(fingerprint="c" * 64)])
    with pytest.raises(ConfigError, match="one certificate"):
        fed_config(peers=[peer_table(), peer_table(name="fra")])
    with pytest.raises(ConfigError, match="listen is off"):
        fed_config(peers=[peer_table(dial=None, accept=True)], listen="off")
    with pytest.raises(ConfigError, match="server_id"):
        fed_config(server_id="has space")


def test_default_details_cover_the_common_types_and_keep_the_label() -> None:
    p = peer()
    assert "contact" in (p.allowed_details("a-f-G-U-C") or ())
    assert "__chat" in (p.allowed_details("b-t-f") or ())
    assert "_flow-tags_" not in (p.allowed_details("a-f-G-U-C") or ())
    assert "__seclabel" in (p.allowed_details("u-d-r") or ())


# --- Backoff ----------------------------------------------------------------------------------


def test_backoff_doubles_to_the_cap_without_jitter() -> None:
    b = Backoff(1.0, 30.0, 0.0)
    assert [b.delay(n) for n in range(7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert b.delay(10_000) == 30.0


def test_backoff_jitter_stays_within_its_band_and_is_reproducible() -> None:
    a = Backoff(1.0, 60.0, 0.5, random.Random(7))
    b = Backoff(1.0, 60.0, 0.5, random.Random(7))
    delays = [a.delay(n) for n in range(1, 200)]
    assert delays == [b.delay(n) for n in range(1, 200)]
    for n, d in enumerate(delays, start=1):
        full = min(60.0, 2.0 ** (n - 1))
        assert full * 0.5 <= d <= full
    assert len({round(d, 6) for d in delays[10:]}) > 100  # really jittered


# --- status ---------------------------------------------------------------------------------------


def test_status_file_metrics_and_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = Metrics()
    status = FederationStatus("usa-srv", metrics)
    s = status.add("ukr", "ukr.example.net:9001")
    s.set_state(LinkState.UP, 1000)
    s.backlog, s.last_acked = 12, 340
    s.bump("releases", 5)
    s.bump("denials", 2)
    snap = metrics.snapshot()
    assert snap['liaison_federation_releases_total{peer="ukr"}'] == 5
    assert snap["liaison_federation_up_ukr"] == 1.0
    assert snap["liaison_federation_backlog_ukr"] == 12.0
    now = 1_764_072_000_000
    status.write(status_path(tmp_path), now)
    doc = json.loads(status_path(tmp_path).read_text())
    assert doc["peers"][0]["counts"]["denials"] == 2 and doc["peers"][0]["state"] == "up"
    text = render_status(doc, now + 1000, stale_after_ms=15_000)
    assert "ukr" in text and "340" in text and "stale" not in text
    assert "stale" in render_status(doc, now + 60_000, stale_after_ms=15_000)

    assert main(["federation", "status", "--data-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["peers"][0]["last_acked"] == 340
    assert main(["federation", "status", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "up" in out and "ukr.example.net" not in out.split("\n")[0]
    assert main(["federation", "status", "--data-dir", str(tmp_path / "none")]) == 1


def test_status_shows_the_wire_of_each_peer(tmp_path: Path) -> None:
    status = FederationStatus("usa-srv")
    status.add("ukr", "ukr.example.net:9001")
    status.add("tak", "tak.example.net:9001", "tak-v2")
    now = 1_764_072_000_000
    status.write(status_path(tmp_path), now)
    doc = json.loads(status_path(tmp_path).read_text())
    assert [(p["name"], p["protocol"]) for p in doc["peers"]] == [
        ("ukr", "native"),
        ("tak", "tak-v2"),
    ]
    lines = render_status(doc, now, stale_after_ms=15_000).splitlines()
    assert lines[1].split()[:3] == ["peer", "wire", "state"]
    assert lines[2].split()[:2] == ["ukr", "native"] and lines[3].split()[:2] == ["tak", "tak-v2"]


def test_a_standby_never_hides_the_lease_holders_status(tmp_path: Path) -> None:
    """Workers of one node share the data folder and so federation/status.json: a node that
    does not hold the lease writes there only when the file is not a fresh status of the
    holder (federation/status.py standby_may_write)."""
    path = status_path(tmp_path)
    assert standby_may_write(path, "w2", 1_000, stale_after_ms=30_000)  # no file yet
    holder = FederationStatus("usa-srv", Metrics())
    holder.lease = {"node": "w1", "holder": "w1", "epoch": 3, "held_here": True}
    holder.write(path, 1_000)
    assert not standby_may_write(path, "w2", 20_000, stale_after_ms=30_000)
    assert standby_may_write(path, "w2", 31_000, stale_after_ms=30_000)  # holder gone quiet
    assert standby_may_write(path, "w1", 20_000, stale_after_ms=30_000)  # its own file
    holder.lease = {"node": "w1", "holder": None, "epoch": 3, "held_here": False}
    holder.write(path, 2_000)  # the holder released it
    assert standby_may_write(path, "w2", 3_000, stale_after_ms=30_000)
