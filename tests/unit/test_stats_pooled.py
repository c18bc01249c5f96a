"""The pooled estimator (issue 23) against a stall-lottery model with a known answer.

Each simulated lab study: 10 pairs rotating over 30 / 50 % load, the reference, six modes that
are the reference again, one mode that lengthens every stall by 1.3, and the A/A twin; Pareto
stalls with alpha 1.1 and 1.5, spreads of the paired per-block log p99 difference in the
measured 0.63-1.43 (checked here, not assumed). The estimand is the ratio of the population's
pooled quantiles (mean over the two loads of the log ratio), from 1,500 runs per arm and load.
"""

import numpy as np
import pytest

from cnibench.analysis import estimators, paired, pooled, synthetic

MODELS = {1.1: synthetic.Stalls(alpha=1.1, per_s=3, min_us=300), 1.5: synthetic.Stalls(alpha=1.5, per_s=6, min_us=400)}
ARMS = [1.0] * 7 + [1.3, 1.0]  # reference, six null modes, the amplified mode, the twin
STUDIES = 150
PS = (50.0, 99.0)


def _population_log_ratios(model, rng, runs=1500):
    """{p: mean over the two loads of log(pooled p of the amplified arm / of the reference)}."""
    out = {p: [] for p in PS}
    for rho in (0.3, 0.5):
        ref = sum(model.run(rng, rho) for _ in range(runs))
        amp = sum(model.run(rng, rho, 1.3) for _ in range(runs))
        for p in PS:
            q = [pooled.log_quantile(c[None], p, model.start, model.step)[0] for c in (amp, ref)]
            out[p].append(q[0] - q[1])
    return {p: float(np.mean(v)) for p, v in out.items()}


def _simulate(alpha):
    model = MODELS[alpha]
    rng = np.random.default_rng(2316)
    truth = _population_log_ratios(model, rng)
    S = pooled.swaps(10)
    res = {p: dict(fam=[], cover=[], amp=[], twin=[], single=[], sd=[]) for p in PS}
    for _ in range(STUDIES):
        study = synthetic.stall_arms(rng, model, ARMS, 10)
        loads = [rho for _, rho, _ in study]
        X = np.array([x for _, _, x in study])  # pairs x arms x bins (cumulative)
        for p in PS:
            fam = []
            for arm in range(1, 8):
                pr = pooled.Pairs.from_cumulative(loads, X[:, arm], X[:, 0], model.start, model.step)
                T = pr.statistic(S, p)
                fam.append(np.mean(np.abs(T) >= abs(T[0]) - 1e-9))
                delta = truth[p] if arm == 7 else 0.0
                res[p]["cover"].append(pooled.covers(pr, S, p, 0.05, delta))
                if arm == 7:
                    res[p]["amp"].append(res[p]["cover"][-1])
            res[p]["single"] += [x < 0.05 for x in fam[:6]]
            holm = paired.holm(fam)
            res[p]["fam"].append(bool((holm[:6] < 0.05).any()))
            tw = pooled.Pairs.from_cumulative(loads, X[:, 8], X[:, 0], model.start, model.step)
            T = tw.statistic(S, p)
            res[p]["twin"].append(np.mean(np.abs(T) >= abs(T[0]) - 1e-9) < 0.05)
            res[p]["single"].append(res[p]["twin"][-1])
            one = np.array([pooled.log_quantile(X[:, a], p, model.start, model.step) for a in (1, 0)])
            res[p]["sd"].append(np.std(one[0] - one[1], ddof=1))
    return truth, res


@pytest.fixture(scope="module", params=sorted(MODELS))
def simulated(request):
    return request.param, *_simulate(request.param)


def test_model_spreads_match_the_measured_ones(simulated):
    _, _, res = simulated
    sd = float(np.median(res[99.0]["sd"]))
    assert 0.63 <= sd <= 1.43, sd  # the paired per-block difference of log p99 (README's intervals)


def _at_most(rate, level, n=STUDIES):
    """An observed rate of n studies consistent with a true rate <= level (two binomial SEs)."""
    return rate <= level + 2 * np.sqrt(level * (1 - level) / n)


def test_false_separations_per_family_at_most_five_percent(simulated):
    _, _, res = simulated
    for p in PS:
        assert _at_most(np.mean(res[p]["fam"]), 0.05), (p, np.mean(res[p]["fam"]))


def test_intervals_cover_the_pooled_population_ratio(simulated):
    _, truth, res = simulated
    assert truth[99.0] > 0.05  # the amplified mode really is slower at p99 (the check can fail)
    for p in PS:
        assert np.mean(res[p]["cover"]) >= 0.93, (p, np.mean(res[p]["cover"]))
        # Short of the aim for the amplified mode alone (0.81-0.95 here): lengthened stalls are not
        # a scaled reference, so the shifted arms are not quite exchangeable (notes of issue 23).
        assert np.mean(res[p]["amp"]) >= 0.75, (p, np.mean(res[p]["amp"]))


def test_twin_false_separations_at_most_five_percent(simulated):
    """The twin is one test at alpha: its rate is estimated over the twin and the six null modes
    taken one by one (the same comparison of the reference with itself), 1,050 per percentile."""
    _, _, res = simulated
    for p in PS:
        rate = np.mean(res[p]["single"])
        assert _at_most(rate, 0.05, len(res[p]["single"])), (p, rate, np.mean(res[p]["twin"]))


def test_interval_bounds_are_where_the_test_stops_accepting():
    rng = np.random.default_rng(5)
    model = MODELS[1.5]
    study = synthetic.stall_arms(rng, model, [1.0, 1.3], 10)
    X = np.array([x for _, _, x in study])
    pr = pooled.Pairs.from_cumulative([r for _, r, _ in study], X[:, 1], X[:, 0], model.start, model.step)
    S = pooled.swaps(10)
    T0 = pr.statistic(S, 99.0)
    lo, hi = pooled.interval(pr, S, 99.0, 0.05, T0[0] / pr.step)
    assert lo < T0[0] < hi
    # the bounds are one grid step outside the last accepted shift (conservative)
    assert pooled.covers(pr, S, 99.0, 0.05, lo + 1.01 * pr.step) and not pooled.covers(pr, S, 99.0, 0.05, lo - 0.01)
    assert pooled.covers(pr, S, 99.0, 0.05, hi - 1.01 * pr.step) and not pooled.covers(pr, S, 99.0, 0.05, hi + 0.01)


def test_too_few_pairs_cannot_separate():
    assert pooled.min_p(8) > 0.05 / 7 >= pooled.min_p(9)  # 9 pairs reach Holm's first step over 7 modes
    few = [pooled.Pairs.from_cumulative([0.3] * 8, np.ones((8, 5)) * 10, np.ones((8, 5)), 0, 0.01)] * 7
    f = estimators.pooled_family(few, 50.0)
    assert (f["verdict"] == estimators.CANNOT).all()
