"""``liaison serve --workers N``: one supervisor process and N worker processes of the same
configuration on one host, sharing every listening port with SO_REUSEPORT (docs/deployment.md
"Several workers on one host").

Each worker is a cluster node (``[cluster]``, NATS) named ``NODE-wI`` on a PostgreSQL storage:
the bus carries the events and the latest state between them, the database the users,
certificates, sign-ins and history, so a client may land on any worker. The supervisor only
starts, watches and stops them: it opens no port and touches no event.

- A worker that exits is started again after a pause that doubles from ``RESTART_MIN_S`` to
  ``RESTART_MAX_S`` (back to the minimum once a worker has run ``RESTART_RESET_S``). A worker that
  exits with 2 (configuration) or 3 (cannot listen) stops them all: starting it again would fail
  the same way; the supervisor exits with that code.
- SIGTERM or SIGINT: every worker gets SIGTERM and ``STOP_S`` seconds to stop cleanly (each
  closes its listeners, sessions, store and audit log as one node does), then SIGKILL.
- Each worker's log lines carry ``[wI]``; the supervisor's carry ``[supervisor]``.
- Each worker serves its metrics on ``DATA_DIR/run/metrics-wI.sock``, and ``/metrics`` on any
  worker answers for all of them (worker_metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence

from liaison.config import Config
from liaison.errors import ConfigError
from liaison.worker_metrics import remove_sockets, socket_path_problem

log = logging.getLogger("liaison.workers")

# Most workers one supervisor starts: far more than the cores of one host, which is the point.
MAX_WORKERS = 64
# Restart pauses (seconds): a worker that dies at once is not started in a tight loop.
RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
RESTART_RESET_S = 60.0
# Seconds every worker has to stop after SIGTERM before SIGKILL.
STOP_S = 20.0
# Worker exit codes that stop the supervisor (cli.py: 2 configuration error, 3 cannot listen).
FATAL_EXIT_CODES = (2, 3)


def check_workers(cfg: Config, workers: int) -> None:
    """ConfigError (exit 2) unless ``cfg`` can run ``workers`` workers: a [cluster] section, a
    PostgreSQL storage and fixed ports."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError("--workers", f"must be 1..{MAX_WORKERS}, not {workers}")
    if not cfg.cluster_nats:
        raise ConfigError(
            "--workers",
            "needs a [cluster] section naming NATS (cluster.nats): the workers share events and "
            "the latest state through it (docs/deployment.md)",
        )
    if not cfg.storage.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "--workers",
            "needs PostgreSQL storage (storage.backend = postgresql://...): the workers share "
            "users, certificates, web sign-ins and history through it (docs/deployment.md)",
        )
    for name in ("tcp", "tls", "udp", "https", "enroll", "http"):
        endpoint = getattr(cfg, name)
        if endpoint is not None and endpoint.port == 0:
            raise ConfigError(
                "--workers", f"the {name} listener's port is 0: the workers must share one port"
            )
    problem = socket_path_problem(cfg.data_dir, workers)
    if problem is not None:
        raise ConfigError("--workers", problem)


def worker_config(cfg: Config, worker: int) -> Config:
    """``cfg`` as worker ``worker`` runs it: node ``NODE-wI``, every port with SO_REUSEPORT."""
    from liaison.cluster.bus import default_node_name

    first = next((e for e in (cfg.tls, cfg.tcp, cfg.https) if e is not None), None)
    base = cfg.cluster_node or default_node_name(
        socket.gethostname, first.port if first is not None else None
    )
    return dataclasses.replace(
        cfg, worker=worker, reuse_port=True, cluster_node=f"{base}-w{worker}"
    )


def prepare_shared_files(cfg: Config) -> None:
    """What every worker would otherwise make at once on its first start: the audit signing key
    (one key, every worker's chain), made here before any worker starts. And the metrics sockets
    a previous run left (``DATA_DIR/run/metrics-w*.sock``, worker_metrics.py) are removed: one of
    a worker this run does not start would be reported down on every scrape."""
    remove_sockets(cfg.data_dir)
    if cfg.policy_file is not None:
        from liaison.gate import audit_paths, load_or_create_signing_key

        _log, key_path, pub_path = audit_paths(cfg.data_dir)
        load_or_create_signing_key(key_path, pub_path)


def worker_argv(argv: Sequence[str], worker: int) -> list[str]:
    """The command line of worker ``worker``: the supervisor's, without ``--workers``."""
    out: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
            continue
        if word == "--workers":
            skip = True
            continue
        if word.startswith("--workers="):
            continue
        out.append(word)
    return [sys.executable, "-m", "liaison", *out, "--worker", str(worker)]


class Supervisor:
    """Starts ``n`` workers, starts each again when it exits, stops them all on ``stop()``."""

    def __init__(self, argv: Sequence[str], n: int) -> None:
        self._argv = list(argv)
        self._n = n
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self.exit_code = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> int:
        async with asyncio.TaskGroup() as tg:
            for i in range(1, self._n + 1):
                tg.create_task(self._keep(i), name=f"worker-{i}")
        return self.exit_code

    async def _keep(self, i: int) -> None:
        """Run worker ``i`` until the supervisor stops, starting it again when it exits."""
        pause = RESTART_MIN_S
        while not self._stopping.is_set():
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(*worker_argv(self._argv, i))
            self._procs[i] = proc
            log.info("worker %d started (pid %d)", i, proc.pid)
            waiting = asyncio.ensure_future(proc.wait())
            stopping = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait((waiting, stopping), return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                # The supervisor itself is going down another way: never leave a worker behind.
                stopping.cancel()
                await self._stop_one(i, proc)
                raise
            if not waiting.done():
                await self._stop_one(i, proc)
                stopping.cancel()
                return
            stopping.cancel()
            code = proc.returncode
            if self._stopping.is_set():
                return
            if code in FATAL_EXIT_CODES:
                log.error("worker %d exited with %d: stopping every worker", i, code)
                self.exit_code = int(code or 1)
                self.stop()
                return
            if time.monotonic() - started >= RESTART_RESET_S:
                pause = RESTART_MIN_S
            log.warning("worker %d (pid %d) exited with %s; starting it again in %.1f s", i,
                        proc.pid, code, pause)  # fmt: skip
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._stopping.wait()
            pause = min(RESTART_MAX_S, pause * 2)

    async def _stop_one(self, i: int, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_S):
                code = await proc.wait()
            log.info("worker %d stopped (%s)", i, code)
        except TimeoutError:
            log.error("worker %d did not stop within %.0f s: killed", i, STOP_S)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def supervise(argv: Sequence[str], n: int) -> int:
    supervisor = Supervisor(argv, n)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, supervisor.stop)
    print(
        f"Liaison: {n} workers (pid {os.getpid()} supervises them). Stop with Ctrl-C.", flush=True
    )
    return await supervisor.run()
