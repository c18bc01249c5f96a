"""Calibration that repeats: votes near the boundary, against a noisy oracle (pure)."""

import random

import pytest

from cnibench.errors import ConfigError
from cnibench.workload import calibrate as cal


def calibrate_against(capacity: float, rng: random.Random, spurious: float = 0.01, **kw) -> float | None:
    """Drive next_rate with an oracle that passes at or below `capacity`, except that each probe
    fails at random with probability `spurious` (a stall), and return the calibrated maximum."""
    probes = []
    while (r := cal.next_rate(probes, **kw)) is not None:
        probes.append((r, r <= capacity and rng.random() >= spurious))
    return cal.max_sustainable(probes)


def test_noisy_oracle_lands_within_10_percent_in_at_least_95_percent_of_calibrations():
    rng = random.Random(2016)
    n, close = 1000, 0
    for _ in range(n):
        capacity = rng.uniform(20_000, 120_000)
        got = calibrate_against(capacity, rng)
        close += got is not None and abs(got - capacity) / capacity <= 0.10
    assert close / n >= 0.95, close / n


def test_a_failure_is_voted_on_and_one_spurious_failure_does_not_move_the_bracket():
    probes = [(2000.0, True), (4000.0, False)]
    assert cal.next_rate(probes) == 4000.0  # the vote on 4000 is open: probe it again
    probes.append((4000.0, True))
    assert cal.next_rate(probes) == 4000.0  # 1 pass, 1 fail: the third probe decides
    probes.append((4000.0, True))
    assert cal.outcomes(probes)[4000.0] is True
    assert cal.next_rate(probes) == 8000.0  # the ramp goes on


def test_a_pass_near_a_confirmed_failure_is_voted_on():
    probes = [(50_000.0, True), (100_000.0, False), (100_000.0, False), (75_000.0, True), (87_500.0, False),
              (87_500.0, False), (81_250.0, True)]
    # 81,250 is within 10 % below the confirmed failure at 87,500: one pass is not enough
    assert cal.outcomes(probes)[81_250.0] is None and cal.next_rate(probes) == 81_250.0
    assert cal.outcomes(probes)[75_000.0] is True  # far from it: one pass decides


def test_bisection_stops_within_2_percent():
    probes = []
    while (r := cal.next_rate(probes)) is not None:
        probes.append((r, r <= 84_000))
    best = cal.max_sustainable(probes)
    assert 84_000 * 0.98 <= best <= 84_000


def test_check_verdict():
    assert cal.check_verdict([True]) is True
    assert cal.check_verdict([False]) is None and cal.check_verdict([False, True]) is None
    assert cal.check_verdict([False, False]) is False and cal.check_verdict([False, True, True]) is True


def test_settings_that_cannot_repeat_are_refused():
    with pytest.raises(ConfigError, match="run_s"):
        cal.check_settings(2.0, 0.02)
    with pytest.raises(ConfigError, match="tolerance"):
        cal.check_settings(3.0, 0.1)
    cal.check_settings(3.0, 0.02)
