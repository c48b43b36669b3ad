"""The statistics behind the lab's verdict: places within a problem, profiles across problems.

**Places within a problem.** Each optimizer's result on a problem is a handful of numbers,
one per seed. Two optimizers are told apart only when the data say so:

* For each pair the lab forms **Welch's t interval** for the difference of the mean results
  at :data:`CONFIDENCE` (95 %)::

      d = mean(a) − mean(b),   se² = s_a²/n_a + s_b²/n_b,
      ν = se⁴ / ((s_a²/n_a)²/(n_a − 1) + (s_b²/n_b)²/(n_b − 1))   (Welch–Satterthwaite),
      d ± t_{(1+c)/2, ν} · se

  (Welch, Biometrika 34, 1947). ``a`` is *better* than ``b`` when the whole interval lies on
  the better side of zero; otherwise the two cannot be told apart.
* A run that diverged has no result: an optimizer with fewer diverged seeds is better than
  one with more, whatever the numbers; among equally many, the finite seeds are compared.
* A deterministic problem (the 2-D test functions: fixed start, no data) gives one exact
  number per optimizer, so any difference is real and equal numbers tie. With a single seed
  on a stochastic problem there is no spread to test against: the numbers are compared as
  they are, and the place says it was not tested.

An optimizer's **place is 1 + the number of optimizers that are better than it**. Ties therefore
never chain: the place does not depend on which optimizer happened to be compared with which
first, and two optimizers that cannot be told apart from the leader share place 1 even if
one of them can be told apart from the other (it is then simply not above it). Comparisons
are not corrected for multiplicity: with many optimizers a few differences will be called at
95 % by chance, and with three seeds the intervals are wide, so most close results tie.

**Across problems: performance profiles** as MLCommons AlgoPerf scores submissions (Dahl et
al., "Benchmarking Neural Network Training Algorithms", arXiv:2306.07179; the
``algorithmic-efficiency`` repository, ``docs/DOCUMENTATION.md`` and
``scoring/performance_profile.py``). With ``t[o, p]`` the time optimizer ``o`` needs to reach
problem ``p``'s target (the median over seeds, a seed that never reaches it counting as
infinitely slow, as AlgoPerf takes the median over studies), the performance ratio is
``r[o, p] = t[o, p] / min_o' t[o', p]`` and the profile is

    ρ_o(τ) = (1/n) · #{p : r[o, p] ≤ τ},   τ ∈ [1, τ_max] on a linear scale,

the fraction of the ``n`` problems solved within τ × the best time. A problem nobody solves
counts in ``n`` and is solved by nobody. The score integrates the profile, normalised to
[0, 1]::

    B_o = 1/(τ_max − 1) · ∫_1^{τ_max} ρ_o(τ) dτ = (1/n) · Σ_p max(0, τ_max − r[o, p]) / (τ_max − 1)

with τ_max = 4 (AlgoPerf's ``r_max``): slower than 4 × the best counts as not solved. The
closed form is exact; AlgoPerf's code applies the trapezoid rule to 100 points, which moves a
score by at most 1/(2 · 99 · n).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Confidence of the intervals that decide ties.
CONFIDENCE = 0.95
#: Upper end of the performance profile and of its integral (AlgoPerf's r_max).
TAU_MAX = 4.0

# How a pair was told apart (or not): the "decided by" column names these.
WELCH = "welch"
EXACT = "exact"
SINGLE = "single seed"
DIVERGED = "diverged"


@dataclass(frozen=True)
class Interval:
    """An estimate of ``mean(a) − mean(b)`` with its confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    df: float | None = None  # Welch–Satterthwaite degrees of freedom; None when exact

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE):
    """Welch's t interval for ``mean(a) − mean(b)`` (needs two or more values on each side).

    When both samples are constant the standard error is zero and the interval is the point
    estimate itself: the difference is as certain as the data can make it.
    """
    from scipy.stats import t as student_t

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        raise ValueError("Welch's interval needs at least two values in each sample")
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    diff = float(x.mean() - y.mean())
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se2 = vx + vy
    if se2 == 0.0:
        return Interval(diff, diff, diff, confidence, math.inf)
    df = se2**2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    half = float(student_t.ppf(0.5 + confidence / 2, df)) * math.sqrt(se2)
    return Interval(diff, diff - half, diff + half, confidence, float(df))


