"""Issue 11's acceptance by simulation: what the shipped lab design tells at stated spreads.

A simulated study has a reference and 6 other modes; a run's log p99 is the mode's true effect
+ a repetition effect (SD 0.05, shared by every mode of a repetition) + a block effect (one mode
set up once in one repetition) + a run effect; a block's value is the mean over its band loads.
The comparisons go through paired.family, the code the headline uses (test_stats.py checks that
the headline is family() on the block differences).

SPREADS: standard deviations of log p99 between blocks and between runs inside a block. 0.05 and
0.10 are the issue's; "guess" is ours until real lab studies give values: the intervals the
issue quotes for the old closed-loop generator imply a total run-to-run SD of log p99 of about
0.10-0.21; with the open-loop generator and the hygiene work we assume ~0.12, split 0.07
between blocks and 0.10 between runs. Replace the row with measured values (the lead).
"""

from pathlib import Path

import pytest

from cnibench.analysis import synthetic
from cnibench.study.matrix import loads_of_repetition
from cnibench.study.spec import load_study

STUDIES = Path(__file__).resolve().parents[2] / "studies"
SPREADS = {  # name: (block-to-block SD, run-to-run SD) of log p99
    "0.05": (0.05, 0.05),
    "guess": (0.07, 0.10),
    "0.10": (0.10, 0.10),
}
STUDIES_SIMULATED = 2000  # x 6 comparisons; ~0.1 s per design


def lab_design():
    """(blocks, loads per block, modes compared with the reference, margin) of studies/lab.yml."""
    s = load_study(STUDIES / "lab.yml")
    return s.repetitions, len(loads_of_repetition(s, 1)), len(s.modes) - 1, s.analysis["equivalence_margin"]


def simulate(spread, blocks=None, loads_per_block=None, margin=None, seed=0):
    b, l, m, mg = lab_design()
    sb, sr = SPREADS[spread]
    return synthetic.simulate_design(blocks or b, loads_per_block or l, m, sb, sr, margin or mg,
                                     studies=STUDIES_SIMULATED, seed=seed)


def test_lab_design_is_what_the_simulations_assume():
    assert lab_design() == (10, 1, 7, 0.15)  # 7 modes against host since ebpf-redirect (issue 15); 10 blocks since 2026-11-28 (budget)


@pytest.mark.parametrize("spread", SPREADS)
@pytest.mark.parametrize("design", [None, (6, 2)], ids=["lab-12x1", "6x2"])
def test_aa_no_false_separations_and_intervals_cover(spread, design):
    """No true difference: <= 5 % of comparisons separated, >= 93 % of 95 % intervals cover 0
    (with 6 blocks as the issue asks, and with lab.yml's 12)."""
    blocks, lpb = design or (None, None)
    r = simulate(spread, blocks, lpb, seed=1)
    assert r["false_separation"] <= 0.05
    assert r["coverage"] >= 0.93


@pytest.mark.parametrize("spread", ["0.05", "guess"])
def test_known_effect_is_detected_with_the_lab_design(spread):
    """+30 % p99 on one mode: called slower than host in >= 80 % of simulated lab studies.
    (Measured with 10 blocks: 100 % / 86 %; 6 blocks of both loads would give 98 % / 64 %.)"""
    assert simulate(spread, seed=2)["detected"] >= 0.80


def test_known_effect_at_the_largest_spread_is_what_the_budget_costs():
    """At spreads of 0.10/0.10 the 10 blocks that fit 20 minutes detect +30 % in ~73 % of studies,
    under the issue's 80 %; the 12 blocks lab.yml had before (~23 min here) gave 88 %. lab.yml's
    Budget states the trade; the real studies' spreads are larger still (their MDEs are in the
    report)."""
    ten = simulate("0.10", seed=2)["detected"]
    assert 0.65 <= ten < 0.80
    assert simulate("0.10", blocks=12, seed=2)["detected"] >= 0.80


def test_six_blocks_of_both_loads_would_miss_it_at_the_larger_spreads():
    """Why lab.yml rotates its loads: the same 168 runs as 6 blocks x 2 loads detect +30 % in
    under 80 % of studies once spreads reach the guess or 0.10."""
    assert simulate("guess", 6, 2, seed=2)["detected"] < 0.80
    assert simulate("0.10", 6, 2, seed=2)["detected"] < 0.80


@pytest.mark.parametrize("spread,margin", [("0.05", None), ("guess", 0.25), ("0.10", 0.30)])
def test_zero_effect_is_called_equivalent(spread, margin):
    """An exact-zero effect is called equivalent in >= 80 % of studies: with lab.yml's margin
    (+-15 %) at spreads of 0.05; at the guess only with a margin of +-25 %, at 0.10 of +-30 %."""
    assert simulate(spread, margin=margin, seed=3)["equivalent"] >= 0.80


def test_ten_percent_margin_is_out_of_reach_in_twenty_minutes():
    """The default +-10 % cannot be confirmed by the 168 runs that fit 20 minutes, at any of the
    stated spreads (with Holm over 6 modes): 59 % at 0.05, ~1 % at the guess, ~0 % at 0.10."""
    for spread in SPREADS:
        assert simulate(spread, margin=0.10, seed=3)["equivalent"] < 0.80


def test_mde_of_the_lab_design():
    """p99 MDE (80 % power at Holm's strictest step), 10 blocks: ~14 % / 26 % / 30 %; the issue's
    repeatability criterion wants <= 25 % in every cell, which holds below about the guess."""
    mde = {s: simulate(s, seed=4)["mde"] for s in SPREADS}
    assert mde["0.05"] < 0.16 and 0.22 < mde["guess"] < 0.29 and 0.26 < mde["0.10"] < 0.34
    assert mde["0.05"] < mde["guess"] < mde["0.10"]

