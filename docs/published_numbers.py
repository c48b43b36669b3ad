"""Reproduce the published numbers behind the lab's problems; write docs/published-numbers.md.

    python docs/published_numbers.py                 # every row (about two minutes on one
                                                     # core); rewrites the page's table
    python docs/published_numbers.py ROW [ROW ...]   # just these rows, printed
    python docs/published_numbers.py --list          # the rows

The rows:

* ``quadratic_deep``: DeepOBS's initial test loss of ``quadratic_deep``, 353.4468, is
  ``evaluate()["val_loss"]`` of the lab's problem before training (DeepOBS's TensorFlow
  evaluation: the mean over the first 896 test points, see the problem's docstring).
* ``mnist1d_mlp-baseline``, ``mnist1d_cnn-baseline``: the MNIST-1D baselines (MLP 68 %, CNN
  94 % test accuracy) trained as the data set's repository trains them (greydanus/mnist1d,
  ``notebooks/train.py`` and the quickstart notebook): ``torch.manual_seed(42)`` before
  building the network, Adam with learning rate 0.01 and no weight decay, minibatches of 100
  taken in a fixed order (rows ``100k mod 4000`` onwards at step ``k``, no shuffling), 6001
  steps (``range(total_steps + 1)`` with ``total_steps = 6000``), test accuracy after the last.
* ``mnist1d_mlp-lab``, ``mnist1d_cnn-lab``: the same networks, optimizer, learning rate and
  6000 steps through the lab's problems as ``optimlab compare`` runs them, i.e. minibatches
  from a reshuffled permutation each epoch and the lab's seeds 0-4 for the initialisation and
  the order; mean ± standard deviation over the five seeds.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import optimlab
from optimlab.lab.problems import get_problem
from optimlab.lab.problems.mnist1d import mnist1d_cnn, mnist1d_data, mnist1d_mlp

from pageblocks import stale_blocks, write_blocks

DOCS = Path(__file__).resolve().parent
PAGE = DOCS / "published-numbers.md"

BASELINE_SEED = 42
BASELINE_LR = 0.01
BASELINE_BATCH = 100
BASELINE_STEPS = 6000  # the notebooks' total_steps; their loop makes total_steps + 1 updates
BASELINE_EVAL_EVERY = 250
LAB_SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Row:
    """One line of the page's table."""

    name: str
    quantity: str
    published: str
    how: str
    compute: Callable[[], str]

    @property
    def command(self) -> str:
        return f"`python docs/published_numbers.py {self.name}`"


# ---------------------------------------------------------------------------------------------
# DeepOBS quadratic_deep.


def quadratic_deep_initial_test_loss() -> float:
    return get_problem("quadratic_deep").make(0).evaluate()["val_loss"]


# ---------------------------------------------------------------------------------------------
# MNIST-1D.


def baseline_batch(step: int, n: int = 4000) -> slice:
    """The rows the baselines' training loop uses at ``step``: a fixed order, no shuffling."""
    start = (step * BASELINE_BATCH) % n
    return slice(start, start + BASELINE_BATCH)


def torch_adam(params) -> torch.optim.Optimizer:
    """The baselines' optimizer, as their code builds it."""
    return torch.optim.Adam(params, lr=BASELINE_LR, weight_decay=0)


def optimlab_adam(params) -> torch.optim.Optimizer:
    return optimlab.create_optimizer("adam", params, lr=BASELINE_LR)


def train_baseline(
    net: Callable[[], torch.nn.Module],
    make_optimizer: Callable = torch_adam,
    steps: int = BASELINE_STEPS,
) -> dict:
    """The published training loop; returns the final and the best test accuracy and the
    training losses."""
    data = mnist1d_data()
    x, y, x_test, y_test = data["x_train"], data["y_train"], data["x_val"], data["y_val"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BASELINE_SEED)
        model = net()
    optimizer = make_optimizer(model.parameters())
    accuracies, losses = [], []
    for step in range(steps + 1):
        rows = baseline_batch(step, len(y))
        loss = F.cross_entropy(model(x[rows]), y[rows])
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % BASELINE_EVAL_EVERY == 0 or step == steps:
            with torch.no_grad():
                accuracies.append((model(x_test).argmax(-1) == y_test).double().mean().item())
    return {"final": accuracies[-1], "best": max(accuracies), "losses": losses}