@dataclass
class Placed:
    """Where one optimizer stands on one problem, and why."""

    label: str
    place: int
    shared: bool  # another optimizer has the same place ("1=")
    better: list[str]  # the optimizers that are better than this one
    untold: list[str]  # the optimizers it cannot be told apart from
    method: str  # how its comparisons were made: WELCH, EXACT, SINGLE or DIVERGED
    diverged: int
    mean: float  # mean of the finite values (NaN when none)
    vs_leader: Interval | None = None  # this − leader; None for the leader or no interval
    order: int = 0  # position in the listing (by place, then divergences, then mean)

    @property
    def place_text(self) -> str:
        return f"{self.place}=" if self.shared else str(self.place)

    def decided_by(self, confidence: float = CONFIDENCE) -> str:
        """One line for the "decided by" column."""
        how = {
            WELCH: f"Welch {confidence:.0%}",
            EXACT: "exact (deterministic)",
            SINGLE: "1 seed, not tested",
            DIVERGED: "divergence",
        }[self.method]
        if self.diverged:
            how = f"diverged on {self.diverged} seed(s); {how}"
        if not self.better:
            tail = f", ties with {len(self.untold)}" if self.untold else ""
            return f"{how}: none better{tail}"
        return f"{how}: below {_names(self.better)}"


def _names(labels: list[str], at_most: int = 3) -> str:
    if len(labels) <= at_most:
        return ", ".join(labels)
    return f"{len(labels)} ({', '.join(labels[:at_most])}, …)"


@dataclass
class _Entry:
    label: str
    finite: np.ndarray
    diverged: int
    mean: float = field(init=False)

    def __post_init__(self) -> None:
        self.mean = float(self.finite.mean()) if self.finite.size else math.nan


def _compare(a: _Entry, b: _Entry, sign: float, exact: bool, confidence: float):
    """(+1 if a is better, −1 if b is, 0 if they cannot be told apart; the method used)."""
    if a.diverged != b.diverged:
        return (1 if a.diverged < b.diverged else -1), DIVERGED
    if not a.finite.size or not b.finite.size:
        return 0, DIVERGED
    if exact or a.finite.size < 2 or b.finite.size < 2:
        d = sign * (a.mean - b.mean)
        return (0 if d == 0 else (1 if d > 0 else -1)), (EXACT if exact else SINGLE)
    interval = welch_interval(a.finite, b.finite, confidence)
    if not interval.excludes_zero():
        return 0, WELCH
    return (1 if sign * interval.estimate > 0 else -1), WELCH


def place_optimizers(
    values: Mapping[str, Sequence[float]],
    *,
    higher_is_better: bool,
    deterministic: bool = False,
    confidence: float = CONFIDENCE,
) -> list[Placed]:
    """Places on one problem from each optimizer's per-seed results (non-finite = diverged).

    Returns one :class:`Placed` per optimizer, best first: by place, then fewer divergences,
    then the better mean (the order of a shared place is for reading only; the place stays
    shared).
    """
    sign = 1.0 if higher_is_better else -1.0
    entries = []
    for label, vals in values.items():
        arr = np.asarray(list(vals), dtype=float)
        entries.append(_Entry(label, arr[np.isfinite(arr)], int((~np.isfinite(arr)).sum())))
    better: dict[str, list[str]] = {e.label: [] for e in entries}
    untold: dict[str, list[str]] = {e.label: [] for e in entries}
    methods: dict[str, set[str]] = {e.label: set() for e in entries}
    for i, a in enumerate(entries):
        for b in entries[i + 1 :]:
            outcome, method = _compare(a, b, sign, deterministic, confidence)
            methods[a.label].add(method)
            methods[b.label].add(method)
            if outcome > 0:
                better[b.label].append(a.label)
            elif outcome < 0:
                better[a.label].append(b.label)
            else:
                untold[a.label].append(b.label)
                untold[b.label].append(a.label)

    def sort_key(e: _Entry):
        mean = -sign * e.mean if math.isfinite(e.mean) else math.inf
        return (len(better[e.label]), e.diverged, mean, e.label)

    ordered = sorted(entries, key=sort_key)
    counts: dict[int, int] = {}
    for e in ordered:
        counts[1 + len(better[e.label])] = counts.get(1 + len(better[e.label]), 0) + 1
    leader = ordered[0] if ordered else None
    position_of = {e.label: i for i, e in enumerate(ordered)}
    out = []
    for position, e in enumerate(ordered):
        place = 1 + len(better[e.label])
        out.append(
            Placed(
                label=e.label,
                place=place,
                shared=counts[place] > 1,
                better=sorted(better[e.label], key=position_of.__getitem__),
                untold=untold[e.label],
                method=_main_method(methods[e.label], deterministic, e),
                diverged=e.diverged,
                mean=e.mean,
                vs_leader=None if e is leader else _vs(e, leader, deterministic, confidence),
                order=position + 1,
            )
        )
    return out


