"""Helpers shared by the workload integration tests (not a test module)."""

from __future__ import annotations

from cnibench.modes.base import Endpoint


def host_endpoint(inventory, port: int = 8080) -> Endpoint:
    """`host` mode by hand: no containers, the server's data address (the modes engineer's
    mode_up gives the same; building it here keeps these tests independent of modes/)."""
    server = inventory.server
    address = server.data_address or "198.18.0.12"
    return Endpoint("host", None, None, address, port, address, port)


RAW_GET = r"""
import socket, sys
addr, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((addr, port), timeout=5)
s.sendall(f"GET {path} HTTP/1.1\r\nHost: server\r\n\r\n".encode())
data = b""
while b"\r\n\r\n" not in data:
    data += s.recv(65536)
head, _, body = data.partition(b"\r\n\r\n")
length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
while len(body) < length:
    body += s.recv(65536)
print(len(head) + 4, len(body), len(head) + 4 + len(body))
"""


async def raw_sizes(host, netns, address, port, path):
    """(header bytes, body bytes, total) of one response, read raw over a socket."""
    r = await host.run(["/usr/bin/python3", "-c", RAW_GET, address, str(port), path], netns=netns, timeout=20)
    return tuple(int(x) for x in r.stdout.split())


async def processes(host, pattern: str) -> list[str]:
    """Command lines of processes matching pattern (for leak checks; reads only)."""
    r = await host.run(["pgrep", "-af", pattern], check=False, timeout=10)
    return [ln for ln in r.stdout.splitlines() if ln.strip() and "pgrep" not in ln]
