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
    connections  <= MAX_CONNECTIONS = 64,512: the generator dials ONE server ip:port from ONE
                 source address, so every connection needs its own local port. Linux's default
                 local port range (net.ipv4.ip_local_port_range 32768-60999) has 28,232; a run
                 asking for more widens its client namespace's range to 1024-65535 for the run
                 (workload/ports.py). More would need several server ports (not built).
    threads <= 256 and pipeline <= 65,536: cnib-openloop's own bounds (openloop.c's parse_args;
                 a unit test holds the two equal); nginx_workers <= 1024; timeout_s <= 600 s

cnib-openloop's record comes from its own histograms (issue 27) with a sampled per-request log
beside them: every N-th request of the window, N = sampled_log_every(rate, duration) =
ceil(window requests / LOG_SAMPLE_MAX). A window of up to 100,000 requests (5,000 req/s for
20 s; every generator test) keeps the whole log (N = 1: the send-lag figures outside the
stalls and the late sends by cause exact, as before); 40,000 req/s for 60 s keeps every 24th
(3.2 MB in memory and on the client's tmpfs instead of 77 MB; the percentiles outside the
stalls then from 100,000 sends: p99.9 from the 100 slowest). Everything else in the record
(latency, send lag, pacing, timeline, the steal mask's histogram) comes from all requests.
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
PORT_RANGE = (32768, 60999)  # Linux's default net.ipv4.ip_local_port_range (28,232 ports)
PORT_RANGE_WIDE = (1024, 65535)  # what a run needing more widens it to (workload/ports.py)
MAX_CONNECTIONS = PORT_RANGE_WIDE[1] - PORT_RANGE_WIDE[0] + 1  # 64,512 to one destination ip:port
MAX_THREADS = 256  # = openloop.c's --threads bound
MAX_NGINX_WORKERS = 1024
MAX_TIMEOUT_S = 600.0
MAX_PIPELINE = 65_536  # = openloop.c's --pipeline bound
LOG_SAMPLE_MAX = 100_000  # requests the sampled log keeps at most (32 B each in the generator's memory)
MAX_LOG_EVERY = 1_000_000_000  # = openloop.c's --log-every bound


def default_connections(rate: float | None) -> int:
    """Connections when a study or command does not say: max(10, ceil(rate/100)), capped."""
    if rate is None or not math.isfinite(rate) or rate <= 0:
        return MIN_CONNECTIONS
    return int(min(MAX_CONNECTIONS, max(MIN_CONNECTIONS, math.ceil(rate / REQUESTS_PER_CONNECTION))))


def sampled_log_every(rate: float | None, duration_s: float) -> int:
    """N of the sampled log: every N-th request of the window, at most LOG_SAMPLE_MAX kept (pure)."""
    if rate is None or not math.isfinite(rate) or rate <= 0 or duration_s <= 0:
        return 1
    return max(1, math.ceil(rate * duration_s / LOG_SAMPLE_MAX))


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
