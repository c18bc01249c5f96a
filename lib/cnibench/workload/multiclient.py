"""One run from several client hosts (issue 28): the I/O around fanout.py's pure planning.

    rec = await run_clients(session, spec, ["client", "client2"], run_id=..., client_cpus=...)

Each client runs its share of the one schedule through a BenchSession of its own over a view of
the fleet with that client first (Fleet.with_client), so every share is measured and judged as a
one-client run is (samplers, steal probes, guards), against the one nginx of `session`, which
starts it before the shares and keeps it. The driver measures each client's clock offset, gives
one instant START_LEAD_S ahead, and each generator starts at instant + offset + phase on its own
clock (cnib-openloop --start-at). The shares run concurrently; their records are merged
(fanout.merge_records) and the merged schedule's pacing and send lag replace the first's
(fanout.merged_pacing). Limits, stated: host mode only (a mode's container is on the first
client), cnib-openloop at a rate only; run-all uses it for such studies (study.precheck says
which it refuses).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Awaitable, Callable

from ..errors import ConfigError
from ..infra import limits as limits_mod
from . import fanout
from .bench import BenchSpec, RunContext, validate_spec
from .session import BenchSession


async def run_clients(session: BenchSession, spec: BenchSpec, clients: list[str], *, run_id: str, study: str = "adhoc",
                      repetition: int = 1, load_fraction: float | None = None,
                      client_cpus: dict[str, tuple[int, ...]] | None = None,
                      during: Callable[[RunContext], Awaitable] | None = None) -> dict:
    """One run whose load comes from several client hosts (issue 28, fanout.py): each runs its
    share (rate/N, its phase, its part of the connections) of the one schedule, all from the
    instant the driver gives, against this session's one nginx; the record is the merge
    (histograms added, the merged schedule's pacing, every client named). Refused in one
    message, before anything starts, when it cannot be done: another generator than
    cnib-openloop, a closed loop, a container namespace on the client (the modes put one on
    the first client only), clocks further apart than limits.MAX_CLOCK_OFFSET_S.
    `client_cpus`: a client's own generator CPUs (default: spec.client_cpus on each)."""
    if len(clients) == 1:
        return await session.run(spec, run_id=run_id, study=study, repetition=repetition,
                                 load_fraction=load_fraction, during=during)
    need = ("cnib-openloop (its --start-at), not " + spec.generator if spec.generator != "openloop" else
            "an open-loop rate, not a closed loop" if spec.closed_loop else
            "mode host: a mode puts its container on the first client only" if session.endpoint.client_netns
            else "")
    if need:
        raise ConfigError("bench", "clients", f"a run from {len(clients)} clients needs {need}",
                          "Keep one client host, or run host mode with cnib-openloop at a rate.")
    validate_spec(spec, session.limits)
    parts = fanout.shares(float(spec.rate), spec.n_connections, spec.threads, clients)
    offsets = {c: await limits_mod.clock_offset(session.fleet[c]) for c in clients}
    bad = limits_mod.check_clocks(offsets).problems
    if bad:
        raise ConfigError("bench", "clients", bad[0], "Synchronize the clients' clocks (chrony or PTP).")
    nspec = session.nginx_spec(spec)
    notes: list[str] = []
    await session._nginx(nspec, notes)  # up before the shares start: they share it
    subs = {p.host: BenchSession(session.fleet.with_client(p.host), session.endpoint, None, nginx_of=(session, nspec))
            for p in parts}
    for p in parts:  # one at a time: the testbed's clients share one file system
        await subs[p.host].prepare_generator(spec.generator)
    instant = time.time_ns() + int(fanout.START_LEAD_S * 1e9)
    starts = fanout.start_times(instant, parts, offsets)
    cpus = client_cpus or {}
    outs = await asyncio.gather(*(subs[p.host]._run(
        replace(spec, rate=p.rate, connections=p.connections,
                client_cpus=tuple(cpus.get(p.host, spec.client_cpus))),
        run_id=run_id, study=study, repetition=repetition, load_fraction=load_fraction,
        during=during if i == 0 else None, start_at_ns=starts[p.host]) for i, p in enumerate(parts)))
    rec = fanout.merge_records({p.host: out[0] for p, out in zip(parts, outs)})
    sends = [out[1].sends for out in outs if out[1] is not None and out[1].sends is not None]
    if len(sends) == len(parts) and rec.get("latency", {}).get("histogram"):
        rec["latency"]["pacing"], rec["latency"]["send_lag"] = fanout.merged_pacing(sends)
    rec["settings"] = {**rec["settings"], "rate": spec.rate, "connections": spec.n_connections,
                       "clients": [{"host": p.host, "rate": p.rate, "phase_ns": p.phase_ns,
                                    "connections": p.connections, "start_at_ns": starts[p.host],
                                    "clock_offset_s": round(offsets[p.host], 6),
                                    "client_cpus": list(cpus.get(p.host, spec.client_cpus))} for p in parts]}
    rec["notes"] = [*notes, *rec.get("notes", [])]
    return rec

