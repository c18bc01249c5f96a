"""stats.py against answers known in closed form or by construction (synthetic.Truth)."""

import numpy as np
import pytest

from cnibench import dataset, stats, synthetic
from cnibench.synthetic import Truth


def test_quantiles_of_a_hand_made_histogram():
    lo, hi, c = np.array([0, 10, 20]), np.array([10, 20, 30]), np.array([1, 1, 2])
    q = stats.quantiles(lo, hi, c, [25, 50, 75])
    # rank 1 ends bin 0 (linear from 0), rank 2 ends bin 1, rank 3 is halfway (log-linear) in bin 2
    assert q == pytest.approx([10.0, 20.0, 20 * 1.5 ** 0.5])


def test_quantiles_rows_and_empty():
    lo, hi = np.array([1, 2]), np.array([2, 3])
    q = stats.quantiles(lo, hi, np.array([[1, 0], [0, 1], [0, 0]]), [100])
    assert q[0, 0] == pytest.approx(2.0) and q[1, 0] == pytest.approx(3.0) and np.isnan(q[2, 0])


def _cell(rng, n_runs, n, median, sigma, between):
    hists = []
    for _ in range(n_runs):
        m = median * np.exp(rng.normal(0, between)) if between else median
        counts = synthetic.lognormal_counts(rng, n, m, sigma)
        h = synthetic.histogram_from_counts(counts)
        hists.append(dataset.histogram_arrays(__import__("cnibench.results").results.encode_histogram(h)))
    return hists


def test_point_estimates_match_the_lognormal_truth():
    t = Truth(between_sigma=0.0)
    rng = np.random.default_rng(3)
    hists = _cell(rng, 3, 400_000, t.median("host", "small", 0.4), t.sigma, 0.0)
    point, _ = stats.bootstrap_quantiles(hists, (50, 99, 99.9), n_boot=50, rng=rng)
    true = [t.true_quantile("host", "small", 0.4, p) for p in (50, 99, 99.9)]
    assert point == pytest.approx(true, rel=0.01)


def test_hierarchical_bootstrap_covers_the_population_quantile():
    """Runs differ (between-run sigma 0.1): a requests-only bootstrap would almost never cover."""
    sigma, between, median = 0.35, 0.1, 200.0
    true_p99 = median * np.exp(np.hypot(sigma, between) * 2.3263479)
    rng = np.random.default_rng(11)
    covered, widths = 0, []
    for _ in range(40):
        hists = _cell(rng, 8, 20_000, median, sigma, between)
        _, boot = stats.bootstrap_quantiles(hists, (99,), n_boot=300, rng=rng)
        lo, hi = stats.ci(boot[:, 0])
        covered += lo <= true_p99 <= hi
        widths.append(hi - lo)
    assert covered >= 32  # >= 80 % (a run-level bootstrap with 8 runs under-covers a little)
    # and the width is dominated by run-to-run variation, not the within-run noise
    rng = np.random.default_rng(12)
    _, b0 = stats.bootstrap_quantiles(_cell(rng, 8, 20_000, median, sigma, 0.0), (99,), n_boot=300, rng=rng)
    assert np.mean(widths) > 3 * np.subtract(*stats.ci(b0[:, 0])[::-1])


def test_bootstrap_is_deterministic_per_cell_seed():
    rng = np.random.default_rng(1)
    hists = _cell(rng, 3, 10_000, 100.0, 0.3, 0.05)
    a = stats.bootstrap_quantiles(hists, (99,), 100, stats.cell_rng(0, "small", "host", 1.0))[1]
    b = stats.bootstrap_quantiles(hists, (99,), 100, stats.cell_rng(0, "small", "host", 1.0))[1]
    c = stats.bootstrap_quantiles(hists, (99,), 100, stats.cell_rng(1, "small", "host", 1.0))[1]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_holm_known_answer():
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 2 * 0.5, then monotone


