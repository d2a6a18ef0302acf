"""One node of a test cluster as its own process: what ``liaison serve`` runs (run_server), with
the configuration given as JSON in argv[1] (Config attributes, as tests/integration/conftest.py
``make_config`` takes them). Prints one JSON line with the bound TLS port once serving; SIGTERM
stops it cleanly; the test kills it with SIGKILL to see a holder die."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys

from liaison import config as config_mod
from liaison.app import run_server


async def main() -> None:
    overrides = json.loads(sys.argv[1])
    config = config_mod.load(None, {}, overrides)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with run_server(config) as server:
        assert server.tls is not None
        sys.stdout.write(json.dumps({"tls": server.tls.port}) + "\n")
        sys.stdout.flush()
        await stop.wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    asyncio.run(main())
