"""The problem contract: a :class:`Problem` describes a benchmark, an :class:`Instance` is one
seeded realisation of it that an optimizer trains.

A problem is *data*, not a training loop: it says what the loss is, how many steps a fair run
gets (``steps``), the batch size, a train-loss ``target`` for "steps/seconds to target", the
held-out ``metric`` and a sensible learning-rate range. The lab's runner owns the loop::

    instance = problem.make(seed)
    opt = SomeOptimizer(instance.model.parameters(), lr=...)
    for step in range(problem.steps):
        opt.zero_grad()
        loss = instance.train_loss(step)
        loss.backward()
        opt.step()
    print(instance.evaluate())   # {"train_loss": ..., "val_loss": ..., "val_metric": ...}

Determinism: ``make(seed)`` builds identical parameters for equal seeds, and
``train_loss(step)`` draws the minibatch for ``step`` from ``(seed, step)`` alone, so a run
resumed at step ``k`` sees exactly the batches a straight run would have seen.
Neither touches torch's or NumPy's global random state.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch

__all__ = [
    "Instance",
    "Problem",
    "ProblemUnavailable",
    "EpochSampler",
    "derive_seed",
    "seeded",
]

KINDS = ("function2d", "regression", "classification", "language", "quadratic")


class ProblemUnavailable(RuntimeError):
    """A registered problem whose data is not on this machine (e.g. Fashion-MNIST).

    The message says how to install the data; nothing is ever downloaded.
    """


@runtime_checkable
class Instance(Protocol):
    """One seeded realisation of a problem: a model and the losses to train and judge it."""

    model: torch.nn.Module
    """Its parameters are exactly what the optimizer trains."""

    def train_loss(self, step: int) -> torch.Tensor:
        """Scalar minibatch loss for optimizer step ``step`` (with grad); deterministic in
        ``(seed, step)``."""
        ...

    def evaluate(self) -> dict[str, float]:
        """No-grad evaluation. Keys: ``"train_loss"`` always; ``"val_loss"`` and
        ``"val_metric"`` where the problem has them (2-D functions add
        ``"distance_to_minimum"``)."""
        ...


@dataclass(frozen=True, kw_only=True)
class Problem:
    """A benchmark problem. Fields are keyword-only.

    Attributes:
        name: registry key, e.g. ``"digits_mlp"``.
        description: one line for listings.
        kind: ``"function2d" | "regression" | "classification" | "language" | "quadratic"``.
        steps: default budget in optimizer steps.
        quick_steps: tiny budget for ``--quick`` runs and tests.
        batch_size: minibatch size, ``None`` for full batch.
        target: train-loss value that counts as "reached" for steps/seconds-to-target.
        metric: name of ``evaluate()["val_metric"]`` (``"accuracy"``, ``"r2"``), always
            higher-is-better; ``None`` when the problem has no metric.
        default_lr_range: ``(low, high)`` bounds for a log-spaced learning-rate search.
        build: ``seed -> Instance``; must be deterministic given the seed.
        requires: optional check that returns ``None`` when the problem can run here, or a
            one-line reason (with the fix) when it cannot; see :meth:`available`.
    """

    name: str
    description: str
    kind: str
    steps: int
    quick_steps: int
    batch_size: int | None
    target: float
    metric: str | None
    default_lr_range: tuple[float, float]
    build: Callable[[int], Instance] = field(repr=False, compare=False)
    requires: Callable[[], str | None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Checked here so a user's hand-written problem fails at registration with a clear
        # message instead of deep inside a sweep.
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"Invalid problem name: {self.name!r} (use letters, digits, _ or -)")
        if self.kind not in KINDS:
            raise ValueError(f"Invalid problem kind: {self.kind!r} (one of {', '.join(KINDS)})")
        if not (isinstance(self.steps, int) and self.steps > 0):
            raise ValueError(f"Invalid steps: {self.steps!r} (a positive int)")
        if not (isinstance(self.quick_steps, int) and 0 < self.quick_steps <= self.steps):
            raise ValueError(f"Invalid quick_steps: {self.quick_steps!r} (1..steps)")
        if self.batch_size is not None and not (
            isinstance(self.batch_size, int) and self.batch_size > 0
        ):
            raise ValueError(f"Invalid batch_size: {self.batch_size!r} (a positive int or None)")
        if not math.isfinite(self.target):
            raise ValueError(f"Invalid target: {self.target!r} (a finite train-loss value)")
        low, high = self.default_lr_range
        if not (0.0 < low < high):  # also rejects NaN
            raise ValueError(f"Invalid default_lr_range: {self.default_lr_range!r}")
        if not callable(self.build):
            raise ValueError(f"Invalid build: {self.build!r} (a function seed -> Instance)")

    @property
    def deterministic(self) -> bool:
        """Whether a run ignores its seed: the 2-D test functions start from a fixed point and
        draw no data, so one run says all and more seeds would repeat its numbers."""
        return self.kind == "function2d"

    def available(self) -> bool:
        """Whether :meth:`make` can work on this machine (its data is present)."""
        return self.unavailable_reason() is None

    def unavailable_reason(self) -> str | None:
        """``None`` when available, else a one-line reason that says what to install."""
        return None if self.requires is None else self.requires()

    def make(self, seed: int) -> Instance:
        """Build the instance for ``seed``. Raises :class:`ProblemUnavailable` when the
        problem's data is missing."""
        reason = self.unavailable_reason()
        if reason is not None:
            raise ProblemUnavailable(f"{self.name}: {reason}")
        return self.build(seed)


