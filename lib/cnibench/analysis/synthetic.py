"""Synthetic run records with known latency distributions, for tests and the benchmark.

Latency of a run is lognormal: median = base[size] * overhead[mode] * (1 + load^2) * effects,
shape `sigma`. The effects are lognormal, as the runs are made (matrix.py): a repetition effect
(rep_sigma, shared by every run of one repetition: the machine drifting), a block effect
(block_sigma, shared by the runs of one mode in one repetition: that set-up of the mode) and a
run effect (between_sigma, run-to-run). With all three 0 every quantile has a closed form
(`true_quantile`), which is what the statistics tests check against.

Histograms are drawn directly as multinomial counts over the HdrHistogram buckets (exactly what
recording N lognormal samples would give, without N calls), so 1,000 records take seconds.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats as sst

from .. import results
from .dataset import MODES, REFERENCE, bucket_bounds

TWIN_ARM = REFERENCE + "·A/A"

# The synthetic truth per arm: median latency relative to the reference (data, so no module here
# names a mode; synthetic_overhead.json beside this file).
DEFAULT_OVERHEAD = json.loads(Path(__file__).with_name("synthetic_overhead.json").read_text())


@dataclass(frozen=True)
class Truth:
    """The known answer the synthetic data is drawn from."""

    base_median_us: dict = field(default_factory=lambda: {"small": 200.0, "large": 320.0})
    sigma: float = 0.35
    between_sigma: float = 0.05  # run-to-run
    block_sigma: float = 0.0  # per (repetition, mode) block
    rep_sigma: float = 0.0  # per repetition, shared by every mode
    overhead: dict = field(default_factory=lambda: dict(DEFAULT_OVERHEAD))
    host_max_rate: dict = field(default_factory=lambda: {"small": 100_000.0, "large": 60_000.0})
    # CPU microseconds per request (before the mode's overhead) by host and kind
    cpu_us: dict = field(default_factory=lambda: {
        "client": {"user": 3.0, "system": 2.0, "irq": 0.1, "softirq": 1.0},
        "server": {"user": 2.0, "system": 3.0, "irq": 0.1, "softirq": 2.0},
    })

    def median(self, mode: str, size: str, load: float) -> float:
        return self.base_median_us[size] * self.overhead.get(mode, 1.0) * (1.0 + load ** 2)

    def true_quantile(self, mode: str, size: str, load: float, p: float) -> float:
        """The p-th percentile (us) of one run's latency when between_sigma is 0."""
        return self.median(mode, size, load) * float(np.exp(self.sigma * sst.norm.ppf(p / 100.0)))

    def cpu_cost(self, host: str, kind: str, mode: str) -> float:
        """CPU us per request: system and softirq scale with the mode's per-packet overhead."""
        base = self.cpu_us[host][kind]
        return base * self.overhead.get(mode, 1.0) if kind in ("system", "softirq") else base

    def max_rate(self, mode: str, size: str) -> float:
        return self.host_max_rate[size] / self.overhead.get(mode, 1.0) ** 0.5


_BOUNDS = None


def _bounds():
    global _BOUNDS
    if _BOUNDS is None:
        _BOUNDS = bucket_bounds(results.new_histogram())
    return _BOUNDS


def lognormal_counts(rng: np.random.Generator, n: int, median_us: float, sigma: float) -> np.ndarray:
    """HdrHistogram bucket counts of n lognormal latencies (multinomial over bucket masses)."""
    lo, hi = _bounds()
    cdf = sst.norm.cdf((np.log(hi.astype(float)) - np.log(median_us)) / sigma)
    p = np.diff(np.concatenate([[0.0], cdf]))
    p = np.clip(p, 0, None)
    p /= p.sum()
    return rng.multinomial(n, p)


def histogram_from_counts(counts: np.ndarray):
    h = results.new_histogram()
    arr = np.ctypeslib.as_array(h.counts)
    arr[: len(counts)] = counts
    nz = np.nonzero(counts)[0]
    if len(nz):
        h.set_internal_tacking_values(int(nz[0]), int(nz[-1]), int(counts.sum()))
    return h


