"""Precheck every host before building anything: reachable, privileged, tools, kernel, CPU, MTU.

Kernel support is probed, not guessed (kernelprobe.py).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, dataclass, field

from ..catalog import PREFIX
from ..parsing import ip_json
from ..parsing import version as version_in
from ..errors import CnibenchError
from ..infra.hosts import Fleet, Host
from ..infra.kernelprobe import probe_commands, probe_kernel, probe_link_kinds  # noqa: F401  (re-exported)
from ..modes import MODES

TOOLS = {  # tool: (version argv, Debian package)
    "ip": (["ip", "-V"], "iproute2"),
    "nginx": (["nginx", "-v"], "nginx-light"),
    "h2load": (["h2load", "--version"], "nghttp2-client"),
    "tcpkali": (["tcpkali", "--version"], "(build from source: github.com/satori-com/tcpkali)"),
    "nft": (["nft", "--version"], "nftables"),
    "taskset": (["taskset", "--version"], "util-linux"),
    "cc": (["cc", "--version"], "build-essential"),  # builds cnib-openloop on the client host
}
# generator -> the tool that makes it available (ours is built from source with cc)
GENERATORS = {"openloop": "cc", "h2load": "h2load", "tcpkali": "tcpkali"}
@dataclass
class HostReport:
    name: str
    role: str
    address: str
    reachable: bool = False
    error: str = ""
    privileged: str = ""  # "root", "sudo" or "" (neither)
    tools: dict[str, str | None] = field(default_factory=dict)  # tool -> version or None
    kernel_features: dict[str, dict] = field(default_factory=dict)  # kind -> {"ok", "reason"}
    kernel: str = ""
    cpu_count: int = 0
    cpu_model: str = ""
    data_interface: str = ""
    data_mtu: int | None = None
    data_address: str | None = None
    hiccup_meter: str = ""  # cbuild.built_state of the hiccup meter (workload/hiccup)
    steal_probe: str = ""  # and of the server-core steal probe (workload/stealprobe)
    tuning: dict = field(default_factory=dict)  # provenance.parse_tuning (+ mtu, offloads)
    required: dict = field(default_factory=dict)  # a study's `require:` to check (policy.py)

    @property
    def generators(self) -> list[str]:
        return [g for g, tool in GENERATORS.items() if self.tools.get(tool)]

    def problems(self) -> list[str]:
        out = []
        if not self.reachable:
            return [self.error]
        if not self.privileged:
            out.append("neither root nor passwordless sudo: connect as root or set 'sudo: true' with NOPASSWD")
        for tool in ("ip",) + (("nginx",) if self.role == "server" else ()):
            if not self.tools.get(tool):
                out.append(f"'{tool}' missing: apt-get install -y {TOOLS[tool][1]}")
        if self.role == "client" and "openloop" not in self.generators:
            out.append(f"no C compiler to build {PREFIX}-openloop, the study's load generator: apt-get install -y "
                       "build-essential")
        if self.data_mtu is None:
            out.append(f"data interface '{self.data_interface}' not found: fix data_interface in the inventory")
        from .policy import tuning_mismatches

        out.extend(tuning_mismatches(self.required, self.tuning, self.name))
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["generators"] = self.generators
        d["problems"] = self.problems()
        return d


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def parse_version(tool: str, text: str) -> str:
    """The version number in a tool's version banner, else its first line (pure)."""
    line = _first_line(text)
    if tool == "ip" and re.search(r"iproute2-[\w.]", text):
        return version_in(text, tool)
    return version_in(line) or line


def parse_cpuinfo(text: str) -> tuple[int, str]:
    models = [l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("model name")]
    count = sum(1 for l in text.splitlines() if l.startswith("processor"))
    return count, (models[0] if models else "")


