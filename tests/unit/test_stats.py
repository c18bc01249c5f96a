"""stats.py against answers known in closed form or by construction (synthetic.Truth)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sst

from cnibench.analysis import dataset, histquant, paired, stats, synthetic
from cnibench.analysis.synthetic import Truth


def test_quantiles_of_a_hand_made_histogram():
    lo, hi, c = np.array([0, 10, 20]), np.array([10, 20, 30]), np.array([1, 1, 2])
    q = histquant.quantiles(lo, hi, c, [25, 50, 75])
    # rank 1 ends bin 0 (linear from 0), rank 2 ends bin 1, rank 3 is halfway (log-linear) in bin 2
    assert q == pytest.approx([10.0, 20.0, 20 * 1.5 ** 0.5])


def test_quantiles_rows_and_empty():
    lo, hi = np.array([1, 2]), np.array([2, 3])
    q = histquant.quantiles(lo, hi, np.array([[1, 0], [0, 1], [0, 0]]), [100])
    assert q[0, 0] == pytest.approx(2.0) and q[1, 0] == pytest.approx(3.0) and np.isnan(q[2, 0])


def test_holm_known_answer_and_nan():
    assert paired.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert paired.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 2 * 0.5, then monotone
    out = paired.holm([0.01, np.nan, 0.04])  # NaN is not in the family: m = 2
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.04)
    rows = paired.holm_rows(np.array([[0.01, 0.04, 0.03, 0.005], [0.5, 0.9, np.nan, np.nan]]))
    assert rows[0] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and rows[1, :2] == pytest.approx([1.0, 1.0])


def test_family_matches_scipy_paired_t_and_tost():
    rng = np.random.default_rng(0)
    D = rng.normal(0.02, 0.05, (3, 12))
    f = paired.family(D, margin=0.10)
    for m in range(3):
        t = sst.ttest_1samp(D[m], 0.0)
        assert f["p"][m] == pytest.approx(t.pvalue)
        lo, hi = t.confidence_interval(0.95)
        assert (f["lo"][m], f["hi"][m]) == pytest.approx((lo, hi))
        b = np.log1p(0.10)
        tost = max(sst.ttest_1samp(D[m], -b, alternative="greater").pvalue,
                   sst.ttest_1samp(D[m], b, alternative="less").pvalue)
        assert f["p_tost"][m] == pytest.approx(tost)
    assert f["p_holm"] == pytest.approx(paired.holm(f["p"]))
    # MDE: (t_{1 - alpha / 2M} + t_{0.8}) * SE, M = 3 comparisons, 11 df
    se = D.std(axis=1, ddof=1) / np.sqrt(12)
    assert f["mde"] == pytest.approx((sst.t.ppf(1 - 0.05 / 6, 11) + sst.t.ppf(0.8, 11)) * se)


def test_family_verdicts_missing_blocks_and_degenerate():
    D = np.array([
        [0.30, 0.28, 0.31, 0.29, 0.30, 0.32],  # clearly slower
        [-0.30, -0.28, -0.31, -0.29, -0.30, -0.32],  # clearly faster
        [0.01, -0.01, 0.0, 0.01, -0.01, 0.0],  # clearly within +-10 %
        [0.3, -0.3, 0.2, -0.2, 0.1, np.nan],  # noisy: neither; a missing block
        [0.1, np.nan, np.nan, np.nan, np.nan, np.nan],  # one block: no interval
    ])
    f = paired.family(D)
    assert list(f["verdict"]) == [paired.SLOWER, paired.FASTER, paired.EQUIVALENT, paired.INCONCLUSIVE, paired.INCONCLUSIVE]
    assert list(f["n"]) == [6, 6, 6, 5, 1] and np.isnan(f["lo"][4]) and np.isnan(f["p"][4])
    same = paired.family(np.zeros((1, 4)))  # identical blocks: equivalent, not a division by zero
    assert same["verdict"][0] == paired.EQUIVALENT and same["p"][0] == 1.0
    empty = paired.family(np.empty((0, 0)))
    assert empty["verdict"].shape == (0,)


def _runs(rows):
    cols = ["size", "mode", "target_rate", "repetition", "run_id", "load_fraction", "status", "reason", "valid",
            "started_at", "p99"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows], columns=cols)


def test_attempts_a_valid_redo_replaces_an_invalid_run_and_a_lone_invalid_is_not_sustained():
    r = _runs([
        ("small", "host", 100.0, 1, "a", 0.3, "invalid", "invalid: achieved 93%", False, "t1", np.nan),
        ("small", "host", 100.0, 1, "a-redo", 0.3, "ok", "", True, "t2", 200.0),  # redone: counts
        ("small", "host", 100.0, 2, "b", 0.3, "invalid", "invalid: achieved 93%", False, "t3", np.nan),
        ("small", "host", 100.0, 3, "c", 0.3, "failed", "failed: nginx died", False, "t4", np.nan),
        ("small", "host", 100.0, 4, "d", 0.3, "invalid", "invalid", False, "t5", np.nan),
        ("small", "host", 100.0, 4, "d-redo", 0.3, "failed", "failed", False, "t6", np.nan),  # still not sustained
    ])
    att = stats.attempts(r).set_index("repetition")
    assert att.loc[1, "state"] == "ok" and att.loc[1, "p99"] == 200.0 and att.loc[1, "attempts"] == 2
    assert att.loc[2, "state"] == stats.NOT_SUSTAINED
    assert att.loc[3, "state"] == "failed"
    assert att.loc[4, "state"] == stats.NOT_SUSTAINED


def test_block_values_average_the_band_loads_and_pairs_skip_incomplete_blocks():
    rows = []
    for rep in (1, 2, 3):
        for mode, base in (("host", 100.0), ("m", 150.0)):
            for rate, lf in ((300.0, 0.3), (500.0, 0.5)):
                rows.append(("small", mode, rate, rep, f"{mode}{rep}{rate}", lf, "ok", "", True, "", base * (1 + rep / 10) * lf * 10))
    rows.append(("small", "m", 500.0, 4, "m4", 0.5, "ok", "", True, "", 1.0))  # host has no block 4: unpaired
    att = stats.attempts(_runs(rows))
    b = stats.Band.of(att, "p99")
    d = b.diffs("m", "host")
    assert list(d.index) == [1, 2, 3] and d.to_numpy() == pytest.approx([np.log(1.5)] * 3)
    # a block value is the mean over the band's loads of the log quantile
    v = b.block_values("host")
    assert v.loc[1] == pytest.approx(np.mean([np.log(110 * 3), np.log(110 * 5)]))


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    """lab.yml's design on a few modes: 12 repetitions, one band load each (rotation), with
    repetition, block and run effects; docker-bridge has one run that was not sustained."""
    raw = tmp_path_factory.mktemp("raw")
    truth = Truth(overhead={"host": 1.0, "flannel-vxlan": 1.3, "macvlan": 1.0, "docker-bridge": 1.1},
                  between_sigma=0.03, block_sigma=0.03, rep_sigma=0.05)
    synthetic.write_study(raw, modes=("host", "flannel-vxlan", "macvlan", "docker-bridge"), sizes=("small", "large"),
                          loads=(0.3, 0.5), reps=12, truth=truth, seed=5, duration_s=4, rotate=True)
    # one docker-bridge small run ends invalid (not redone); one host run fails outright
    import json
    for pattern, status in (("docker-bridge/small/*/rep3.json", "invalid"), ("host/large/*/rep5.json", "failed")):
        path = next(raw.glob(f"synthetic/{pattern}"))
        rec = json.loads(path.read_text())
        rec.update(status=status, reason=f"{status}: test")
        path.write_text(json.dumps(rec))
    ds = dataset.build("synthetic", raw)
    return ds, stats.analyze(ds, margin=0.10)


def test_headline_recovers_known_overheads_with_paired_blocks(analysis):
    _, an = analysis
    h = an.headline.set_index(["size", "mode", "percentile"])
    for size in ("small", "large"):
        vx = h.loc[(size, "flannel-vxlan", 99.0)]  # within 4 standard errors of the truth, +30 %
        assert abs(vx["log_ratio"] - np.log(1.3)) < 4 * vx["se"] and vx["verdict"] == "slower than host"
        assert vx["overhead_lo"] < vx["overhead_pct"] < vx["overhead_hi"]
        mv = h.loc[(size, "macvlan", 99.0)]
        assert abs(mv["log_ratio"]) < 4 * mv["se"] and mv["verdict"] == "equivalent to host"
        assert mv["loads"] == 2 and 0 < mv["mde_pct"] < 15
    assert h.loc[("small", "macvlan", 99.0), "blocks"] == 12
    assert h.loc[("large", "macvlan", 99.0), "blocks"] == 11  # host's failed block 5 is left out
    assert h.loc[("large", "macvlan", 99.0), "blocks_left_out"] == 1
    assert set(an.headline["percentile"]) == {50.0, 90.0, 99.0, 99.9}


def test_headline_equals_family_on_the_block_differences(analysis):
    """The block-t estimator's headline is exactly the paired t on block differences, by hand."""
    ds, _ = analysis
    an = stats.analyze(ds, estimator="block-t")
    v = ds.valid[(ds.valid["size"] == "small")]
    logq = {r.run_id: np.log(histquant.quantiles(*ds.hist[r.run_id], [99.0])[0]) for r in v.itertuples()}
    by = {(r.mode, r.repetition): logq[r.run_id] for r in v.itertuples()}
    modes = ["flannel-vxlan", "macvlan"]
    D = np.array([[by[(m, k)] - by[("host", k)] for k in range(1, 13)] for m in modes])
    f = paired.family(D, margin=0.10)
    h = an.headline[(an.headline["size"] == "small") & (an.headline["percentile"] == 99.0)].set_index("mode")
    for i, m in enumerate(modes):
        assert h.loc[m, "log_ratio"] == pytest.approx(f["mean"][i])
        assert h.loc[m, "overhead_lo"] == pytest.approx(100 * np.expm1(f["lo"][i]))
    # Holm over the modes compared: docker-bridge is not sustained at small, so over these two
    assert h.loc[modes, "p_holm"].to_numpy() == pytest.approx(paired.holm(h.loc[modes, "p"].to_numpy()))
    assert h.loc[modes, "p_holm"].to_numpy() == pytest.approx(f["p_holm"])


