"""The report leads with its answer (issue 23): a replayed noisy study, the A/A twin, estimators."""

import re
from pathlib import Path

import numpy as np
import pytest

from cnibench.analysis import compare, dataset, lead, report, stats, synthetic

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lab-b0"  # a real lab study, histograms only


@pytest.fixture(scope="module")
def noisy():
    """The stored lab study replayed as if 40 % of its runs had been disturbed, with 10 % steal."""
    ds = dataset.load("lab", FIXTURE)
    runs = ds.runs.copy()
    hit = np.random.default_rng(23).uniform(size=len(runs)) < 0.40
    runs.loc[hit, ["valid", "status", "disturbed", "reason"]] = [False, "invalid", True, "disturbed: steal 10 %"]
    runs["steal"] = 0.10
    ds = dataset.Dataset(ds.study, runs, ds.hist, ds.manifest, ds.calibration)
    return ds, stats.analyze(ds, margin=0.15)


def test_noisy_study_says_first_that_the_machine_was_too_disturbed(noisy):
    ds, an = noisy
    text = report.render(ds, an, {}, {"headline": report.headline_table(an), "study_table": report.study_table(ds),
                                      "seed_2016": compare.seed_agreement(an.band_pairs)})
    assert not re.search(r"\bnan\b", text, re.I)  # nowhere in the page, tables of pairs included
    body = text[text.index("<body>"):]
    first = re.search(r"<p[^>]*>(.*?)</p>", body, re.S).group(1)
    assert "too disturbed" in first and "quieter machine" in first
    sentence = lead.headline_sentence(ds, an)  # run-all's last line: the warning first, with its cause
    assert sentence.startswith("The machine was too disturbed to answer") and "most often by steal;" in sentence


def test_noisy_study_prints_no_nan_and_no_absurd_percentage(noisy):
    _, an = noisy
    table = report.headline_table(an)
    cells = [str(v) for col in table.columns if col.endswith(("overhead", "MDE")) for v in table[col]]
    assert cells and not any("nan" in c.lower() for c in cells)
    numbers = [float(x.replace(",", "")) for c in cells for x in re.findall(r"[-+]?\d[\d,]*\.?\d*", c)
               if "pairs" not in c]
    assert max(abs(x) for x in numbers) <= 1000
    h = an.headline
    few = h[(h["blocks"] < 5) & h["overhead_pct"].notna()]
    assert len(few)  # the replay does leave cells with too few pairs
    for _, r in few.iterrows():
        assert lead.interval_text(r) == f"—: {int(r['blocks'])} pairs"
        assert r["verdict"].startswith("cannot separate")


@pytest.fixture(scope="module")
def twin_study(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    truth = synthetic.Truth(overhead={"host": 1.0, "flannel-vxlan": 1.3, "macvlan": 1.0}, between_sigma=0.03)
    synthetic.write_study(raw, modes=("host", "flannel-vxlan", "macvlan"), sizes=("small",), loads=(0.3, 0.5),
                          reps=10, truth=truth, seed=3, duration_s=3, rotate=True, twin=True)
    ds = dataset.build("synthetic", raw)
    return ds, stats.analyze(ds)


def test_twin_is_compared_at_every_percentile_outside_the_modes_family(twin_study):
    ds, an = twin_study
    h = an.headline
    tw = h[h["mode"] == synthetic.TWIN_ARM]
    assert sorted(tw["percentile"]) == sorted(stats.HEADLINE_PERCENTILES)
    assert not tw["verdict"].str.match("slower|faster").any()  # the reference against itself
    for p, g in h[~h["mode"].map(stats.is_twin)].groupby("percentile"):
        from cnibench.analysis import paired
        assert g["p_holm"].to_numpy() == pytest.approx(paired.holm(g["p"].to_numpy()))  # twin not in it
    assert synthetic.TWIN_ARM not in set(an.band_pairs["mode_a"]) | set(an.band_pairs["mode_b"])
    assert not an.tiers["modes"].str.contains("A/A").any()
    assert (h.loc[h["mode"] == "flannel-vxlan", "verdict"] == "slower than host").all()


def test_report_shows_the_twin_on_its_own(twin_study):
    ds, an = twin_study
    tables = {"headline": report.headline_table(an), "twin": report.headline_table(an, twin=True),
              "study_table": report.study_table(ds)}
    assert synthetic.TWIN_ARM not in set(tables["headline"]["mode"])
    assert list(tables["twin"]["mode"]) == [synthetic.TWIN_ARM]
    text = report.render(ds, an, {}, tables)
    assert "id='twin'" in text and "A/A twin: 0 false separation" in text


def test_studies_analysed_differently_are_never_compared(twin_study):
    ds, an = twin_study
    old = stats.analyze(ds, estimator="block-t")
    assert not compare.same_design(old.design, an.design)
    assert compare.same_design(an.design, dict(an.design))
    table = compare.compare_headlines(old.headline, an.headline, ("old", "new"))
    assert table["agree"].isna().all()
    assert compare.agreement_summary(table).startswith("not compared: the studies were analysed by different")
    legacy = old.headline.drop(columns=["estimator"])  # a headline from before issue 23
    assert compare.estimator_of(legacy) == "block-t" and compare.estimator_of({}) == "block-t"


def test_same_data_a_twenty_percent_delay_is_detected_at_p50():
    """Acceptance 2: the stored study's own host runs in two arms of 10 pairs, one with +20 % added
    as a per-request delay drawn from the run's own distribution: found at alpha / 7 at p50."""
    from cnibench.analysis import resample
    ds = dataset.load("lab", FIXTURE)
    for size in ("small", "large"):
        s = resample.summary(resample.resample(ds, size, 0.20, resamples=25, requests=10_000))
        assert s.loc[50.0, "pooled detected"] >= 0.80
        assert s.loc[50.0, "pooled false sep."] <= 0.10 and s.loc[99.0, "pooled false sep."] <= 0.10


def test_dataset_labels_runs_by_arm(twin_study):
    ds, _ = twin_study
    tw = ds.runs[ds.runs["arm"] == synthetic.TWIN_ARM]
    assert len(tw) and (tw["mode"] == synthetic.TWIN_ARM).all() and (tw["run_mode"] == "host").all()
    assert set(report.study_table(ds)["mode"]) == {"host", "flannel-vxlan", "macvlan", synthetic.TWIN_ARM}
