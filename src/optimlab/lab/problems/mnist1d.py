"""MNIST-1D (Greydanus & Kobak, "Scaling Down Deep Learning with MNIST-1D", ICML 2024,
https://arxiv.org/abs/2011.14439): ten 1-D digit templates, padded, scaled, translated,
sheared and noised into length-40 signals. Small enough to train in seconds on a CPU, yet an
MLP and a CNN behave very differently on it (the CNN generalises, the MLP overfits).

The data comes from the ``mnist1d`` package's procedural generator, ``make_dataset``, with
its default arguments (5000 samples, 4000 train / 1000 test, generator seed 42), so it is the
standard data set: it equals the published ``mnist1d_data.pkl`` to float32 rounding. We never
call ``get_dataset``, which downloads a pickle or writes one to the working directory. The
run seed drives the initialisation and the minibatch order only.

The two networks are the ones behind the data set's published baselines (MLP 68 %, CNN 94 %
test accuracy), as defined in the ``notebooks/models.py`` of greydanus/mnist1d:
``MLPBase`` (15,210 parameters) and ``ConvBase`` with its default 25 channels (5,210
parameters), built in the same layer order, so that ``torch.manual_seed(42)`` before
building gives the baselines' initial weights. Their training setup (Adam, lr 0.01, batch 100
in a fixed order, 6000 steps) and what it reproduces are in ``docs/published-numbers.md``.
"""

from __future__ import annotations

import functools
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .base import Problem, global_random_state_kept, seeded
from .supervised import SupervisedInstance, accuracy

__all__ = [
    "MNIST1D_CNN",
    "MNIST1D_MLP",
    "ResidualMLP",
    "mnist1d_cnn",
    "mnist1d_data",
    "mnist1d_mlp",
]

MNIST1D_BATCH = 100  # the baselines' batch size


@functools.lru_cache(maxsize=1)
def mnist1d_data() -> dict[str, torch.Tensor]:
    """The standard MNIST-1D arrays as tensors: ``x_train`` 4000×40, ``x_val`` 1000×40."""
    # Lazy import: mnist1d pulls in scipy and matplotlib.
    from mnist1d.data import get_dataset_args, make_dataset

    with global_random_state_kept():  # make_dataset reseeds NumPy's and Python's generators
        data = make_dataset(get_dataset_args())
    return {
        "x_train": torch.as_tensor(data["x"], dtype=torch.float32),
        "y_train": torch.as_tensor(data["y"], dtype=torch.long),
        "x_val": torch.as_tensor(data["x_test"], dtype=torch.float32),
        "y_val": torch.as_tensor(data["y_test"], dtype=torch.long),
    }


class ResidualMLP(nn.Module):
    """The MNIST-1D baselines' MLP: 40 → 100 → 100 → 10 with ReLU, the second hidden layer
    residual: ``h₁ = ReLU(W₁x + b₁)``, ``h₂ = h₁ + ReLU(W₂h₁ + b₂)``, logits ``W₃h₂ + b₃``
    (15,210 parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(40, 100)
        self.residual = nn.Linear(100, 100)
        self.out = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.hidden(x))
        return self.out(h + F.relu(self.residual(h)))


def mnist1d_mlp() -> nn.Module:
    """The baselines' MLP, :class:`ResidualMLP`."""
    return ResidualMLP()


def mnist1d_cnn() -> nn.Module:
    """The baselines' CNN: three stride-2 1-D convolutions of 25 channels with ReLU (kernel 5,
    then 3 and 3; padding 1), length 40 → 19 → 10 → 5, then a linear layer 25·5 → 10
    (5,210 parameters)."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 40)),  # N×40 → N×1×40
        nn.Conv1d(1, 25, 5, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(25, 25, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(25, 25, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(25 * 5, 10),
    )


def _build(net, seed: int) -> SupervisedInstance:
    data = mnist1d_data()
    return SupervisedInstance(
        seeded(seed, net),
        F.cross_entropy,
        train=(data["x_train"], data["y_train"]),
        val=(data["x_val"], data["y_val"]),
        batch_size=MNIST1D_BATCH,
        seed=seed,
        metric=accuracy,
    )


MNIST1D_MLP = Problem(
    name="mnist1d_mlp",
    description="MLP 40-100-100-10 (2nd layer residual) on MNIST-1D, generated offline",
    kind="classification",
    steps=3000,
    quick_steps=20,
    batch_size=MNIST1D_BATCH,
    target=0.05,
    metric="accuracy",
    default_lr_range=(1e-4, 1.0),
    build=partial(_build, mnist1d_mlp),
)

MNIST1D_CNN = Problem(
    name="mnist1d_cnn",
    description="1-D CNN (3 conv of 25 channels + 1 dense) on MNIST-1D, generated offline",
    kind="classification",
    steps=3000,
    quick_steps=20,
    batch_size=MNIST1D_BATCH,
    target=0.05,
    metric="accuracy",
    default_lr_range=(1e-4, 1.0),
    build=partial(_build, mnist1d_cnn),
)

PROBLEMS = [MNIST1D_MLP, MNIST1D_CNN]