def percentile_table_from_counts(counts: np.ndarray, percentiles=results.PERCENTILES) -> dict[str, int]:
    """results.percentile_table's answer (HdrHistogram semantics), vectorised."""
    lo, hi = _bounds()
    total = int(counts.sum())
    cum = np.cumsum(counts)
    table = {}
    for p in percentiles:
        target = max(int(p * total / 100 + 0.5), 1)
        idx = int(np.searchsorted(cum, target))
        table[results.percentile_key(p)] = int(hi[idx] - 1)
    table["100"] = int(hi[np.nonzero(counts)[0][-1]] - 1) if total else 0
    return table


def make_record(study: str, mode: str, size: str, load: float, rep: int, truth: Truth,
                rng: np.random.Generator, status: str = "ok", duration_s: int = 30,
                warmup_s: int = 5, ncpu: int = 2, order: int | None = None, effect: float = 0.0) -> dict:
    """One run's record; `effect`: log-multiplier of its median shared with other runs (block,
    repetition)."""
    target = float(round(load * truth.host_max_rate[size]))
    achieved = target * (0.91 if status == "invalid" else float(rng.uniform(0.995, 1.0)))
    if status == "failed":
        achieved = 0.0
    n = int(achieved * duration_s)
    run_effect = float(np.exp(rng.normal(0.0, truth.between_sigma))) if truth.between_sigma else 1.0
    median = truth.median(mode, size, load) * run_effect * float(np.exp(effect))
    latency = results.empty_latency()
    if status != "failed" and n > 0:
        counts = lognormal_counts(rng, n, median, truth.sigma)
        latency["histogram"] = results.encode_histogram(histogram_from_counts(counts))
        uncorrected = lognormal_counts(rng, n, median * 0.97, truth.sigma * 0.95)
        latency["histogram_uncorrected"] = results.encode_histogram(histogram_from_counts(uncorrected))
        latency["percentiles"] = percentile_table_from_counts(counts)
    reason = {"ok": "", "invalid": "invalid: achieved 91% of target", "failed": "failed: nginx died"}[status]
    return results.new_record(
        run_id=results.run_id(study, mode, size, target, rep),
        study=study, mode=mode, size=size, target_rate=target,
        load_fraction=load, repetition=rep, generator="h2load",
        settings={"connections": 64, "threads": 1, "duration_s": duration_s,
                  "warmup_s": warmup_s, "pipeline": 1},
        status=status, reason=reason,
        started_at="2024-01-01T00:00:00Z", ended_at="2024-01-01T00:00:35Z",
        achieved_rate=achieved,
        counts={"requests": n, "ok": n, "errors": 0, "timeouts": 0},
        generator_cpu=round(min(1.0, achieved / 150_000), 3),
        latency=latency,
        timeline=_timeline(rng, achieved, median, truth.sigma, duration_s),
        metrics=_metrics(rng, truth, mode, achieved, duration_s + warmup_s, ncpu),
        provenance=f"{study}/manifest.json",
        order=order,
    )


def _timeline(rng, rate, median, sigma, duration_s) -> list[dict]:
    p99 = median * np.exp(sigma * 2.326)
    return [{"t": t, "rate": round(rate * float(rng.uniform(0.99, 1.01)), 1),
             "p50_us": round(median * float(rng.uniform(0.97, 1.03)), 1),
             "p99_us": round(p99 * float(rng.uniform(0.95, 1.05)), 1), "errors": 0}
            for t in range(duration_s)]


def _metrics(rng, truth: Truth, mode: str, rate: float, seconds: int, ncpu: int) -> dict:
    """The sampler's format (workload/metrics.py): per host, per interval, per CPU in percent."""
    out = {}
    for host in ("client", "server"):
        samples = []
        for t in range(seconds):
            cpus = {}
            for c in range(ncpu):
                used = {k: round(rate * truth.cpu_cost(host, k, mode) * 1e-4 / ncpu
                                 * float(rng.uniform(0.98, 1.02)), 3) for k in ("user", "system", "irq", "softirq")}
                used["idle"] = round(max(0.0, 100.0 - sum(used.values())), 3)
                cpus[f"cpu{c}"] = used
            samples.append({"t": float(t), "dt": 1.0, "cpu": cpus, "ctxt_per_s": int(rate * 0.5),
                            "intr_per_s": int(rate * 0.3),
                            "net": {"rx_packets_per_s": int(rate * 2), "tx_packets_per_s": int(rate * 2),
                                    "rx_bytes_per_s": int(rate * 500), "tx_bytes_per_s": int(rate * 700),
                                    "rx_dropped": 0, "tx_dropped": 0},
                            "tcp_retrans": 0, "tcp_retrans_container": None})
        out[host] = {"period_s": 1.0, "samples": samples}
    return out