async def check_host(host: Host) -> HostReport:
    s = host.spec
    rep = HostReport(name=s.name, role=s.role, address=f"{s.address}:{s.port}", data_interface=s.data_interface)
    try:
        await host.connect()
    except CnibenchError as exc:
        rep.error = str(exc)
        return rep
    rep.reachable = True
    uid = (await host.run(["id", "-u"], check=False)).stdout.strip()
    rep.privileged = "root" if uid == "0" and not s.sudo else ("sudo" if s.sudo
                                                               and (await host.run(["true"], check=False)).ok else "")
    for tool, (argv, _pkg) in TOOLS.items():
        r = await host.run(["sh", "-c", 'command -v "$1" >/dev/null && exec "$@"', "sh", *argv], check=False,
                           timeout=10)
        rep.tools[tool] = parse_version(tool, r.stdout + r.stderr) if r.ok else None
    rep.kernel = (await host.run(["uname", "-r"])).stdout.strip()
    rep.cpu_count, rep.cpu_model = parse_cpuinfo((await host.run(["cat", "/proc/cpuinfo"])).stdout)
    r = await host.run(["ip", "-j", "addr", "show", "dev", s.data_interface], check=False)
    if r.ok and r.stdout.strip():
        link = ip_json(r.stdout)[0]
        rep.data_mtu = link.get("mtu")
        v4 = [a["local"] for a in link.get("addr_info", []) if a.get("family") == "inet"]
        rep.data_address = s.data_address or (v4[0] if v4 else None)
    if rep.privileged:
        rep.kernel_features = await probe_kernel(host, MODES.link_kinds())
    await _hygiene_facts(host, rep)
    return rep


async def _hygiene_facts(host: Host, rep: HostReport) -> None:
    """The hiccup meter's build state and the host's tuning (read only)."""
    from .provenance import TUNING_SH, parse_offloads, parse_tuning
    from ..infra.cbuild import built_state
    from ..workload import hiccup, stealprobe

    rep.hiccup_meter = await built_state(host, "hiccup", hiccup.source())
    rep.steal_probe = await built_state(host, "stealprobe", stealprobe.source())
    r = await host.run(["sh", "-c", TUNING_SH, f"{PREFIX}-tuning", rep.data_interface], check=False, timeout=15)
    rep.tuning = parse_tuning(r.stdout)
    k = await host.run(["ethtool", "-k", rep.data_interface], check=False, timeout=15)
    rep.tuning.update(mtu=rep.data_mtu, offloads=parse_offloads(k.stdout) if k.ok else None)


async def check_fleet(fleet: Fleet, require: dict | None = None) -> list[HostReport]:
    """Every host's report; `require`: a study's host-tuning requirements, reported as problems."""
    reports = list(await asyncio.gather(*(check_host(h) for h in fleet)))
    for r in reports:
        r.required = dict(require or {})
    return reports


def format_table(reports: list[HostReport]) -> str:
    lines = []
    for r in reports:
        lines.append(f"{r.name} ({r.role}, {r.address}): " + ("reachable" if r.reachable else "UNREACHABLE"))
        if not r.reachable:
            lines.append(f"  {r.error}")
            continue
        lines.append(f"  privileges   {r.privileged or 'NONE'}")
        lines.append(f"  kernel       {r.kernel}")
        lines.append(f"  cpu          {r.cpu_count} x {r.cpu_model}")
        lines.append(f"  data         {r.data_interface} {r.data_address or '?'} mtu {r.data_mtu}")
        tools = ", ".join(f"{t} {v}" if v else f"{t} -" for t, v in r.tools.items())
        lines.append(f"  tools        {tools}")
        lines.append(f"  generators   {', '.join(r.generators) or 'none'}")
        t = r.tuning or {}
        govs = ", ".join(sorted(set((t.get("governor") or {}).values()))) or "n/a"
        irqs = ", ".join(f"{i['irq']}->{i['affinity']}" for i in t.get("nic_irqs") or []) or "none found"
        lines.append(f"  tuning       governor {govs}; max_cstate {t.get('max_cstate', '?')}; cpuidle "
                     f"{t.get('cpuidle_driver') or '?'}; NIC irqs {irqs}")
        lines.append(f"  hiccup meter {r.hiccup_meter or '?'}, steal probe {r.steal_probe or '?'}")
        for kind, res in r.kernel_features.items():
            lines.append(f"  {kind:<12} {'yes' if res['ok'] else 'NO: ' + res['reason']}")
        for p in r.problems():
            lines.append(f"  PROBLEM: {p}")
    return "\n".join(lines)


