"""The server's components at start and stop: a start that fails half way closes what it had
started, newest first, and raises its one error as itself."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from liaison.app import run_server
from liaison.errors import ListenError
from liaison.gate import audit_paths
from tests.integration.conftest import make_config
from tests.integration.test_labels_e2e import POLICY


async def test_a_port_in_use_closes_what_started_and_raises_the_listen_error(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    data = tmp_path / "data"
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        config = make_config(
            data, tls=f"127.0.0.1:{port}", policy_file=str(policy), storage="sqlite"
        )
        with pytest.raises(ListenError) as caught:
            async with run_server(config):
                raise AssertionError("the server must not start")
    assert f"127.0.0.1:{port}" in str(caught.value)
    # The audit log, opened first, was closed last, with its checkpoint.
    log_path, _key, _pub = audit_paths(data)
    kinds = [json.loads(line)["kind"] for line in log_path.read_bytes().splitlines()]
    assert kinds == ["config_load", "checkpoint"]
    # The store was closed too: the same data folder starts again at once.
    async with run_server(make_config(data, policy_file=str(policy), storage="sqlite")) as server:
        assert server.tls is not None and server.tcp is not None
    kinds = [json.loads(line)["kind"] for line in log_path.read_bytes().splitlines()]
    assert kinds[-1] == "checkpoint" and kinds.count("config_load") == 2
