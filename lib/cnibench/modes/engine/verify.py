"""Verify a mode that is up: one HTTP request from the client container to the server endpoint
through a throwaway server (nginx belongs to the workload), plus the mode's data-path checks.

The server and client are small Python programs passed as constant `python3 -c` scripts; the
addresses and ports travel as arguments, never inside the script text.
"""

from __future__ import annotations

import json

from ...catalog import PREFIX
from ..base import Check, Endpoint, ModeSettings, NetworkMode, VerifyResult
from ..node import checks as node_checks
from .facts import gather_facts

BODY = f"{PREFIX}-verify"

SERVER = r"""
import sys, http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall
    def do_GET(self):
        b = b"cnib-verify"
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"""

# argv: address port count wait_s -> JSON {"ok": n, "body": first body, "us": [round trips]}
CLIENT = r"""
import sys, json, time, http.client, socket
addr, port, n, wait = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
deadline = time.monotonic() + wait
while True:
    try:
        c = http.client.HTTPConnection(addr, port, timeout=3)
        c.connect()
        break
    except (ConnectionRefusedError, socket.timeout, OSError):
        if time.monotonic() > deadline:
            print(json.dumps({"ok": 0, "error": "cannot connect"})); sys.exit(1)
        time.sleep(0.1)
c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
ok, us, body = 0, [], ""
for i in range(n):
    t = time.perf_counter_ns()
    c.request("GET", "/")
    r = c.getresponse()
    data = r.read()
    us.append((time.perf_counter_ns() - t) / 1000)
    if r.status == 200:
        ok += 1
        body = body or data.decode()
print(json.dumps({"ok": ok, "body": body, "us": us}))
"""


async def start_server(fleet, endpoint: Endpoint):
    return await fleet.server.start(["python3", "-c", SERVER, endpoint.server_bind, str(endpoint.server_port)],
                                    netns=endpoint.server_netns)


async def requests(fleet, endpoint: Endpoint, n: int = 1, wait: float = 5.0) -> dict:
    """n sequential HTTP requests on one connection from the client container."""
    r = await fleet.client.run(["python3", "-c", CLIENT, endpoint.connect_address, str(endpoint.connect_port), str(n),
                                str(wait)],
                               netns=endpoint.client_netns, check=False, timeout=60 + n * 0.1)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"ok": 0, "error": (r.stderr or r.stdout).strip()[-300:]}


async def verify_mode(mode: NetworkMode, fleet, endpoint: Endpoint, settings: ModeSettings) -> VerifyResult:
    facts = await gather_facts(fleet, with_router=mode.needs_router)
    server = await start_server(fleet, endpoint)
    checks: list[Check] = []
    try:
        first = await requests(fleet, endpoint, 1, wait=5.0)
        where = f"{endpoint.client_netns or 'host'} -> {endpoint.connect_address}:{endpoint.connect_port}"
        checks.append(Check(f"HTTP request {where}", first.get("ok") == 1 and first.get("body") == BODY,
                            first.get("error") or f"body {first.get('body')!r}"))

        async def probe():
            res = await requests(fleet, endpoint, 3, wait=2.0)
            if res.get("ok") != 3:
                raise AssertionError(f"probe requests failed: {res}")

        if checks[0].ok:
            try:
                path_ep = node_checks.path_endpoint(mode, facts, settings, endpoint)  # node: kubernetes
                checks += await mode.path_checks(fleet, path_ep, settings, facts, probe)
                checks += await node_checks.checks(fleet, endpoint, settings, probe)
            except AssertionError as exc:
                checks.append(Check("data-path probe", False, str(exc)))
    finally:
        await server.stop(grace=2)
    return VerifyResult(mode.name, tuple(checks))
