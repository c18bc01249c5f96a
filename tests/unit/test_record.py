"""The typed run record (record.py): schema-1 records upgrade on read, the record round-trips
through its type, a 4 s lab run's record stays within the budget; the planner's arms and the
A/A twin (matrix.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cnibench import record, results
from cnibench.analysis import dataset, synthetic
from cnibench.errors import ConfigError
from cnibench.study import matrix
from cnibench.study.spec import load_study, parse_study


def _schema1(rec: dict) -> dict:
    """The same record as the code before issue 22 wrote it."""
    old = {k: v for k, v in rec.items() if k not in ("arm", "implementation", "node")}
    return {**old, "schema": 1}


def test_a_schema_1_record_loads_with_arm_implementation_and_node_filled(tmp_path):
    rec = synthetic.make_record("s", "macvlan", "small", 0.3, 1, synthetic.Truth(), np.random.default_rng(4), duration_s=2)
    path = results.record_path(tmp_path, rec["run_id"])
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_schema1(rec)))
    back = results.read_record(path)
    assert back is not None and back["schema"] == record.SCHEMA_VERSION == 2
    assert (back["arm"], back["implementation"], back["node"]) == ("macvlan", "project", "bare")
    assert {k: v for k, v in back.items() if k not in ("arm", "implementation", "node", "schema")} == \
        {k: v for k, v in rec.items() if k not in ("arm", "implementation", "node", "schema")}
    # and the analysis reads it as it read the old one
    row = dataset.record_row(back)
    assert row["mode"] == "macvlan" and row["valid"] == (rec["status"] == "ok")


def test_the_record_round_trips_through_its_type_keeping_unknown_keys():
    rec = synthetic.make_record("s", "host", "small", 0.5, 2, synthetic.Truth(), np.random.default_rng(5), duration_s=2)
    rec.update(hygiene={"disturbed": False, "flags": ["hiccup"]}, notes=["slow stop"], attempt=2,
               earlier_attempts=[{"attempt": 1}], later_part={"x": 1})
    typed = record.RunRecord.from_json(rec)
    assert typed.attempts.attempt == 2 and typed.counts.requests == rec["counts"]["requests"]
    assert typed.to_json() == rec
    assert record.RunRecord.from_json(typed.to_json()).to_json() == rec


def test_new_record_has_the_arm_of_the_mode_unless_given():
    kw = dict(run_id="s/host/small/1/rep1", study="s", mode="host", size="small", target_rate=1.0,
              load_fraction=None, repetition=1, generator="openloop", settings={})
    assert results.new_record(**kw)["arm"] == "host"
    twin = results.new_record(**{**kw, "run_id": "s/host-A-A/small/1/rep1"}, arm="host·A/A")
    assert (twin["arm"], twin["mode"]) == ("host·A/A", "host")


def test_a_4s_lab_record_stays_within_the_budget(tmp_path):
    """lab.yml's window and warm-up, the sampler's per-CPU samples on both hosts, the hygiene
    figures of a run: the record as written must stay under RECORD_BUDGET_BYTES."""
    lab = load_study(Path(__file__).resolve().parents[2] / "studies" / "lab.yml")
    window, warm = float(lab.workload["duration_s"]), float(lab.workload["warmup_s"])
    rec = synthetic.make_record("lab", "flannel-vxlan", "large", 0.5, 1, synthetic.Truth(), np.random.default_rng(6),
                                duration_s=int(window), warmup_s=int(np.ceil(warm)))
    rec["hygiene"] = {"figures": {f"f{i}": 1.0 for i in range(40)}, "checks": [{"guard": f"g{i}", "ok": True} for i in range(8)],
                      "flags": [], "disturbed": False, "hiccup": {"client": [[0.1, 120]] * 50}}
    path = results.write_record(tmp_path, rec)
    assert path.stat().st_size <= record.RECORD_BUDGET_BYTES


def _study(**over):
    data = {"name": "t", "seed": 7, "modes": ["host", "macvlan", "flannel-vxlan"], "sizes": ["small"],
            "load": {"rates": [1000, 2000]}, "repetitions": 6, **over}
    return parse_study(data, Path("t.yml"))


def test_the_twin_runs_the_reference_again_in_every_block_under_its_own_arm():
    plain, twin = matrix.plan(_study()), matrix.plan(_study(twin=True))
    assert len(twin) == len(plain) * 4 // 3
    aa = [r for r in twin if r.arm == "host·A/A"]
    assert aa and {r.mode for r in aa} == {"host"} and all(r.run_id.startswith("t/host-A-A/") for r in aa)
    assert len({r.run_id for r in twin}) == len(twin)  # every arm's records apart
    blocks = matrix.blocks(twin)
    reps = sorted({b.repetition for b in blocks})
    assert all(sum(b.arm == "host·A/A" for b in blocks if b.repetition == k) == 1 for k in reps)
    positions = {[b.arm for b in blocks if b.repetition == k].index("host·A/A") for k in reps}
    assert len(positions) > 1  # shuffled like the other arms, not always in one place
    # the other arms keep their run ids and layout
    assert {r.run_id for r in plain} == {r.run_id for r in twin if r.arm != "host·A/A"}
    # and the budget counts the twin
    s = _study(twin=True)
    assert matrix.estimate(s, twin)["runs"] == len(twin) > matrix.estimate(_study(), plain)["runs"]


def test_a_study_without_twin_plans_as_before():
    runs = matrix.plan(_study())
    assert all(r.arm == r.mode for r in runs)
    assert [b.arm for b in matrix.blocks(runs)] == [b.mode for b in matrix.blocks(runs)]


def test_twin_is_checked():
    with pytest.raises(ConfigError, match="twin"):
        _study(twin="yes")
    with pytest.raises(ConfigError, match="twin"):
        parse_study({"modes": ["macvlan"], "load": {"rates": [1000]}, "twin": True}, Path("t.yml"))


def test_arm_path_keeps_mode_names_and_makes_others_path_safe():
    assert matrix.arm_path("flannel-vxlan") == "flannel-vxlan"
    assert matrix.arm_path("host·A/A") == "host-A-A"


def test_the_latency_parts_the_type_does_not_name_survive_a_round_trip():
    """send_lag, pacing and the conditional histograms (issues 9, 21, 25) are written by the
    workload; the typed record must carry them to disk, not drop them."""
    from cnibench.record import Latency

    d = {"unit": "us", "histogram": "H", "histogram_uncorrected": None, "percentiles": {"50": 40},
         "send_lag": {"p99_us": 12}, "pacing": {"dispersion": 1.0}, "outside_steal": {"left_out_share": 0.01},
         "outside_steal_wide": {}, "percentiles_uncorrected": {"50": 38}, "source": "x", "correction": {}}
    assert Latency.from_json(d).to_json() == d