def train_lab(problem_name: str, seed: int, steps: int = BASELINE_STEPS) -> float:
    """The lab problem trained with the baselines' optimizer; the final test accuracy."""
    instance = get_problem(problem_name).make(seed)
    optimizer = optimlab.create_optimizer("adam", instance.model.parameters(), lr=BASELINE_LR)
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        instance.train_loss(step).backward()
        optimizer.step()
    return instance.evaluate()["val_metric"]


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def _baseline_text(net) -> str:
    published = train_baseline(net, torch_adam)
    ours = train_baseline(net, optimlab_adam)
    return (
        f"{_percent(published['final'])} (best of the 25 evaluations "
        f"{_percent(published['best'])}); with optimlab's Adam {_percent(ours['final'])}"
    )


def _lab_text(problem_name: str) -> str:
    accuracies = [train_lab(problem_name, seed) for seed in LAB_SEEDS]
    mean, sd = statistics.mean(accuracies), statistics.stdev(accuracies)
    return (
        f"{100 * mean:.1f} ± {100 * sd:.1f} % (seeds 0-4: "
        f"{', '.join(f'{100 * a:.1f}' for a in accuracies)})"
    )


_BASELINE_HOW = (
    "the baselines' own setup: `torch.manual_seed(42)`, `torch.optim.Adam` lr 0.01, batch 100 "
    "in a fixed order, 6001 steps"
)
_LAB_HOW = (
    "the lab problem `{}`: optimlab's Adam lr 0.01, batch 100 reshuffled each epoch, 6000 "
    "steps, seeds 0-4"
)

ROWS = (
    Row(
        "quadratic_deep",
        "DeepOBS `quadratic_deep`, test loss at the start",
        "353.4468",
        "`evaluate()['val_loss']` at θ = 1: TensorFlow DeepOBS's mean over the first 896 test "
        "points",
        lambda: f"{quadratic_deep_initial_test_loss():.4f}",
    ),
    Row(
        "mnist1d_mlp-baseline",
        "MNIST-1D MLP, test accuracy",
        "68 %",
        _BASELINE_HOW,
        lambda: _baseline_text(mnist1d_mlp),
    ),
    Row(
        "mnist1d_mlp-lab",
        "MNIST-1D MLP, test accuracy",
        "68 %",
        _LAB_HOW.format("mnist1d_mlp"),
        lambda: _lab_text("mnist1d_mlp"),
    ),
    Row(
        "mnist1d_cnn-baseline",
        "MNIST-1D CNN, test accuracy",
        "94 %",
        _BASELINE_HOW,
        lambda: _baseline_text(mnist1d_cnn),
    ),
    Row(
        "mnist1d_cnn-lab",
        "MNIST-1D CNN, test accuracy",
        "94 %",
        _LAB_HOW.format("mnist1d_cnn"),
        lambda: _lab_text("mnist1d_cnn"),
    ),
)
ROWS_BY_NAME = {row.name: row for row in ROWS}


def table_line(row: Row, result: str) -> str:
    return f"| {row.quantity} | {row.published} | {row.how} | {result} | {row.command} |"


def table(results: dict[str, str]) -> str:
    lines = [
        "| quantity | published | how it is computed here | reproduced | command |",
        "| --- | ---: | --- | --- | --- |",
        *(table_line(row, results[row.name]) for row in ROWS),
        "",
        # Training for thousands of steps amplifies rounding, so the last digits of the MNIST-1D
        # rows belong to the software that computed them.
        f"Computed on the CPU with one thread: Python {platform.python_version()}, "
        f"torch {torch.__version__}, NumPy {np.__version__}, mnist1d {_version('mnist1d')}.",
    ]
    return "\n".join(lines) + "\n"


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", nargs="*", metavar="ROW", help="rows to compute (default: all)")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument(
        "--check",
        action="store_true",
        help="with every row: compare with the page, write nothing",
    )
    args = parser.parse_args(argv)
    if args.list:
        for row in ROWS:
            print(f"{row.name:22} {row.quantity}")
        return 0
    unknown = [name for name in args.rows if name not in ROWS_BY_NAME]
    if unknown:
        parser.error(f"unknown row {unknown[0]!r}; rows: {', '.join(ROWS_BY_NAME)}")
    torch.set_num_threads(1)
    results = {}
    for row in [ROWS_BY_NAME[name] for name in args.rows] or ROWS:
        started = time.perf_counter()
        results[row.name] = row.compute()
        print(f"{row.name}: {results[row.name]}  ({time.perf_counter() - started:.0f} s)")
    if args.rows:
        return 0
    blocks = {"published-table": table(results)}
    if args.check:
        stale = stale_blocks(PAGE, blocks)
        print(f"{PAGE.name}: {'out of date' if stale else 'up to date'}")
        return 1 if stale else 0
    write_blocks(PAGE, blocks)
    print(f"wrote docs/{PAGE.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
