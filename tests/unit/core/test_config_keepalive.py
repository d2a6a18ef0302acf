"""The connection-lifetime settings: defaults and the values the kernel would refuse."""

from __future__ import annotations

import pytest

from liaison import config as config_mod
from liaison.errors import ConfigError
from liaison.session import DEFAULT_IDLE_TIMEOUT_S, DEFAULT_KEEPALIVE


def test_defaults_keep_quiet_clients_and_turn_keepalive_on() -> None:
    cfg = config_mod.load(None, {}, {})
    assert cfg.idle_timeout_s == 0 == DEFAULT_IDLE_TIMEOUT_S
    assert cfg.frame_timeout_s == 120.0
    assert (cfg.keepalive_idle_s, cfg.keepalive_interval_s, cfg.keepalive_count) == (60, 10, 6)
    assert DEFAULT_KEEPALIVE.idle_s == 60
    assert DEFAULT_KEEPALIVE.interval_s == 10
    assert DEFAULT_KEEPALIVE.count == 6


def test_keepalive_off_needs_no_other_values() -> None:
    cfg = config_mod.load(None, {}, {"keepalive_idle_s": 0, "keepalive_interval_s": 0})
    assert cfg.keepalive_idle_s == 0


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"keepalive_interval_s": 0}, "limits.keepalive_interval_s"),
        ({"keepalive_count": 0}, "limits.keepalive_count"),
        ({"keepalive_count": 128}, "limits.keepalive_count"),
        ({"keepalive_idle_s": 40_000}, "limits.keepalive_idle_s"),
        ({"keepalive_idle_s": -1}, "--keepalive-idle-s"),
        ({"idle_timeout_s": -1}, "--idle-timeout-s"),
        ({"frame_timeout_s": -1}, "--frame-timeout-s"),
    ],
)
def test_impossible_values_name_the_key(overrides: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_mod.load(None, {}, overrides)
    assert key in str(err.value)
