"""The ``missions`` key of [[federation.peer]]: which missions' items cross a link (any wire)."""

from __future__ import annotations

import pytest

from liaison.errors import ConfigError
from tests.unit.federation.fed_support import fed_config, peer, peer_table


def test_no_mission_crosses_by_default() -> None:
    p = peer()
    assert p.missions == frozenset()
    assert not p.federates_mission("ops")


def test_named_missions_or_all() -> None:
    p = peer(missions=["ops", "ops.north"])
    assert p.federates_mission("ops") and p.federates_mission("ops.north")
    assert not p.federates_mission("other")
    assert peer(missions=["*"]).federates_mission("anything")


@pytest.mark.parametrize(
    "overrides",
    [
        {"missions": "ops"},  # not a list
        {"missions": [""]},
        {"missions": ["a/b"]},  # not addressable by the mission API
        {"missions": ["x\x01"]},
    ],
)
def test_bad_missions_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as err:
        fed_config(peers=[peer_table(**overrides)])
    assert "missions" in str(err.value)


@pytest.mark.parametrize("protocol", ["tak-v2", "tak-v1"])
def test_tak_peers_take_missions_too(protocol: str) -> None:
    config = fed_config(peers=[peer_table(missions=["ops"], protocol=protocol)])
    assert config.peers[0].federates_mission("ops")
