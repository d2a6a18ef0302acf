"""Server CPU per mutual-TLS handshake: the RSA server certificate alone against RSA + ECDSA.

    python bench/handshake_bench.py                 # 4 rounds of 200 handshakes per context
    python bench/handshake_bench.py --handshakes 500 --rounds 6

Makes a fresh PKI in a temporary directory with Liaison's own code (``ensure_server_pki``, which
writes both server certificates, and one client certificate from ``issue_client_cert``), then
runs handshakes entirely in memory (``ssl.MemoryBIO`` pairs, TLS 1.3, the client presenting its
certificate as a TAK client does) and times only the server side's calls (``wrap_bio``,
``do_handshake``, ``getpeercert``) with ``time.process_time``. The two server contexts are
``server_ssl_context`` as the server builds it (RSA and ECDSA) and the same with the ECDSA files
moved aside (RSA only, as before the ECDSA certificate existed); rounds alternate between them so
that both see the same machine. Prints the median per handshake of each and every round.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from liaison.identity.ca import ensure_server_pki
from liaison.identity.issue import issue_client_cert
from liaison.identity.tls import server_ssl_context

# Flights a handshake takes at most before the loop gives up (TLS 1.3 with a client certificate
# needs three).
MAX_FLIGHTS = 10


def server_cpu_ms(server: ssl.SSLContext, client: ssl.SSLContext, handshakes: int) -> float:
    """Server CPU per handshake in ms, over ``handshakes`` complete handshakes."""
    spent = 0.0
    for _ in range(handshakes):
        s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
        t = time.process_time()
        s = server.wrap_bio(s_in, s_out, server_side=True)
        spent += time.process_time() - t
        c = client.wrap_bio(c_in, c_out, server_side=False)
        done = False
        for _ in range(MAX_FLIGHTS):
            with contextlib.suppress(ssl.SSLWantReadError):
                c.do_handshake()
            s_in.write(c_out.read())
            t = time.process_time()
            try:
                s.do_handshake()
                done = s.getpeercert(binary_form=True) is not None
            except ssl.SSLWantReadError:
                pass
            spent += time.process_time() - t
            c_in.write(s_out.read())
            if done:
                break
        if not done:
            raise RuntimeError("a handshake did not complete")
    return 1000 * spent / handshakes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--handshakes", type=int, default=200, help="per round and context")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="liaison-handshake-") as tmp:
        d = Path(tmp)
        pki = ensure_server_pki(d, public_host="localhost")
        issued = issue_client_cert(pki, common_name="bench", org=None)
        assert issued.key_pem is not None
        (d / "c.pem").write_bytes(issued.cert_pem)
        (d / "c.key").write_bytes(issued.key_pem)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.load_verify_locations(cafile=pki.ca_cert)
        client.load_cert_chain(d / "c.pem", d / "c.key")
        both = server_ssl_context(pki)
        aside = d / "server-ec.pem.aside"
        os.rename(pki.server_ec_cert, aside)
        rsa_only = server_ssl_context(pki)
        os.rename(aside, pki.server_ec_cert)
        results: dict[str, list[float]] = {"RSA only": [], "RSA + ECDSA": []}
        for _ in range(args.rounds):
            results["RSA only"].append(server_cpu_ms(rsa_only, client, args.handshakes))
            results["RSA + ECDSA"].append(server_cpu_ms(both, client, args.handshakes))
    for name, values in results.items():
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:12} median {statistics.median(values):.3f} ms/handshake ({rounds})")
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