def test_a_mode_with_an_unsustained_run_shows_as_not_sustained(analysis):
    _, an = analysis
    h = an.headline.set_index(["size", "mode", "percentile"])
    db = h.loc[("small", "docker-bridge", 99.0)]
    assert db["verdict"] == stats.NOT_SUSTAINED and np.isnan(db["overhead_pct"]) and db["not_sustained"] == 1
    large = h.loc[("large", "docker-bridge", 99.0)]  # its large runs were all fine
    assert large["verdict"] != stats.NOT_SUSTAINED and large["overhead_lo"] < 10 < large["overhead_hi"]
    q = an.quantiles[(an.quantiles["mode"] == "docker-bridge") & (an.quantiles["size"] == "small")]
    bad = q[q["status"] == stats.NOT_SUSTAINED]
    assert len(bad) and bad["estimate"].isna().all() and bad["pooled"].isna().all()
    t = an.tiers[(an.tiers["size"] == "small") & (an.tiers["percentile"] == 99.0)]
    assert t.iloc[-1]["text"] == "not sustained: docker-bridge"
    assert t.iloc[0]["modes"].split(",") in (["host", "macvlan"], ["macvlan", "host"])


def test_quantile_cells_are_typical_runs_with_t_intervals(analysis):
    ds, an = analysis
    q = an.quantiles[(an.quantiles["mode"] == "host") & (an.quantiles["size"] == "small") & (an.quantiles["percentile"] == 50)]
    assert set(q["runs"]) == {6}  # 12 repetitions, each load in 6
    assert (q["lo"] < q["estimate"]).all() and (q["estimate"] < q["hi"]).all()
    assert (abs(q["pooled"] / q["estimate"] - 1) < 0.05).all()


def test_save_and_load_tables(analysis, tmp_path):
    _, an = analysis
    stats.save(an, tmp_path)
    back = stats.load("synthetic", tmp_path)
    assert back.headline.shape == an.headline.shape and back.margin == 0.10 and back.design["blocks"] == 12
    assert back.headline["overhead_pct"].to_numpy() == pytest.approx(an.headline["overhead_pct"].to_numpy(), nan_ok=True)


def test_invalid_and_failed_runs_are_excluded_and_counted(analysis):
    ds, an = analysis
    assert int(an.excluded["runs"].sum()) == int((~ds.runs["valid"]).sum()) == 2
