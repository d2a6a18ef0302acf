"""The floor of one client-streaming gRPC call: N pre-serialized messages written by grpcio (its
asyncio API, one ``await call.write`` each; its sync API, fed by a generator) and by Liaison's
own framing (``federation/fig_h2.py``, batches of ``--batch`` messages per write), to a grpcio
server in a separate process, on a Unix socket without TLS (so only gRPC's own cost is left).

Reports, per variant, messages per second until the server had them all and the client
process's CPU per message (every thread). Then the server role's direction: N messages sent on
one server-streaming call to a grpcio client in a separate process, by a grpcio asyncio server
(an async generator, one message per ``yield``) and by ``fig_h2.Server`` (``--batch`` per
write), both in this process (its CPU per message, until the client counted them all). Used to
choose how the TAK v2 wire writes (docs/performance.md, "TAK federation v2").

    .venv/bin/python bench/grpc_stream_floor.py --messages 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SERVICE = "bench.Floor"
# Bytes of each message (about a serialized FederatedEvent of the takfed mix).
MESSAGE_BYTES = 700


async def _server(path: str) -> None:
    import grpc
    import grpc.aio

    async def sink(requests: AsyncIterator[bytes], context: Any) -> bytes:
        n = 0
        async for _data in requests:
            n += 1
        return str(n).encode()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {"Sink": grpc.stream_unary_rpc_method_handler(sink)}
            ),
        )
    )
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(0)


def _reader(path: str, n: int) -> None:
    """The grpcio client of the server-streaming variants: count the messages, print it."""
    import grpc

    with grpc.insecure_channel(f"unix:{path}") as ch:
        call = ch.unary_stream(f"/{SERVICE}/Source")
        count = sum(1 for _m in call(str(n).encode(), timeout=600))
    print(count, flush=True)


async def _serve_stream(variant: str, path: str, n: int, batch: int, messages: list[bytes]) -> int:
    """Serve ``n`` messages on one Source call with ``variant``; the reader's count."""
    import grpc
    import grpc.aio

    from liaison.federation import fig_h2

    stop: list[Any] = []
    if variant == "grpcio":

        async def source(request: bytes, context: Any) -> AsyncIterator[bytes]:
            for i in range(n):
                yield messages[i % 256]

        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE, {"Source": grpc.unary_stream_rpc_method_handler(source)}
                ),
            )
        )
        server.add_insecure_port(f"unix:{path}")
        await server.start()
        stop.append(lambda: server.stop(0))
    else:
        tasks: set[asyncio.Task[None]] = set()

        async def handle(call: fig_h2.Call) -> None:
            await call.read()
            for k in range(0, n, batch):
                await call.write([messages[i % 256] for i in range(k, min(n, k + batch))])
            call.finish()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = fig_h2.Server(
                reader,
                writer,
                service=SERVICE,
                on_call=lambda call: tasks.add(asyncio.ensure_future(handle(call))),
            )
            await conn.start()
            try:
                await conn.run()
            except Exception:  # the client went away: ConnectionEnded or a PeerError
                pass
            finally:
                writer.close()

        unix = await asyncio.start_unix_server(on_connection, path=path)

        async def close() -> None:
            unix.close()

        stop.append(close)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--reader", path, str(n), stdout=asyncio.subprocess.PIPE
    )
    out, _err = await proc.communicate()
    await stop[0]()
    return int(out)


def _measure(fn: Any) -> dict[str, float]:
    cpu0, wall0 = time.process_time(), time.monotonic()
    n = fn()
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    return {"messages_per_s": n / wall, "cpu_us_per_message": cpu / n * 1e6}


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--server":
        asyncio.run(_server(sys.argv[2]))
        return 0
    if len(sys.argv) == 4 and sys.argv[1] == "--reader":
        _reader(sys.argv[2], int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    import subprocess

    import grpc
    import grpc.aio

    from liaison.federation import fig_h2

    n = args.messages
    messages = [os.urandom(MESSAGE_BYTES) for _ in range(256)]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="liaison-grpcfloor-") as tmp:
        path = os.path.join(tmp, "s")
        proc = subprocess.Popen(
            [sys.executable, __file__, "--server", path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

            def sync_api() -> int:
                with grpc.insecure_channel(f"unix:{path}") as ch:
                    call = ch.stream_unary(f"/{SERVICE}/Sink")

                    def gen() -> Iterator[bytes]:
                        for i in range(n):
                            yield messages[i % 256]

                    return int(call(gen(), timeout=600))

            async def aio_api() -> int:
                async with grpc.aio.insecure_channel(f"unix:{path}") as ch:
                    call = ch.stream_unary(f"/{SERVICE}/Sink")()
                    for i in range(n):
                        await call.write(messages[i % 256])
                    await call.done_writing()
                    return int(await call)

            async def h2_batched() -> int:
                reader, writer = await asyncio.open_unix_connection(path)
                channel = fig_h2.Channel(reader, writer, authority="localhost", service=SERVICE)
                await channel.start()
                runner = asyncio.ensure_future(channel.run())
                try:
                    call = channel.open("Sink")
                    for k in range(0, n, args.batch):
                        batch = [messages[i % 256] for i in range(k, min(n, k + args.batch))]
                        await call.write(batch, end=k + args.batch >= n)
                    answer = await call.read()
                    assert answer is not None
                    return int(answer)
                finally:
                    runner.cancel()
                    writer.close()

            out["grpcio_aio_one_write_per_message"] = _measure(lambda: asyncio.run(aio_api()))
            result: list[int] = []
            thread = threading.Thread(target=lambda: result.append(sync_api()))
            out["grpcio_sync_generator"] = _measure(lambda: (thread.start(), thread.join(), n)[2])
            if result != [n]:
                raise RuntimeError(f"sync API: the server counted {result}")
            out[f"fig_h2_{args.batch}_per_write"] = _measure(lambda: asyncio.run(h2_batched()))
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)
        for variant, name in (
            ("grpcio", "server_role_grpcio_aio_one_yield_per_message"),
            ("fig_h2", f"server_role_fig_h2_{args.batch}_per_write"),
        ):
            where = os.path.join(tmp, f"{variant}.s")
            got: list[int] = []

            def serve(variant: str = variant, where: str = where, got: list[int] = got) -> int:
                got.append(asyncio.run(_serve_stream(variant, where, n, args.batch, messages)))
                return n

            out[name] = _measure(serve)
            if got != [n]:
                raise RuntimeError(f"{variant}: the reader counted {got}")
    print(json.dumps({"messages": n, "results": out, "load_avg": os.getloadavg()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