def test_cliffs_delta_and_rank_tests():
    assert stats.cliffs_delta([3, 4], [1, 2]) == 1.0
    assert stats.cliffs_delta([1, 2], [3, 4]) == -1.0
    assert stats.cliffs_delta([1, 3], [2, 2]) == 0.0
    assert stats.mann_whitney([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)
    assert stats.mann_whitney([1, 1], [1, 1]) == 1.0
    h, p, eps = stats.kruskal([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert p < 0.05 and 0 < eps <= 1
    assert stats.kruskal([[1, 1], [1, 1]]) == (0.0, 1.0, 0.0)


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    truth = Truth(overhead={"host": 1.0, "flannel-vxlan": 1.3, "ipvlan": 1.0})
    synthetic.write_study(raw, modes=("host", "flannel-vxlan", "ipvlan"), sizes=("small",),
                          loads=(0.1, 0.3, 0.4, 0.5, 0.8), reps=6, truth=truth, seed=5,
                          invalid_fraction=0.05, failed_fraction=0.05, duration_s=10)
    ds = dataset.build("synthetic", raw)
    return ds, stats.analyze(ds, n_boot=400)


def test_ratio_to_host_recovers_known_overhead(analysis):
    _, an = analysis
    c = an.comparisons[(an.comparisons["mode"] == "flannel-vxlan") & (an.comparisons["percentile"] == 99)]
    assert len(c) == 5
    assert ((c["ratio_lo"] < 1.3) & (c["ratio_hi"] > 1.3)).sum() >= 4  # 95 % CIs: most cover
    assert (c["ratio_lo"] > 1).all()
    same = an.comparisons[(an.comparisons["mode"] == "ipvlan") & (an.comparisons["percentile"] == 99)]
    assert ((same["ratio_lo"] < 1) & (same["ratio_hi"] > 1)).mean() >= 0.8


def test_headline_uses_the_band_and_says_cannot_separate(analysis):
    _, an = analysis
    h = an.headline.set_index(["mode", "percentile"])
    assert set(an.headline["loads"]) == {3}  # 0.3, 0.4, 0.5 of max; not 0.1 or 0.8
    vx = h.loc[("flannel-vxlan", 99.0)]
    assert vx["overhead_lo"] < 30 < vx["overhead_hi"] and vx["verdict"] == "slower than host"
    ip = h.loc[("ipvlan", 99.0)]
    assert ip["overhead_lo"] < 0 < ip["overhead_hi"] and ip["verdict"] == "cannot separate from host"
    tiers = an.tiers[an.tiers["percentile"] == 99]
    assert tiers.iloc[0]["modes"].split(",") in (["host", "ipvlan"], ["ipvlan", "host"])
    assert tiers.iloc[-1]["modes"] == "flannel-vxlan"


def test_invalid_and_failed_runs_are_excluded_and_counted(analysis):
    ds, an = analysis
    bad = int((~ds.runs["valid"]).sum())
    assert bad > 0 and int(an.excluded["runs"].sum()) == bad
    n_valid = ds.runs[ds.runs["valid"]].groupby(["mode", "target_rate"]).size()
    q = an.quantiles[an.quantiles["percentile"] == 50].set_index(["mode", "target_rate"])["runs"]
    assert (q.sort_index() == n_valid.sort_index()).all()


def test_tests_find_the_slow_mode(analysis):
    _, an = analysis
    assert (an.tests["p"] < 0.05).all()
    pw = an.pairwise[(an.pairwise["mode_a"] == "host") & (an.pairwise["mode_b"] == "flannel-vxlan")]
    assert (pw["cliffs_delta"] == -1).all()  # every host run is faster than every vxlan run


def test_save_and_load_tables(analysis, tmp_path):
    _, an = analysis
    stats.save(an, tmp_path)
    back = stats.load("synthetic", tmp_path)
    assert back.headline.shape == an.headline.shape
    assert back.headline["overhead_pct"].to_numpy() == pytest.approx(an.headline["overhead_pct"].to_numpy())
