"""One HTTP request from the client host to the server host over the data network."""

from __future__ import annotations

import asyncio

from .hosts import Fleet

PORT = 8079
FETCH = "import sys, urllib.request; r = urllib.request.urlopen(sys.argv[1], timeout=5); print(r.status, len(r.read()))"


async def http_smoke(fleet: Fleet, port: int = PORT) -> str:
    """Serve a directory listing on the server host; fetch it from the client host."""
    server, client = fleet.server, fleet.client
    address = server.spec.data_address
    docroot = "/run/cnibench/smoke"
    await server.write_file(f"{docroot}/index.html", "cnibench smoke test\n")
    bg = await server.start(["python3", "-m", "http.server", "--bind", address, "--directory", docroot, str(port)])
    try:
        for _ in range(50):
            r = await client.run(["python3", "-c", FETCH, f"http://{address}:{port}/"], check=False, timeout=10)
            if r.ok:
                return f"{client.name} -> http://{address}:{port}/ on {server.name}: HTTP {r.stdout.strip()}"
            await asyncio.sleep(0.1)
        raise RuntimeError(f"no HTTP answer from {server.name}: {r.stderr.strip()[-300:]}")
    finally:
        await bg.stop(grace=2)
        await server.run(["rm", "-rf", docroot])
        await server.run(["rmdir", "--ignore-fail-on-non-empty", "/run/cnibench"], check=False)