def write_study(raw_dir: Path, study: str = "synthetic", modes=MODES, sizes=("small", "large"),
                loads=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8), reps: int = 5, truth: Truth | None = None,
                seed: int = 0, invalid_fraction: float = 0.0, failed_fraction: float = 0.0,
                duration_s: int = 30, calibration_dir: Path | None = None, testbed: bool = True,
                rotate: bool = False, twin: bool = False) -> list[Path]:
    """Write a whole synthetic study (records, manifest, calibration); returns the record paths.
    `rotate`: repetition k runs only loads[(k - 1) % len(loads)] (study key load.rotate).
    `twin`: the reference also runs as its A/A twin (arm "<reference>·A/A", schema-2 `arm`)."""
    truth = truth or Truth()
    arms = list(modes) + ([TWIN_ARM] if twin else [])
    rng = np.random.default_rng(seed)
    raw_dir = Path(raw_dir)
    cells = [(m, s, l, r) for m in arms for s in sizes for l in loads for r in range(1, reps + 1)
             if not rotate or l == loads[(r - 1) % len(loads)]]
    # shared effects from their own stream, so the runs' draws do not depend on them
    erng = np.random.default_rng([seed, 1])
    rep_eff = {r: erng.normal(0.0, truth.rep_sigma) if truth.rep_sigma else 0.0 for r in range(1, reps + 1)}
    block_eff = {(m, r): erng.normal(0.0, truth.block_sigma) if truth.block_sigma else 0.0
                 for m in arms for r in range(1, reps + 1)}
    order = rng.permutation(len(cells))
    paths = []
    for k, (mode, size, load, rep) in enumerate(cells):
        u = rng.uniform()
        status = "failed" if u < failed_fraction else "invalid" if u < failed_fraction + invalid_fraction else "ok"
        rec = make_record(study, REFERENCE if mode == TWIN_ARM else mode, size, load, rep, truth, rng,
                          status=status, duration_s=duration_s, order=int(order[k]),
                          effect=rep_eff[rep] + block_eff[(mode, rep)])
        rec["arm"] = mode
        if mode == TWIN_ARM:  # its own run id (a path part: no "/")
            rec["run_id"] = results.run_id(study, REFERENCE + "-aa", size, rec["target_rate"], rep)
        paths.append(results.write_record(raw_dir, rec))
    manifest = {
        "study": study, "synthetic": True, "git_commit": "synthetic",
        "inventory": {"name": "synthetic", "testbed": testbed},
        "hosts": {h: {"role": h, "kernel": "synthetic", "cpu": "synthetic", "nic": "veth", "mtu": 1500}
                  for h in ("client", "server")},
        "tools": {"h2load": "synthetic", "nginx": "synthetic"},
        "order": [results.run_id(study, REFERENCE + "-aa" if m == TWIN_ARM else m, s,
                                 round(l * truth.host_max_rate[s]), r)
                  for (m, s, l, r) in (cells[i] for i in np.argsort(order))],
    }
    results.atomic_write_text(raw_dir / study / "manifest.json", json.dumps(manifest, indent=1))
    cal = Path(calibration_dir) if calibration_dir else raw_dir.parent / "calibration"
    for mode in modes:
        for size in sizes:
            mx = truth.max_rate(mode, size)
            results.atomic_write_text(cal / "synthetic" / mode / f"{size}.json",
                                      json.dumps({"max_rate": mx, "saturation_rate": mx * 1.1}))
    return paths


