"""Image classification: scikit-learn's 8×8 digits (always there) and Fashion-MNIST (from
Debian's ``dataset-fashion-mnist`` package, when installed).

All four problems minimise the mean cross-entropy (nats) and report validation accuracy.
"""

from __future__ import annotations

import functools
import os
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import Problem, ProblemUnavailable, generator, global_random_state_kept, seeded
from .idx import read_idx
from .supervised import SupervisedInstance, accuracy

__all__ = [
    "DIGITS_CNN",
    "DIGITS_MLP",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_ENV",
    "FMNIST_2C2D",
    "FMNIST_MLP",
    "fashion_mnist_dir",
    "fashion_mnist_missing",
]

# ---------------------------------------------------------------------------------------------
# scikit-learn digits: 1797 grey images of 8×8 pixels with values 0..16.

DIGITS_VAL_FRACTION = 0.2
DIGITS_BATCH = 64


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[torch.Tensor, torch.Tensor]:
    # Lazy import: scikit-learn is slow to import. The images ship inside scikit-learn.
    with global_random_state_kept():  # importing scikit-learn draws from Python's generator
        from sklearn.datasets import load_digits

        data = load_digits()
    x = torch.as_tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0  # N×1×8×8 in [0,1]
    return x, torch.as_tensor(data.target, dtype=torch.long)


def digits_data(seed: int) -> dict[str, torch.Tensor]:
    """Digits split 80/20 (1438 train, 359 validation) by a permutation drawn from ``seed``."""
    x, y = _digits_raw()
    perm = torch.randperm(len(y), generator=generator(seed, 0xD161))
    n_val = round(DIGITS_VAL_FRACTION * len(y))
    val, train = perm[:n_val], perm[n_val:]
    return {"x_train": x[train], "y_train": y[train], "x_val": x[val], "y_val": y[val]}


def digits_mlp() -> nn.Module:
    """64 → 128 → 128 → 10 with ReLU, PyTorch's default initialisation."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Linear(128, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def digits_cnn() -> nn.Module:
    """conv 3×3 16 → ReLU → max-pool 2 → conv 3×3 32 → ReLU → max-pool 2 → linear 128 → 10
    ('same' padding, so 8×8 → 4×4 → 2×2)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 10),
    )


def _build_digits(net, batch_size: int, seed: int) -> SupervisedInstance:
    # Builders are module-level functions bound with functools.partial (not lambdas) so that
    # problems can be pickled, e.g. to send to a worker process.
    data = digits_data(seed)
    return SupervisedInstance(
        seeded(seed, net),
        F.cross_entropy,
        train=(data["x_train"], data["y_train"]),
        val=(data["x_val"], data["y_val"]),
        batch_size=batch_size,
        seed=seed,
        metric=accuracy,
    )


DIGITS_MLP = Problem(
    name="digits_mlp",
    description="MLP 64-128-128-10 on scikit-learn's 8x8 digits, batch 64",
    kind="classification",
    steps=600,
    quick_steps=20,
    batch_size=DIGITS_BATCH,
    # Tuned Adam passes 0.02 after ~200 steps, momentum SGD ~240, plain SGD ~560.
    target=0.02,
    metric="accuracy",
    default_lr_range=(1e-4, 1.0),
    build=partial(_build_digits, digits_mlp, DIGITS_BATCH),
)

DIGITS_CNN = Problem(
    name="digits_cnn",
    description="Small CNN (2 conv + 1 dense) on scikit-learn's 8x8 digits, batch 64",
    kind="classification",
    steps=600,
    quick_steps=20,
    batch_size=DIGITS_BATCH,
    # Tuned Adam and momentum SGD pass 0.02 after ~160 steps, plain SGD ~340.
    target=0.02,
    metric="accuracy",
    default_lr_range=(1e-4, 1.0),
    build=partial(_build_digits, digits_cnn, DIGITS_BATCH),
)

# ---------------------------------------------------------------------------------------------
# Fashion-MNIST from Debian's dataset-fashion-mnist (Xiao, Rasul & Vollgraf, 2017,
# https://arxiv.org/abs/1708.07747): 60000 training and 10000 test images, 28×28 uint8.

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # where the Debian package puts it
FASHION_MNIST_ENV = "OPTIMLAB_FASHION_MNIST_DIR"  # overrides the directory
FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_val": "t10k-images-idx3-ubyte",
    "y_val": "t10k-labels-idx1-ubyte",
}
INSTALL_HINT = "sudo apt-get install dataset-fashion-mnist"
# Evaluating the full 60k training set after every few hundred steps would cost more than the
# training on 2 cores, so evaluate() uses a fixed random subset of it (DeepOBS likewise
# evaluates on a 10k "train eval" subset) and of the test set.
FMNIST_BATCH = 128  # DeepOBS's default for both problems
FMNIST_EVAL_EXAMPLES = {"fmnist_mlp": 10_000, "fmnist_2c2d": 2_000}


def fashion_mnist_dir() -> Path:
    """``$OPTIMLAB_FASHION_MNIST_DIR`` when set, else ``/usr/share/datasets/fashion-mnist``."""
    return Path(os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):  # Debian ships .gz; accept decompressed copies too
        if (directory / name).is_file():
            return directory / name
    return None


