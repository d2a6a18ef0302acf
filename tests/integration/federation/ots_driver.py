"""Run the independent FIG implementation ots-federation (shared/interop/ots-federation, MIT) as
a separate process peer, for interop tests. Written for Liaison; no ots-federation code is copied:
this script only imports its package (from its own venv, with its own grpcio/protobuf pins) and
drives its public objects the way its engine does, without OpenTAKServer or RabbitMQ.

Usage: ``python ots_driver.py --config federation.ini``. Its stdin takes one JSON object a line,
``{"send": "<event .../>", "groups": ["FedOut"]}``: the CoT event is handed to the federation
manager as a local event of those ACL groups (``on_outbound``). Its stdout prints
``{"ready": true}`` once started, then ``{"received": "<event .../>"}`` for each event a peer
delivered. It exits when stdin closes or on SIGTERM.
"""

from __future__ import annotations

import argparse
import configparser
import json
import logging
import sys
import threading
from typing import Any

# Lines of stdin handled; a test sends a handful.
MAX_COMMANDS = 10_000


def _emit(obj: dict[str, Any], lock: threading.Lock) -> None:
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args()

    from lxml import etree  # type: ignore[import-not-found]
    from ots_federation.config import get_federation_config  # type: ignore[import-not-found]
    from ots_federation.manager import FederationManager  # type: ignore[import-not-found]
    from ots_federation.models import Event  # type: ignore[import-not-found]

    ini = configparser.ConfigParser()
    ini.read(args.config)
    manager = FederationManager(config=get_federation_config(ini))
    out_lock = threading.Lock()
    stop = threading.Event()

    class Bus:
        def inject(self, src: Any, evt: Any, local_groups: Any = None) -> None:
            xml = etree.tostring(evt.as_element).decode()
            _emit({"received": xml}, out_lock)

    bus = Bus()

    def drain() -> None:
        import select

        while not stop.is_set():
            ready, _, _ = select.select([manager.bridge.rx_fd], [], [], 0.2)
            if ready:
                manager.bridge.drain(bus)

    manager.start()
    threading.Thread(target=drain, name="drain", daemon=True).start()
    _emit({"ready": True}, out_lock)
    for _, line in zip(range(MAX_COMMANDS), sys.stdin, strict=False):
        cmd = json.loads(line)
        if "send" in cmd:
            evt = Event.from_elm(etree.fromstring(cmd["send"].encode()))
            evt.local_acl_groups = frozenset(cmd.get("groups", ()))
            manager.on_outbound(None, evt)
            _emit({"sent": evt.uid}, out_lock)
    stop.set()
    manager.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