def block_differences(rng: np.random.Generator, studies: int, modes: int, blocks: int, loads_per_block: int,
                      block_sigma: float, run_sigma: float, rep_sigma: float = 0.0, effects=None) -> np.ndarray:
    """Simulated paired block differences of log quantiles, as paired.family takes them:
    (studies, modes, blocks). A study has a reference and `modes` others; run value = the mode's
    true log effect (`effects`, default 0) + repetition effect + block effect + run effect, and a
    block value is the mean over its `loads_per_block` runs (one size). For the design tests and
    benchmarks/stats_power.py: thousands of studies in milliseconds."""
    shape = (studies, modes + 1, blocks)
    y = rng.normal(0.0, block_sigma, shape) + rng.normal(0.0, run_sigma, shape + (loads_per_block,)).mean(axis=-1)
    y += rng.normal(0.0, rep_sigma, (studies, 1, blocks))  # cancels in the pairing, as it should
    y[:, 1:, :] += np.asarray(effects if effects is not None else np.zeros(modes), float)[None, :, None]
    return y[:, 1:, :] - y[:, :1, :]


def simulate_design(blocks: int, loads_per_block: int, modes: int, block_sigma: float, run_sigma: float,
                    margin: float, effect: float = 0.30, rep_sigma: float = 0.05, studies: int = 2000,
                    seed: int = 0) -> dict:
    """What a design gives under given spreads, by simulating `studies` studies twice through
    paired.family: A/A (no mode differs from the reference) and with one mode `effect` slower.

    false_separation: share of A/A comparisons called slower or faster; coverage: share of A/A
    95 % intervals holding 0; equivalent: share of A/A comparisons called equivalent; detected:
    share of studies calling the slow mode slower; mde: median MDE (relative)."""
    from . import paired

    rng = np.random.default_rng(seed)
    aa = paired.family(block_differences(rng, studies, modes, blocks, loads_per_block, block_sigma, run_sigma,
                                        rep_sigma), margin)
    effects = np.zeros(modes)
    effects[0] = np.log1p(effect)
    one = paired.family(block_differences(rng, studies, modes, blocks, loads_per_block, block_sigma, run_sigma,
                                         rep_sigma, effects), margin)
    return {
        "false_separation": float(np.isin(aa["verdict"], (paired.SLOWER, paired.FASTER)).mean()),
        "coverage": float(((aa["lo"] <= 0) & (aa["hi"] >= 0)).mean()),
        "equivalent": float((aa["verdict"] == paired.EQUIVALENT).mean()),
        "detected": float((one["verdict"][:, 0] == paired.SLOWER).mean()),
        "mde": float(np.expm1(np.median(aa["mde"]))),
    }


@dataclass(frozen=True)
class Stalls:
    """The stall lottery (issue 23): a window's tail is set by the machine stalls inside it. Each
    run: `rate` requests per second for `window_s`, a lognormal body (median_us, sigma) and a
    Poisson number of stalls (per_s) of Pareto(alpha) length above min_us (at most max_us), times the arm's
    amplification. A stall of length S at utilisation rho delays about rate * S / (1 - rho)
    requests by U(0, S) each (they queue behind it and drain). Counts are expected values on the
    log grid of pooled.py (bin i: [e^(i step), e^((i+1) step)) us) from `start`."""

    alpha: float = 1.5
    per_s: float = 4.0
    min_us: float = 800.0
    max_us: float = 30_000.0  # the longest stalls the hiccup meter saw here: tens of ms
    rate: float = 5000.0
    window_s: float = 4.0
    median_us: float = 200.0
    sigma: float = 0.3
    step: float = 0.02
    start: int = int(np.floor(np.log(20.0) / 0.02))
    bins: int = 700

    def edges(self) -> np.ndarray:
        return np.exp((self.start + np.arange(self.bins + 1)) * self.step)

    def run(self, rng: np.random.Generator, rho: float, amplify: float = 1.0) -> np.ndarray:
        """One run's cumulative counts on the grid (length bins)."""
        x = self.edges()[1:]
        n = self.rate * self.window_s
        stalls = (rng.pareto(self.alpha, rng.poisson(self.per_s * self.window_s)) + 1) * self.min_us
        stalls = np.minimum(stalls, self.max_us) * amplify
        hit = self.rate * 1e-6 * stalls / (1 - rho)  # requests each stall delays
        cum = (n - hit.sum()) * _body_cdf(self.median_us, self.sigma, self.start, self.step, self.bins)
        cum += (hit[:, None] * np.clip((x[None, :] - self.median_us) / stalls[:, None], 0, 1)).sum(axis=0)
        return cum


