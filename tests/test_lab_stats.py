"""The statistics of the verdict against answers computed by hand: Welch intervals, places
with ties, and AlgoPerf's performance profiles and scores."""

import math

import numpy as np
import pytest

from optimlab.lab.stats import (
    DIVERGED,
    EXACT,
    SINGLE,
    WELCH,
    median_time,
    performance_ratios,
    place_optimizers,
    profile,
    profile_score,
    welch_interval,
)

# t quantile for a two-sided 95 % interval with 4 degrees of freedom, from a t table.
T_975_DF4 = 2.7764


def test_welch_interval_with_equal_spreads_by_hand():
    # means 2 and 4; both sample variances 1, n = 3: se² = 1/3 + 1/3, ν = (2/3)² / (2·(1/3)²/2)
    # = 4, half width = t(0.975, 4) · √(2/3) = 2.7764 · 0.81650 = 2.2670.
    interval = welch_interval([1, 2, 3], [3, 4, 5])
    assert interval.estimate == -2.0
    assert interval.df == pytest.approx(4.0)
    assert interval.low == pytest.approx(-2.0 - T_975_DF4 * math.sqrt(2 / 3), abs=1e-4)
    assert interval.high == pytest.approx(-2.0 + T_975_DF4 * math.sqrt(2 / 3), abs=1e-4)
    assert interval.high == pytest.approx(0.2670, abs=1e-4)
    assert not interval.excludes_zero()  # -2 ± 2.27 contains 0: a tie
    # Twice the gap, same spread: -4 ± 2.27 excludes 0.
    far = welch_interval([1, 2, 3], [5, 6, 7])
    assert far.high == pytest.approx(-4.0 + 2.2670, abs=1e-4) and far.excludes_zero()


def test_welch_degrees_of_freedom_with_unequal_spreads_by_hand():
    # variances 1 and 4, n = 3: s²/n = 1/3 and 4/3, se² = 5/3,
    # ν = (5/3)² / ((1/3)²/2 + (4/3)²/2) = (25/9) / (17/18) = 50/17 ≈ 2.94.
    interval = welch_interval([1, 2, 3], [4, 6, 8])
    assert interval.estimate == -4.0
    assert interval.df == pytest.approx(50 / 17)
    t = (interval.high - interval.estimate) / math.sqrt(5 / 3)
    assert 3.182 < t < 4.303  # between the table's t(0.975, 3) and t(0.975, 2)


def test_welch_interval_of_constant_samples_is_the_difference_itself():
    interval = welch_interval([0.5, 0.5], [0.25, 0.25, 0.25])
    assert (interval.estimate, interval.low, interval.high) == (0.25, 0.25, 0.25)
    assert welch_interval([1.0, 1.0], [1.0, 1.0]).excludes_zero() is False
    with pytest.raises(ValueError):
        welch_interval([1.0], [1.0, 2.0])


def _by_label(placed):
    return {p.label: p for p in placed}


def test_a_lucky_seed_does_not_win_a_place():
    # The default comparison's logistic regression: nine optimizers with the same accuracy on
    # each seed, one with a better third seed. Three seeds cannot tell them apart.
    same = [0.9649, 0.9737, 0.9825]
    values = {f"opt{i}": same for i in range(9)}
    values["rmsprop"] = [0.9649, 0.9825, 0.9825]
    placed = place_optimizers(values, higher_is_better=True)
    assert {p.place for p in placed} == {1}
    assert all(p.shared and p.place_text == "1=" for p in placed)
    top = placed[0]
    assert top.label == "rmsprop" and top.vs_leader is None  # listed first: best mean
    assert top.decided_by() == "Welch 95%: none better, ties with 9"
    gap = placed[1].vs_leader
    assert gap.estimate == pytest.approx(-0.0088 / 3, abs=1e-6) and gap.low < 0 < gap.high


def test_two_spellings_of_one_optimizer_share_their_place():
    runs = [0.91, 0.93, 0.92]
    placed = place_optimizers(
        {"momentum": runs, "sgd:momentum=0.9": runs, "sgd": [0.5, 0.52, 0.51]},
        higher_is_better=True,
    )
    by = _by_label(placed)
    assert by["momentum"].place_text == by["sgd:momentum=0.9"].place_text == "1="
    assert by["sgd"].place_text == "3"
    assert by["sgd"].better == ["momentum", "sgd:momentum=0.9"]
    assert by["sgd"].decided_by() == "Welch 95%: below momentum, sgd:momentum=0.9"


def test_place_is_one_plus_the_number_better_so_ties_do_not_chain():
    # a (tight, high) is clearly above c (tight, low); b is wide and cannot be told from
    # either. Nobody is above a or b: both are 1=; only a is above c: c is 2.
    placed = place_optimizers(
        {"a": [10.0, 10.1, 9.9], "b": [8.0, 9.5, 11.0], "c": [9.0, 9.1, 8.9]},
        higher_is_better=True,
    )
    by = _by_label(placed)
    assert (by["a"].place_text, by["b"].place_text, by["c"].place_text) == ("1=", "1=", "2")
    assert by["c"].better == ["a"] and sorted(by["c"].untold) == ["b"]
    assert [p.label for p in placed] == ["a", "b", "c"]


def test_lower_is_better_for_losses():
    placed = place_optimizers({"a": [1.0, 1.1, 0.9], "b": [2.0, 2.1, 1.9]}, higher_is_better=False)
    assert [(p.label, p.place_text) for p in placed] == [("a", "1"), ("b", "2")]
    assert placed[1].vs_leader.estimate == pytest.approx(1.0)
    assert placed[1].vs_leader.low > 0


