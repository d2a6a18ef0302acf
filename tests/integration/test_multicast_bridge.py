"""The multicast mesh bridge, between two network namespaces joined by a veth pair.

The server runs in one namespace and bridges ATAK's SA group (239.2.3.1:6969) on its veth end; a
mesh peer in the other namespace sends a datagram to the group and listens to it; a stream client
in the server's namespace connects over TCP. Both directions must carry events. Every address
used lives inside namespaces this test creates and deletes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

GROUP = "239.2.3.1"
PORT = 6969
SRV_ADDR, MESH_ADDR = "10.231.77.1", "10.231.77.2"
RUN_S = 8.0


def _require_netns() -> None:
    reason = None
    if os.geteuid() != 0:
        reason = "needs root to create network namespaces"
    elif shutil.which("ip") is None:
        reason = "needs iproute2 (ip)"
    if reason is not None:
        if os.environ.get("LIAISON_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=20)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    _require_netns()
    tag = uuid.uuid4().hex[:6]
    srv, mesh = f"lsn-srv-{tag}", f"lsn-mesh-{tag}"
    veth_s, veth_m = f"ls{tag}", f"lm{tag}"
    sh("ip", "netns", "add", srv)
    sh("ip", "netns", "add", mesh)
    try:
        sh("ip", "link", "add", veth_s, "type", "veth", "peer", "name", veth_m)
        sh("ip", "link", "set", veth_s, "netns", srv)
        sh("ip", "link", "set", veth_m, "netns", mesh)
        for ns, dev, addr in ((srv, veth_s, SRV_ADDR), (mesh, veth_m, MESH_ADDR)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up", "multicast", "on")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "route", "add", "239.0.0.0/8", "dev", dev)
        yield srv, mesh
    finally:
        subprocess.run(["ip", "netns", "del", srv], capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "del", mesh], capture_output=True, timeout=20)


MESH_PEER = textwrap.dedent(
    """
    import socket, struct, sys, time
    group, port, iface, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    run_s, event = float(sys.argv[5]), sys.argv[6]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", port))
    mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(iface))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)  # never hear our own sends
    s.settimeout(0.2)
    got = []
    end = time.monotonic() + run_s
    next_send = 0.0
    while time.monotonic() < end:
        if time.monotonic() >= next_send:
            s.sendto(event.encode(), (group, port))
            next_send = time.monotonic() + 1.0
        try:
            got.append(s.recv(65535))
        except socket.timeout:
            pass
    open(out, "wb").write(b"\\n".join(got))
    """
)

STREAM_CLIENT = textwrap.dedent(
    """
    import socket, sys, time
    port, out, run_s, event = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
    end = time.monotonic() + run_s
    while True:
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=1)
            break
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
    c.settimeout(0.2)
    got = b""
    next_send = 0.0
    while time.monotonic() < end:
        if time.monotonic() >= next_send:
            c.sendall(event.encode())
            next_send = time.monotonic() + 1.0
        try:
            got += c.recv(65535)
        except socket.timeout:
            pass
    open(out, "wb").write(got)
    """
)


def event_xml(uid: str) -> str:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    stale = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    return (
        f'<event version="2.0" uid="{uid}" type="a-f-G-U-C" how="m-g" time="{now}"'
        f' start="{now}" stale="{stale}"><point lat="50.1" lon="30.2" hae="0" ce="5" le="5"/>'
        f'<detail><contact callsign="{uid}" endpoint="*:-1:stcp"/></detail></event>'
    )


def test_mesh_and_stream_clients_see_each_other(
    namespaces: tuple[str, str], tmp_path: Path
) -> None:
    srv, mesh = namespaces
    config = tmp_path / "liaison.toml"
    config.write_text(
        f'[listeners]\ntcp = "127.0.0.1:18087"\ntls = "off"\nudp = "off"\nhttps = "off"\n'
        f'enroll = "off"\nmulticast = "{GROUP}:{PORT}"\nmulticast_interface = "{SRV_ADDR}"\n'
    )
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    with subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            srv,
            sys.executable,
            "-m",
            "liaison",
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--config",
            str(config),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    ) as server:
        try:
            mesh_out, stream_out = tmp_path / "mesh.out", tmp_path / "stream.out"
            peers = [
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        mesh,
                        sys.executable,
                        "-c",
                        MESH_PEER,
                        GROUP,
                        str(PORT),
                        MESH_ADDR,
                        str(mesh_out),
                        str(RUN_S),
                        event_xml("mesh-peer-1"),
                    ]
                ),
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        srv,
                        sys.executable,
                        "-c",
                        STREAM_CLIENT,
                        "18087",
                        str(stream_out),
                        str(RUN_S),
                        event_xml("stream-client-1"),
                    ]
                ),
            ]
            for p in peers:
                assert p.wait(timeout=RUN_S + 20) == 0
        finally:
            server.terminate()
            _, err = server.communicate(timeout=20)
        assert server.returncode == 0, err.decode(errors="replace")[-2000:]
    assert b'uid="mesh-peer-1"' in stream_out.read_bytes()  # mesh -> stream client
    assert b'uid="stream-client-1"' in mesh_out.read_bytes()  # stream client -> mesh
    # The peer does not hear its own sends, so any copy would be an echo by the bridge: none.
    assert b'uid="mesh-peer-1"' not in mesh_out.read_bytes()
