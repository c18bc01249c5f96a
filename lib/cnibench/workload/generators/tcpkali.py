"""tcpkali (the study's generator), used when it is installed on the client host.

Command: `tcpkali -c C -r r -T D --latency-marker "HTTP/1.1" --latency-percentiles ... -em REQ
ADDR:PORT`. `-r` is messages per second per connection (r = rate / C). tcpkali writes on
schedule without waiting for responses (it pipelines), so it is an open-loop generator.

What it prints (tcpkali 1.2, see tests/fixtures/tcpkali/): total bytes sent and received, the
latency at the requested percentiles in ms with 0.1 ms resolution, and the test duration. It
does not count requests or errors: requests = bytes sent / request length, responses = bytes
received / response length. It has no warm-up: the connection ramp is inside the window.
There is no per-request data, so the record's histogram is rebuilt from the percentile table
(labelled in `source`); the percentile table itself is tcpkali's own.
"""

from __future__ import annotations

import re

from .. import latency as lat
from ...results import PERCENTILES, percentile_key
from .base import LoadResult, LoadSpec

_BYTES = re.compile(r"Total data (sent|received):.*\((\d+) bytes\)")
_LATENCY = re.compile(r"Message latency at percentiles: ([\d./]+) ms \(([\d./]+)%\)")
_DURATION = re.compile(r"Test duration: ([\d.]+) s")
REPORTED = (*PERCENTILES, 100)


def request_text(path: str, host: str = "server") -> str:
    """The request tcpkali sends, with escapes tcpkali's -e expands (argv stays literal)."""
    return f"GET {path} HTTP/1.1\\r\\nHost: {host}\\r\\n\\r\\n"


def request_length(path: str, host: str = "server") -> int:
    return len(request_text(path, host).replace("\\r\\n", "\r\n"))


class Tcpkali:
    name = "tcpkali"
    binary = "tcpkali"

    def files(self, spec: LoadSpec) -> dict[str, str]:
        return {"cpu": spec.cpu_path}

    def command(self, spec: LoadSpec) -> list[str]:
        argv = ["tcpkali", "-c", str(spec.connections)]
        if spec.rate is not None:
            argv += ["-r", f"{spec.per_connection_rate:.6g}"]
        argv += [
            "-T", f"{spec.warmup_s + spec.duration_s:g}",
            "--latency-marker", "HTTP/1.1",
            "--latency-percentiles", ",".join(f"{p:g}" for p in REPORTED),
            "-em", request_text(spec.path),
            f"{spec.address}:{spec.port}",
        ]
        return argv

    def parse(self, spec: LoadSpec, stdout: str, stderr: str, exit_status: int, files: dict[str, bytes]) -> LoadResult:
        return parse_output(stdout, stderr, exit_status, spec.request_bytes or request_length(spec.path),
                            spec.response_bytes, spec.rate)


def parse_output(stdout: str, stderr: str, exit_status: int, request_bytes: int, response_bytes: int,
                 rate: float | None = None) -> LoadResult:
    """A LoadResult from tcpkali's printed output (pure; tested on real output)."""
    if exit_status != 0:
        tail = " ".join((stderr or "").strip().splitlines()[-1:])
        return LoadResult(ok=False, reason=f"tcpkali exited with status {exit_status}" + (f": {tail}" if tail else ""))
    sent = received = None
    for kind, n in _BYTES.findall(stdout):
        if kind == "sent":
            sent = int(n)
        else:
            received = int(n)
    m_lat, m_dur = _LATENCY.search(stdout), _DURATION.search(stdout)
    if sent is None or received is None or m_lat is None or m_dur is None:
        return LoadResult(ok=False, reason="tcpkali printed no byte counts, latency or duration")
    values = [float(v) for v in m_lat.group(1).split("/")]
    pcts = [float(p) for p in m_lat.group(2).split("/")]
    if len(values) != len(pcts):
        return LoadResult(ok=False, reason="tcpkali's latency line does not match its percentile list")
    duration = float(m_dur.group(1))
    requests = sent // request_bytes if request_bytes else 0
    responses = received // response_bytes if response_bytes else 0
    table_us = {p: v * 1000.0 for p, v in zip(pcts, values)}
    percentiles = {percentile_key(p): int(round(v)) for p, v in table_us.items()}
    return LoadResult(
        ok=True,
        requests=int(requests),
        ok_count=int(responses),
        errors=0,  # tcpkali reports none; a short count shows in the achieved rate instead
        timeouts=0,
        unfinished=max(0, int(requests - responses)),
        window_s=duration,
        achieved_rate=responses / duration if duration > 0 else 0.0,
        histogram=lat.histogram_from_quantiles(table_us, int(responses)),
        histogram_uncorrected=None,
        percentiles=percentiles,
        timeline=[],
        correction={"method": "none needed: tcpkali sends on schedule (pipelines)", "max_ms": 0.0},
        source="tcpkali percentile table (0.1 ms resolution); histogram rebuilt from it",
    )


GENERATOR = Tcpkali()