async def precheck_or_raise(fleet: Fleet, out=print, study=None) -> tuple | None:
    """The precheck of `invoke run-all`, over the session's own fleet (no connection of its
    own): the table printed, and a CnibenchError when a host has a problem. With `study`: the
    study fitted to the hosts' CPUs and limits, refused in one message (PlanError) when it does
    not fit; returned: the study placed by the plan (precheck.placed) and the fit."""
    from ..errors import CnibenchError

    reports = await check_fleet(fleet)
    out(format_table(reports))
    if any(r.problems() for r in reports):
        raise CnibenchError("precheck failed: fix the problems listed above, then run again (finished runs are kept)")
    if study is None:
        return None
    sf = refuse_unfit(await read_study_fit(fleet, study, fleet.inventory.testbed))
    _check_clients(fleet, study)
    return placed(study, sf, fleet.inventory), sf


def _check_clients(fleet: Fleet, study) -> None:
    """Several clients are run (workload/multiclient.py) only where every share can be: mode
    host (a mode puts its container on the first client), absolute rates (calibration measures
    from one client), cnib-openloop. Otherwise refused in one message, never silently ignored."""
    clients = fleet.clients()
    if len(clients) < 2:
        return
    from ..modes import REFERENCE  # host networking: no container on either side

    others = sorted({mode for _, mode in study.arms if mode != REFERENCE})
    gen = study.workload.get("generator", "openloop")
    why = (f"its modes {', '.join(others)} put their container on the first client only" if others else
           "its variants set a node up on the first client only" if study.variants else
           "its loads are fractions of a maximum that calibration measures from one client" if study.uses_fractions
           else f"its generator is {gen}, and only cnib-openloop starts at a given instant" if gen != "openloop"
           else "")
    if why:
        from ..errors import PlanError

        raise PlanError(f"the inventory names {len(clients)} client hosts ({', '.join(clients)}), and a study runs "
                        f"from several clients only in mode host at absolute rates; {study.path}: {why}. Keep one "
                        "host with role: client, or run such a study (their plan and clock offsets: "
                        f"invoke hosts.check --study {study.path})")


# --- the study against the hosts' CPUs and limits (infra/topology.py, infra/limits.py) ---

REQUEST_BYTES = len("GET /small HTTP/1.1\r\nHost: 255.255.255.255:65535\r\nUser-Agent: cnib-openloop/5\r\n\r\n")
TESTBED_CPUS = {"client": (0,), "server": (1,)}  # the 2-core testbed: generator on 0, nginx on 1


def cpus_setting(workload: dict, testbed: bool):
    """The study's CPU setting for limits.StudyNeeds: explicit client_cpus/server_cpus win, then
    `cpus`; without either, auto on real hosts and the fixed 0/1 on the testbed; None unpinned."""
    from ..infra.topology import parse_cpus_setting

    if workload.get("pin") is False:
        return None
    if "client_cpus" in workload or "server_cpus" in workload:
        return {k: parse_cpus_setting(list(workload[f"{k}_cpus"]), f"workload.{k}_cpus")
                if f"{k}_cpus" in workload else TESTBED_CPUS[k] for k in ("client", "server")}  # bench.py's defaults
    if "cpus" not in workload and testbed:
        return dict(TESTBED_CPUS)
    return parse_cpus_setting(workload.get("cpus", "auto"))


def study_needs(study, testbed: bool, offsets: dict | None = None, rates=None):
    """What the study asks of its hosts (limits.StudyNeeds), read off the study (pure). `rates`:
    the absolute rates once calibration has turned a fraction study's loads into them."""
    from ..infra.limits import StudyNeeds
    from ..workload.defaults import default_connections
    from ..workload.nginx import response_bytes

    w = study.workload
    rates = tuple(rates) if rates else (tuple(study.loads) if not study.uses_fractions else ())
    top = max(rates, default=None)
    return StudyNeeds(
        study.name, int(w.get("threads", 1)), int(w.get("nginx_workers", 1)), rates,
        int(w.get("connections") or default_connections(top)), {s: response_bytes(s) for s in study.sizes},
        REQUEST_BYTES, float(w.get("duration_s", 10)), float(w.get("warmup_s", 2)),
        any(MODES.get(m).needs_nft for m in study.modes if m in MODES),  # NAT rules: conntrack on the path
        cpus_setting(w, testbed), dict(offsets or {}), testbed)


