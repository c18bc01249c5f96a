"""The matrix: every point planned once, seeded random order per block, resume is pure."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from cnibench.study import matrix
from cnibench.errors import PlanError
from cnibench.study.spec import parse_study

MAX = {"small": 10_000, "large": 6_000}


def study(**over):
    data = {
        "name": "t",
        "modes": ["host", "flannel-vxlan", "flannel-host-gw", "macvlan"],
        "sizes": ["small", "large"],
        "load": {"fractions": [0.1, 0.3, 0.4, 0.5, 0.9]},
        "repetitions": 1,
        "focus": {"range": [0.3, 0.5], "repetitions": 3},
        "seed": 42,
        **over,
    }
    return parse_study(data, Path("t.yml"))


def test_every_point_once_per_repetition():
    runs = matrix.plan(study(), MAX)
    # 4 modes x 2 sizes x (5 points + 2 extra repetitions of 3 focus points)
    assert len(runs) == 4 * 2 * (5 + 2 * 3)
    assert len({r.run_id for r in runs}) == len(runs)
    per_point = Counter((r.mode, r.size, r.load) for r in runs)
    assert per_point[("host", "small", 0.1)] == 1
    assert per_point[("host", "small", 0.4)] == 3
    assert [r.order for r in runs] == list(range(len(runs)))


def test_fractions_become_rates_of_the_reference_max():
    runs = matrix.plan(study(), MAX)
    r = next(r for r in runs if r.size == "large" and r.load == 0.4)
    assert r.target_rate == 2400 and r.load_fraction == 0.4
    assert r.run_id == f"t/{r.mode}/large/2400/rep{r.repetition}"


def test_fraction_study_without_calibration_is_a_plan_error():
    with pytest.raises(PlanError, match="calibrat"):
        matrix.plan(study(), None)


def test_absolute_rates_need_no_calibration():
    runs = matrix.plan(study(load={"rates": [1000, 5000]}, focus=None))
    assert {r.target_rate for r in runs} == {1000, 5000}
    assert all(r.load_fraction is None for r in runs)


def test_colliding_rates_are_refused():
    with pytest.raises(PlanError, match="same run"):
        matrix.plan(study(), {"small": 3, "large": 3})


def test_order_is_seeded_and_blocks_follow_repetitions():
    a, b = matrix.plan(study(), MAX), matrix.plan(study(), MAX)
    assert [r.run_id for r in a] == [r.run_id for r in b]
    c = matrix.plan(study(seed=43), MAX)
    assert [r.run_id for r in a] != [r.run_id for r in c]
    assert sorted(r.run_id for r in a) == sorted(r.run_id for r in c)
    reps = [r.repetition for r in a]
    assert reps == sorted(reps)  # repetition blocks run one after the other


def test_one_block_per_mode_and_repetition():
    runs = matrix.plan(study(), MAX)
    blocks = matrix.blocks(runs)
    assert len(blocks) == 4 * 3
    assert len({(b.repetition, b.mode) for b in blocks}) == len(blocks)
    assert sum(len(b.runs) for b in blocks) == len(runs)


def test_modes_and_rates_are_actually_shuffled():
    runs = matrix.plan(study(), MAX)
    mode_orders = {tuple(b.mode for b in matrix.blocks(runs) if b.repetition == k) for k in (1, 2, 3)}
    assert len(mode_orders) > 1  # the mode order differs between repetitions
    first = matrix.blocks(runs)[0].runs
    cells = [(r.size, r.load) for r in first]
    assert cells != sorted(cells)


def test_more_repetitions_do_not_reorder_earlier_blocks():
    a = matrix.plan(study(), MAX)
    b = matrix.plan(study(focus={"range": [0.3, 0.5], "repetitions": 5}), MAX)
    n = len(a)
    assert [r.run_id for r in b[:n]] == [r.run_id for r in a]


def test_pending_keeps_order_and_skips_complete():
    runs = matrix.plan(study(), MAX)
    done = {runs[0].run_id, runs[5].run_id}
    todo = matrix.pending(runs, done)
    assert len(todo) == len(runs) - 2
    assert [r.order for r in todo] == sorted(r.order for r in todo)
    assert not done & {r.run_id for r in todo}
    assert matrix.pending(runs, {r.run_id for r in runs}) == []


def test_pending_blocks_after_a_partial_block():
    runs = matrix.plan(study(), MAX)
    first = matrix.blocks(runs)[0]
    todo = matrix.pending(runs, {first.runs[0].run_id})
    again = matrix.blocks(todo)
    assert again[0].mode == first.mode and len(again[0].runs) == len(first.runs) - 1


def test_completion_counts():
    runs = matrix.plan(study(modes=["host"], sizes=["small"]), MAX)
    statuses = {runs[0].run_id: "ok", runs[1].run_id: "failed"}
    (row,) = matrix.completion(runs, statuses)
    assert row == {"mode": "host", "size": "small", "planned": len(runs), "ok": 1, "invalid": 0, "failed": 1, "missing": len(runs) - 2}


def test_rotation_runs_one_load_per_repetition_each_load_equally_often():
    s = study(load={"fractions": [0.3, 0.5], "rotate": True}, focus=None, repetitions=6)
    runs = matrix.plan(s, MAX)
    assert len(runs) == 4 * 2 * 6  # modes x sizes x repetitions, one load each
    for k in range(1, 7):
        loads = {r.load for r in runs if r.repetition == k}
        assert len(loads) == 1  # every mode and size of a repetition at the same load: pairs
    per_load = Counter(r.load for r in runs)
    assert per_load[0.3] == per_load[0.5]
    assert [r.run_id for r in matrix.plan(s, MAX)] == [r.run_id for r in runs]  # deterministic
    more = matrix.plan(study(load={"fractions": [0.3, 0.5], "rotate": True}, focus=None, repetitions=8), MAX)
    assert [r.run_id for r in more[:len(runs)]] == [r.run_id for r in runs]  # earlier blocks stay


def test_estimate_adds_windows_and_overheads():
    s = study(load={"fractions": [0.3, 0.5], "rotate": True}, focus=None, repetitions=2,
              workload={"duration_s": 5, "warmup_s": 0.5, "connections": 8}, notebooks="none")
    runs = matrix.plan(s, MAX)
    costs = matrix.Costs(per_run_s=0.5, per_block_s=1.0, quiet_check_s=0.5, calibration_per_size_s=10.0,
                         check_probe_per_size_s=2.0, fixed_s=3.0, analysis_s=7.0)
    e = matrix.estimate(s, runs, calibrate_sizes=1, costs=costs)
    n, blocks = len(runs), 4 * 2  # 4 modes x 2 repetitions
    assert e["runs"] == n == 16 and e["blocks"] == blocks
    assert e["seconds"] == pytest.approx(n * (5 + 0.5 + 0.5) + blocks * 1.0 + 2 * 0.5 + 10.0 + 3.0 + 7.0)
    assert e["measure_fraction"] == pytest.approx(n * 5 / e["seconds"])
    assert "min for 16 runs in 8 blocks" in matrix.format_estimate(e) and "budget" not in matrix.format_estimate(e)
    assert matrix.estimate(s, [], costs=costs)["runs"] == 0
    # a saved calibration costs its check probe; rendered notebooks cost their time after the matrix
    checked = matrix.estimate(dataclasses.replace(s, notebooks="warm"), runs, check_sizes=2,
                              costs=dataclasses.replace(costs, notebook_s=0.25))
    assert checked["seconds"] == pytest.approx(e["seconds"] - 10.0 + 2 * 2.0 + n * 0.25)
    # budget_s: printed with the estimate, and what it leaves for redone repetitions
    capped = matrix.estimate(dataclasses.replace(s, budget_s=e["seconds"] + 60), runs, calibrate_sizes=1, costs=costs)
    assert capped["redo_room_s"] == pytest.approx(60) and "leaves 60 s for redoing" in matrix.format_estimate(capped)
    over = matrix.estimate(dataclasses.replace(s, budget_s=e["seconds"] - 30), runs, calibrate_sizes=1, costs=costs)
    assert "over by 30 s, no repetition will be redone" in matrix.format_estimate(over)


def test_estimate_study_counts_only_what_is_left(tmp_path):
    import json

    from cnibench.study import status as study_status
    from cnibench.analysis import synthetic
    from cnibench.results import write_record

    s = study(name="t", load={"fractions": [0.3, 0.5], "rotate": True}, focus=None, repetitions=2,
              workload={"duration_s": 5, "warmup_s": 0.5, "connections": 8})
    fresh = study_status.estimate_study(s, tmp_path / "no-inventory.yml", tmp_path)
    assert fresh["runs"] == 4 * 2 * 2 and fresh["parts"]["calibration"] > 0  # both sizes to calibrate
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "manifest.json").write_text(json.dumps(
        {"schema": 1, "calibration": {"reference": "host", "max_rates": {"small": 100_000.0, "large": 60_000.0}}}))
    run = matrix.plan(s, {"small": 100_000.0, "large": 60_000.0})[0]
    rec = synthetic.make_record("t", run.mode, run.size, run.load, run.repetition, synthetic.Truth(),
                                __import__("numpy").random.default_rng(0), duration_s=1)
    assert rec["run_id"] == run.run_id
    write_record(tmp_path, rec)
    left = study_status.estimate_study(s, tmp_path / "no-inventory.yml", tmp_path)
    assert left["runs"] == fresh["runs"] - 1 and left["parts"]["calibration"] == 0


def test_run_all_says_how_long_before_it_starts(tmp_path):
    from cnibench.infra.config import STUDIES
    from cnibench.pipeline import estimate_line
    from cnibench.study.spec import load_study

    from types import SimpleNamespace

    # an inventory with no saved calibration: both sizes count as to calibrate
    line = estimate_line(load_study(STUDIES / "lab.yml"), SimpleNamespace(name="none-saved"), tmp_path)
    # 8 modes + host's A/A twin (twin: true) x 2 sizes x 10 repetitions, one load each
    assert line.startswith("estimated duration: ") and "180 runs in 90 blocks" in line and "calibration" in line


def test_calibration_probes_are_printed_one_line_each():
    from cnibench.study import calibration as study_calibration

    lines: list[str] = []
    show = study_calibration._probe_printer(lines.append, "host", "small")
    show({"rate": 2000.0, "ok": True, "latency_us": 1500, "percentile": 90, "disturbed": False})
    show({"rate": 64000.0, "ok": False, "latency_us": 250_000, "percentile": 90, "disturbed": False})
    show({"rate": 8000.0, "ok": False, "latency_us": None, "percentile": 90, "disturbed": True})
    show({"rate": 9000.0, "ok": True, "latency_us": 900, "percentile": 90, "disturbed": True, "disturbed_by": "steal 3.1 %"})
    show({"saturation": 70000.0})
    assert lines == ["  host/small: 2000 req/s: p90 1.50 ms: ok", "  host/small: 64000 req/s: p90 250.00 ms: too much",
                     "  host/small: 8000 req/s: p90 -: disturbed, again", "  host/small: 9000 req/s: p90 0.90 ms: disturbed (steal 3.1 %), again",
                     "  host/small: closed-loop saturation 70000 req/s"]
