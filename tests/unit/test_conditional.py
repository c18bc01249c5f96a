"""Issue 25: the tail outside hypervisor steal beside the raw one (conditional.py) and the record
fields it reads (recordparts.py), on constructed studies: deterministic, a few seconds."""

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest

from cnibench.analysis import conditional, dataset, lead, recordparts, report, sections, stats, synthetic

MODES = ("host", "flannel-vxlan", "macvlan", "ipvlan")
TRUTH = synthetic.Truth(overhead={"host": 1.0, "flannel-vxlan": 1.3, "macvlan": 1.0, "ipvlan": 1.02},
                        between_sigma=0.03)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """10 repetitions, 2 band loads in rotation, an A/A twin; macvlan's runs leave out 3 points
    more of their requests than host's (5 % against 2 %), every other arm's the same share."""
    raw = tmp_path_factory.mktemp("raw")
    paths = synthetic.write_study(raw, modes=MODES, sizes=("small",), loads=(0.3, 0.5), reps=10, truth=TRUTH,
                                  seed=3, duration_s=3, rotate=True, twin=True)
    synthetic.add_issue25_fields(paths, TRUTH, seed=5, share=lambda r: 0.05 if r["mode"] == "macvlan" else 0.02)
    ds = dataset.build("synthetic", raw)
    an = stats.analyze(ds)
    return ds, an, conditional.analyze(ds, an)


def _row(c, mode):
    return c.table[c.table["mode"] == mode].iloc[0]


def test_a_cell_whose_left_out_share_differs_by_3_points_is_withheld_alone_with_its_reason(study):
    _, _, c = study
    withheld = c.table[c.table["withheld"].fillna("") != ""]
    assert list(withheld["mode"]) == ["macvlan"]
    r = _row(c, "macvlan")
    assert re.search(r"left-out share \+3\.0 pp from host's, not shown within ±1 pp \(paired TOST over 10 blocks",
                     r["withheld"])
    assert r["verdict"] == "withheld: " + r["withheld"] and pd.isna(r["overhead_pct"])
    assert r["share_diff_pp"] == pytest.approx(3.0, abs=0.1)
    assert c.summary["withheld"] == 1 and c.summary["cells"] == 3
    for m in ("flannel-vxlan", "ipvlan", synthetic.TWIN_ARM):  # the others: figures beside the raw ones
        r = _row(c, m)
        assert r["withheld"] == "" and r["share_p_tost"] < 0.05 and np.isfinite(r["overhead_pct"])
        assert np.isfinite(r["mde_pct"]) and isinstance(r["wide_verdict"], str) and r["raw_verdict"]
    assert _row(c, "flannel-vxlan")["verdict"] == "slower than host"


def test_the_conditional_holm_family_holds_the_non_withheld_modes_only(study):
    _, _, c = study
    kept = c.table[(c.table["withheld"] == "") & ~c.table["mode"].map(stats.is_twin)]
    from cnibench.analysis import paired
    assert kept["p_holm"].to_numpy() == pytest.approx(paired.holm(kept["p"].to_numpy()))
    twin = _row(c, synthetic.TWIN_ARM)  # the twin's own family (its false-positive check)
    assert twin["p_holm"] == pytest.approx(twin["p"]) and not str(twin["verdict"]).startswith(("slower", "faster"))


def test_a_record_that_withholds_its_conditional_histogram_withholds_its_cell(study):
    ds, an, _ = study
    runs = ds.runs.copy()
    hit = runs.index[(runs["mode"] == "ipvlan") & runs["valid"]][0]
    runs.loc[hit, recordparts.withheld_col(recordparts.CONDITIONAL)] = "steal split unknown on the client core"
    c = conditional.analyze(dataclasses.replace(ds, runs=runs), an)
    assert _row(c, "ipvlan")["withheld"] == "steal split unknown on the client core (1 of 20 runs)"
    assert set(c.table.loc[c.table["withheld"] != "", "mode"]) == {"ipvlan", "macvlan"}


def test_a_placebo_that_changes_a_raw_verdict_flags_the_study(study):
    ds, an, c = study
    assert c.table["placebo_same"].map(lambda v: isinstance(v, (bool, np.bool_))).all()
    assert c.table["placebo_verdict"].map(lambda v: isinstance(v, str)).all()
    runs = ds.valid.set_index(["mode", "repetition", "target_rate"])["run_id"]
    placebo = dict(ds.variants["outside_steal_placebo"])
    for (mode, rep, rate), rid in runs.items():  # flannel-vxlan's placebo made host's: the effect vanishes
        if mode == "flannel-vxlan":
            placebo[rid] = ds.hist[runs[("host", rep, rate)]]
    c2 = conditional.analyze(dataclasses.replace(ds, variants={**ds.variants, "outside_steal_placebo": placebo}), an)
    r = _row(c2, "flannel-vxlan")
    assert r["raw_verdict"] == "slower than host" and not r["placebo_same"]
    assert "flannel-vxlan small" in c2.summary["placebo_changed"]
    assert "Placebo check FAILED" in conditional.summary_text(c2.summary)


def _table(ratios, withheld):
    return pd.DataFrame({"size": "small", "mode": [f"m{i}" for i in range(len(ratios))], "se_ratio": ratios,
                         "withheld": withheld, "placebo_same": True, "verdict": "inconclusive"})


