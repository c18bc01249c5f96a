"""Study files: the shipped ones load; wrong ones fail naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnibench.infra.config import STUDIES
from cnibench.errors import ConfigError
from cnibench.study.spec import SIZES, load_study, parse_study, resolve_study_path
from cnibench.study.keys import known_modes

BASE = {
    "modes": ["host", "flannel-vxlan"],
    "sizes": ["small", "large"],
    "load": {"fractions": [0.5, 0.1, 0.3]},
    "repetitions": 1,
    "focus": {"range": [0.3, 0.5], "repetitions": 3},
    "workload": {"duration_s": 4, "warmup_s": 1, "connections": 8},
    "seed": 7,
}


def study(**over):
    data = {**BASE, **over}
    return parse_study({k: v for k, v in data.items() if v is not None}, Path("/x/s.yml"))


def problem(**over) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        study(**over)
    return exc.value


def test_valid_study_is_typed_and_sorted():
    s = study()
    assert s.name == "s"
    assert s.modes == ("host", "flannel-vxlan")
    assert s.loads == (0.1, 0.3, 0.5)
    assert s.uses_fractions and s.reference == "host"
    assert s.inventory.name == "testbed.yml"


def test_focus_gives_more_repetitions_only_inside_its_range():
    s = study()
    assert [s.repetitions_at(x) for x in s.loads] == [1, 3, 3]


def test_size_aliases_become_canonical():
    assert study(sizes=["350B", "4KB"]).sizes == ("small", "large")


def test_inventory_is_relative_to_the_study_file():
    assert study(inventory="../inv/two.yml").inventory == Path("/x/../inv/two.yml")


@pytest.mark.parametrize(
    "over, key",
    [
        ({"modes": ["host", "flanel-vxlan"]}, "modes[1]"),
        ({"modes": []}, "modes"),
        ({"modes": ["host", "host"]}, "modes[1]"),
        ({"sizes": ["medium"]}, "sizes[0]"),
        ({"load": {"fractions": [0.1], "rates": [1000]}}, "load"),
        ({"load": {"fractions": [0.1, -0.2]}}, "load.fractions[1]"),
        ({"load": {"fractions": [3]}}, "load.fractions[0]"),
        ({"load": {"fraction": [0.1]}}, "load.fraction"),
        ({"repetitions": 0}, "repetitions"),
        ({"focus": {"range": [0.6, 0.7], "repetitions": 3}}, "focus.range"),
        ({"focus": {"range": [0.5, 0.3], "repetitions": 3}}, "focus.range"),
        ({"reference": "ipvlan"}, "reference"),
        ({"workload": {"duration_s": 0}}, "workload.duration_s"),
        ({"workload": {"conections": 8}}, "workload.conections"),
        ({"workload": {"pin": "yes"}}, "workload.pin"),
        ({"notebooks": "always"}, "notebooks"),
        ({"seed": "abc"}, "seed"),
        ({"mode_settings": {"ipvlan": {}}}, "mode_settings.ipvlan"),
        ({"modez": ["host"]}, "modez"),
        ({"load": {"fractions": [0.3, 0.5], "rotate": "yes"}}, "load.rotate"),
        ({"load": {"fractions": [0.3, 0.5], "rotate": True}}, "load.rotate"),  # with focus
        ({"load": {"fractions": [0.3, 0.5], "rotate": True}, "focus": None, "repetitions": 3}, "repetitions"),
        ({"analysis": {"equivalence_margin": 10}}, "analysis.equivalence_margin"),
        ({"analysis": {"compare_with": [3]}}, "analysis.compare_with"),
        ({"analysis": {"margin": 0.1}}, "analysis.margin"),
    ],
)
def test_errors_name_the_key(over, key):
    err = problem(**over)
    assert err.key == key
    assert err.fix  # every error says what to do


def test_typo_gets_a_suggestion():
    err = problem(modes=["host", "flanel-vxlan"])
    assert "flannel-vxlan" in err.problem


def test_unknown_mode_setting_is_refused_when_modes_are_installed():
    pytest.importorskip("cnibench.modes")
    err = problem(mode_settings={"flannel-vxlan": {"vxlan_prot": 8472}})
    assert err.key == "mode_settings.flannel-vxlan.vxlan_prot"
    assert "vxlan_port" in err.problem


def test_rate_study_may_leave_the_reference_out():
    s = study(modes=["flannel-vxlan"], load={"rates": [1000]}, focus=None)
    assert s.modes == ("flannel-vxlan",)
    assert problem(modes=["flannel-vxlan"]).key == "reference"  # fractions need it


def test_unknown_calibration_setting_is_refused():
    pytest.importorskip("cnibench.workload.calibrate")
    assert problem(calibration={"run_seconds": 2}).key == "calibration.run_seconds"
    assert study(calibration={"run_s": 2}).calibration == {"run_s": 2}


def test_not_a_mapping():
    with pytest.raises(ConfigError) as exc:
        parse_study(["host"], Path("s.yml"))
    assert exc.value.key == "(top level)"


def test_yaml_syntax_error_names_the_line(tmp_path):
    p = tmp_path / "bad.yml"
    p.write_text("modes: [host\nsizes: [small]\n")
    with pytest.raises(ConfigError) as exc:
        load_study(p)
    assert exc.value.key.startswith("line ")


def test_digest_changes_with_the_file(tmp_path):
    p = tmp_path / "a.yml"
    p.write_text("modes: [host]\nload: {rates: [1000]}\n")
    d1 = load_study(p).digest
    p.write_text("modes: [host]\nload: {rates: [2000]}\n")
    assert load_study(p).digest != d1 and len(d1) == 64


def test_bare_name_resolves_to_studies_dir():
    assert resolve_study_path("quick") == STUDIES / "quick.yml"


def test_rotation_and_analysis_settings():
    s = study(load={"fractions": [0.3, 0.5], "rotate": True}, focus=None, repetitions=4,
              analysis={"equivalence_margin": 0.2, "compare_with": "lab-a"})
    assert s.rotate_loads and s.analysis == {"equivalence_margin": 0.2, "compare_with": ["lab-a"]}
    assert not study().rotate_loads and study().analysis == {}


@pytest.mark.parametrize("name", ["lab", "quick", "paper", "sweep"])
def test_shipped_studies_load(name):
    s = load_study(STUDIES / f"{name}.yml")
    assert s.name == name
    assert set(s.modes) <= set(known_modes()) and set(s.sizes) <= set(SIZES)


def test_lab_covers_what_the_issue_asks():
    """Issue 11: >= 6 repetition blocks over the 30-50 % band, both sizes, every mode this kernel
    supports; the equivalence margin and the generator are study keys."""
    from cnibench.study.matrix import estimate, plan

    s = load_study(STUDIES / "lab.yml")
    assert set(s.sizes) == {"small", "large"}
    assert "ipvlan" not in s.modes  # this kernel has no ipvlan module
    assert set(s.modes) == {"host", "flannel-vxlan", "flannel-host-gw", "flannel-aws-vpc", "macvlan",
                            "docker-bridge", "calico-routed", "ebpf-redirect"}
    assert s.loads == (0.3, 0.5) and s.rotate_loads and s.repetitions >= 6
    assert s.workload["generator"] == "openloop" and 0 < s.analysis["equivalence_margin"] < 1
    # 20 minutes including calibration of both sizes and the expected redos, by the cost model
    # re-measured from two real lab studies (matrix.Costs). Inside measurement windows: ~54 %, not
    # the 75 % aimed at; each 4 s window costs ~1.5 s more (warm-up, collection, its notebook),
    # and the redos and calibration are not windows (lab.yml's Budget says so).
    # The A/A twin of host (twin: true, issue 22) adds 20 runs in 10 blocks, ~2 min: 22 minutes
    # until the lead decides what gives way (lab.yml's Budget lists the steps).
    e = estimate(s, plan(s, {"small": 100_000, "large": 60_000}), calibrate_sizes=2)
    assert s.twin and e["runs"] == 180
    assert e["seconds"] <= 22 * 60 and e["measure_fraction"] >= 0.5


def test_sweep_has_the_curve_and_the_maximum_rates():
    from cnibench.study.matrix import estimate, plan

    s = load_study(STUDIES / "sweep.yml")
    assert min(s.loads) == pytest.approx(0.1) and max(s.loads) > 1.0 and 0.9 in s.loads
    assert set(s.modes) == set(load_study(STUDIES / "lab.yml").modes)
    e = estimate(s, plan(s, {"small": 100_000, "large": 60_000}), calibrate_sizes=2)
    assert e["seconds"] <= 20 * 60  # its stated budget


def test_paper_is_the_seed_matrix():
    s = load_study(STUDIES / "paper.yml")
    assert not s.uses_fractions
    assert s.loads[0] == 50_000 and s.loads[-1] == 450_000
    assert set(s.sizes) == {"small", "large"}
    assert {"host", "flannel-vxlan", "flannel-host-gw", "flannel-aws-vpc", "ipvlan"} == set(s.modes)
    assert s.workload["nginx_workers"] == 18 and s.workload["threads"] == 18
    assert s.workload["pin"] is True and s.workload["generator"] == "openloop"
    assert "connections" not in s.workload  # the default, one per 100 req/s: 4,500 at 450k
    assert s.inventory.name == "two-hosts.yml"
