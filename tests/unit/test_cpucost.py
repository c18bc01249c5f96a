"""Issue 25: CPU per request per pinned core against the reference (cpucost.py), `invoke compare`
per measure (compare.py), and the stored lab study without issue 25's fields."""

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cnibench.analysis import (compare, conditional, cpucost, dataset, lead, paired, recordparts, report, stats,
                               synthetic)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lab-b0"  # a real lab study, histograms only
TRUTH = synthetic.Truth(overhead={"host": 1.0, "flannel-vxlan": 1.3, "macvlan": 1.0}, between_sigma=0.03)


def _study(tmp, seed):
    raw = tmp / f"raw{seed}"
    paths = synthetic.write_study(raw, modes=("host", "flannel-vxlan", "macvlan"), sizes=("small",), loads=(0.3, 0.5),
                                  reps=10, truth=TRUTH, seed=seed, duration_s=3, rotate=True, twin=True)
    synthetic.add_issue25_fields(paths, TRUTH, seed=seed, instructions=seed == 3)
    ds = dataset.build("synthetic", raw)
    proc = tmp / f"proc{seed}"
    dataset.save(ds, proc)
    an, cond, cpu = report.analyse_and_save(ds, proc, {})
    return ds, an, cond, cpu, proc


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cpu")
    return _study(tmp, 3), _study(tmp, 4)


def test_window_cpu_per_answered_request_of_each_pinned_core():
    rec = {"counts": {"requests": 1100, "ok": 1000},
           "metrics": {"window_cpu": {"client": {"cpus": [0], "user_s": 0.002, "system_s": 0.001, "softirq_s": 0.0005,
                                                 "irq_s": 0.0, "steal_s": 0.004, "idle_s": 1.0},
                                      "server": {"cpus": [1], "user_s": 0.003, "system_s": 0.002, "softirq_s": 0.001,
                                                 "irq_s": 0.0, "steal_s": 0.0, "idle_s": 1.0}},
                       "instructions": {"client": 2.0e6, "server": None}}}
    f = recordparts.window_cpu_fields(rec)
    assert f["cpu_scope"] == recordparts.PINNED
    assert f["cpu_client_softirq_us"] == pytest.approx(0.5) and f["cpu_server_user_us"] == pytest.approx(3.0)
    assert f["cpu_client_steal_us"] == pytest.approx(4.0)
    assert f["instructions_client_per_request"] == pytest.approx(2000.0)
    assert np.isnan(f["instructions_server_per_request"])
    assert recordparts.window_cpu_fields({"counts": {"ok": 10}, "metrics": {}}) == {}
    machine = dataset.cpu_per_request({**rec["metrics"], "client": {"samples": []}}, 1000.0, {})
    assert machine == {}  # window_cpu / instructions are not hosts of the machine-wide figure


def test_a_constructed_cpu_effect_is_found_on_both_cores_with_intervals_mdes_and_holm(two):
    (_, _, _, cpu, _), _ = two
    assert set(cpu["core"]) == {"client", "server"} and set(cpu["kind"]) == {*cpucost.KINDS, cpucost.INSTRUCTIONS}
    ins = cpu[(cpu["kind"] == cpucost.INSTRUCTIONS) & (cpu["mode"] == "flannel-vxlan")]
    assert len(ins) == 2 and (ins["verdict"] == "slower than host").all() and (ins["unit"] == "instructions").all()
    assert ins["ref_value"].to_numpy() == pytest.approx(2e4, rel=0.02)
    for core in ("client", "server"):
        g = cpu[cpu["core"] == core].set_index(["mode", "kind"])
        for kind in ("system", "softirq"):  # scaled by the mode's 1.3 in the truth
            r = g.loc[("flannel-vxlan", kind)]
            assert r["verdict"] == "slower than host" and r["overhead_lo"] < 30 < r["overhead_hi"]
            assert r["blocks"] == 10 and 0 < r["mde_pct"] < 15
        assert g.loc[("flannel-vxlan", "user"), "verdict"] == "equivalent to host"
        assert (g.loc["macvlan", "overhead_pct"].abs() < 3).all()  # no effect in the truth (seeded draws)
        for kind, f in cpu[(cpu["core"] == core) & ~cpu["mode"].map(stats.is_twin)].groupby("kind"):
            assert f["p_holm"].to_numpy() == pytest.approx(paired.holm(f["p"].to_numpy()))
    twin = cpu[cpu["mode"].map(stats.is_twin)]
    assert len(twin) == 8 and twin["verdict"].eq("equivalent to host").all()
    text = cpucost.summary_text(cpu)
    mde = r"\(MDE \d\.\d–\d\.\d %\)"
    assert re.search(rf"client core 1 more CPU, .* of 2 {mde}; server core 1 more CPU, .* of 2 {mde}", text)
    assert "what the latency differences are made of" in text


def test_the_headline_shows_p50_raw_and_conditional_p99_and_cpu_per_request(two):
    (ds, an, cond, cpu, _), _ = two
    t = lead.with_conditional_and_cpu(report.headline_table(an), dataclasses.replace(
        cond, summary={**cond.summary, "demoted": False}), cpu)
    cols = list(t.columns)
    want = ["p50 overhead", "p99 overhead", "p99 outside steal overhead", "CPU softirq/request client core",
            "CPU softirq/request server core"]
    assert all(c in cols for c in want) and [cols.index(c) for c in want] == sorted(cols.index(c) for c in want)
    vx = t[t["mode"] == "flannel-vxlan"].iloc[0]
    assert re.match(r"\+\d+\.\d % \[\+\d+\.\d, \+\d+\.\d\] slower$", vx["CPU softirq/request server core"])