def test_the_median_se_ratio_above_0_7_demotes_the_conditional_figures_from_the_headline(study):
    s = conditional.summarize(_table([0.5, 0.6, 0.65, np.nan], ["", "", "", "too few"]))
    assert s["se_ratio_median"] == pytest.approx(0.6) and not s["demoted"]
    s = conditional.summarize(_table([0.8, 0.9, 0.5, 0.1], ["", "", "", "left-out share"]))  # withheld: not counted
    assert s["se_ratio_median"] == pytest.approx(0.8) and s["demoted"]
    assert "leave the headline table" in conditional.summary_text(s)
    ds, an, c = study
    head = report.headline_table(an)
    kept = lead.with_conditional_and_cpu(head, dataclasses.replace(c, summary={**c.summary, "demoted": False}))
    assert list(kept.columns).index("p99 outside steal overhead") == list(kept.columns).index("p99 verdict") + 1
    demoted = lead.with_conditional_and_cpu(head, dataclasses.replace(c, summary={**c.summary, "demoted": True}))
    assert not any("outside steal" in col for col in demoted.columns)
    page = "".join(sections.conditional_section(dataclasses.replace(c, summary={**c.summary, "demoted": True})))
    assert "left out of the headline table" in page and "outside-steal-table" in page


def test_the_answer_and_the_report_show_raw_and_conditional_side_by_side(study):
    ds, an, c = study
    text = lead.headline_sentence(ds, an, cond=c)
    assert "p99: " in text and "Tail outside hypervisor steal (p99, beside the raw one): 1 of 3 cells withheld" in text
    t = sections.conditional_table(c)
    assert {"raw p99 overhead", "outside steal overhead", "2× L, D verdict", "placebo = raw"} <= set(t.columns)
    assert not t.astype(str).apply(lambda col: col.str.contains(r"\bnan\b", case=False)).any().any()


def test_record_fields_old_records_and_a_core_not_observed():
    old = {"latency": {"histogram": "x"}, "counts": {"ok": 10}}
    row, enc = recordparts.conditional_fields(old)
    assert enc == {} and np.isnan(row["outside_steal_share"]) and row["outside_steal_withheld"] == "not recorded"
    one = {"latency": {"outside_steal": {"histogram": "H", "left_out_share": 0.03, "cores": ["client"]}}}
    row, enc = recordparts.conditional_fields(one)
    assert enc == {} and row["outside_steal_withheld"] == "steal on the server core not observed"
    both = {"latency": {"outside_steal": {"hist": "H", "left_out_share": 0.03, "cores": ["client", "server"],
                                          "withheld": None}}}
    row, enc = recordparts.conditional_fields(both)
    assert enc == {"outside_steal": "H"} and row["outside_steal_share"] == 0.03 and row["outside_steal_withheld"] == ""


def test_the_conditional_histograms_survive_save_and_load(study, tmp_path):
    ds, _, _ = study
    dataset.save(ds, tmp_path)
    back = dataset.load("synthetic", tmp_path)
    assert set(back.variants) == set(recordparts.VARIANTS)
    rid = next(iter(ds.variants["outside_steal"]))
    assert (back.variants["outside_steal"][rid][2] == ds.variants["outside_steal"][rid][2]).all()
    assert "outside_steal_share" in back.runs and back.runs["cpu_scope"].eq(recordparts.PINNED).all()


def test_per_load_figures_are_descriptive_beside_the_band(study, tmp_path):
    ds, _, c = study
    assert set(c.loads["target_rate"]) == set(ds.runs["target_rate"]) and len(c.loads) == 2 * 5
    host = c.loads[c.loads["mode"] == "host"]
    assert (host["raw_ratio"] == 1.0).all() and (host["outside_steal_ratio"] == 1.0).all()
    mac = c.loads[c.loads["mode"] == "macvlan"]
    assert mac["left_out_pct"].to_numpy() == pytest.approx(5.0, abs=0.1)
    assert (c.loads["outside_steal_p99_us"] < c.loads["raw_p99_us"]).all()  # the thinner tail drawn
    conditional.save(c, tmp_path)
    back = conditional.load(tmp_path)
    assert back.summary == c.summary and len(back.table) == len(c.table) and len(back.loads) == len(c.loads)


def test_with_the_raw_histograms_as_outside_steal_the_conditional_figures_are_the_raw_ones(study):
    ds, an, _ = study
    same = dataclasses.replace(ds, variants={v: dict(ds.hist) for v in recordparts.VARIANTS})
    c = conditional.analyze(same, an)
    kept = c.table[c.table["withheld"] == ""]
    assert len(kept) == 3 and kept["overhead_pct"].to_numpy() == pytest.approx(kept["raw_overhead_pct"].to_numpy())
    assert kept["se_ratio"].to_numpy() == pytest.approx(1.0) and c.table["placebo_same"].all()
    assert (kept["verdict"] == kept["raw_verdict"]).all()


def test_a_mode_not_sustained_in_the_band_is_so_beside_the_raw_figure_too(study):
    ds, _, _ = study
    runs = ds.runs.copy()
    hit = runs.index[(runs["mode"] == "ipvlan") & runs["valid"]][0]
    runs.loc[hit, ["valid", "status", "reason"]] = [False, "invalid", "invalid: achieved 91% of target"]
    ds2 = dataclasses.replace(ds, runs=runs)
    c = conditional.analyze(ds2, stats.analyze(ds2))
    r = _row(c, "ipvlan")
    assert r["raw_verdict"] == stats.NOT_SUSTAINED == r["verdict"] and pd.isna(r["overhead_pct"])
    assert "nan" not in " ".join(sections.conditional_table(c).astype(str).to_numpy().ravel()).lower()
