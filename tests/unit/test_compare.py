"""compare.py: two headlines side by side, which study to compare with, the 2016 orderings."""

import json

import numpy as np
import pandas as pd
import pytest

from cnibench.analysis import compare, report, stats, synthetic


def head(rows):
    """A headline table from (size, mode, percentile, overhead %, lo, hi, blocks)."""
    out = []
    for size, mode, p, o, lo, hi, n in rows:
        se = (np.log1p(hi / 100) - np.log1p(lo / 100)) / 2 / 2.2 if o is not None else np.nan
        out.append(dict(size=size, mode=mode, percentile=p, blocks=n, overhead_pct=o, overhead_lo=lo, overhead_hi=hi,
                        log_ratio=np.log1p(o / 100) if o is not None else np.nan, se=se,
                        verdict="slower than host" if o is not None else stats.NOT_SUSTAINED))
    return pd.DataFrame(out)


A = head([("small", "m1", 99.0, 20.0, 10.0, 30.0, 12), ("small", "m2", 99.0, 5.0, 0.0, 10.0, 12),
          ("small", "m3", 99.0, 10.0, 5.0, 15.0, 12), ("small", "m1", 50.0, 1.0, -1.0, 3.0, 12)])
B = head([("small", "m1", 99.0, 25.0, 15.0, 35.0, 12), ("small", "m2", 99.0, 40.0, 30.0, 50.0, 12),
          ("small", "m3", 99.0, None, None, None, 0), ("large", "m1", 99.0, 1.0, 0.0, 2.0, 12)])


def test_side_by_side_says_whether_intervals_agree():
    t = compare.compare_headlines(A, B, ("a", "b")).set_index(["mode", "percentile"])
    assert len(t) == 3  # only cells in both studies
    assert t.loc[("m1", 99.0), "agree"] is True and t.loc[("m2", 99.0), "agree"] is False
    assert t.loc[("m3", 99.0), "agree"] is None and t.loc[("m3", 99.0), "b_overhead"] == stats.NOT_SUSTAINED
    assert t.loc[("m1", 99.0), "a_overhead"] == "+20.0 % [+10.0, +30.0]"
    # Welch on the log ratios: the m2 difference is far outside the noise, the m1 one is not
    assert t.loc[("m2", 99.0), "p_difference"] < 0.001 < t.loc[("m1", 99.0), "p_difference"]
    assert t.loc[("m2", 99.0), "difference_pct"] == pytest.approx(100 * (1.40 / 1.05 - 1))
    summary = compare.agreement_summary(compare.compare_headlines(A, B, ("a", "b")))
    assert summary.startswith("intervals agree in 1 of 2 cells (p50, p99)") and "m2 small p99" in summary
    assert "1 cells without an interval" in summary


def _processed(root, name, design, mtime):
    d = root / name
    d.mkdir(parents=True)
    A.to_csv(d / "stats_headline.csv", index=False)
    (d / "stats_design.json").write_text(json.dumps({"study": name, **design}))
    import os
    os.utime(d / "stats_headline.csv", (mtime, mtime))
    return d


def test_earlier_studies_same_design_newest_first_or_as_named(tmp_path):
    design = {"reference": "host", "sizes": ["small", "large"], "band_loads": [0.3, 0.5], "generator": "openloop",
              "duration_s": 5}
    _processed(tmp_path, "lab", design, 300)
    _processed(tmp_path, "lab-a", {**design, "modes": ["host", "m1"]}, 100)
    _processed(tmp_path, "lab-b", design, 200)
    _processed(tmp_path, "other", {**design, "band_loads": [0.4]}, 400)
    found = compare.earlier_studies("lab", tmp_path)
    assert [p.name for p in found] == ["lab-b", "lab-a"]  # same design, newest first; modes may differ
    assert [p.name for p in compare.earlier_studies("lab", tmp_path, ["other"])] == ["other"]  # named wins
    elsewhere = tmp_path / "clone" / "data" / "processed" / "lab"
    elsewhere.parent.mkdir(parents=True)
    (tmp_path / "lab").rename(elsewhere)
    assert compare.earlier_studies("x", tmp_path, [str(elsewhere)]) == [elsewhere]
    assert compare.earlier_studies("lab-a", tmp_path, ["missing"]) == []


def test_headline_of_reads_a_name_or_a_directory_and_analyses_raw_records(tmp_path):
    synthetic.write_study(tmp_path / "raw", study="s1", modes=("host", "macvlan"), sizes=("small",), loads=(0.3, 0.5),
                          reps=3, seed=1, duration_s=2)
    name, h = report.headline_of("s1", tmp_path / "proc", tmp_path / "raw")  # analysed on the way
    assert name == "s1" and set(h["mode"]) == {"macvlan"}
    assert report.headline_of(str(tmp_path / "proc" / "s1"), tmp_path / "elsewhere")[0] == "s1"
    with pytest.raises(Exception, match="no analysis of 'nope'"):
        report.headline_of("nope", tmp_path / "proc", tmp_path / "raw")


def test_compare_task_needs_exactly_two_studies():
    from invoke import Context, Exit

    import tasks
    with pytest.raises(Exit, match="exactly two studies"):
        tasks.compare(Context(), study=["lab"])


def pairs(rows):
    return pd.DataFrame([dict(size="small", percentile=99.0, mode_a=a, mode_b=b, ratio=r, ratio_lo=lo, ratio_hi=hi,
                              verdict=v) for a, b, r, lo, hi, v in rows])


def test_the_2016_orderings_agree_disagree_or_cannot_tell():
    bp = pairs([
        ("host", "flannel-vxlan", 0.8, 0.7, 0.9, "host lower"),
        ("flannel-vxlan", "flannel-host-gw", 1.2, 1.1, 1.3, "flannel-host-gw lower"),
        ("flannel-vxlan", "flannel-aws-vpc", 0.9, 0.85, 0.95, "flannel-vxlan lower"),
        ("flannel-host-gw", "flannel-aws-vpc", 1.0, 0.9, 1.1, "cannot separate"),
        ("host", "flannel-host-gw", 1.0, 0.95, 1.05, "equivalent"),
        ("host", "flannel-aws-vpc", np.nan, np.nan, np.nan, stats.NOT_SUSTAINED),
    ])
    t = compare.seed_agreement(bp).set_index(["lower", "higher"])["agreement"]
    assert t[("host", "flannel-vxlan")] == "agrees"
    assert t[("flannel-host-gw", "flannel-vxlan")] == "agrees"  # stored as (vxlan, host-gw): flipped
    assert t[("flannel-aws-vpc", "flannel-vxlan")] == "disagrees"
    assert t[("ipvlan", "flannel-vxlan")] == "cannot tell"  # ipvlan is not in this study
    assert t[("flannel-host-gw", "flannel-aws-vpc")] == "cannot tell"  # stated at maximum load only
    here = compare.seed_agreement(bp).set_index(["lower", "higher"])["here"]
    assert here[("flannel-host-gw", "flannel-vxlan")].startswith("flannel-host-gw/flannel-vxlan = 0.833")
    assert len(t) == len(compare.SEED_ORDERINGS)
