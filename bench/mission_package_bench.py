"""Time ``PUT /Marti/api/missions/{name}/contents/missionpackage`` against a real server.

Starts a Liaison server (every listener on 127.0.0.1, port 0) in a temporary folder, creates
mission ``bench`` over HTTPS with a client certificate, builds one mission package of ``--items``
spot CoT entries and ``--files`` 16 KiB files, and imports it ``--runs`` times (the same uids and
hashes each time: the items and files are replaced). For each run it prints the time of the
request and the longest the event loop waited meanwhile (a probe task sleeping 10 ms at a time:
what stream delivery would wait). Run from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.conftest import issue_cert, make_config
from tests.integration.http.http_support import cert_session, https_url
from tests.integration.test_missions import mission_marker

from liaison.app import run_server

M = "/Marti/api/missions"


def build(items: int, files: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(items):
            zf.writestr(f"cot/i{i}.cot", mission_marker(f"i{i}", f"t{i}", None))
        for i in range(files):
            zf.writestr(f"contents/f{i}.bin", i.to_bytes(4, "big") * 4096)
    return buf.getvalue()


async def main(items: int, files: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        async with run_server(make_config(Path(d) / "data")) as server:
            cert = issue_cert(server, "bench")
            async with cert_session(server, cert) as http:
                async with http.put(https_url(server, f"{M}/bench?creatorUid=b")) as r:
                    assert r.status == 201, await r.text()
                body = build(items, files)
                url = https_url(server, f"{M}/bench/contents/missionpackage?creatorUid=b")
                for run in range(runs):
                    worst = 0.0

                    async def probe() -> None:
                        nonlocal worst
                        while True:
                            t = time.perf_counter()
                            await asyncio.sleep(0.01)
                            worst = max(worst, time.perf_counter() - t - 0.01)

                    task = asyncio.create_task(probe())
                    t0 = time.perf_counter()
                    async with http.put(url, data=body) as r:
                        assert r.status == 200, await r.text()
                    took = time.perf_counter() - t0
                    task.cancel()
                    print(
                        f"run {run}: {items} items + {files} files ({len(body)} bytes):"
                        f" {took:.2f} s, longest loop wait {worst * 1000:.0f} ms"
                    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(main(a.items, a.files, a.runs))
