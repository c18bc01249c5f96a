"""Benchmark runs: nginx up, sampler on, load, parse, guards, everything stopped.

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
from dataclasses import asdict, dataclass
from typing import Awaitable, Callable

import asyncssh

from ..infra.config import RUN_DIR
from ..errors import CnibenchError, HostError
from ..infra import conntrack
from ..infra.hosts import quote
from ..results import empty_latency, encode_histogram, new_record, now_iso, percentile_table, zero_counts
from . import nginx as nginx_mod
from . import ports
from .bench import (FACTS_TIMEOUT, BenchSpec, HostLimits, RunContext, generator_argv, load_spec, probe_limits,
                    validate_spec)
from .generators import LoadSpec, get_generator, parse_accounting
from .hygiene import RunHygiene, judge_run
from .stealrun import RunSteal

# Bounds on the host commands around a run: a hung host fails the run, never the study.
CLEANUP_TIMEOUT = 30.0  # one clean-up step (stop the generator, the samplers, nginx)
PROBE_TIMEOUT = 10.0  # `true`: is the SSH connection still there?
GEN_DIR_TIMEOUT = 20.0  # mkdir / rm -rf of the generator's directory
READ_FILE_TIMEOUT = 60.0  # one generator output file (the per-request log can be large)
GENERATOR_SLACK_S = 30.0  # at least this beyond warm-up + window before the generator counts as hung
STOP_GRACE_S = 3  # SIGTERM to SIGKILL for the generator


async def _bounded(what: str, coro, notes: list[str], timeout: float = CLEANUP_TIMEOUT):
    """Run one cleanup step; a failure is noted, never raised (the next steps still run)."""
    try:
        return await asyncio.wait_for(coro, timeout)
    except Exception as exc:  # noqa: BLE001 - cleanup must go on
        notes.append(f"{what}: {exc.__class__.__name__}: {exc}")
        return None


async def _connection_lost(host) -> str | None:
    try:
        await host.run(["true"], timeout=PROBE_TIMEOUT)
        return None
    except HostError as exc:
        return str(exc)


class _Failed(Exception):
    """The run broke in a way that has no error class of its own."""


async def run_bench(fleet, endpoint, spec: BenchSpec, *, run_id: str, study: str = "adhoc", repetition: int = 1,
                    load_fraction: float | None = None, during: Callable[[RunContext], Awaitable] | None = None,
                    limits: HostLimits | None = None, validated: bool = False) -> dict:
    """Run once and return the run record (see results.py): a BenchSession of one run, so nginx
    is started and stopped around it. `during` is an optional async hook run alongside the load
    (fault injection in tests); its own exceptions propagate after cleanup. Bad input raises
    ConfigError before anything starts."""
    if not validated:
        validate_spec(spec)
    async with BenchSession(fleet, endpoint, limits) as session:
        return await session.run(spec, run_id=run_id, study=study, repetition=repetition,
                                 load_fraction=load_fraction, during=during, validated=validated)


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

    def __init__(self, fleet, endpoint, limits: HostLimits | None = None,
                 nginx_of: "tuple[BenchSession, nginx_mod.NginxSpec] | None" = None):
        self.fleet, self.endpoint, self.limits = fleet, endpoint, limits
        # One share of a run from several clients: the nginx is that session's, with its settings.
        self._nginx_of = nginx_of
        self.nginx: nginx_mod.NginxServer | None = None
        self._nginx_spec: nginx_mod.NginxSpec | None = None
        self.nginx_starts = 0  # how many times this session started nginx (tests, benchmarks)
        self.built: dict[str, dict] = {}  # generator name -> its build (ours are compiled on the host)
        self.host_facts: dict = {}  # (fact, host) -> steal accounting, perf support (stealrun.RunSteal)

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
        if self._nginx_of is not None:
            owner, owner_spec = self._nginx_of
            return await owner._nginx(owner_spec, notes)
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
                  load_fraction: float | None = None, during: Callable[[RunContext], Awaitable] | None = None,
                  validated: bool = False) -> dict:
        """One run; returns its record (failed with the reason when it broke). `validated`: the
        caller validated the spec against the hosts' limits already (a study does, once per run)."""
        rec, _ = await self._run(spec, run_id=run_id, study=study, repetition=repetition,
                                 load_fraction=load_fraction, during=during, validated=validated)
        return rec

    async def _run(self, spec: BenchSpec, *, run_id: str, study: str = "adhoc", repetition: int = 1,
                   load_fraction: float | None = None, during: Callable[[RunContext], Awaitable] | None = None,
                   validated: bool = False, start_at_ns: int = 0):
        """run(), and what the generator measured (its LoadResult, None when it never parsed)."""
        if self.limits is None:
            self.limits = await probe_limits(self.fleet)
        if not validated:
            validate_spec(spec, self.limits)
        gen = get_generator(spec.generator)
        gen_dir = f"{RUN_DIR}/workload/{gen.name}-{os.getpid()}-{time.monotonic_ns()}"
        load = load_spec(spec, self.endpoint, gen_dir, start_at_ns=start_at_ns)
        argv = generator_argv(spec, load)
        rec = self._new_record(spec, load, argv, gen.name, run_id, study, repetition, load_fraction)
        run = _RunState(gen, load, argv, gen_dir, RunHygiene(self.fleet, self.endpoint, spec), rec["notes"],
                        RunSteal(self.fleet, spec, self.host_facts))
        try:
            await self._collect(rec, spec, run, during)
        except (CnibenchError, OSError, asyncio.TimeoutError, _Failed) as exc:
            rec["reason"] = f"failed: {exc}"
        finally:
            await self._clean_up(rec, run)
        if run.hook_error is not None:
            raise run.hook_error
        return rec, run.result

    def _new_record(self, spec: BenchSpec, load: LoadSpec, argv: list[str], generator: str, run_id: str,
                    study: str, repetition: int, load_fraction: float | None) -> dict:
        """The run's record before it runs: failed, no measurement, the settings as run."""
        rec = new_record(
            run_id=run_id, study=study, mode=spec.mode, size=spec.size,
            target_rate=0.0 if spec.closed_loop else float(spec.rate), load_fraction=load_fraction,
            repetition=repetition, generator=generator,
            settings={
                **{k: v for k, v in asdict(spec).items() if k not in ("guard",)},
                "guard": asdict(spec.guard), "pipeline": load.pipeline, "endpoint": self.endpoint.to_dict(),
                "generator_command": quote(argv), "response_bytes": load.response_bytes,
                "connections": load.connections,
            },
            started_at=now_iso("milliseconds"), counts={**zero_counts(), "unfinished": 0},
            latency={**empty_latency(), "percentiles": None},
        )
        rec["notes"] = []
        return rec

    async def _collect(self, rec: dict, spec: BenchSpec, run: "_RunState", during) -> None:
        """Start nginx, the instruments and the generator; wait for the load; read and judge it."""
        client = self.fleet.client
        build = await self.prepare_generator(spec.generator)
        if build is not None:
            rec["settings"]["generator_build"] = build
        nginx = await self._nginx(self.nginx_spec(spec), run.notes)
        await nginx_mod.health_check(client, self.endpoint.client_netns, run.load.url, spec.size)
        await client.run(["mkdir", "-p", run.gen_dir], timeout=GEN_DIR_TIMEOUT)
        await run.steal.start()  # the server-core steal probes, before the warm-up
        await run.hyg.start(nginx, {self.fleet.server.name: {"stealprobe": run.steal.pids}})  # before the warm-up
        if ports.to_check(run.load.connections):  # maybe more local ports than the namespace has
            run.ports_widened = True
            run.notes += [n for n in [await ports.widen(client, self.endpoint.client_netns, run.load.connections)] if n]
        tracked = await conntrack.flows(self.fleet, self.endpoint)  # node: kubernetes tracks every flow
        run.bg = await client.start(run.argv, netns=self.endpoint.client_netns)
        if during is not None:
            run.hook = asyncio.ensure_future(
                during(RunContext(self.fleet, self.endpoint, spec, run.load, nginx, run.bg)))
        res = await self._wait_generator(spec, run)
        # The load is over: the samplers' last sample closes the window now, not a period later.
        rec["metrics"] = await _bounded("stop samplers", run.hyg.stop(), run.notes) or {}
        await _bounded("stop steal probes", run.steal.stop(), run.notes)
        rec["conntrack"] = {"before": tracked, "after": await conntrack.flows(self.fleet, self.endpoint)}
        files = await self._read_outputs(run)
        files["steal_context"] = run.steal.context_bytes()
        result = run.result = run.gen.parse(run.load, res.stdout, res.stderr, res.exit_status, files)
        result.generator_cpu = parse_accounting(files.get("cpu", b"").decode(errors="replace"))
        await self._judge(rec, spec, run, nginx, result, files)
        steal_parts(rec, run)

    async def _wait_generator(self, spec: BenchSpec, run: "_RunState"):
        limit = spec.warmup_s + spec.duration_s + max(GENERATOR_SLACK_S, 2 * spec.timeout_s)
        try:
            return await asyncio.wait_for(run.bg.wait(), limit)
        except asyncio.TimeoutError:
            raise _Failed(f"the generator did not finish within {limit:g} s") from None
        except (asyncssh.Error, OSError) as exc:  # the session carrying the generator died
            lost = await _connection_lost(self.fleet.client)
            raise _Failed(f"lost the SSH connection to the client host during the run ({lost or exc})") from None

    async def _read_outputs(self, run: "_RunState") -> dict[str, bytes]:
        files = {}
        for key, path in run.gen.files(run.load).items():
            try:
                files[key] = await asyncio.wait_for(self.fleet.client.read_file(path), READ_FILE_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - a missing file is the parser's business
                files[key] = b""
                run.notes.append(f"could not read {path}: {exc.__class__.__name__}")
        return files

    async def _judge(self, rec: dict, spec: BenchSpec, run: "_RunState", nginx, result, files) -> None:
        """The run's reason when it broke, what the generator measured, and every guard's verdict."""
        lost = await _connection_lost(self.fleet.client) if not result.ok else None
        if not await nginx.alive():
            run.nginx_gone = True
            rec["reason"] = "failed: nginx died during the run (master or worker gone)"
        elif lost:
            rec["reason"] = f"failed: lost the SSH connection to the client host during the run ({lost})"
        elif not result.ok:
            rec["reason"] = f"failed: {result.reason}"
        _fill(rec, spec, result)
        if not rec["reason"]:
            judge_run(rec, spec, run.hyg, files)  # every guard (workload/guards.py), figures in rec["hygiene"]

    async def _clean_up(self, rec: dict, run: "_RunState") -> None:
        """Stop the hook, the generator and the samplers, drop a dead nginx, remove the files;
        each step bounded, a failure noted (the next steps still run)."""
        notes = run.notes
        if run.hook is not None:
            if run.hook.done() and not run.hook.cancelled() and run.hook.exception() is not None:
                run.hook_error = run.hook.exception()
            run.hook.cancel()
        if run.bg is not None:
            await _bounded("stop generator", run.bg.stop(grace=STOP_GRACE_S), notes)
        if run.ports_widened:
            restore = ports.restore(self.fleet.client, self.endpoint.client_netns)
            notes += [n for n in [await _bounded("restore ip_local_port_range", restore, notes)] if n]
        if run.steal.running:
            await _bounded("stop steal probes", run.steal.stop(), notes)
        notes.extend(run.steal.probes.notes)
        if run.hyg.running:
            rec["metrics"] = await _bounded("stop samplers", run.hyg.stop(), notes) or rec["metrics"] or {}
        notes.extend(run.hyg.meters.notes)
        if run.nginx_gone or (rec["status"] == "failed" and self.nginx is not None
                              and not await _alive_or_false(self.nginx)):
            notes.extend(await self.close())  # what is left of a dead nginx goes; the next run starts one
        await _bounded("remove generator files",
                       self.fleet.client.run(["rm", "-rf", "--", run.gen_dir], check=False, timeout=GEN_DIR_TIMEOUT),
                       notes)
        rec["ended_at"] = now_iso("milliseconds")


@dataclass
class _RunState:
    """What one run started, for its clean-up."""

    gen: object
    load: LoadSpec
    argv: list[str]
    gen_dir: str
    hyg: RunHygiene
    notes: list[str]
    steal: RunSteal
    bg: object = None  # the generator's process
    hook: asyncio.Future | None = None  # the `during` hook
    hook_error: BaseException | None = None
    nginx_gone: bool = False
    ports_widened: bool = False  # the client namespace's port range was (to be) widened: restore it
    result: object = None  # what the generator measured (its LoadResult), once parsed


async def _alive_or_false(nginx) -> bool:
    try:
        return await asyncio.wait_for(nginx.alive(), FACTS_TIMEOUT)
    except Exception:  # noqa: BLE001 - an unreachable host: treat nginx as gone
        return False


def steal_parts(rec: dict, run: "_RunState") -> None:
    """The steal instruments' parts of the record: hygiene.server_probe, metrics.window_cpu and
    metrics.instructions (stealrun.RunSteal)."""
    rec.setdefault("hygiene", {})["server_probe"] = run.steal.server_probe()
    if isinstance(rec.get("metrics"), dict):
        samples = {h: p.get("samples") or [] for h, p in run.hyg.sampler.parsed.items()}
        rec["metrics"].update(run.steal.metrics_part(samples))


def outside_steal_part(o: dict) -> dict:
    """The record's `latency.outside_steal`: the conditional histogram (shown beside the raw one,
    never alone) with its percentile table and what the steal mask left out."""
    h = o["histogram"]
    part = {k: v for k, v in o.items() if k not in ("histogram", "wide", "placebo")}
    if h.get_total_count() > 0:
        part.update(histogram=encode_histogram(h), percentiles=percentile_table(h))
    return part


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
            "histogram_uncorrected": (encode_histogram(result.histogram_uncorrected)
                                      if result.histogram_uncorrected is not None else None),
            "percentiles": table,
            "percentiles_uncorrected": (percentile_table(result.histogram_uncorrected)
                                        if result.histogram_uncorrected is not None else None),
            "correction": result.correction,
            "source": result.source,
        }
        if result.send_lag is not None:
            rec["latency"]["send_lag"] = result.send_lag
        if result.pacing is not None:
            rec["latency"]["pacing"] = result.pacing
        if getattr(result, "outside_steal", None) is not None:
            o = result.outside_steal
            rec["latency"]["outside_steal"] = outside_steal_part(o)
            for key in ("wide", "placebo"):  # the sensitivity check (2 L, 2 D) and the placebo
                if key in o:
                    rec["latency"][f"outside_steal_{key}"] = outside_steal_part(o[key])
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
        f"requests {rec['counts']['requests']}, errors {rec['counts']['errors']}, timeouts "
        f"{rec['counts']['timeouts']}, "
        f"generator CPU {cpu}",
        f"  latency ms: p50 {ms('50')}  p90 {ms('90')}  p99 {ms('99')}  p99.9 {ms('99.9')}  p99.99 {ms('99.99')}  max "
        f"{ms('100')}",
    ]
    return "\n".join(lines)
