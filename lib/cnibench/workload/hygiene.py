"""Measurement hygiene of one run: the samplers and hiccup meters around the load, the noise
figures computed from them, and the guards' verdict written into the record's `hygiene`.

    hyg = RunHygiene(fleet, endpoint, spec)
    await hyg.start(nginx)              # before the generator (so before its warm-up)
    ...                                 # the load
    metrics = await hyg.stop()          # after the window: samplers and meters stopped at once
    judge_run(rec, spec, hyg, files)    # figures, checks, status/reason/flags

Foreign CPU, the method (pure: `machine_figures`). Over the samplers' span (from before the
warm-up to after the window) on each machine (hosts with the same kernel boot id share one: the
testbed's two hosts do), with P the pinned cores of its hosts (the generator's, nginx's):

    foreign = (user + nice + system jiffies of P, from /proc/stat)
              - CPU of the processes we know (utime + stime from /proc/<pid>/stat): the generator
                (its accounting wrapper), nginx, the samplers, the hiccup meters, the sshd
                processes carrying our commands, and the driver when it runs on that machine
    share   = foreign / (span x |P|)

Limits, stated: the known processes that are not pinned (sshd, samplers, meters, driver) are
subtracted whole although only part of their CPU may have landed on P, and on kernels without
IRQ_TIME_ACCOUNTING (this testbed's) a process's time includes the interrupt work done while it
ran, which /proc/stat books as irq/softirq: both make `foreign` a lower bound (it never blames
our own processes; it can miss a small foreign load). /proc/stat counts in ticks (1/USER_HZ s),
so the resolution is about 1/(span x 100) of a core. Interrupt work (irq + softirq) on P is
reported separately: it is part of a network mode's cost, not noise. Steal is /proc/stat's
per-CPU steal of P over the same span.

What the guards judge (issue 25): the same two figures on the generator's core alone, G (the
client host's pinned cores): `steal` and `foreign_cpu` = (busy of G - our processes that may
run on G: all but nginx, which is pinned to the server's cores) / (span x |G|). nginx's core(s)
get `server_steal` and `server_foreign_cpu` (all our processes but the generator), reported,
not judged; `pinned_steal` and `pinned_foreign_cpu` are the figures over P as before.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from pathlib import Path

from . import guards as guards_mod
from .generators.base import parse_accounting
from .hiccup import Meters, stall_total_us
from .metrics import USER_HZ, Sampler

HICCUP_PLACEMENTS = ("on", "pinned", "off")


def local_boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def accounted_seconds(text: str) -> float | None:
    """CPU seconds of the generator from its accounting file (generators/base.accounted)."""
    frac = parse_accounting(text)
    try:
        up0, up1, _ = (float(x) for x in text.strip().splitlines()[0].split())
    except (ValueError, IndexError):
        return None
    return None if frac is None else frac * (up1 - up0)


def _ticks(cpu: dict, *fields: str) -> int:
    return sum(int(cpu.get(f, 0)) for f in fields)


def pid_seconds(samples: list[dict]) -> dict[int, tuple[str, float]]:
    """{pid: (role, CPU seconds between the first and the last sample that saw it)}."""
    first: dict[int, tuple[str, int]] = {}
    last: dict[int, tuple[str, int]] = {}
    for s in samples:
        for pid, (role, ticks) in (s.get("pids") or {}).items():
            first.setdefault(pid, (role, ticks))
            last[pid] = (role, ticks)
    return {pid: (role, max(0, last[pid][1] - t0) / USER_HZ) for pid, (role, t0) in first.items()}


def machine_figures(samples: list[dict], pinned: list[int], known_s: dict[str, float]) -> dict | None:
    """One machine's noise figures over its sampler's span (see the module docstring).
    `known_s`: CPU seconds by role of our own processes on that machine."""
    if len(samples) < 2 or not pinned:
        return None
    a, b = samples[0], samples[-1]
    span = b["uptime"] - a["uptime"]
    names = [f"cpu{c}" for c in pinned if f"cpu{c}" in a["stat"]["cpus"] and f"cpu{c}" in b["stat"]["cpus"]]
    if span <= 0 or not names:
        return None

    def delta(*fields):
        return sum(_ticks(b["stat"]["cpus"][n], *fields) - _ticks(a["stat"]["cpus"][n], *fields)
                   for n in names) / USER_HZ

    busy, irq, softirq, steal = delta("user", "nice", "system"), delta("irq"), delta("softirq"), delta("steal")
    capacity = span * len(names)
    known = sum(known_s.values())
    foreign = max(0.0, busy - known)
    return {
        "pinned": names, "span_s": round(span, 3), "busy_s": round(busy, 3),
        "known_s": {k: round(v, 3) for k, v in sorted(known_s.items())}, "foreign_s": round(foreign, 3),
        "foreign_cpu": round(foreign / capacity, 4), "steal": round(steal / capacity, 4),
        "irq": round(irq / capacity, 4), "softirq": round(softirq / capacity, 4),
    }


def network_figures(parsed: dict[str, dict]) -> dict:
    """TCP retransmits (the container's namespace when sampled, else the host's) and data-NIC
    drops over each host's sampler span, summed over hosts (None: nothing sampled)."""
    retrans = drops = None
    for host in parsed.values():
        s = host.get("samples") or []
        if len(s) < 2:
            continue
        a, b = s[0], s[-1]
        key = "tcp_c" if a.get("tcp_c") and b.get("tcp_c") else "tcp"
        if a.get(key) and b.get(key):
            retrans = (retrans or 0) + b[key].get("RetransSegs", 0) - a[key].get("RetransSegs", 0)
        if a.get("net") and b.get("net"):
            d = sum(b["net"][k] - a["net"][k] for k in ("rx_dropped", "tx_dropped"))
            drops = (drops or 0) + d
    return {"tcp_retransmits": retrans, "nic_drops": drops}