def test_divergence_ranks_below_every_optimizer_with_fewer():
    placed = place_optimizers(
        {
            "steady": [0.50, 0.51, 0.49],
            "great_but_once_diverged": [0.10, math.nan, 0.11],
            "always_diverged": [math.inf, math.nan, math.inf],
        },
        higher_is_better=False,
    )
    by = _by_label(placed)
    assert by["steady"].place_text == "1"
    assert by["great_but_once_diverged"].place_text == "2"
    assert by["always_diverged"].place_text == "3"
    assert by["great_but_once_diverged"].method == DIVERGED
    assert by["great_but_once_diverged"].decided_by().startswith("diverged on 1 seed(s)")
    assert by["great_but_once_diverged"].vs_leader is None


def test_deterministic_problems_compare_exact_numbers():
    placed = place_optimizers(
        {"adam": [3.6e-9], "amsgrad": [4.4e-7], "copy": [4.4e-7], "sgd": [0.19]},
        higher_is_better=False,
        deterministic=True,
    )
    assert [(p.label, p.place_text) for p in placed] == [
        ("adam", "1"),
        ("amsgrad", "2="),
        ("copy", "2="),
        ("sgd", "4"),
    ]
    assert all(p.method == EXACT for p in placed)
    gap = placed[3].vs_leader
    assert gap.low == gap.high == gap.estimate == pytest.approx(0.19 - 3.6e-9)
    assert placed[3].decided_by() == "exact (deterministic): below adam, amsgrad, copy"


def test_a_single_seed_is_compared_but_said_to_be_untested():
    placed = place_optimizers({"a": [0.9], "b": [0.8]}, higher_is_better=True)
    assert [(p.label, p.place) for p in placed] == [("a", 1), ("b", 2)]
    assert placed[1].method == SINGLE and "not tested" in placed[1].decided_by()
    assert placed[0].method == SINGLE


def test_a_lone_optimizer_is_first():
    (only,) = place_optimizers({"adam": [0.9, 0.91]}, higher_is_better=True)
    assert (
        only.place_text == "1"
        and only.method == WELCH
        and only.decided_by().endswith("none better")
    )


# -- performance profiles ------------------------------------------------------------------

#: seconds to target; inf: never reached. The best times are 10 (p1), 10 (p2) and 30 (p3).
TIMES = {
    "A": {"p1": 10.0, "p2": 20.0, "p3": math.inf},
    "B": {"p1": 20.0, "p2": 10.0, "p3": 30.0},
    "C": {"p1": 50.0, "p2": math.inf, "p3": 30.0},
}


def test_performance_ratios_by_hand():
    ratios = performance_ratios(TIMES)
    assert ratios["A"] == {"p1": 1.0, "p2": 2.0, "p3": math.inf}
    assert ratios["B"] == {"p1": 2.0, "p2": 1.0, "p3": 1.0}
    assert ratios["C"] == {"p1": 5.0, "p2": math.inf, "p3": 1.0}


def test_profile_of_a_hand_made_table():
    ratios = performance_ratios(TIMES)
    taus = [1.0, 1.5, 2.0, 4.0, 5.0]
    assert profile(ratios["A"], taus, 3) == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert profile(ratios["B"], taus, 3) == pytest.approx([2 / 3, 2 / 3, 1, 1, 1])
    # C's ratio of 5 on p1 lies beyond τ_max = 4: it only counts past 4.
    assert profile(ratios["C"], taus, 3) == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3])


def test_algoperf_score_of_a_hand_made_table():
    # B = 1/(4 − 1) ∫_1^4 ρ(τ) dτ; each problem solved at ratio r adds (4 − r)/3 / n:
    # A: (3/3 + 2/3 + 0)/3 = 5/9; B: (2/3 + 3/3 + 3/3)/3 = 8/9; C: (0 + 0 + 3/3)/3 = 1/3.
    ratios = performance_ratios(TIMES)
    assert profile_score(ratios["A"], 3) == pytest.approx(5 / 9)
    assert profile_score(ratios["B"], 3) == pytest.approx(8 / 9)
    assert profile_score(ratios["C"], 3) == pytest.approx(1 / 3)
    # The fastest everywhere scores 1; never solving anything scores 0.
    assert profile_score({"p": 1.0, "q": 1.0}, 2) == 1.0
    assert profile_score({"p": math.inf}, 1) == 0.0


def test_closed_form_score_matches_algoperfs_trapezoid_rule():
    # AlgoPerf integrates ρ on 100 linearly spaced τ in [1, 4] with the trapezoid rule: it
    # differs from the exact integral by at most 1/(2 · 99 · n).
    ratios = performance_ratios(TIMES)
    taus = np.linspace(1.0, 4.0, 100)
    for label in TIMES:
        rho = profile(ratios[label], taus, 3)
        trapezoid = float(np.sum((rho[1:] + rho[:-1]) / 2 * np.diff(taus))) / 3.0
        assert abs(trapezoid - profile_score(ratios[label], 3)) <= 1 / (2 * 99 * 3) + 1e-12


def test_a_problem_nobody_solves_still_counts():
    ratios = performance_ratios({"A": {"p": 5.0, "q": math.inf}, "B": {"p": 10.0, "q": None}})
    assert ratios["A"]["q"] == ratios["B"]["q"] == math.inf
    assert profile_score(ratios["A"], 2) == pytest.approx(0.5)


def test_median_time_counts_a_miss_as_infinite():
    assert median_time([3.0, None, 1.0]) == 3.0
    assert median_time([1.0, None]) == math.inf  # half the seeds missed: not solved
    assert median_time([2.0, 4.0, math.nan, None]) == math.inf
    assert median_time([]) == math.inf