# ---------------------------------------------------------------------------------------------
# Seeding helpers shared by the problem modules.


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every key, e.g. ``derive_seed(seed, step)``.

    ``SeedSequence`` hashes its entropy, so nearby keys (seed 0 step 1 vs seed 1 step 0) give
    unrelated streams, which ``seed * K + step`` arithmetic does not guarantee.
    """
    state = np.random.SeedSequence([int(k) % 2**63 for k in keys]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def generator(*keys: int) -> torch.Generator:
    """A private CPU ``torch.Generator`` seeded from ``keys`` (the global RNG is untouched)."""
    return torch.Generator().manual_seed(derive_seed(*keys))


@contextmanager
def global_random_state_kept() -> Iterator[None]:
    """Put NumPy's and Python's global generators back as they were on leaving.

    For third-party code that touches them: mnist1d's ``make_dataset`` reseeds both, and
    importing scikit-learn draws from Python's. Building a problem must not change the random
    numbers the caller's code sees next.
    """
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def seeded(seed: int, factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Run ``factory`` (which initialises a model with torch's global RNG) under ``seed``
    without disturbing the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, 0x1417))
        return factory()


class EpochSampler:
    """Minibatch indices for any step: epochs of a seeded random permutation.

    Epoch ``e = step // (n // batch_size)`` uses permutation ``perm(seed, e)`` and the batch for
    ``step`` is slice ``step % (n // batch_size)`` of it. The incomplete last batch is dropped
    (as DeepOBS's loaders do) so every step sees the same batch size. Random access in
    ``step`` makes a resumed run see exactly the batches of a straight one; the permutation of
    the current epoch is cached because the runner asks for steps in order.
    """

    def __init__(self, n: int, batch_size: int | None, seed: int) -> None:
        self.n, self.seed = n, seed
        self.batch_size = n if batch_size is None else min(batch_size, n)
        self._epoch, self._perm = -1, torch.arange(n)

    @property
    def full_batch(self) -> bool:
        return self.batch_size == self.n

    def __call__(self, step: int) -> torch.Tensor:
        if self.full_batch:
            return self._perm  # the order of a full batch does not matter
        per_epoch = self.n // self.batch_size
        epoch, k = divmod(step, per_epoch)
        if epoch != self._epoch:
            self._perm = torch.randperm(self.n, generator=generator(self.seed, epoch, 0xBA7C))
            self._epoch = epoch
        return self._perm[k * self.batch_size : (k + 1) * self.batch_size]