def core_figures(parsed: dict[str, dict], machines: dict[str, list[str]], pinned: dict[str, list[int]],
                 known_by_machine: dict[str, dict[str, float]], generator_host: str) -> dict:
    """steal and foreign CPU of the generator's core(s) (the figures the guards judge) and of
    the server's, each against the processes that may run there (pure; module docstring)."""
    out = {"pinned_foreign_cpu": None, "pinned_steal": None, "steal": None, "foreign_cpu": None,
           "server_steal": None, "server_foreign_cpu": None}
    for boot, hosts in machines.items():
        longest = max(hosts, key=lambda h: len(parsed[h]["samples"]))
        samples, known = parsed[longest]["samples"], known_by_machine[boot]
        both = machine_figures(samples, sorted({c for h in hosts for c in pinned.get(h) or []}), known)
        if both is not None:
            out["pinned_steal"] = max(out["pinned_steal"] or 0.0, both["steal"])
            out["pinned_foreign_cpu"] = max(out["pinned_foreign_cpu"] or 0.0, both["foreign_cpu"])
        gen = sorted(pinned.get(generator_host) or []) if generator_host in hosts else []
        others = {c for h in hosts if h != generator_host for c in pinned.get(h) or []}
        srv = sorted(others - set(gen))
        # nginx is left out of what may run on the generator's cores unless it is pinned there
        # too (a second client beside nginx, issue 28): then its CPU is ours, not foreign.
        gen_drop = None if others & set(gen) else "nginx"
        for cores, drop, prefix in ((gen, gen_drop, ""), (srv, "generator", "server_")):
            fig = machine_figures(samples, cores, {k: v for k, v in known.items() if k != drop})
            if fig is not None:
                out[f"{prefix}steal"], out[f"{prefix}foreign_cpu"] = fig["steal"], fig["foreign_cpu"]
    return out


def figures(parsed: dict[str, dict], pinned: dict[str, list[int]], extra_known: dict[str, dict[str, float]],
            driver: dict | None, meters: dict[str, list[dict]], flag_hiccup_us: float | None,
            generator_host: str | None = None) -> dict:
    """The record's hygiene figures from everything measured (pure).

    parsed: {host: {"boot_id", "samples"}} (Sampler.parsed); pinned: {host: [cpu, ...]};
    extra_known: {host: {role: CPU s}} our processes not sampled by pid (the generator);
    driver: {"boot_id", "cpu_s"} of this process; meters: {host: [hiccup summaries]};
    generator_host: the client's name: steal and foreign_cpu are then its core's (core_figures),
    else (older callers) those of every pinned core."""
    machines: dict[str, list[str]] = {}
    for host, p in parsed.items():
        machines.setdefault(p.get("boot_id") or f"host:{host}", []).append(host)
    per_machine = []
    cpu_s: dict[str, float] = {}
    known_by_machine: dict[str, dict[str, float]] = {}
    for boot, hosts in machines.items():
        seen: dict[int, tuple[str, float]] = {}
        for h in hosts:
            for pid, (role, sec) in pid_seconds(parsed[h]["samples"]).items():
                if sec >= seen.get(pid, ("", -1.0))[1]:
                    seen[pid] = (role, sec)
        known: dict[str, float] = {}
        for role, sec in seen.values():
            known[role] = known.get(role, 0.0) + sec
        for h in hosts:
            for role, sec in (extra_known.get(h) or {}).items():
                if sec is not None:
                    known[role] = known.get(role, 0.0) + sec
        if driver and driver.get("boot_id") and driver["boot_id"] == boot and driver.get("cpu_s") is not None:
            known["driver"] = known.get("driver", 0.0) + driver["cpu_s"]
        known_by_machine[boot] = known
        for role, sec in known.items():
            cpu_s[role] = round(cpu_s.get(role, 0.0) + sec, 3)
        longest = max(hosts, key=lambda h: len(parsed[h]["samples"]))
        cores = sorted({c for h in hosts for c in pinned.get(h) or []})
        fig = machine_figures(parsed[longest]["samples"], cores, known)
        if fig is not None:
            per_machine.append({"hosts": sorted(hosts), "boot_id": None if boot.startswith("host:") else boot[:8],
                                **fig})
    out = {k: (max(m[k] for m in per_machine) if per_machine else None)
           for k in ("foreign_cpu", "steal", "irq", "softirq")}
    if generator_host is not None:
        out.update(core_figures(parsed, machines, pinned, known_by_machine, generator_host))
    out.update(network_figures(parsed))
    summaries = [m for ms in meters.values() for m in ms]
    out["hiccup_max_us"] = max((m["max_us"] for m in summaries), default=None)
    threshold = int(flag_hiccup_us) if flag_hiccup_us else 1000
    out["hiccup_total_us"] = max((stall_total_us(m, threshold) for m in summaries), default=None)
    return {"figures": out, "machines": per_machine, "cpu_s": cpu_s}


