"""Configuration: precedence, errors that name the key, and docs that list every setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from liaison import config as config_mod
from liaison.config import Endpoint
from liaison.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_match_the_issue() -> None:
    cfg = config_mod.load(None, {}, {})
    assert cfg.data_dir == Path("liaison-data")
    assert cfg.tcp == Endpoint("0.0.0.0", 8087)
    assert cfg.tls == Endpoint("0.0.0.0", 8089)
    assert cfg.storage == "sqlite"
    assert cfg.multicast is None


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "liaison.toml"
    f.write_text(
        '[listeners]\ntcp = "127.0.0.1:9000"\ntls = "off"\n[storage]\nretention_days = 7\n'
    )
    cfg = config_mod.load(f, {"LIAISON_TCP": "127.0.0.1:9100"}, {})
    assert cfg.tcp == Endpoint("127.0.0.1", 9100) and cfg.tls is None and cfg.retention_days == 7
    cfg = config_mod.load(None, {"LIAISON_CONFIG": str(f)}, {"tcp": "off", "tls": ":8443"})
    assert cfg.tcp is None and cfg.tls == Endpoint("0.0.0.0", 8443)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[listeners]\ntcp = "host:notaport"\n', "listeners.tcp"),
        ('[listeners]\nmulticast = "10.0.0.1:6969"\n', "listeners.multicast"),
        ('[storage]\nbackend = "oracle"\n', "storage.backend"),
        ('[storage]\nbackend = "mysql://u@h/d"\n', "storage.backend"),
        ("[limits]\nidle_timeout_s = -1\n", "limits.idle_timeout_s"),
        ("[nope]\nx = 1\n", "nope.x"),
        ('[auth]\ncert_username_regex = "CN=.*"\n', "auth.cert_username_regex"),
        ("[server\n", "liaison.toml"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    f = tmp_path / "liaison.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        config_mod.load(f, {}, {})
    assert key in str(err.value)


def test_storage_is_sqlite_memory_or_a_postgresql_url(tmp_path: Path) -> None:
    url = "postgresql://liaison@db.example:5432/liaison"
    assert config_mod.load(None, {}, {"storage": url}).storage == url
    assert config_mod.load(None, {"LIAISON_STORAGE": "postgres://u@h/d"}, {}).storage == (
        "postgres://u@h/d"
    )
    assert config_mod.load(None, {}, {"storage": "SQLite"}).storage == "sqlite"
    f = tmp_path / "liaison.toml"
    f.write_text(f'[storage]\nbackend = "{url}"\n')
    assert config_mod.load(f, {}, {}).storage == url
    for bad in ("mysql://u@h/d", "postgresql://", "postgresql:/x"):
        with pytest.raises(ConfigError, match="expected sqlite, memory or a postgresql:// URL"):
            config_mod.load(None, {}, {"storage": bad})


def test_every_setting_is_documented_with_its_default() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for s in config_mod.SETTINGS:
        assert f"`{s.key}`" in doc, s.key
        if s.env:
            assert f"`{s.env}`" in doc, s.env


def test_describe_round_trips_through_the_file_format(tmp_path: Path) -> None:
    cfg = config_mod.load(None, {}, {"tcp": "127.0.0.1:1234", "udp": "off"})
    f = tmp_path / "effective.toml"
    f.write_text(config_mod.describe(cfg))
    again = config_mod.load(f, {}, {})
    assert again == cfg
