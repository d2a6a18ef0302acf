"""``liaison serve --workers N``'s pure parts: what it refuses, each worker's configuration and
command line (the processes themselves: tests/integration/test_workers.py)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from liaison.config import Config, Endpoint
from liaison.errors import ConfigError
from liaison.workers import MAX_WORKERS, check_workers, worker_argv, worker_config

CLUSTER = Config(cluster_nats=("nats://127.0.0.1:4222",), storage="postgresql://x@db/x")


def test_a_cluster_on_postgresql_with_fixed_ports_may_run_workers() -> None:
    check_workers(CLUSTER, 4)


@pytest.mark.parametrize(
    ("config", "workers", "message"),
    [
        (dataclasses.replace(CLUSTER, cluster_nats=()), 2, "needs a [cluster] section"),
        (dataclasses.replace(CLUSTER, storage="sqlite"), 2, "needs PostgreSQL storage"),
        (dataclasses.replace(CLUSTER, tls=Endpoint("0.0.0.0", 0)), 2, "tls listener's port is 0"),
        (CLUSTER, 0, f"must be 1..{MAX_WORKERS}"),
        (CLUSTER, MAX_WORKERS + 1, f"must be 1..{MAX_WORKERS}"),
        (
            dataclasses.replace(CLUSTER, data_dir=Path("/" + "d" * 100)),
            2,
            "choose a shorter server.data_dir",
        ),
    ],
)
def test_what_cannot_run_workers_is_refused_with_the_reason(
    config: Config, workers: int, message: str
) -> None:
    with pytest.raises(ConfigError, match="--workers") as caught:
        check_workers(config, workers)
    assert message in str(caught.value)


def test_each_worker_is_a_node_of_its_own_on_shared_ports() -> None:
    named = dataclasses.replace(CLUSTER, cluster_node="n1")
    w2 = worker_config(named, 2)
    assert (w2.worker, w2.reuse_port, w2.cluster_node) == (2, True, "n1-w2")
    assert dataclasses.replace(w2, worker=None, reuse_port=False, cluster_node="n1") == named
    unnamed = worker_config(CLUSTER, 1).cluster_node
    assert unnamed is not None and unnamed.endswith("-8089-w1")  # host name, TLS port, worker


def test_a_worker_runs_the_supervisors_command_without_workers() -> None:
    argv = ["serve", "--config", "l.toml", "--workers", "3", "--log-level", "debug"]
    assert worker_argv(argv, 2) == [
        sys.executable, "-m", "liaison", "serve", "--config", "l.toml",
        "--log-level", "debug", "--worker", "2",
    ]  # fmt: skip
    assert worker_argv(["serve", "--workers=3"], 1)[3:] == ["serve", "--worker", "1"]