class RunHygiene:
    """Samplers (spec.metrics) and hiccup meters (spec.hiccup) of one run."""

    def __init__(self, fleet, endpoint, spec):
        self.fleet, self.endpoint, self.spec = fleet, endpoint, spec
        self.sampler = Sampler()
        self.meters = Meters()
        self.hiccups: dict[str, list[dict]] = {}
        self.driver: dict | None = None
        self._cpu0: float | None = None
        self.running = False

    def pinned(self) -> dict[str, list[int]]:
        if not self.spec.pin:
            return {}
        return {self.fleet.client.name: list(self.spec.client_cpus),
                self.fleet.server.name: list(self.spec.server_cpus)}

    async def start(self, nginx, extra_watch: dict[str, dict[str, list[int]]] | None = None) -> None:
        """Meters first (their pids go to the samplers), then the samplers in the namespaces.
        extra_watch: {host name: {role: pids}} of other own processes (the steal probes), so their
        CPU counts as known, not foreign."""
        self.running = True
        self._cpu0 = time.process_time()
        placement = getattr(self.spec, "hiccup", "off")
        pinned = self.pinned()
        meter_pids: dict[str, list[int]] = {}
        if placement != "off":
            for host in (self.fleet.client, self.fleet.server):
                cpus = pinned.get(host.name) if placement == "pinned" else None
                meter_pids[host.name] = await self.meters.start(host, list(cpus) if cpus else [None])
        if self.spec.metrics:
            ep = self.endpoint
            for host, ns in ((self.fleet.client, ep.client_netns), (self.fleet.server, ep.server_netns)):
                watch = {"hiccup": meter_pids.get(host.name, []), **(extra_watch or {}).get(host.name, {})}
                if host is self.fleet.server and nginx is not None:
                    watch["nginx"] = [nginx.master_pid, *nginx.worker_pids]
                await self.sampler.start(host, host.spec.data_interface, ns, watch)

    async def stop(self) -> dict:
        """Stop samplers and meters together; the record's `metrics` value. Safe to call twice."""
        if not self.running:
            return {}
        self.running = False
        metrics, self.hiccups = await asyncio.gather(self.sampler.stop(), self.meters.stop())
        if self._cpu0 is not None:
            self.driver = {"boot_id": local_boot_id(), "cpu_s": round(time.process_time() - self._cpu0, 3)}
        return metrics


def judge_run(rec: dict, spec, hyg: RunHygiene | None, files: dict[str, bytes]) -> None:
    """Fill rec["hygiene"] and set status/reason from every guard (the run measured something)."""
    limits = spec.guard
    hygiene: dict = {"limits": asdict(limits), "figures": {}}
    if hyg is not None:
        gen_s = accounted_seconds(files.get("cpu", b"").decode(errors="replace"))
        extra = {hyg.fleet.client.name: {"generator": gen_s}}
        hygiene.update(figures(hyg.sampler.parsed, hyg.pinned(), extra, hyg.driver, hyg.hiccups, limits.flag_hiccup_us,
                               generator_host=hyg.fleet.client.name))
        hygiene["hiccup"] = hyg.hiccups
        hygiene["hiccup_placement"] = getattr(spec, "hiccup", "off")
    rec["hygiene"] = hygiene
    checks = guards_mod.judge(rec, limits)
    status, reason, flags = guards_mod.verdict_of(checks)
    hygiene.update(checks=checks, flags=flags, disturbed=guards_mod.disturbed(checks))
    rec["status"], rec["reason"] = status, reason

