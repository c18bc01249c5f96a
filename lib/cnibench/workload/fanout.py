"""Several client hosts for one run: the pure planning and merging (issue 28).

    shares(rate, connections, threads, clients)   each client's part of the schedule
    start_times(start_ns, shares, offsets)        each client's start, on its own clock
    limits.offset_from_exchanges(samples)         a client's clock offset from timestamp exchanges
    merge_records(parts)                          one record: histograms added, every client named

The merged schedule is the one-client schedule: with a total rate R over N clients, request j
of it is due at j/R and client c sends the j with j mod N == c, i.e. its own uniform schedule
at R/N shifted by c/R. So every client runs at R/N and starts c/R after the common instant the
driver gives; the merged arrivals are then uniform at R (as two threads of one generator
interleave, openloop.c's sched_next). The driver's instant is on its own clock: a client whose
clock is off by o starts at instant + o on its clock, and the offsets are bounded
(limits.MAX_CLOCK_OFFSET_S): beyond it the clients would not start together, so the run is
refused (limits.check_clocks).

Nothing here runs a command; the I/O (starting each client's generator at its time and reading
its outputs) belongs to the session that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

START_LEAD_S = 2.0  # the common instant is this far after the driver decides it: every client is ready


@dataclass(frozen=True)
class Share:
    host: str
    rate: float  # this client's requests/s
    phase_ns: int  # its schedule's shift after the common instant: c / R
    connections: int
    threads: int


def shares(rate: float, connections: int, threads: int, clients: list[str]) -> list[Share]:
    """Each client's part of a run at `rate` over `connections` in all: R/N each, phases c/R,
    the connections split as evenly as whole numbers allow (every client keeps at least one per
    thread). One clear ConfigError when they cannot be split."""
    n = len(clients)
    if n < 1:
        raise ConfigError("bench", "clients", "no client host", "Name at least one host with role: client.")
    if len(set(clients)) != n:
        raise ConfigError("bench", "clients", f"a client is named twice ({', '.join(clients)})", "Name each once.")
    if connections < n * threads:
        raise ConfigError("bench", "connections", f"{connections} connections cannot give {n} clients {threads} "
                          f"thread(s) with a connection each", f"Use at least {n * threads} connections.")
    return [Share(h, rate / n, round(c * 1e9 / rate), connections // n + (c < connections % n), threads)
            for c, h in enumerate(clients)]


def start_times(start_ns: int, parts: list[Share], offsets: dict[str, float]) -> dict[str, int]:
    """Each client's start (realtime ns on its own clock) for a common instant `start_ns` on the
    driver's: the instant, plus the client's clock offset, plus its phase."""
    return {p.host: start_ns + round(offsets.get(p.host, 0.0) * 1e9) + p.phase_ns for p in parts}


def merge_records(parts: dict[str, dict]) -> dict:
    """One run record from each client's (client name -> record, the same run): counts and rates
    added, the open-loop histograms added, the percentiles read from the sum, every client named
    (`clients`, with each one's target and achieved rate). A failed part fails the merge, with
    that client's reason."""
    from ..results import decode_histogram, encode_histogram, new_histogram, percentile_table

    names = sorted(parts)
    first = dict(parts[names[0]])
    failed = [(n, parts[n]) for n in names if parts[n].get("status") == "failed"]
    out = {**first, "clients": [{"host": n, "target_rate": parts[n].get("target_rate"),
                                 "achieved_rate": parts[n].get("achieved_rate"),
                                 "status": parts[n].get("status")} for n in names]}
    out["target_rate"] = sum(float(parts[n].get("target_rate") or 0) for n in names)
    out["achieved_rate"] = round(sum(float(parts[n].get("achieved_rate") or 0) for n in names), 3)
    keys = set().union(*((parts[n].get("counts") or {}).keys() for n in names))
    out["counts"] = {k: sum(int((parts[n].get("counts") or {}).get(k) or 0) for n in names) for k in sorted(keys)}
    if failed:
        n, rec = failed[0]
        out.update(status="failed", reason=f"client {n}: {rec.get('reason')}")
        return out
    latency: dict = {"unit": "us", "source": f"the sum of {len(names)} clients' histograms"}
    for key, table in (("histogram", "percentiles"), ("histogram_uncorrected", "percentiles_uncorrected")):
        encoded = [(parts[n].get("latency") or {}).get(key) for n in names]
        latency[key] = latency[table] = None
        if all(encoded):
            h = new_histogram()
            for e in encoded:
                h.add(decode_histogram(e))
            latency[key], latency[table] = encode_histogram(h), percentile_table(h)
    out["latency"] = latency
    for c, n in zip(out["clients"], names):  # each client's own pacing and send lag stay with it
        c.update({k: v for k, v in (parts[n].get("latency") or {}).items() if k in ("pacing", "send_lag")})
    statuses = {parts[n].get("status") for n in names}
    out["status"] = "ok" if statuses == {"ok"} else "invalid"
    if out["status"] == "invalid":
        out["reason"] = "; ".join(f"client {n}: {parts[n].get('reason')}" for n in names
                                  if parts[n].get("status") != "ok")
    return out
