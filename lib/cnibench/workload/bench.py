"""Benchmark runs: nginx up, sampler on, load, parse, guards, everything stopped.

    validate_spec(spec, limits)  pure; bad input raises ConfigError before anything starts
    run_bench(fleet, endpoint, spec, run_id=...) -> a complete run record dict (not written)
    async with BenchSession(fleet, endpoint, limits) as s:   many runs, nginx started once
        rec = await s.run(spec, run_id=...)

Per-run cost outside the load, measured on the testbed (benchmarks/pipeline_bench.py): 2.9 s
when every run started nginx, stopped it gracefully and waited a sampler period; ~0.1-0.2 s in
a session (a health check, two sampler starts/stops, the generator's files).

Whatever happens during the run (generator killed, nginx killed, SSH dropped), run_bench ends
within a bounded time, returns a record with status `failed` and the reason, and still stops
the generator, the samplers and nginx (try/finally, each step bounded and independent).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Awaitable, Callable

import asyncssh

from ..config import RUN_DIR
from ..errors import CnibenchError, ConfigError, HostError
from ..hosts import quote
from ..results import empty_latency, encode_histogram, new_record, now_iso, percentile_table, zero_counts
from . import nginx as nginx_mod
from .generators import DEFAULT_GENERATOR, GENERATORS, LoadSpec, accounted, available, get_generator, parse_accounting
from .defaults import default_connections
from .generators.openloop import default_pipeline
from .guards import GuardLimits
from .hygiene import HICCUP_PLACEMENTS, RunHygiene, judge_run

WHERE = "bench"  # ConfigError 'path' for command-line/spec input
FD_MARGIN = 64  # descriptors a generator needs besides its connections
CLEANUP_TIMEOUT = 30.0


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
    client_cpus: tuple[int, ...] = (0,)  # generator pinning (testbed: the other CPU than nginx)
    server_cpus: tuple[int, ...] = (1,)  # nginx worker pinning
    closed_loop: bool = False  # calibration's saturation run: no rate, as fast as answered
    server_delay_s: float = 0.0  # a fixed delay nginx adds to every response (checks the instrument)
    guard: GuardLimits = field(default_factory=GuardLimits)
    hiccup: str = "on"  # hiccup meter per host: on (unpinned) | pinned (one per pinned core) | off; see hiccup/

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
        if not isinstance(cpus, tuple) or not cpus or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 4096 for c in cpus):
            raise _bad(key, f"{cpus!r} is not a list of CPU numbers", f"Write e.g. {key}: [0].")
    if not spec.closed_loop and spec.rate > d.MAX_RATE:
        raise _bad("rate", f"{spec.rate:g} req/s is more than {d.MAX_RATE:g} req/s", "That is far beyond one client host; check the number (e.g. --rate 50000).")
    bounds = (("duration_s", d.MAX_DURATION_S, "s"), ("warmup_s", d.MAX_WARMUP_S, "s"), ("timeout_s", d.MAX_TIMEOUT_S, "s"),
              ("connections", d.MAX_CONNECTIONS, ""), ("threads", d.MAX_THREADS, ""), ("nginx_workers", d.MAX_NGINX_WORKERS, ""),
              ("pipeline", d.MAX_PIPELINE, ""))
    for key, top, unit in bounds:
        v = spec.n_connections if key == "connections" else getattr(spec, key)
        if v is not None and v > top:
            why = (f" (one source address has {d.MAX_CONNECTIONS} local ports for one server ip:port: Linux's default "
                   f"ip_local_port_range {d.PORT_RANGE[0]}-{d.PORT_RANGE[1]})") if key == "connections" else ""
            raise _bad(key, f"{v:g}{unit} is more than {top:g}{unit}{why}", f"Use at most {top:g}{unit} for {key}.")


def validate_spec(spec: BenchSpec, limits: HostLimits | None = None, *, rate_known: bool = True) -> None:
    """Raise one clear ConfigError for the first problem (pure). rate_known=False (a study whose
    rates come from calibration): the checks that depend on the rate wait for it."""
    _check_types_and_bounds(spec)
    if spec.size not in nginx_mod.SIZES:
        raise _bad("size", f"'{spec.size}' is not a response size", "Use --size small (350 B on the wire) or --size large (4096 B body).")
    if spec.generator not in GENERATORS:
        raise _bad("generator", f"'{spec.generator}' is not a known generator", f"Use one of: {', '.join(GENERATORS)}.")
    if not spec.closed_loop and not spec.rate > 0:
        raise _bad("rate", f"must be > 0 requests/s (got {spec.rate:g})", "Give a positive constant rate, e.g. --rate 5000.")
    if not spec.duration_s > 0:
        raise _bad("duration", f"must be > 0 s (got {spec.duration_s:g})", "Give the measurement window in seconds, e.g. --duration 10.")
    if spec.warmup_s < 0:
        raise _bad("warmup", f"must be >= 0 s (got {spec.warmup_s:g})", "Use 0 for no warm-up.")
    if spec.duration_s < spec.warmup_s:
        raise _bad("duration", f"{spec.duration_s:g} s is shorter than the warm-up ({spec.warmup_s:g} s)", "Measure at least as long as you warm up: raise --duration or lower --warmup.")
    if spec.connections is not None and spec.connections < 1:
        raise _bad("connections", f"must be >= 1 (got {spec.n_connections})", "Use at least one connection.")
    if not 1 <= spec.threads <= spec.n_connections:
        raise _bad("threads", f"must be between 1 and the number of connections (got {spec.threads})", "Each generator thread needs at least one connection.")
    if spec.nginx_workers < 1:
        raise _bad("nginx_workers", f"must be >= 1 (got {spec.nginx_workers})", "Use at least one nginx worker.")
    if not 0 <= spec.server_delay_s <= 10:
        raise _bad("server_delay", f"must be between 0 and 10 s (got {spec.server_delay_s:g})", "Use 0 (no delay) for measurements.")
    if spec.timeout_s <= 0:
        raise _bad("timeout", f"must be > 0 s (got {spec.timeout_s:g})", "Give the response timeout in seconds.")
    if spec.hiccup not in HICCUP_PLACEMENTS:
        raise _bad("hiccup", f"'{spec.hiccup}' is not a hiccup meter placement", f"Use one of: {', '.join(HICCUP_PLACEMENTS)}.")
    if spec.pipeline is not None and spec.pipeline < 0:
        raise _bad("pipeline", f"must be >= 0 (got {spec.pipeline})", "Leave it out (the generator's default) or give N >= 1.")
    if spec.arrival not in ("uniform", "poisson"):
        raise _bad("arrival", f"'{spec.arrival}' is not an arrival process", "Use uniform (constant rate, the study's) or poisson.")
    if spec.closed_loop and getattr(get_generator(spec.generator), "busy_polls", False):
        raise _bad("generator", f"'{spec.generator}' is open-loop only", "Closed-loop (saturation) runs use --generator h2load.")
    if rate_known and not spec.closed_loop and spec.rate / spec.n_connections * spec.duration_s < 1:
        raise _bad("rate", f"{spec.rate:g} req/s over {spec.n_connections} connections sends less than one request per connection in {spec.duration_s:g} s", "Raise the rate or the duration, or use fewer connections.")
    if limits is None:
        return
    if limits.generators is not None and not limits.generators.get(spec.generator, False):
        have = [g for g, ok in limits.generators.items() if ok]
        raise _bad("generator", f"'{spec.generator}' is not installed on the client host", f"Install it there, or use one that is: {', '.join(have) or 'none found'}.")
    if limits.curl is False:
        raise _bad("client", "curl is not installed on the client host (the health check needs it)", "apt-get install -y curl on the client host.")
    if limits.nofile_client is not None and spec.n_connections + FD_MARGIN > limits.nofile_client:
        raise _bad("connections", f"{spec.n_connections} connections exceed the client host's open-file limit ({limits.nofile_client})", f"Use at most {max(1, limits.nofile_client - FD_MARGIN)} connections, or raise the limit (LimitNOFILE of sshd / ulimit -n).")
    if spec.pin:
        for cpus, n, who in ((spec.client_cpus, limits.cpus_client, "client"), (spec.server_cpus, limits.cpus_server, "server")):
            if n is not None and any(c >= n for c in cpus):
                raise _bad(f"{who}_cpus", f"CPU {max(cpus)} does not exist on the {who} host ({n} CPUs)", "Pin to existing CPUs or run with pin off (--no-pin).")


async def probe_limits(fleet) -> HostLimits:
    """The facts validate_spec checks, from the hosts (a few cheap commands)."""
    async def facts(host):
        r = await host.run(["sh", "-c", "ulimit -n; nproc"], timeout=15)
        nofile, ncpu = r.stdout.split()[:2]
        return (None if nofile == "unlimited" else int(nofile)), int(ncpu)

    (nf_c, cpu_c), (nf_s, cpu_s) = await asyncio.gather(facts(fleet.client), facts(fleet.server))
    gens = await available(fleet.client)
    curl = (await fleet.client.run(["sh", "-c", "command -v curl"], check=False, timeout=15)).exit_status == 0
    return HostLimits(nf_c, nf_s, cpu_c, cpu_s, gens, curl)


@dataclass
class RunContext:
    """What a fault hook (`during=`) can reach while the load runs."""

    fleet: object
    endpoint: object
    spec: BenchSpec
    load: LoadSpec
    nginx: nginx_mod.NginxServer
    generator: object  # hosts.Background of the generator's wrapper (pid: the wrapper)


def load_spec(spec: BenchSpec, endpoint, gen_dir: str) -> LoadSpec:
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
        arrival=spec.arrival,
        seed=spec.seed,
        cpus=tuple(spec.client_cpus) if spec.pin else (),
    )


def generator_argv(spec: BenchSpec, load: LoadSpec) -> list[str]:
    argv = accounted(get_generator(spec.generator).command(load), load.cpu_path)
    if spec.pin:
        argv = ["taskset", "-c", ",".join(map(str, spec.client_cpus)), *argv]
    return argv


async def _bounded(what: str, coro, notes: list[str], timeout: float = CLEANUP_TIMEOUT):
    """Run one cleanup step; a failure is noted, never raised (the next steps still run)."""
    try:
        return await asyncio.wait_for(coro, timeout)
    except Exception as exc:  # noqa: BLE001 - cleanup must go on
        notes.append(f"{what}: {exc.__class__.__name__}: {exc}")
        return None


async def _connection_lost(host) -> str | None:
    try:
        await host.run(["true"], timeout=10)
        return None
    except HostError as exc:
        return str(exc)


class _Failed(Exception):
    """The run broke in a way that has no error class of its own."""


async def run_bench(fleet, endpoint, spec: BenchSpec, *, run_id: str, study: str = "adhoc", repetition: int = 1,
                    load_fraction: float | None = None, during: Callable[[RunContext], Awaitable] | None = None,
                    limits: HostLimits | None = None) -> dict:
    """Run once and return the run record (see results.py): a BenchSession of one run, so nginx
    is started and stopped around it. `during` is an optional async hook run alongside the load
    (fault injection in tests); its own exceptions propagate after cleanup. Bad input raises
    ConfigError before anything starts."""
    validate_spec(spec)
    async with BenchSession(fleet, endpoint, limits) as session:
        return await session.run(spec, run_id=run_id, study=study, repetition=repetition,
                                 load_fraction=load_fraction, during=during)


class BenchSession:
    """Many runs against one endpoint (a mode's block of runs) with nginx kept up between them.

        async with BenchSession(fleet, endpoint, limits) as session:
            rec = await session.run(spec, run_id=...)

    Starting nginx and stopping it gracefully cost ~1.8 s, more than a third of a short run, so
    nginx is started by the first run that needs it and stopped when the session closes (also
    on error or cancellation). Every run still checks it first: nginx's processes must be alive
    and a GET from the client must return the exact response, else the run fails with the
    reason. A run during which nginx died is failed ("nginx died during the run"), what is left
    of that nginx is stopped, and the next run starts a fresh one. A run whose nginx settings
    differ (workers, pinning, connections) restarts it. The samplers and the generator are per
    run, so a record's metrics cover exactly that run.
    """

    def __init__(self, fleet, endpoint, limits: HostLimits | None = None):
        self.fleet, self.endpoint, self.limits = fleet, endpoint, limits
        self.nginx: nginx_mod.NginxServer | None = None
        self._nginx_spec: nginx_mod.NginxSpec | None = None
        self.nginx_starts = 0  # how many times this session started nginx (tests, benchmarks)
        self.built: dict[str, dict] = {}  # generator name -> its build (ours are compiled on the host)

    async def __aenter__(self) -> "BenchSession":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> list[str]:
        """Stop nginx (bounded; never raises). Safe to call twice."""
        notes: list[str] = []
        if self.nginx is not None:
            nginx, self.nginx = self.nginx, None
            await _bounded("stop nginx", nginx.stop(), notes)
        return notes

    def nginx_spec(self, spec: BenchSpec) -> nginx_mod.NginxSpec:
        return nginx_mod.NginxSpec(
            bind=self.endpoint.server_bind, port=self.endpoint.server_port, workers=spec.nginx_workers,
            cpus=spec.server_cpus if spec.pin else None, max_connections=max(1024, spec.n_connections),
            delay_s=spec.server_delay_s)

    async def _nginx(self, nspec: nginx_mod.NginxSpec, notes: list[str]) -> nginx_mod.NginxServer:
        """The session's nginx for these settings: reused when it is alive, else (re)started."""
        if self.nginx is not None:
            if self._nginx_spec != nspec:
                notes.append("nginx restarted: its settings changed")
            elif not await self.nginx.alive():
                notes.append("nginx restarted: it was no longer running")
            else:
                return self.nginx
            await self.close()
        self.nginx = await nginx_mod.start(self.fleet.server, self.endpoint.server_netns, nspec)
        self._nginx_spec = nspec
        self.nginx_starts += 1
        return self.nginx

    async def prepare_generator(self, name: str) -> dict | None:
        """Build the generator on the client host once per session when it is one of ours."""
        gen = get_generator(name)
        if getattr(gen, "prepare", None) is None:
            return None
        if name not in self.built:
            self.built[name] = (await gen.prepare(self.fleet.client)).to_dict()
        return self.built[name]

    async def run(self, spec: BenchSpec, *, run_id: str, study: str = "adhoc", repetition: int = 1,
                  load_fraction: float | None = None, during: Callable[[RunContext], Awaitable] | None = None) -> dict:
        """One run; returns its record (failed with the reason when it broke)."""
        validate_spec(spec)
        if self.limits is None:
            self.limits = await probe_limits(self.fleet)
        validate_spec(spec, self.limits)
        fleet, endpoint = self.fleet, self.endpoint
        client = fleet.client
        gen = get_generator(spec.generator)
        gen_dir = f"{RUN_DIR}/workload/{gen.name}-{os.getpid()}-{time.monotonic_ns()}"
        load = load_spec(spec, endpoint, gen_dir)
        argv = generator_argv(spec, load)
        rec = new_record(
            run_id=run_id, study=study, mode=spec.mode, size=spec.size,
            target_rate=0.0 if spec.closed_loop else float(spec.rate), load_fraction=load_fraction,
            repetition=repetition, generator=gen.name,
            settings={
                **{k: v for k, v in asdict(spec).items() if k not in ("guard",)},
                "guard": asdict(spec.guard), "pipeline": load.pipeline, "endpoint": endpoint.to_dict(),
                "generator_command": quote(argv), "response_bytes": load.response_bytes,
                "connections": load.connections,
            },
            started_at=now_iso("milliseconds"), counts={**zero_counts(), "unfinished": 0},
            latency={**empty_latency(), "percentiles": None},
        )
        rec["notes"] = []
        notes: list[str] = rec["notes"]
        bg = hook = None
        nginx_gone = False
        hyg = RunHygiene(fleet, endpoint, spec)
        hook_error: BaseException | None = None
        try:
            build = await self.prepare_generator(spec.generator)
            if build is not None:
                rec["settings"]["generator_build"] = build
            nginx = await self._nginx(self.nginx_spec(spec), notes)
            await nginx_mod.health_check(client, endpoint.client_netns, load.url, spec.size)
            await client.run(["mkdir", "-p", gen_dir], timeout=20)
            await hyg.start(nginx)  # samplers and hiccup meters, before the warm-up
            bg = await client.start(argv, netns=endpoint.client_netns)
            if during is not None:
                hook = asyncio.ensure_future(during(RunContext(fleet, endpoint, spec, load, nginx, bg)))
            limit = spec.warmup_s + spec.duration_s + max(30.0, 2 * spec.timeout_s)
            try:
                res = await asyncio.wait_for(bg.wait(), limit)
            except asyncio.TimeoutError:
                raise _Failed(f"the generator did not finish within {limit:g} s") from None
            except (asyncssh.Error, OSError) as exc:  # the session carrying the generator died
                lost = await _connection_lost(client)
                raise _Failed(f"lost the SSH connection to the client host during the run ({lost or exc})") from None
            # The load is over: the samplers' last sample closes the window now, not a period later.
            rec["metrics"] = await _bounded("stop samplers", hyg.stop(), notes) or {}
            files = {}
            for key, path in gen.files(load).items():
                try:
                    files[key] = await asyncio.wait_for(client.read_file(path), 60)
                except Exception as exc:  # noqa: BLE001 - a missing file is the parser's business
                    files[key] = b""
                    notes.append(f"could not read {path}: {exc.__class__.__name__}")
            result = gen.parse(load, res.stdout, res.stderr, res.exit_status, files)
            result.generator_cpu = parse_accounting(files.get("cpu", b"").decode(errors="replace"))
            lost = await _connection_lost(client) if not result.ok else None
            if not await nginx.alive():
                nginx_gone = True
                rec["reason"] = "failed: nginx died during the run (master or worker gone)"
            elif lost:
                rec["reason"] = f"failed: lost the SSH connection to the client host during the run ({lost})"
            elif not result.ok:
                rec["reason"] = f"failed: {result.reason}"
            _fill(rec, spec, result)
            if not rec["reason"]:
                judge_run(rec, spec, hyg, files)  # every guard (workload/guards.py), figures in rec["hygiene"]
        except (CnibenchError, OSError, asyncio.TimeoutError) as exc:
            rec["reason"] = f"failed: {exc}"
        except _Failed as exc:
            rec["reason"] = f"failed: {exc}"
        finally:
            if hook is not None:
                if hook.done() and not hook.cancelled() and hook.exception() is not None:
                    hook_error = hook.exception()
                hook.cancel()
            if bg is not None:
                await _bounded("stop generator", bg.stop(grace=3), notes)
            if hyg.running:
                rec["metrics"] = await _bounded("stop samplers", hyg.stop(), notes) or rec["metrics"] or {}
            notes.extend(hyg.meters.notes)
            if nginx_gone or rec["status"] == "failed" and self.nginx is not None and not await _alive_or_false(self.nginx):
                notes.extend(await self.close())  # what is left of a dead nginx goes; the next run starts one
            await _bounded("remove generator files", client.run(["rm", "-rf", "--", gen_dir], check=False, timeout=20), notes)
            rec["ended_at"] = now_iso("milliseconds")
        if hook_error is not None:
            raise hook_error
        return rec


async def _alive_or_false(nginx) -> bool:
    try:
        return await asyncio.wait_for(nginx.alive(), 15)
    except Exception:  # noqa: BLE001 - an unreachable host: treat nginx as gone
        return False


def _fill(rec: dict, spec: BenchSpec, result) -> None:
    """Copy what the generator measured into the record (also for failed runs, when known)."""
    rec["achieved_rate"] = round(result.achieved_rate, 3)
    rec["counts"] = {"requests": result.requests, "ok": result.ok_count, "errors": result.errors,
                     "timeouts": result.timeouts, "unfinished": result.unfinished}
    rec["generator_cpu"] = None if result.generator_cpu is None else round(result.generator_cpu, 4)
    if result.histogram is not None and result.histogram.get_total_count() > 0:
        table = percentile_table(result.histogram)
        if result.percentiles:  # the generator's own table wins where it has one
            table.update(result.percentiles)
        rec["latency"] = {
            "unit": "us",
            "histogram": encode_histogram(result.histogram),
            "histogram_uncorrected": encode_histogram(result.histogram_uncorrected) if result.histogram_uncorrected is not None else None,
            "percentiles": table,
            "percentiles_uncorrected": percentile_table(result.histogram_uncorrected) if result.histogram_uncorrected is not None else None,
            "correction": result.correction,
            "source": result.source,
        }
        if result.send_lag is not None:
            rec["latency"]["send_lag"] = result.send_lag
        if result.pacing is not None:
            rec["latency"]["pacing"] = result.pacing
    if result.generator_info:
        rec["settings"]["generator_info"] = result.generator_info
    rec["timeline"] = result.timeline


def summary(rec: dict) -> str:
    """A few lines for a terminal."""
    p = (rec.get("latency") or {}).get("percentiles") or {}
    cpu = "-" if rec.get("generator_cpu") is None else f"{100 * rec['generator_cpu']:.0f}%"
    ms = lambda k: f"{p[k] / 1000:.3f}" if k in p and p[k] is not None else "-"  # noqa: E731
    lines = [
        f"{rec['run_id']}: {rec['status']}" + (f" ({rec['reason']})" if rec["reason"] else ""),
        f"  target {rec['target_rate']:.0f} req/s, achieved {rec['achieved_rate']:.0f} req/s, "
        f"requests {rec['counts']['requests']}, errors {rec['counts']['errors']}, timeouts {rec['counts']['timeouts']}, "
        f"generator CPU {cpu}",
        f"  latency ms: p50 {ms('50')}  p90 {ms('90')}  p99 {ms('99')}  p99.9 {ms('99.9')}  p99.99 {ms('99.99')}  max {ms('100')}",
    ]
    return "\n".join(lines)
