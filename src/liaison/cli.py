"""The ``liaison`` command: serve, check-config, sim, user, audit and doctor.

The CLI is the only place that reads argv and the environment and configures logging handlers;
it builds one Config and passes it down (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from liaison import __version__, admin, tokens_cli
from liaison import config as config_mod
from liaison.errors import ConfigError, LiaisonError, ListenError
from liaison.federation import cli as federation_cli
from liaison.feeds import cli as feeds_cli
from liaison.storage.permissions import PRIVATE_UMASK

if TYPE_CHECKING:
    from liaison.app import Server
    from liaison.sim import SimReport, SimSettings

log = logging.getLogger("liaison")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML configuration file (env LIAISON_CONFIG)")
    p.add_argument("--data-dir", help="data folder (default ./liaison-data)")
    p.add_argument("--tcp", help="plain TCP streaming listener HOST:PORT or off (default :8087)")
    p.add_argument("--tls", help="mutual-TLS streaming listener HOST:PORT or off (default :8089)")
    p.add_argument("--udp", help="UDP input HOST:PORT or off (default :8087)")
    p.add_argument("--multicast", help="multicast mesh group to bridge, e.g. 239.2.3.1:6969")
    p.add_argument("--https", help="HTTPS API with client certificates HOST:PORT or off (:8443)")
    p.add_argument("--enroll", help="HTTPS enrollment and web sign-in HOST:PORT or off (:8446)")
    p.add_argument("--http", help="plain HTTP Marti API HOST:PORT or off (default off)")
    p.add_argument("--public-host", help="host name clients use to reach this server")
    p.add_argument("--storage", help="sqlite, memory or postgresql://USER@HOST:PORT/DB")
    p.add_argument("--log-level", help="debug, info, warning or error")


_OVERRIDES = (
    "data_dir",
    "tcp",
    "tls",
    "udp",
    "multicast",
    "https",
    "enroll",
    "http",
    "public_host",
    "storage",
    "log_level",
)

DESCRIPTION = """\
Liaison: a TAK-compatible server that shares a live picture between partner organisations.
With no command, `liaison` runs `liaison serve` (and says so on stderr).
Documentation: README.md and docs/ (configuration.md, certificates.md)."""
EPILOG = "Exit codes: 0 success, 1 error, 2 configuration or usage error, 3 cannot listen."


def _load_config(args: argparse.Namespace) -> config_mod.Config:
    # Commands that take only --config and --data-dir (audit verify) have no listener flags.
    overrides = {name: getattr(args, name, None) for name in _OVERRIDES}
    return config_mod.load(args.config, os.environ, overrides)


def _setup_logging(level: str, who: str = "") -> None:
    """``who``: ``[wI]`` or ``[supervisor]`` with ``--workers``, before every line."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format=f"%(asctime)s %(levelname)s {who + ' ' if who else ''}%(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from liaison import workers

    cfg = _load_config(args)
    if args.worker is not None:
        if not 1 <= args.worker <= workers.MAX_WORKERS:
            raise ConfigError("--worker", f"must be 1..{workers.MAX_WORKERS}")
        cfg = workers.worker_config(cfg, args.worker)
        _setup_logging(cfg.log_level, f"[w{args.worker}]")
    elif args.workers is not None:
        workers.check_workers(cfg, args.workers)
        _setup_logging(cfg.log_level, "[supervisor]")
        workers.prepare_shared_files(cfg)
        return asyncio.run(workers.supervise(args.argv, args.workers))
    else:
        _setup_logging(cfg.log_level)
    try:
        return asyncio.run(_serve(cfg, _admin_flags(args, cfg)))
    except BaseExceptionGroup as group:
        # Start-up errors raised while the server's task group is open arrive wrapped: report the
        # first one Liaison raised on purpose (a port in use, a bad setting) in one line.
        leaf = _first_liaison_error(group)
        if leaf is None:
            raise
        raise leaf from None


def _first_liaison_error(group: BaseExceptionGroup[BaseException]) -> LiaisonError | None:
    for exc in group.exceptions:
        if isinstance(exc, LiaisonError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_liaison_error(exc)
            if found is not None:
                return found
    return None


def _admin_flags(args: argparse.Namespace, cfg: config_mod.Config) -> str:
    """The flags `liaison user add` needs to find this server's data folder, host and ports."""
    flags = [f"--config {args.config}"] if args.config else []
    flags.append(f"--data-dir {cfg.data_dir}")
    for name in ("public_host", "tls", "enroll"):
        value = getattr(args, name, None)
        if value is not None:
            flags.append(f"--{name.replace('_', '-')} {value}")
    return " ".join(flags)


def _web_map_urls(cfg: config_mod.Config, server: Server) -> list[str]:
    urls = []
    if server.enroll:
        urls.append(
            f"  https://{cfg.public_host}:{server.enroll.port}/  sign in with a user's password"
        )
    if server.https:
        urls.append(
            f"  https://{cfg.public_host}:{server.https.port}/  with a client certificate"
            " in the browser"
        )
    return urls


async def _serve(cfg: config_mod.Config, admin_flags: str = "") -> int:
    from liaison.app import run_server

    loop = asyncio.get_running_loop()
    # A SIGTERM or SIGINT while the server starts (a worker of --workers told to stop as it
    # comes up) lets the start finish and then stops cleanly, audit checkpoint and all; a second
    # one during the start has its default effect.
    stop_asked = asyncio.Event()

    def stop_after_start(sig: signal.Signals) -> None:
        stop_asked.set()
        loop.remove_signal_handler(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_after_start, sig)
    async with run_server(cfg) as server:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        if stop_asked.is_set():
            server.stop()
        print(f"Liaison {__version__} is running. Data folder: {cfg.data_dir.resolve()}")
        if server.tcp:
            print(f"  CoT over TCP    {server.tcp}  ({cfg.public_host}:{server.tcp.port}:tcp)")
        if server.tls:
            print(f"  CoT over TLS    {server.tls}  ({cfg.public_host}:{server.tls.port}:ssl)")
        if server.udp:
            print(f"  CoT over UDP    {server.udp}")
        if server.https:
            print(f"  HTTPS (certs)   {server.https}  Marti API and web map")
        if server.enroll:
            print(f"  HTTPS (sign-in) {server.enroll}  enrollment and web map sign-in")
        if server.http:
            print(f"  HTTP            {server.http}")
        if server.federation is not None:
            where = server.federation_address or "dial-out only"
            peers = ", ".join(p.name for p in server.federation.config.peers)
            print(f"  Partner link    {where}  peers: {peers}")
        elif server.federation_lease is not None:
            peers = ", ".join(p.name for p in server.federation_lease.config.peers)
            print(f"  Partner link    on the cluster's lease holder  peers: {peers}")
        if cfg.multicast:
            print(f"  Mesh bridge     {cfg.multicast}")
        urls = _web_map_urls(cfg, server)
        if urls:
            print("Web map:")
            print("\n".join(urls))
        print("Add a user and their connection package (ATAK, WinTAK, iTAK) with:")
        print(f"  liaison user add NAME --org ORG {admin_flags}")
        if server.enroll:
            print("Add a web map user (password sign-in) with:")
            print(f"  liaison user add NAME --org ORG --password {admin_flags}")
        if cfg.public_host == "localhost":
            print(
                "Warning: the public host is localhost: packages, enrollment links and the"
                " web map address\n  reach only this machine. Give devices a name or address"
                " they can reach with\n  --public-host HOST (or server.public_host)."
            )
        print("Stop with Ctrl-C.", flush=True)
        await server.wait_stopped()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    sys.stdout.write(config_mod.describe(cfg))
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from liaison.sim import SimSettings

    _setup_logging("info")
    settings = SimSettings(
        host=args.host,
        port=args.port,
        clients=args.clients,
        rate=args.rate,
        duration_s=args.duration,
        center_lat=args.lat,
        center_lon=args.lon,
    )
    report = asyncio.run(_sim(settings))
    print(report.summary(), flush=True)
    for error in report.errors:
        print(f"  {error}", file=sys.stderr)
    if report.connected == 0:
        print(f"liaison: no unit could connect to {settings.host}:{settings.port}", file=sys.stderr)
        return 1
    return 0


# Exit code of ``liaison audit verify`` when there is no log to verify (labels off, or the server
# has not written one yet); 0 is a good log, 1 a bad or unreadable one, 2 a configuration error.
EXIT_NO_AUDIT_LOG = 3


async def _sim(settings: SimSettings) -> SimReport:
    """Run the simulation; Ctrl-C (or SIGTERM) stops the units and the summary is still printed."""
    from liaison.sim import run_sim

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await run_sim(settings, stop)


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    return parse


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from liaison import audit
    from liaison.gate import audit_paths, load_public_key, worker_audit_logs

    cfg = _load_config(args)
    log_path, _key, pub_path = audit_paths(cfg.data_dir)
    pub_path = args.key or pub_path
    # Without --log: the server's log and, after `liaison serve --workers N`, every worker's
    # own chain (audit-wI.jsonl), each verified on its own.
    logs = [args.log] if args.log else [p for p in (log_path,) if p.exists()]
    if not args.log:
        logs += worker_audit_logs(cfg.data_dir)
    if not logs or not logs[0].exists():
        # Nothing to verify is not a damaged log: say why, with its own exit code.
        missing = args.log or log_path
        if cfg.policy_file is None and args.log is None:
            print(
                "no audit log: labels are off (labels.policy_file is not set), so nothing is"
                " audited",
                file=sys.stderr,
            )
        else:
            print(f"no audit log at {missing}: nothing has been audited yet", file=sys.stderr)
        return EXIT_NO_AUDIT_LOG
    public_key = load_public_key(pub_path) if pub_path.exists() else None
    if public_key is None:
        print(f"warning: no public key at {pub_path}: signatures not checked", file=sys.stderr)
    failed = False
    for path in logs:
        where = f"{path.name}: " if len(logs) > 1 else ""
        result = audit.verify(path, public_key)
        if result.ok:
            checked = (
                "signatures checked" if result.signatures_checked else "signatures NOT checked"
            )
            print(
                f"{where}OK: {result.records} records, {result.checkpoints} signed checkpoints"
                f" ({checked})"
                f"; head seq {result.head.seq} {result.head.hash};"
                f" {result.unsigned_tail} records after the last checkpoint"
            )
            continue
        failed = True
        failure = result.failure
        assert failure is not None
        print(
            f"{where}FAILED at line {failure.line} (seq {failure.seq}): {failure.reason}:"
            f" {failure.detail}",
            file=sys.stderr,
        )
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liaison",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"liaison {__version__}")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("serve", help="run the server")
    _add_config_args(p)
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run N worker processes sharing the ports (SO_REUSEPORT); needs [cluster] and "
        "PostgreSQL storage (docs/deployment.md)",
    )
    # Set by the supervisor of --workers for each worker it starts; not for people.
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check-config", help="print the effective configuration")
    _add_config_args(p)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("audit", help="the tamper-evident audit log")
    audit_sub = p.add_subparsers(dest="audit_command", required=True)
    v = audit_sub.add_parser("verify", help="check the hash chain, sequence and signatures")
    v.add_argument("--config", type=Path, help="TOML configuration file (env LIAISON_CONFIG)")
    v.add_argument("--data-dir", help="data folder (default ./liaison-data)")
    v.add_argument(
        "--log",
        type=Path,
        help="audit log (default DATA_DIR/audit/audit.jsonl and every worker's audit-wI.jsonl)",
    )
    v.add_argument("--key", type=Path, help="public key PEM (default DATA_DIR/audit/signing.pub)")
    v.set_defaults(func=cmd_audit_verify)

    p = sub.add_parser(
        "sim",
        help="drive simulated units against a server (demos and load)",
        description="Simulated units report their position over plain TCP; Ctrl-C stops them "
        "early and the summary is printed. Exit code 1 when no unit could connect.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="server host")
    p.add_argument("--port", type=int, default=8087, help="plain TCP streaming port")
    p.add_argument("--clients", type=_positive(int), default=10, help="simulated units")
    p.add_argument(
        "--rate", type=_positive(float), default=1.0, help="position reports per second per unit"
    )
    p.add_argument("--duration", type=_positive(float), default=60.0, help="seconds to run")
    p.add_argument("--lat", type=float, default=50.45, help="centre latitude of the area")
    p.add_argument("--lon", type=float, default=30.52, help="centre longitude of the area")
    p.set_defaults(func=cmd_sim)

    admin.register(sub)
    federation_cli.register(sub)
    feeds_cli.register(sub)
    tokens_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Every file the command creates is the owner's only (docs/storage.md, "Permissions").
    os.umask(PRIVATE_UMASK)
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    if not words or (words[0].startswith("-") and words[0] not in ("-h", "--help", "--version")):
        # No command: run the server, and say so (README.md, Using it).
        print("liaison: no command given: running `liaison serve`", file=sys.stderr)
        words = ["serve", *words]
    args = parser.parse_args(words)
    args.argv = words  # the supervisor of --workers starts its workers with the same words
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"liaison: configuration error: {exc}", file=sys.stderr)
        return 2
    except ListenError as exc:
        print(f"liaison: {exc}", file=sys.stderr)
        return ListenError.exit_code
    except LiaisonError as exc:
        print(f"liaison: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        admin.close_command_dbs()
