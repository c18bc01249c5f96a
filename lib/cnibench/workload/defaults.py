"""The workload's documented defaults and bounds (pure; no imports from the rest of cnibench).

A study may leave out `workload:` entirely. Then each run uses

    duration_s   10 s     measurement window
    warmup_s     2 s      load before the window (not measured)
    connections  default_connections(rate) = max(10, ceil(rate / 100)): about 100 requests/s
                 per connection, as the open-loop generator (`openloop`) does; capped at
                 MAX_CONNECTIONS. Calibration (rate unknown) uses default_connections(1) = 10.

Bounds (validate_spec refuses anything outside, before any host is touched):

    rate         finite, > 0 and <= MAX_RATE (10 M requests/s: far above what one client
                 host can send; a typo like 1e12 or `inf` is refused, not run)
    duration_s   <= MAX_DURATION_S (1 h), warmup_s <= MAX_WARMUP_S (10 min)
    connections  <= MAX_CONNECTIONS = 28,232: the generator dials ONE server ip:port from ONE
                 source address, so every connection needs its own local port, and Linux's
                 default local port range (net.ipv4.ip_local_port_range 32768-60999) has 28,232.
    threads <= 256 and pipeline <= 65,536: cnib-openloop's own bounds (openloop.c's parse_args;
                 a unit test holds the two equal); nginx_workers <= 1024; timeout_s <= 600 s
"""

from __future__ import annotations

import math

DURATION_S = 10.0
WARMUP_S = 2.0
MIN_CONNECTIONS = 10
REQUESTS_PER_CONNECTION = 100  # req/s one connection carries by default

MAX_RATE = 10_000_000.0
MAX_DURATION_S = 3600.0
MAX_WARMUP_S = 600.0
PORT_RANGE = (32768, 60999)  # Linux's default net.ipv4.ip_local_port_range
MAX_CONNECTIONS = PORT_RANGE[1] - PORT_RANGE[0] + 1  # 28,232 to one destination ip:port
MAX_THREADS = 256  # = openloop.c's --threads bound
MAX_NGINX_WORKERS = 1024
MAX_TIMEOUT_S = 600.0
MAX_PIPELINE = 65_536  # = openloop.c's --pipeline bound


def default_connections(rate: float | None) -> int:
    """Connections when a study or command does not say: max(10, ceil(rate/100)), capped."""
    if rate is None or not math.isfinite(rate) or rate <= 0:
        return MIN_CONNECTIONS
    return int(min(MAX_CONNECTIONS, max(MIN_CONNECTIONS, math.ceil(rate / REQUESTS_PER_CONNECTION))))


def with_defaults(fields: dict) -> dict:
    """BenchSpec fields with the documented defaults filled in where a key is absent."""
    out = dict(fields)
    out.setdefault("duration_s", DURATION_S)
    out.setdefault("warmup_s", WARMUP_S)
    if out.get("connections") is None:
        rate = out.get("rate")
        out["connections"] = default_connections(float(rate) if isinstance(rate, (int, float))
                                                 and not isinstance(rate, bool) else None)
    return out