@dataclass
class StudyFit:
    """A study fitted to its hosts: what it needs, the facts read, the result (plans, notes)."""

    needs: object  # limits.StudyNeeds
    hosts: list  # limits.HostFacts
    fit: object  # limits.Fit

    def placement(self, inventory) -> dict:
        """client_cpus/server_cpus from the plans (the first client's and the server's)."""
        out = {}
        client, server = self.fit.plans.get(inventory.client.name), self.fit.plans.get(inventory.server.name)
        if client is not None and client.threads:
            out["client_cpus"] = list(client.threads)
        if server is not None and server.workers:
            out["server_cpus"] = list(server.workers)
        return out

    def client_cpus(self, inventory) -> dict[str, tuple[int, ...]] | None:
        """With several clients, each one's generator CPUs in the inventory's order (None with
        one): its own plan's on real hosts; on the testbed, whose clients share this machine,
        client i on the machine's i-th CPU (the 2-core testbed: CPU 0, then nginx's CPU 1)."""
        names = [h.name for h in inventory.hosts if h.role == "client"]
        if len(names) < 2:
            return None
        if inventory.testbed:
            cpus = [c.cpu for c in self.hosts[0].topology.cpus] or [0]
            return {n: (cpus[i % len(cpus)],) for i, n in enumerate(names)}
        return {n: tuple(self.fit.plans[n].threads) for n in names if n in self.fit.plans and self.fit.plans[n].threads}

    def to_dict(self) -> dict:
        return {"plans": {k: p.to_dict() for k, p in self.fit.plans.items()}, "notes": list(self.fit.notes),
                "problems": list(self.fit.problems),
                "irqbalance": {h.name: h.limits.irqbalance for h in self.hosts},
                "clock_offsets_s": dict(self.needs.clock_offsets)}


async def read_study_fit(fleet: Fleet, study, testbed: bool, rates=None) -> StudyFit:
    """Read every host's topology and limits (read-only), and the clients' clock offsets when
    there are several, and fit the study to them (nothing refused yet)."""
    from ..infra.limits import clock_offset, read_host_facts, study_fit

    hosts = [await read_host_facts(h) for h in fleet]
    clients = [h for h in fleet if h.spec.role == "client"]
    offsets = {h.name: await clock_offset(h) for h in clients} if len(clients) > 1 else {}
    needs = study_needs(study, testbed, offsets, rates)
    return StudyFit(needs, hosts, study_fit(needs, hosts))


def refit(prev: StudyFit, study, rates) -> StudyFit:
    """The same hosts' facts against the calibrated absolute rates (pure)."""
    from ..infra.limits import study_fit

    needs = study_needs(study, prev.needs.shared_machine, prev.needs.clock_offsets, rates)
    return StudyFit(needs, prev.hosts, study_fit(needs, prev.hosts))


def refit_runs(sf: StudyFit | None, study, runs) -> StudyFit | None:
    """A fraction study's calibrated rates (its planned runs') against the same hosts' limits,
    refused in one message before any run; the fit unchanged otherwise."""
    if sf is None or not study.uses_fractions or not runs:
        return sf
    return refuse_unfit(refit(sf, study, sorted({r.target_rate for r in runs})))


def refuse_unfit(sf: StudyFit) -> StudyFit:
    from ..infra.limits import refuse

    refuse(sf.fit, sf.needs)
    return sf


def placed(study, sf: StudyFit, inventory):
    """The study with the plan's client_cpus/server_cpus in its workload (`cpus` resolved)."""
    from dataclasses import replace

    w = {k: v for k, v in study.workload.items() if k != "cpus"}
    if sf.needs.cpus is not None:
        w.update(sf.placement(inventory))
    return replace(study, workload=w)


def local_fit(study, names, clients: int = 1) -> StudyFit:
    """The local testbed's fit BEFORE it is up (its hosts are this machine): the same read-only
    scripts run here, so a study that cannot fit is refused before any namespace exists."""
    import subprocess

    from ..infra.config import RUN_DIR
    from ..infra.limits import HostFacts, limits_argv, parse_limits, study_fit
    from ..infra.topology import parse_topology, topology_argv

    def out(argv):
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout

    topo, lim = parse_topology(out(topology_argv("eth0"))), parse_limits(out(limits_argv("eth0", str(RUN_DIR))))
    hosts = [HostFacts(n, "client" if i < clients else "server", "eth0", topo, lim) for i, n in enumerate(names)]
    needs = study_needs(study, True, {h.name: 0.0 for h in hosts if h.role == "client"})  # one clock
    return StudyFit(needs, hosts, study_fit(needs, hosts))
