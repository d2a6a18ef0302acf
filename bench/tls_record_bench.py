"""In-memory benchmark: what OpenSSL (through Python's ``ssl``) costs per TLS record written.

Two ``SSLObject`` ends over ``MemoryBIO`` pairs finish a handshake (with the RSA server
certificate Liaison makes for a new data folder), then the server end writes ``--records``
records of ``--size`` bytes, each taken from its outgoing BIO as a stream session's flush does.
Printed: the wall time per record for TLS 1.3 (the suite OpenSSL picks: Python 3.11's ``ssl``
cannot choose TLS 1.3 suites) and for the TLS 1.2 AES-GCM suites, and a plain copy of the same
bytes for scale. Per record, not per delivery: a stream session writes one record per flush
(docs/performance.md, "Issue 11: what is left, measured").

    .venv/bin/python bench/tls_record_bench.py
    .venv/bin/python bench/tls_record_bench.py --size 1100 --records 100000
"""

from __future__ import annotations

import argparse
import os
import shlex
import ssl
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from liaison.identity.ca import ensure_server_pki

# Handshake rounds at most (TLS 1.3 needs two, 1.2 three).
HANDSHAKE_ROUNDS = 10
TLS12_SUITES = ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384")


def certificate(folder: Path) -> tuple[Path, Path]:
    """The server certificate Liaison makes on its first start (RSA, as TAK Server's)."""
    pki = ensure_server_pki(folder, public_host="localhost")
    return pki.server_cert, pki.server_key


def connected(cert: Path, key: Path, suite: str | None) -> tuple[ssl.SSLObject, ssl.MemoryBIO]:
    """The server end of a finished handshake and its outgoing BIO."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(cert), str(key))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE  # the cost measured is the record's, not the chain's
    if suite is not None:
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        client.set_ciphers(suite)
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c = client.wrap_bio(c_in, c_out)
    for _ in range(HANDSHAKE_ROUNDS):
        done = 0
        for end in (c, s):
            try:
                end.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == 2:
            return s, s_out
    raise RuntimeError("the in-memory handshake did not finish")


def per_record(end: ssl.SSLObject, out: ssl.MemoryBIO, data: bytes, records: int) -> float:
    t0 = time.perf_counter()
    for _ in range(records):
        end.write(data)
        out.read()
    return (time.perf_counter() - t0) / records


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2200, help="bytes per record (2 reports: 2,200)")
    ap.add_argument("--records", type=int, default=200_000)
    args = ap.parse_args(argv)
    data = os.urandom(args.size)
    print(ssl.OPENSSL_VERSION)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = certificate(Path(tmp))
        for suite in (None, *TLS12_SUITES):
            end, out = connected(cert, key, suite)
            name, version, _ = end.cipher() or ("?", "?", 0)
            secs = per_record(end, out, data, args.records)
            print(f"{version} {name}: {secs * 1e6:.2f} us per {args.size}-byte record")
    t0 = time.perf_counter()
    for _ in range(args.records):
        bytes(bytearray(data))
    copy = (time.perf_counter() - t0) / args.records
    print(f"copy of the same bytes, for scale: {copy * 1e6:.2f} us")
    print("reproduce: .venv/bin/python bench/tls_record_bench.py " + shlex.join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