@functools.lru_cache(maxsize=16)
def _body_cdf(median_us, sigma, start, step, bins) -> np.ndarray:
    x = np.exp((start + np.arange(1, bins + 1)) * step)
    return sst.norm.cdf(np.log(x / median_us) / sigma)


def stall_arms(rng: np.random.Generator, model: Stalls, amplify: list[float], pairs: int,
               loads=(0.3, 0.5)) -> list[tuple[int, float, np.ndarray]]:
    """One simulated study: per pair (its load rotating over `loads`, as lab.yml) the cumulative
    counts of every arm's run, shape (arms, bins); amplify[0] is the reference's (1.0)."""
    out = []
    for k in range(pairs):
        rho = loads[k % len(loads)]
        out.append((k, rho, np.array([model.run(rng, rho, a) for a in amplify])))
    return out


CONDITIONAL_SIGMA = {"outside_steal": 0.8, "outside_steal_wide": 0.75, "outside_steal_placebo": 1.0}


def add_issue25_fields(paths, truth: Truth | None = None, seed: int = 0, share=0.02,
                       instructions: bool = False) -> None:
    """Give written ok records issue 25's fields (recordparts.py): the three conditional histograms,
    drawn like the raw one with a thinner tail (the placebo: the raw one thinned at random),
    left-out share `share` (a number, or a function of the record; 2x for the wide mask), and
    metrics.window_cpu from truth.cpu_cost over the answered requests (with `instructions`, 20,000
    per request scaled by the mode's overhead, else the PMU hidden)."""
    truth = truth or Truth()
    rng = np.random.default_rng(seed)
    for path in paths:
        rec = json.loads(Path(path).read_text())
        if rec["status"] != "ok":
            continue
        n, median = int(rec["counts"]["ok"]), float(rec["latency"]["percentiles"]["50"])
        s = share(rec) if callable(share) else share
        raw = results.decode_histogram(rec["latency"]["histogram"])
        raw = np.ctypeslib.as_array(raw.counts)[: raw.counts_len].astype(np.int64)
        for k, (v, sigma) in enumerate(CONDITIONAL_SIGMA.items()):
            f = 2.0 if k == 1 else 1.0
            counts = rng.binomial(raw, 1 - s) if v == "outside_steal_placebo" else \
                lognormal_counts(rng, int(n * (1 - s * f)), median, truth.sigma * sigma)
            rec["latency"][v] = {"histogram": results.encode_histogram(histogram_from_counts(counts)),
                                 "percentiles": percentile_table_from_counts(counts),
                                 "left_out_share": round(s * f + float(rng.uniform(-5e-4, 5e-4)), 6),
                                 "episodes": {"client": 3, "server": 2}, "cores": ["client", "server"],
                                 "lead_ms": 1.0 * f, "tail_rule": f"max({2 * f:g} ms, {f:g} S)", "withheld": None}
        jitter = lambda: float(rng.uniform(0.98, 1.02))  # noqa: E731
        rec["metrics"]["window_cpu"] = {
            role: {"cpus": [i], **{f"{kind}_s": truth.cpu_cost(role, kind, rec["mode"]) * n * 1e-6 * jitter()
                                   for kind in ("user", "system", "irq", "softirq")}, "steal_s": 0.01, "idle_s": 1.0}
            for i, role in enumerate(("client", "server"))}
        k = 2e4 * truth.overhead.get(rec["mode"], 1.0) * n
        rec["metrics"]["instructions"] = {"supported": True, "reason": None, "client": int(k * jitter()),
                                          "server": int(k * jitter())} if instructions else \
            {"supported": False, "reason": "no PMU", "client": None, "server": None}
        results.atomic_write_text(Path(path), json.dumps(rec))
