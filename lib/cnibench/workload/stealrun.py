"""The steal instruments of one run beside the generator (issue 25): the server-core steal
probes (stealprobe/), each host's steal accounting (stealacct), and the instructions count
where the PMU is exposed; what they give the generator's parser (`context_bytes`: the steal
masks need the server's episodes) and the record (`hygiene.server_probe`, metrics.window_cpu,
metrics.instructions).

    steal = RunSteal(fleet, spec, cache)     # cache: the session's {host: accounting, ...}
    await steal.start()                      # before the generator (so before its warm-up)
    await steal.stop()                       # right after the generator
    files["steal_context"] = steal.context_bytes()
"""

from __future__ import annotations

import json

from . import stealacct
from . import stealprobe as sp
from .windowcpu import instructions_support, parse_perf_count, window_cpu

PERF_CHECK = ["sh", "-c", "command -v perf >/dev/null 2>&1 || exit 127; perf stat -x, -e instructions true 2>&1"]


class RunSteal:
    def __init__(self, fleet, spec, cache: dict):
        self.fleet, self.spec, self.cache = fleet, spec, cache
        self.probes = sp.Probes()
        self.pids: list[int] = []  # the probes' (the samplers count their CPU as known, not foreign)
        self.summaries: list[dict] = []
        self.accounting: dict[str, dict] = {}
        self.perf: dict[str, object] = {}  # role -> perf stat Background
        self.counts: dict = {}
        self.note = None
        self.running = False

    def roles(self) -> dict[str, tuple[str, list[int]]]:
        if not self.spec.pin:
            return {}
        return {"client": (self.fleet.client.name, list(self.spec.client_cpus)),
                "server": (self.fleet.server.name, list(self.spec.server_cpus))}

    async def _cached(self, key: str, host, make):
        if (key, host.name) not in self.cache:
            self.cache[(key, host.name)] = await make(host)
        return self.cache[(key, host.name)]

    async def start(self) -> None:
        self.running = True
        client, server = self.fleet.client, self.fleet.server
        self.accounting = stealacct.per_role(await self._cached("acct", client, stealacct.host_accounting),
                                             await self._cached("acct", server, stealacct.host_accounting))
        if not self.spec.pin:
            self.note = "nginx is not pinned: no core of its to observe"
        elif not getattr(self.spec, "steal_probe", True):
            self.note = "the steal probe is off (steal_probe: false)"
        else:
            self.pids = await self.probes.start(server, list(self.spec.server_cpus))
            if not self.probes.running:
                self.note = "; ".join(self.probes.notes) or "no steal probe started"
        await self._start_perf()

    async def _start_perf(self) -> None:
        """A `perf stat` per role on its pinned cores when the host counts instructions."""
        for role, (_, cpus) in self.roles().items():
            host = self.fleet.client if role == "client" else self.fleet.server
            ok, reason = await self._cached("perf", host, _perf_support)
            if not ok:
                self.counts = {"supported": False, "reason": reason, "client": None, "server": None}
                return
            argv = ["perf", "stat", "-x,", "-e", "instructions", "-C", ",".join(map(str, cpus)), "--", "sleep", "3600"]
            self.perf[role] = await host.start(argv)

    async def stop(self) -> None:
        """Stop every probe and counter (never raises)."""
        if not self.running:
            return
        self.running = False
        self.summaries = await self.probes.stop()
        for role, bg in list(self.perf.items()):
            try:
                res = await bg.stop(sig="INT", grace=3)
                self.counts[role] = parse_perf_count(res.stderr or res.stdout)
            except Exception as exc:  # noqa: BLE001 - a counter is an extra, never the run
                self.counts[role] = None
                self.counts["reason"] = f"perf stat on the {role} cores: {exc}"
        if self.perf:
            self.counts.setdefault("supported", True)
            self.counts.setdefault("reason", None)
        self.perf = {}

    def context_bytes(self) -> bytes:
        """The generator parser's `steal_context` (generators/openloop.steal_context)."""
        server = None
        if self.summaries:
            server = [list(s) for p in self.summaries for s in sp.steal_spans_realtime(p)]
        return json.dumps({"server": server, "server_note": self.note,
                           "accounting": {r: a["accounting"] for r, a in self.accounting.items()},
                           "accounting_reasons": {r: a.get("reason") for r, a in self.accounting.items()}}).encode()

    def server_probe(self) -> dict:
        """The record's `hygiene.server_probe`."""
        cpus = list(self.spec.server_cpus) if self.spec.pin else []
        return {**sp.summary(self.summaries, cpus), "note": self.note, "steal_accounting": self.accounting}

    def metrics_part(self, samples_by_host: dict[str, list[dict]]) -> dict:
        """metrics.window_cpu and metrics.instructions."""
        instr = self.counts or {"supported": None, "reason": "nginx and the generator are not pinned", "client": None,
                                "server": None}
        return {"window_cpu": window_cpu(samples_by_host, self.roles(), self.spec.duration_s), "instructions": instr}


async def _perf_support(host) -> tuple[bool, str | None]:
    try:
        res = await host.run(PERF_CHECK, check=False, timeout=20)
    except Exception as exc:  # noqa: BLE001 - no perf: no instructions, with the reason
        return False, f"perf stat could not be run: {exc}"
    return instructions_support(res.stdout, res.exit_status)
