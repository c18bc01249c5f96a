"""A benchmark run's spec: what a run may ask for, checked before anything starts.

    validate_spec(spec, limits)  pure; bad input raises ConfigError before anything starts
    probe_limits(fleet)          the hosts' facts validate_spec checks
    load_spec(spec, endpoint, dir), generator_argv(spec, load)   the generator's command

Running it is workload/session.py (run_bench, BenchSession).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..infra import limits as host_limits
from ..infra.limits import FD_MARGIN  # descriptors a generator needs besides its connections
from . import nginx as nginx_mod
from .generators import DEFAULT_GENERATOR, GENERATORS, LoadSpec, accounted, available, get_generator
from .defaults import MAX_LOG_EVERY, default_connections, sampled_log_every
from .generators.openloop import default_pipeline
from .guards import GuardLimits
from .hygiene import HICCUP_PLACEMENTS

WHERE = "bench"  # ConfigError 'path' for command-line/spec input
# A hung host fails the run, never the study.
FACTS_TIMEOUT = 15.0  # a cheap fact command (ulimit, command -v), or nginx's alive check


@dataclass(frozen=True)
class BenchSpec:
    mode: str
    size: str
    rate: float
    duration_s: float
    warmup_s: float
    connections: int | None = None  # None: default_connections(rate), one per 100 req/s, >= 10
    generator: str = DEFAULT_GENERATOR
    threads: int = 1
    nginx_workers: int = 1
    pin: bool = True
    metrics: bool = True
    timeout_s: float = 10
    # Requests in flight per connection. None or 0: the generator's default (openloop: a
    # second's worth, >= 32, so sends keep the schedule through a stall; h2load: 1, see
    # docs/method.md). An explicit N wins.
    pipeline: int | None = None
    arrival: str = "uniform"  # openloop only: "uniform" (constant rate) or "poisson"
    seed: int = 0  # openloop only: seeds the Poisson schedule
    # openloop only (version >= 6): the record from the generator's own histograms (the default;
    # False: from its per-request log, as before issue 27); with them, the log keeps every N-th
    # request (0: no log; None: defaults.sampled_log_every, at most 100,000 requests).
    openloop_histograms: bool = True
    openloop_log_every: int | None = None
    client_cpus: tuple[int, ...] = (0,)  # generator pinning (testbed: the other CPU than nginx)
    server_cpus: tuple[int, ...] = (1,)  # nginx worker pinning
    closed_loop: bool = False  # calibration's saturation run: no rate, as fast as answered
    server_delay_s: float = 0.0  # a fixed delay nginx adds to every response (checks the instrument)
    guard: GuardLimits = field(default_factory=GuardLimits)
    # hiccup meter per host: off | on (unpinned) | pinned (one per pinned core); see hiccup/. Off by default: a
    # 1 kHz waker on nginx's core costs p50 +38 % here (docs/method.md); the steal probes cover both cores.
    hiccup: str = "off"
    steal_probe: bool = True  # the server-core steal probe on nginx's pinned cores (stealprobe/; pinned runs only)

    @property
    def n_connections(self) -> int:
        """The connections this run uses: as given, or the default for its rate."""
        return self.connections or default_connections(None if self.closed_loop else self.rate)


@dataclass(frozen=True)
class HostLimits:
    """What the hosts allow, probed before a run (None: not known, not checked)."""

    nofile_client: int | None = None
    nofile_server: int | None = None
    cpus_client: int | None = None
    cpus_server: int | None = None
    generators: dict[str, bool] | None = None  # installed on the client host
    curl: bool | None = None  # the health check needs it on the client host
    nofile_client_hard: int | None = None  # the hard limit: cnib-openloop raises its soft limit to it


def _bad(key: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(WHERE, key, problem, fix)


_NUMBERS = ("rate", "duration_s", "warmup_s", "timeout_s", "server_delay_s")
_WHOLE = ("threads", "nginx_workers", "seed")
_OPTIONAL_WHOLE = ("connections", "pipeline")  # None: the default


def _check_types_and_bounds(spec: BenchSpec) -> None:
    """Types first (a string or a bool is never a number here), then the documented bounds
    (workload/defaults.py), so nothing absurd reaches a host (pure)."""
    import math

    from . import defaults as d

    for key in _NUMBERS:
        v = getattr(spec, key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise _bad(key, f"{v!r} is not a finite number", f"Give a plain number for {key}.")
    for key in _WHOLE + _OPTIONAL_WHOLE:
        v = getattr(spec, key)
        if v is None and key in _OPTIONAL_WHOLE:
            continue
        if not isinstance(v, int) or isinstance(v, bool):
            raise _bad(key, f"{v!r} is not a whole number", f"Give a whole number for {key}.")
    for key in ("pin", "metrics", "closed_loop"):
        if not isinstance(getattr(spec, key), bool):
            raise _bad(key, f"{getattr(spec, key)!r} is not true or false", f"Write true or false for {key}.")
    for key in ("client_cpus", "server_cpus"):
        cpus = getattr(spec, key)
        if not isinstance(cpus, tuple) or not cpus or not all(isinstance(c, int) and not isinstance(c, bool)
                                                              and 0 <= c < 4096 for c in cpus):
            raise _bad(key, f"{cpus!r} is not a list of CPU numbers", f"Write e.g. {key}: [0].")
    if not spec.closed_loop and spec.rate > d.MAX_RATE:
        raise _bad("rate", f"{spec.rate:g} req/s is more than {d.MAX_RATE:g} req/s",
                   "That is far beyond one client host; check the number (e.g. --rate 50000).")
    bounds = (("duration_s", d.MAX_DURATION_S, "s"), ("warmup_s", d.MAX_WARMUP_S, "s"),
              ("timeout_s", d.MAX_TIMEOUT_S, "s"), ("connections", d.MAX_CONNECTIONS, ""),
              ("threads", d.MAX_THREADS, ""), ("nginx_workers", d.MAX_NGINX_WORKERS, ""),
              ("pipeline", d.MAX_PIPELINE, ""))
    for key, top, unit in bounds:
        v = spec.n_connections if key == "connections" else getattr(spec, key)
        if v is not None and v > top:
            why = (f" (one source address has {d.MAX_CONNECTIONS:,} local ports for one server ip:port, "
                   f"ip_local_port_range {d.PORT_RANGE_WIDE[0]}-{d.PORT_RANGE_WIDE[1]}; several server ports are "
                   "not supported)") if key == "connections" else ""
            raise _bad(key, f"{v:g}{unit} is more than {top:g}{unit}{why}", f"Use at most {top:g}{unit} for {key}.")


def validate_spec(spec: BenchSpec, limits: HostLimits | None = None, *, rate_known: bool = True) -> None:
    """Raise one clear ConfigError for the first problem (pure). rate_known=False (a study whose
    rates come from calibration): the checks that depend on the rate wait for it."""
    _check_types_and_bounds(spec)
    if spec.size not in nginx_mod.SIZES:
        raise _bad("size", f"'{spec.size}' is not a response size",
                   "Use --size small (350 B on the wire) or --size large (4096 B body).")
    if spec.generator not in GENERATORS:
        raise _bad("generator", f"'{spec.generator}' is not a known generator", f"Use one of: {', '.join(GENERATORS)}.")
    if not spec.closed_loop and not spec.rate > 0:
        raise _bad("rate", f"must be > 0 requests/s (got {spec.rate:g})",
                   "Give a positive constant rate, e.g. --rate 5000.")
    if not spec.duration_s > 0:
        raise _bad("duration", f"must be > 0 s (got {spec.duration_s:g})",
                   "Give the measurement window in seconds, e.g. --duration 10.")
    if spec.warmup_s < 0:
        raise _bad("warmup", f"must be >= 0 s (got {spec.warmup_s:g})", "Use 0 for no warm-up.")
    if spec.duration_s < spec.warmup_s:
        raise _bad("duration", f"{spec.duration_s:g} s is shorter than the warm-up ({spec.warmup_s:g} s)",
                   "Measure at least as long as you warm up: raise --duration or lower --warmup.")
    if spec.connections is not None and spec.connections < 1:
        raise _bad("connections", f"must be >= 1 (got {spec.n_connections})", "Use at least one connection.")
    if not 1 <= spec.threads <= spec.n_connections:
        raise _bad("threads", f"must be between 1 and the number of connections (got {spec.threads})",
                   "Each generator thread needs at least one connection.")
    if spec.nginx_workers < 1:
        raise _bad("nginx_workers", f"must be >= 1 (got {spec.nginx_workers})", "Use at least one nginx worker.")
    if not 0 <= spec.server_delay_s <= 10:
        raise _bad("server_delay", f"must be between 0 and 10 s (got {spec.server_delay_s:g})",
                   "Use 0 (no delay) for measurements.")
    if spec.timeout_s <= 0:
        raise _bad("timeout", f"must be > 0 s (got {spec.timeout_s:g})", "Give the response timeout in seconds.")
    if spec.hiccup not in HICCUP_PLACEMENTS:
        raise _bad("hiccup", f"'{spec.hiccup}' is not a hiccup meter placement",
                   f"Use one of: {', '.join(HICCUP_PLACEMENTS)}.")
    if spec.pipeline is not None and spec.pipeline < 0:
        raise _bad("pipeline", f"must be >= 0 (got {spec.pipeline})",
                   "Leave it out (the generator's default) or give N >= 1.")
    if spec.openloop_log_every is not None and not 0 <= spec.openloop_log_every <= MAX_LOG_EVERY:
        raise _bad("openloop_log_every", f"must be between 0 and {MAX_LOG_EVERY:,} (got {spec.openloop_log_every})",
                   "Give N >= 1 for every N-th request, 0 for no log, or leave it out (at most 100,000 kept).")
    if spec.arrival not in ("uniform", "poisson"):
        raise _bad("arrival", f"'{spec.arrival}' is not an arrival process",
                   "Use uniform (constant rate, the study's) or poisson.")
    if spec.closed_loop and getattr(get_generator(spec.generator), "busy_polls", False):
        raise _bad("generator", f"'{spec.generator}' is open-loop only",
                   "Closed-loop (saturation) runs use --generator h2load.")
    if rate_known and not spec.closed_loop and spec.rate / spec.n_connections * spec.duration_s < 1:
        raise _bad("rate", f"{spec.rate:g} req/s over {spec.n_connections} connections sends less than one request per "
                   f"connection in {spec.duration_s:g} s", "Raise the rate or the duration, or use fewer connections.")
    if limits is not None:
        _check_limits(spec, limits)


def _check_limits(spec: BenchSpec, limits: HostLimits) -> None:
    """The checks against the hosts' probed limits (validate_spec's second half)."""
    if limits.generators is not None and not limits.generators.get(spec.generator, False):
        have = [g for g, ok in limits.generators.items() if ok]
        raise _bad("generator", f"'{spec.generator}' is not installed on the client host",
                   f"Install it there, or use one that is: {', '.join(have) or 'none found'}.")
    if limits.curl is False:
        raise _bad("client", "curl is not installed on the client host (the health check needs it)",
                   "apt-get install -y curl on the client host.")
    if getattr(get_generator(spec.generator), "raises_nofile", False) and limits.nofile_client_hard is not None:
        lim = host_limits.Limits(nofile_soft=limits.nofile_client, nofile_hard=limits.nofile_client_hard)
        problems = host_limits.check_open_files("the client host", lim, spec.n_connections).problems
        if problems:
            raise _bad("connections", problems[0], "Use fewer connections, or raise the hard limit.")
    elif limits.nofile_client is not None and spec.n_connections + FD_MARGIN > limits.nofile_client:
        raise _bad("connections", f"{spec.n_connections} connections exceed the client host's open-file limit "
                   f"({limits.nofile_client})",
                   f"Use at most {max(1, limits.nofile_client - FD_MARGIN)} connections, or raise the limit "
                   "(LimitNOFILE of sshd / ulimit -n).")
    if spec.pin:
        for cpus, n, who in ((spec.client_cpus, limits.cpus_client, "client"),
                             (spec.server_cpus, limits.cpus_server, "server")):
            if n is not None and any(c >= n for c in cpus):
                raise _bad(f"{who}_cpus", f"CPU {max(cpus)} does not exist on the {who} host ({n} CPUs)",
                           "Pin to existing CPUs or run with pin off (--no-pin).")


async def probe_limits(fleet) -> HostLimits:
    """The facts validate_spec checks, from the hosts (a few cheap commands)."""
    async def facts(host):
        r = await host.run(["sh", "-c", "ulimit -Sn; ulimit -Hn; nproc"], timeout=FACTS_TIMEOUT)
        soft, hard, ncpu = r.stdout.split()[:3]
        return (None if soft == "unlimited" else int(soft)), (None if hard == "unlimited" else int(hard)), int(ncpu)

    (nf_c, hard_c, cpu_c), (nf_s, _, cpu_s) = await asyncio.gather(facts(fleet.client), facts(fleet.server))
    gens = await available(fleet.client)
    curl = (await fleet.client.run(["sh", "-c", "command -v curl"], check=False,
                                   timeout=FACTS_TIMEOUT)).exit_status == 0
    return HostLimits(nf_c, nf_s, cpu_c, cpu_s, gens, curl, nofile_client_hard=hard_c)


@dataclass
class RunContext:
    """What a fault hook (`during=`) can reach while the load runs."""

    fleet: object
    endpoint: object
    spec: BenchSpec
    load: LoadSpec
    nginx: nginx_mod.NginxServer
    generator: object  # hosts.Background of the generator's wrapper (pid: the wrapper)


def load_spec(spec: BenchSpec, endpoint, gen_dir: str, start_at_ns: int = 0) -> LoadSpec:
    rate = None if spec.closed_loop else float(spec.rate)
    per_conn = None if rate is None else rate / spec.n_connections
    gen = get_generator(spec.generator)
    pipeline = spec.pipeline or (default_pipeline(per_conn) if gen.name == "openloop" else 1)
    from .generators.tcpkali import request_length

    return LoadSpec(
        address=endpoint.connect_address,
        port=endpoint.connect_port,
        path=f"/{spec.size}",
        rate=rate,
        connections=spec.n_connections,
        threads=spec.threads,
        duration_s=spec.duration_s,
        warmup_s=spec.warmup_s,
        pipeline=pipeline,
        timeout_s=spec.timeout_s,
        request_bytes=request_length(f"/{spec.size}") if gen.name == "tcpkali" else 0,
        response_bytes=nginx_mod.response_bytes(spec.size),
        log_path=f"{gen_dir}/requests.log",
        cpu_path=f"{gen_dir}/cpu",
        hist_path=f"{gen_dir}/histograms" if spec.openloop_histograms and gen.name == "openloop" else "",
        log_every=(sampled_log_every(rate, spec.duration_s) if spec.openloop_log_every is None
                   else spec.openloop_log_every),
        arrival=spec.arrival,
        seed=spec.seed,
        cpus=tuple(spec.client_cpus) if spec.pin else (),
        start_at_ns=start_at_ns,
    )


def generator_argv(spec: BenchSpec, load: LoadSpec) -> list[str]:
    argv = accounted(get_generator(spec.generator).command(load), load.cpu_path)
    if spec.pin:
        argv = ["taskset", "-c", ",".join(map(str, spec.client_cpus)), *argv]
    return argv