def test_invoke_compare_agrees_cells_per_measure_and_names_those_that_differ(two):
    (_, _, _, _, pa), (_, _, _, _, pb) = two
    a, b = compare.measures(pa), compare.measures(pb)
    assert set(a["measure"]) == set(compare.MEASURES) and not a["mode"].str.contains("A/A").any()
    table = compare.compare_measures(a, b, ("A", "B"))
    lines = compare.measure_summary(table)
    assert [x.split(":")[0] for x in lines] == list(compare.MEASURES)
    assert all(re.search(r"intervals agree in \d of 2 cells", x) for x in lines)
    moved = b.copy()
    hit = (moved["measure"] == compare.MEASURES[4]) & (moved["mode"] == "macvlan")
    moved.loc[hit, ["overhead_pct", "overhead_lo", "overhead_hi"]] = [80.0, 70.0, 90.0]
    lines = compare.measure_summary(compare.compare_measures(a, moved, ("A", "B")))
    assert lines[4].endswith("differ: macvlan small")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    ds = dataset.load("lab", FIXTURE)
    proc = tmp_path_factory.mktemp("lab")
    dataset.save(ds, proc)
    an, cond, cpu = report.analyse_and_save(ds, proc, {"equivalence_margin": 0.15})
    return ds, an, cond, cpu, proc


def test_the_stored_lab_study_without_issue_25s_fields_still_analyses_and_says_not_recorded(lab):
    ds, an, cond, cpu, proc = lab
    assert not cond.summary["recorded"] and cond.table.empty and cpu.empty
    text = lead.headline_sentence(ds, an, cond=cond, cpu=cpu)
    assert "Tail outside hypervisor steal: not recorded" in text and "pinned core: not recorded" in text
    head = lead.with_conditional_and_cpu(report.headline_table(an), cond, cpu)
    assert (head["p99 outside steal verdict"] == "not recorded").all()
    assert (head["CPU softirq/request client core"] == "not recorded").all()
    tables = {"headline": head, "study_table": report.study_table(ds),
              "seed_2016": compare.seed_agreement(an.band_pairs)}
    page = report.render(ds, an, {}, tables, None, cond, cpu)
    assert "id='outside-steal'" in page and "id='cpu-per-request'" in page and not re.search(r"\bnan\b", page, re.I)
    loaded = conditional.load(proc)
    assert loaded is not None and not loaded.summary["recorded"]
    m = compare.measures(proc)
    assert set(m["measure"]) == {"p50", "p99"} and len(m[m["measure"] == "p99"]) == 14
    lines = compare.measure_summary(compare.compare_measures(m, m, ("a", "b")))
    k = re.match(r"p99: intervals agree in (\d+) of \1 cells(; (\d+) cells without an interval)?", lines[1])
    assert k and int(k.group(1)) + int(k.group(3) or 0) == 14  # the same study agrees with itself
    assert lines[2] == "p99 outside steal: not in both studies"


def test_a_study_analysed_before_issue_25_compares_on_p50_and_p99(lab, tmp_path):
    *_, proc = lab
    pd.read_csv(proc / "stats_headline.csv").to_csv(tmp_path / "stats_headline.csv", index=False)
    m = compare.measures(tmp_path)  # no stats_conditional.csv, no stats_cpu.csv
    assert set(m["measure"]) == {"p50", "p99"}


def test_the_report_beside_an_earlier_study_agrees_per_measure(two):
    (_, _, _, _, pa), (ds, an, cond, cpu, pb) = two
    by = report.repeatability_measures(pb.name, pb.parent)
    assert by is not None and set(by["measure"]) == set(compare.MEASURES) and set(by["a"]) == {"synthetic"}
    tables = {"headline": report.headline_table(an), "study_table": report.study_table(ds),
              "repeatability": report.repeatability(pb.name, an, pb.parent)[1], "repeatability_measures": by}
    page = report.render(ds, an, {}, tables, None, cond, cpu)
    assert "Per measure: p50: intervals agree in" in page and "p99 outside steal: intervals agree in" in page


def test_the_compare_task_prints_the_cells_agreed_per_measure(two, capsys):
    import tasks
    from invoke import Context
    (*_, pa), (*_, pb) = two
    tasks.compare(Context(), study=[str(pa), str(pb)])
    out = capsys.readouterr().out
    assert "| measure | size | mode |" in out
    for m in compare.MEASURES:
        assert re.search(rf"^{re.escape(m)}: intervals agree in \d of 2 cells", out, re.M)


def test_a_core_with_no_idle_time_in_the_reference_is_withheld_with_the_reason():
    """The generator's core spins (idle ~0.4 % of the window): its CPU split is no cost, so withheld;
    a core that idles between requests (30 %) stands; without the idle figure nothing is withheld."""
    att = pd.DataFrame({"mode": ["host", "host", "host", "macvlan"],
                        "cpu_client_idle_share": [0.004, 0.005, 0.003, 0.0],
                        "cpu_server_idle_share": [0.31, 0.29, 0.30, 0.25]})
    reason = cpucost.busy_reason(att, "client")
    assert reason.startswith("withheld: the client core is busy by design (idle 0.4 %")
    assert cpucost.busy_reason(att, "server") is None
    assert cpucost.busy_reason(att.drop(columns=["cpu_client_idle_share"]), "client") is None
    table = pd.DataFrame({"size": ["small"] * 2, "mode": ["macvlan"] * 2, "core": ["client", "server"],
                          "kind": ["softirq"] * 2, "verdict": [reason, "slower"], "mde_pct": [float("nan"), 14.0]})
    text = cpucost.summary_text(table)
    assert "client core withheld (the client core is busy by design" in text and "server core 1 more CPU" in text