def fashion_mnist_missing() -> str | None:
    """``None`` when all four Fashion-MNIST files are present, else how to install them."""
    directory = fashion_mnist_dir()
    if not directory.is_dir():
        what = f"no directory {directory}"
    else:
        missing = [s for s in FASHION_MNIST_FILES.values() if _find(directory, s) is None]
        if not missing:
            return None
        what = f"{directory} lacks {', '.join(m + '[.gz]' for m in missing)}"
    return (
        f"Fashion-MNIST not found ({what}); install it with `{INSTALL_HINT}` "
        f"(or set ${FASHION_MNIST_ENV})"
    )


@functools.lru_cache(maxsize=2)
def _fashion_mnist(directory: Path) -> dict[str, torch.Tensor]:
    # Kept as uint8 (47 MB instead of 188 MB as float32); batches are scaled when drawn.
    out = {}
    for key, stem in FASHION_MNIST_FILES.items():
        array = torch.from_numpy(read_idx(_find(directory, stem)))
        out[key] = array.unsqueeze(1) if key.startswith("x") else array.long()  # N×1×28×28
    if len(out["x_train"]) != len(out["y_train"]) or len(out["x_val"]) != len(out["y_val"]):
        raise ValueError(f"Fashion-MNIST in {directory}: image and label counts differ")
    return out


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0  # DeepOBS feeds Fashion-MNIST scaled to [0, 1], not standardised


def _trunc_normal_init(model: nn.Module, std: float, bias: float) -> nn.Module:
    """DeepOBS's initialisation: weights from a normal with standard deviation ``std``
    truncated at ±2 std (TensorFlow's ``truncated_normal``), constant biases."""
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.trunc_normal_(m.weight, 0.0, std, -2 * std, 2 * std)
            nn.init.constant_(m.bias, bias)
    return model


def fmnist_mlp() -> nn.Module:
    """DeepOBS ``fmnist_mlp``: 784 → 1000 → 500 → 100 → 10 with ReLU; weights truncated
    normal (std 0.03), biases 0."""
    net = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 1000),
        nn.ReLU(),
        nn.Linear(1000, 500),
        nn.ReLU(),
        nn.Linear(500, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )
    return _trunc_normal_init(net, std=3e-2, bias=0.0)


def fmnist_2c2d() -> nn.Module:
    """DeepOBS ``fmnist_2c2d`` (after TensorFlow's layers tutorial): conv 5×5 with 32 filters
    ('same') → ReLU → max-pool 2×2 stride 2 → conv 5×5 with 64 filters ('same') → ReLU →
    max-pool 2×2 stride 2 → dense 7·7·64 → 1024 → ReLU → dense 1024 → 10. Weights truncated
    normal (std 0.05), biases 0.05. For 5×5 kernels at stride 1, TF's 'same' is padding 2."""
    net = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(7 * 7 * 64, 1024),
        nn.ReLU(),
        nn.Linear(1024, 10),
    )
    return _trunc_normal_init(net, std=5e-2, bias=5e-2)


def _build_fmnist(name: str, net, batch_size: int, seed: int) -> SupervisedInstance:
    reason = fashion_mnist_missing()
    if reason is not None:  # make() checks too; this covers a direct call of build()
        raise ProblemUnavailable(f"{name}: {reason}")
    data = _fashion_mnist(fashion_mnist_dir().resolve())
    # A fixed subset (the same for every seed, so evaluations are comparable across runs).
    k = FMNIST_EVAL_EXAMPLES[name]
    sub_train = torch.randperm(len(data["y_train"]), generator=generator(0, 0xF7E1))[:k]
    sub_val = torch.randperm(len(data["y_val"]), generator=generator(0, 0xF7E2))[:k]
    return SupervisedInstance(
        seeded(seed, net),
        F.cross_entropy,
        train=(data["x_train"], data["y_train"]),
        val=(data["x_val"][sub_val], data["y_val"][sub_val]),
        batch_size=batch_size,
        seed=seed,
        metric=accuracy,
        prepare=_to_unit,
        train_eval=(data["x_train"][sub_train], data["y_train"][sub_train]),
    )


FMNIST_MLP = Problem(
    name="fmnist_mlp",
    description="DeepOBS fmnist_mlp (784-1000-500-100-10) on Fashion-MNIST, batch 128",
    kind="classification",
    steps=2000,
    quick_steps=20,
    batch_size=FMNIST_BATCH,
    # Adam (lr 1e-3) passes 0.35 after ~750 steps, momentum SGD (0.03) after ~1000.
    target=0.35,
    metric="accuracy",
    default_lr_range=(1e-4, 1.0),
    build=partial(_build_fmnist, "fmnist_mlp", fmnist_mlp, FMNIST_BATCH),
    requires=fashion_mnist_missing,
)

FMNIST_2C2D = Problem(
    name="fmnist_2c2d",
    description="DeepOBS fmnist_2c2d (2 conv + 2 dense) on Fashion-MNIST, batch 128",
    kind="classification",
    steps=1000,
    quick_steps=20,
    batch_size=FMNIST_BATCH,
    # Adam (lr 1e-3) and momentum SGD (0.03) both get near 0.27-0.30 by step 750.
    target=0.30,
    metric="accuracy",
    default_lr_range=(1e-4, 1.0),
    build=partial(_build_fmnist, "fmnist_2c2d", fmnist_2c2d, FMNIST_BATCH),
    requires=fashion_mnist_missing,
)

PROBLEMS = [DIGITS_MLP, DIGITS_CNN, FMNIST_MLP, FMNIST_2C2D]
