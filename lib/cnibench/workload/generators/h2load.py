"""h2load (nghttp2-client): a second, labelled generator for cross-checks and closed-loop runs.

Command: `h2load --h1 -c C -t T -m M [--rps r] -D window --warm-up-time w --log-file L URL`.
`--rps` is per connection, so r = rate / C.

h2load is NOT an open-loop generator, and its numbers are reported as it measured them
(latency from the actual send), labelled so. Its limits, read from its source
(nghttp2 `src/h2load.cc`, 1.52): the `--rps` timer fires at most every 10 ms
(`std::max(0.01, 1. / config.rps)`), so each connection sends 10 ms of requests at once; with
M requests in flight a connection holds further due requests back and sends them when
responses return (coordinated omission). On the testbed at 25,000 req/s that is 5 ms at about
twice the rate and 5 ms of silence (per-ms dispersion ~30). The study's numbers come from
cnib-openloop (generators/openloop.py); h2load stays for the closed-loop saturation figure and
for cross-checks where it is smooth (one request per 10 ms tick per connection).

The per-request log (--log-file) holds only requests sent in the measurement window:
start time (µs since the epoch), status (-1: failed stream), duration (µs).
"""

from __future__ import annotations

import re

import numpy as np

from .. import latency as lat
from .base import LoadResult, LoadSpec, broken_run

_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def _duration(seconds: float) -> str:
    """h2load takes integer durations with a unit."""
    return f"{max(1, int(round(seconds * 1000)))}ms"


class H2load:
    name = "h2load"
    binary = "h2load"

    def files(self, spec: LoadSpec) -> dict[str, str]:
        return {"log": spec.log_path, "cpu": spec.cpu_path}

    def command(self, spec: LoadSpec) -> list[str]:
        argv = ["h2load", "--h1", "-c", str(spec.connections), "-t", str(spec.threads), "-m", str(spec.pipeline)]
        if spec.rate is not None:
            argv += ["--rps", f"{spec.per_connection_rate:.6g}"]
        argv += ["-D", _duration(spec.duration_s)]
        if spec.warmup_s > 0:
            argv += ["--warm-up-time", _duration(spec.warmup_s)]
        if spec.log_path:
            argv += ["--log-file", spec.log_path]
        argv.append(spec.url)
        return argv

    def parse(self, spec: LoadSpec, stdout: str, stderr: str, exit_status: int, files: dict[str, bytes]) -> LoadResult:
        summary = parse_summary(stdout)
        if exit_status != 0 or summary is None:
            return broken_run("h2load", exit_status, stdout, stderr)
        if summary["succeeded"] == 0 and summary["started"] > 0:
            tail = " ".join((stderr or "").strip().splitlines()[-2:])
            return LoadResult(ok=False, reason=f"h2load: no request succeeded ({summary['failed']} failed, "
                              f"{summary['errored']} errored) {tail}".strip())
        rows = parse_log(files.get("log", b""))
        return result_from_log(spec, rows, summary)


def parse_summary(stdout: str) -> dict | None:
    m = _REQUESTS.search(stdout or "")
    if not m:
        return None
    keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    out = dict(zip(keys, (int(x) for x in m.groups())))
    s = _STATUS.search(stdout)
    out.update(dict(zip(("2xx", "3xx", "4xx", "5xx"), (int(x) for x in s.groups()))) if s
               else {"2xx": out["succeeded"], "3xx": 0, "4xx": 0, "5xx": 0})
    return out


def parse_log(data: bytes | str) -> np.ndarray:
    """The per-request log as an (n, 3) int64 array: start µs, status, duration µs."""
    if isinstance(data, str):
        data = data.encode()
    if not data.strip():
        return np.zeros((0, 3), dtype=np.int64)
    if not data.endswith(b"\n"):  # a torn last line (generator killed mid-write)
        data = data[: data.rfind(b"\n") + 1]
    values = np.fromiter(map(int, data.split()), dtype=np.int64)
    return values[: len(values) - len(values) % 3].reshape(-1, 3)


def result_from_log(spec: LoadSpec, rows: np.ndarray, summary: dict) -> LoadResult:
    """Counts, both histograms and the timeline from the log rows (pure)."""
    if len(rows) == 0:
        return LoadResult(ok=False, reason="h2load logged no request in the measurement window")
    order = np.argsort(rows[:, 0], kind="stable")
    start, status, dur = rows[order, 0], rows[order, 1], rows[order, 2]
    good = (status >= 200) & (status < 300)
    failed = ~good
    window = spec.duration_s
    timeouts = int((good & (dur > spec.timeout_s * 1e6)).sum())
    ok_count = int(good.sum()) - timeouts
    t0 = int(start[0])
    return LoadResult(
        ok=True,
        requests=int(summary["started"]),
        ok_count=ok_count,
        errors=int(failed.sum()),
        timeouts=timeouts,
        unfinished=max(0, int(summary["started"]) - int(summary["done"])),
        window_s=window,
        achieved_rate=ok_count / window if window > 0 else 0.0,
        histogram=lat.histogram_of(dur[good]),
        histogram_uncorrected=lat.histogram_of(dur[good]),
        timeline=lat.timeline(start + dur, dur, failed, t0, int(round(window))),
        correction={"method": "none: h2load's own latency, from the actual send (not open loop)",
                    "pipeline": spec.pipeline},
        source="h2load per-request log; latency from the actual send (closed loop per connection, 10 ms rate ticks)",
    )


GENERATOR = H2load()
