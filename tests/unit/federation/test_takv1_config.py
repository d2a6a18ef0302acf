"""The tak-v1 peer keys of [[federation.peer]]: both roles, and the default label."""

from __future__ import annotations

import pytest

from liaison.errors import ConfigError
from liaison.federation.config import PROTOCOL_TAK_V1, PROTOCOLS
from tests.unit.federation.fed_support import fed_config, peer, peer_table


def test_tak_v1_dials_or_accepts_with_a_default_label() -> None:
    assert PROTOCOL_TAK_V1 == "tak-v1" and PROTOCOL_TAK_V1 in PROTOCOLS
    dialled = peer(protocol="tak-v1", default_label={"classification": "SECRET", "REL": ["UKR"]})
    assert dialled.protocol == PROTOCOL_TAK_V1 and dialled.dial is not None
    assert dialled.default_label is not None and dialled.default_label.originator == "UKR"
    accepted = peer(protocol="tak-v1", dial=None, accept=True)
    assert accepted.protocol == PROTOCOL_TAK_V1 and accepted.dial is None
    assert accepted.default_label is None  # then unlabelled events from it are refused


def test_a_default_label_is_refused_for_a_native_peer() -> None:
    with pytest.raises(ConfigError) as err:
        fed_config(peers=[peer_table(default_label={"classification": "SECRET", "REL": ["UKR"]})])
    assert "default_label" in str(err.value) and "tak-v1" in str(err.value)