def _main_method(methods: set[str], deterministic: bool, entry: _Entry) -> str:
    for method in (WELCH, SINGLE, EXACT):
        if method in methods:
            return method
    if methods:
        return DIVERGED
    # A lone optimizer: say how it would have been compared.
    if deterministic:
        return EXACT
    return WELCH if entry.finite.size >= 2 else SINGLE


def _vs(e: _Entry, leader: _Entry, exact: bool, confidence: float) -> Interval | None:
    """``e − leader`` with its interval (exact for deterministic problems)."""
    if e.diverged or leader.diverged or not e.finite.size or not leader.finite.size:
        return None
    if exact:
        d = e.mean - leader.mean
        return Interval(d, d, d, confidence)
    if e.finite.size < 2 or leader.finite.size < 2:
        return None
    return welch_interval(e.finite, leader.finite, confidence)


# -- across problems -------------------------------------------------------------------------


def _time(value) -> float:
    return math.inf if value is None or not math.isfinite(value) else float(value)


def median_time(times: Sequence[float | None]) -> float:
    """Median time to target over seeds; a seed that missed it (None, inf, NaN) is infinite."""
    clean = [_time(t) for t in times]
    if not clean:
        return math.inf
    # numpy's median of [1, inf] is inf, as in AlgoPerf (a half-failed pair is not solved).
    return float(np.median(np.asarray(clean)))


def performance_ratios(times: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``r[o][p] = t[o][p] / min over o' of t[o'][p]``; inf where o (or everybody) failed.

    ``times[o][p]`` is optimizer ``o``'s time on problem ``p``; a missing entry is a failure.
    """
    clean = {label: {p: _time(t) for p, t in per.items()} for label, per in times.items()}
    problems = sorted({p for per in clean.values() for p in per})
    best = {p: min(per.get(p, math.inf) for per in clean.values()) for p in problems}
    ratios: dict[str, dict[str, float]] = {}
    for label, per in clean.items():
        row = {}
        for p in problems:
            t, b = per.get(p, math.inf), best[p]
            if not math.isfinite(t):
                row[p] = math.inf
            elif b == 0:  # the target met before the first step: only another zero ties
                row[p] = 1.0 if t == 0 else math.inf
            else:
                row[p] = t / b
        ratios[label] = row
    return ratios


def profile(ratios: Mapping[str, float], taus: Sequence[float], n_problems: int) -> np.ndarray:
    """ρ(τ) at each τ: the fraction of ``n_problems`` with ratio ≤ τ."""
    r = np.asarray([v for v in ratios.values()], dtype=float)
    return np.asarray([(r <= tau).sum() / n_problems for tau in taus], dtype=float)


def profile_score(ratios: Mapping[str, float], n_problems: int, tau_max: float = TAU_MAX):
    """AlgoPerf's benchmark score: the profile integrated over [1, τ_max], divided by τ_max − 1.

    Exact for the step function: each problem solved at ratio r ≤ τ_max adds
    (τ_max − r) / (τ_max − 1) / n.
    """
    if n_problems <= 0:
        return math.nan
    total = sum(max(0.0, tau_max - r) for r in ratios.values() if math.isfinite(r))
    return total / (tau_max - 1.0) / n_problems
