"""MNIST-1D (Greydanus & Kobak, "Scaling Down Deep Learning with MNIST-1D", ICML 2024,
https://arxiv.org/abs/2011.14439): ten 1-D digit templates, padded, scaled, translated,
sheared and noised into length-40 signals. Small enough to train in seconds on a CPU, yet an
MLP and a CNN behave very differently on it (the CNN generalises, the MLP overfits).

The data comes from the ``mnist1d`` package's procedural generator, ``make_dataset``, with
its default arguments (5000 samples, 4000 train / 1000 test, generator seed 42), so it is the
standard data set. We never call ``get_dataset``, which downloads a pickle or writes one to
the working directory. The run seed drives the initialisation and the minibatch order only.
"""

from __future__ import annotations

import functools
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .base import Problem, global_random_state_kept, seeded
from .supervised import SupervisedInstance, accuracy

__all__ = ["MNIST1D_CNN", "MNIST1D_MLP", "mnist1d_data"]

MNIST1D_BATCH = 100  # the MNIST-1D paper's batch size


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


def mnist1d_mlp() -> nn.Module:
    """40 → 100 → 100 → 10 with ReLU (the paper's MLP baseline size)."""
    return nn.Sequential(
        nn.Linear(40, 100),
        nn.ReLU(),
        nn.Linear(100, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


def mnist1d_cnn() -> nn.Module:
    """Three stride-2 1-D convolutions (32 channels; kernels 5, 3, 3) with ReLU, length
    40 → 20 → 10 → 5, then a linear layer 32·5 → 10."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 40)),  # N×40 → N×1×40
        nn.Conv1d(1, 32, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv1d(32, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(32, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 5, 10),
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
    description="MLP 40-100-100-10 on MNIST-1D (generated offline), batch 100",
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
    description="1-D CNN (3 conv + 1 dense) on MNIST-1D (generated offline), batch 100",
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
