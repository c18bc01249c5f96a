"""The quiet-machine check, before a study and before each mode block.

Each host runs the run sampler (metrics.py) for two samples `window_s` apart; per machine (hosts
with the same boot id are one machine) the CPU of every core (user, nice, system; all cores,
nothing of ours is pinned then) minus our own processes (the samplers, the sshd sessions, the
driver when it runs there) is what other processes used, in cores. Above `max_cpu` the check
waits (saying so) and looks again, up to `max_wait_s`; then the study goes on and the manifest
records that the machine was not quiet. The same lower-bound caveats as the foreign-CPU guard
apply (workload/hygiene.py).
"""

from __future__ import annotations

import asyncio
import time

from .hygiene import local_boot_id, machine_figures, pid_seconds
from .metrics import boot_id, parse_samples, sampler_argv


def other_cpu(parsed: dict[str, dict], driver: dict | None) -> dict[str, float]:
    """{machine (its hosts, comma-joined): cores used by other processes} (pure)."""
    machines: dict[str, list[str]] = {}
    for host, p in parsed.items():
        machines.setdefault(p.get("boot_id") or f"host:{host}", []).append(host)
    out = {}
    for boot, hosts in machines.items():
        known: dict[str, float] = {}
        for h in hosts:
            for role, sec in pid_seconds(parsed[h]["samples"]).values():
                known[role] = known.get(role, 0.0) + sec
        if driver and driver.get("boot_id") == boot:
            known["driver"] = driver.get("cpu_s") or 0.0
        samples = max((parsed[h]["samples"] for h in hosts), key=len)
        if len(samples) < 2:
            continue
        cpus = sorted(int(c[3:]) for c in samples[0]["stat"]["cpus"])
        fig = machine_figures(samples, cpus, known)
        if fig:
            out[",".join(sorted(hosts))] = round(fig["foreign_s"] / fig["span_s"], 3)
    return out


async def measure(fleet, window_s: float) -> dict[str, float]:
    """One look: cores used by other processes, per machine."""
    t0 = time.process_time()

    async def one(host):
        r = await host.run(sampler_argv(window_s, count=2), timeout=window_s + 20)
        return {"boot_id": boot_id(r.stdout), "samples": parse_samples(r.stdout, host.spec.data_interface)}

    parsed = await fleet.gather("quiet-machine check", one)
    return other_cpu(parsed, {"boot_id": local_boot_id(), "cpu_s": time.process_time() - t0})


async def wait_quiet(fleet, quiet: dict, out=print, where: str = "") -> dict:
    """Wait (bounded) until every machine is quiet; what to record in the manifest."""
    start = time.monotonic()
    looks = 0
    while True:
        looks += 1
        used = await measure(fleet, float(quiet["window_s"]))
        busy = {m: c for m, c in used.items() if c > quiet["max_cpu"]}
        waited = time.monotonic() - start
        if not busy or waited >= quiet["max_wait_s"]:
            entry = {"at": where, "quiet": not busy, "other_cpu": used, "waited_s": round(waited, 1), "looks": looks,
                     "max_cpu": quiet["max_cpu"]}
            if busy:
                out(f"warning: the machine is still not quiet after {waited:.0f} s ({_fmt(busy)}); measuring anyway, "
                    "recorded in the manifest")
            return entry
        if looks == 1:
            out(f"waiting for a quiet machine before {where or 'measuring'}: other processes use {_fmt(busy)} "
                f"(limit {quiet['max_cpu']:g} cores; at most {quiet['max_wait_s']:g} s)")
        await asyncio.sleep(1.0)


def _fmt(busy: dict[str, float]) -> str:
    return ", ".join(f"{c:.2f} cores on {m}" for m, c in busy.items())


# Steal around a calibration probe. Probes run without the per-second sampler (a sampler in
# every probe made this VM's 2-3 % steal disturb each of them, calibrate.probe_spec), so the
# steal guard has no figure there; one /proc/stat sample on each host before and after the
# probe gives it one, at the cost of two short commands outside the probe's window. (Waiting
# for low steal beforehand does not help: an idle guest sees none here; steal comes with load.)

def steal_between(a: dict | None, b: dict | None, cpus) -> float | None:
    """Share of the named cores' time the hypervisor stole between two parsed samples (pure):
    the foreign-CPU guard's figure (hygiene.machine_figures) over just these two samples.
    None when a sample or the cores are missing."""
    fig = machine_figures([a, b], list(cpus), {}) if a and b else None
    return fig["steal"] if fig else None


async def stat_snapshot(fleet) -> dict[str, dict | None]:
    """{host: one parsed sample (uptime, /proc/stat)} of every host, taken at once."""
    async def one(host):
        r = await host.run(sampler_argv(1, count=1), timeout=20)
        s = parse_samples(r.stdout, host.spec.data_interface)
        return s[0] if s else None

    return await fleet.gather("steal sample", one)


def probe_steal(before: dict, after: dict, cpus_by_host: dict[str, tuple[int, ...]]) -> float | None:
    """The largest steal share over the hosts' pinned cores between two snapshots (pure)."""
    shares = [steal_between(before.get(h), after.get(h), cpus) for h, cpus in cpus_by_host.items()]
    known = [s for s in shares if s is not None]
    return max(known) if known else None

