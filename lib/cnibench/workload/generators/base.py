"""The load-generator interface: two pure functions around one remote command.

    command(spec) -> argv                         what to run on the client host
    parse(spec, stdout, stderr, exit_status, files) -> LoadResult

`files` holds what the command left on the host (per-request log, CPU accounting), fetched by
the runner. Every generator runs under `accounted()`, a tiny sh wrapper that records the CPU
time the generator used (from /proc/<wrapper>/stat: cutime + cstime of its waited-for child),
so the CPU guard works the same for every generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from hdrh.histogram import HdrHistogram
from ...catalog import PREFIX


@dataclass(frozen=True)
class LoadSpec:
    """What a generator is asked to do (all connections together)."""

    address: str  # the address the client dials
    port: int
    path: str  # "/small" or "/large"
    rate: float | None  # total requests/s; None: closed loop (as fast as the server answers)
    connections: int
    threads: int
    duration_s: float  # the measurement window
    warmup_s: float  # load before the window, not measured
    pipeline: int  # requests in flight per connection (h2load -m)
    timeout_s: float  # a response later than this counts as a timeout
    request_bytes: int = 0  # tcpkali: bytes of one request (to count requests from bytes sent)
    response_bytes: int = 0  # bytes of one response on the wire (to count responses)
    log_path: str = ""  # per-request log on the client host
    cpu_path: str = ""  # CPU accounting file on the client host
    hist_path: str = ""  # openloop >= 6: its histogram file on the client host ("": the record from the log)
    log_every: int = 1  # openloop >= 6 with hist_path: the log keeps every N-th request (0: no log)
    arrival: str = "uniform"  # openloop: "uniform" (the study's constant rate) or "poisson"
    seed: int = 0  # openloop: seeds the Poisson schedule
    cpus: tuple[int, ...] = ()  # openloop: thread i is pinned to cpus[i % len(cpus)]
    start_at_ns: int = 0  # openloop >= 8: t0 at this realtime ns (several clients, fanout.py); 0: at once

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}{self.path}"

    @property
    def per_connection_rate(self) -> float | None:
        return None if self.rate is None else self.rate / self.connections


@dataclass
class LoadResult:
    """What a generator measured in the window. ok=False: the run broke (reason says how)."""

    ok: bool
    reason: str = ""
    requests: int = 0  # sent in the window
    ok_count: int = 0  # 2xx responses in the window
    errors: int = 0  # failed streams and non-2xx responses
    timeouts: int = 0  # responses later than timeout_s
    unfinished: int = 0  # sent but not answered when the window closed
    window_s: float = 0.0
    achieved_rate: float = 0.0  # ok responses per second of window
    histogram: HdrHistogram | None = None  # open-loop (corrected): what we report
    histogram_uncorrected: HdrHistogram | None = None  # as the generator measured it
    percentiles: dict[str, float] | None = None  # when the generator prints them itself
    timeline: list[dict] = field(default_factory=list)
    correction: dict = field(default_factory=dict)
    source: str = ""  # how the histogram was obtained
    generator_cpu: float | None = None
    send_lag: dict | None = None  # openloop: sent - intended, percentiles in µs
    pacing: dict | None = None  # openloop: per-ms dispersion of the sends, periodogram line
    generator_info: dict = field(default_factory=dict)
    # openloop >= 5: the latency histogram outside the steal mask (latency.steal_mask)
    outside_steal: dict | None = None
    # openloop: what merging several clients' sends needs (fanout.Sends); not part of the record
    sends: "Sends | None" = None


@dataclass(frozen=True)
class Sends:
    """One client's sends over the window, in its own frame (ns since its t0), for merging
    several clients' schedules (fanout.merged_pacing): per-ms counts of the sends and of the
    schedule, the bins its machine stalls touched (None: not listed), the window's start, the
    (maybe sampled) log's intended and sent times, and the send lag: the generator's ns
    histogram (index, count) or, from a full log, the exact values."""

    actual: "object"
    scheduled: "object"
    mask: "object | None"
    start_ns: int
    intended: "object | None" = None
    sent: "object | None" = None
    lag_hist: tuple | None = None
    lag_ns: "object | None" = None


class Generator(Protocol):
    name: str
    binary: str

    def command(self, spec: LoadSpec) -> list[str]: ...

    def parse(self, spec: LoadSpec, stdout: str, stderr: str, exit_status: int,
              files: dict[str, bytes]) -> LoadResult: ...

    def files(self, spec: LoadSpec) -> dict[str, str]: ...


# A wrapper that runs "$@" and writes the CPU time it used. It forwards TERM to the generator,
# so stopping the wrapper stops the generator, and it keeps the generator's exit status.
_ACCOUNT_SH = r"""f=$1; shift
read -r up0 _ < /proc/uptime
"$@" &
c=$!
trap 'kill -TERM "$c" 2>/dev/null' TERM INT HUP
wait "$c"; s=$?
while kill -0 "$c" 2>/dev/null; do wait "$c"; s=$?; done
read -r up1 _ < /proc/uptime
{ echo "$up0 $up1 $(getconf CLK_TCK 2>/dev/null || echo 100)"; cat /proc/$$/stat; } > "$f"
exit "$s"
"""


def accounted(argv: list[str], cpu_path: str) -> list[str]:
    """argv wrapped so that its CPU use lands in cpu_path (see parse_accounting)."""
    return ["sh", "-c", _ACCOUNT_SH, f"{PREFIX}-account", cpu_path, *argv]


def parse_accounting(text: str) -> float | None:
    """CPU used by the wrapped command as a fraction of one CPU over its wall time."""
    lines = text.strip().splitlines()
    if len(lines) < 2:
        return None
    try:
        up0, up1, tck = (float(x) for x in lines[0].split())
        # /proc/<pid>/stat: the comm field may hold spaces; fields after ')' are positional.
        rest = lines[1].rsplit(")", 1)[1].split()
        cutime, cstime = int(rest[13]), int(rest[14])  # fields 16 and 17 of stat(5)
    except (ValueError, IndexError):
        return None
    wall = up1 - up0
    if wall <= 0:
        return None
    return (cutime + cstime) / tck / wall


def broken_run(program: str, exit_status: int, stdout: str, stderr: str) -> LoadResult:
    """The result of a generator that exited non-zero or printed no summary: one clear reason
    with the last lines it printed."""
    tail = " ".join((stderr or stdout or "").strip().splitlines()[-3:])
    what = f"exited with status {exit_status}" if exit_status != 0 else "printed no summary"
    return LoadResult(ok=False, reason=f"{program} {what}" + (f": {tail}" if tail else ""))
