"""Run the classic optimizer tutorials' two examples for real and write their docs page.

    python docs/tutorial_examples.py           # rewrite the tables of docs/tutorial-examples.md
                                               # and docs/images/tutorial-*.png
    python docs/tutorial_examples.py --check   # exit 1 if the page's tables are out of date

The setup is the tutorials' own: SGD, momentum 0.9, RMSprop, Adadelta, Adagrad, Adam and AdamW
(each with torch's other defaults), learning rate 0.01, 1000 full-batch steps, on the lab
problems ``tutorial_quadratic`` and ``tutorial_regression`` (seed 0); one more row runs
Adadelta at lr 1, its paper's rule. Everything is float64 and deterministic, and takes a few
seconds on one core. The tables sit between ``<!-- generated: NAME -->`` and
``<!-- end generated: NAME -->`` markers (see ``pageblocks.py``); the prose around them is left
alone. ``tests/test_tutorial_examples.py`` regenerates the tables and compares them with the
page.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import optimlab
from optimlab.lab.problems import get_problem
from optimlab.lab.problems.tutorial import tutorial_least_squares, tutorial_regression_data

from pageblocks import save_png, stale_blocks, write_blocks

DOCS = Path(__file__).resolve().parent
PAGE = DOCS / "tutorial-examples.md"
IMAGES = DOCS / "images"
PROBLEMS = ("tutorial_quadratic", "tutorial_regression")
LR = 0.01
STEPS = 1000
SEED = 0


@dataclass(frozen=True)
class Setting:
    """One optimizer as the tutorials configure it."""

    label: str
    name: str  # optimlab registry name
    hparams: dict
    shown: tuple[str, ...]  # hyperparameters the table names (the rest are torch's defaults)


SETTINGS = (
    Setting("SGD", "sgd", {"lr": LR}, ()),
    Setting("Momentum", "sgd", {"lr": LR, "momentum": 0.9}, ("momentum",)),
    Setting("RMSprop", "rmsprop", {"lr": LR}, ("alpha", "eps")),
    Setting("Adadelta", "adadelta", {"lr": LR}, ("rho", "eps")),
    Setting("Adagrad", "adagrad", {"lr": LR}, ("eps",)),
    Setting("Adam", "adam", {"lr": LR}, ("betas", "eps")),
    Setting("AdamW", "adamw", {"lr": LR}, ("betas", "eps", "weight_decay")),
    # Not in the tutorials: Adadelta as its paper defines it (no learning rate, i.e. lr = 1).
    Setting("Adadelta, lr 1", "adadelta", {"lr": 1.0}, ("rho", "eps")),
)

_SYMBOLS = {"alpha": "α", "eps": "ε", "rho": "ρ", "betas": "β", "weight_decay": "weight decay"}


@dataclass
class Run:
    """One optimizer on one problem: every iterate, the loss before each step, and the end."""

    setting: Setting
    problem: str
    path: np.ndarray  # (STEPS + 1) × 2: the parameters (θ₁, θ₂) or (w, b) after each step
    losses: np.ndarray  # STEPS: the training loss at the iterate each step started from
    final: dict[str, float]  # the problem's evaluate() after the last step
    hparams: dict  # every hyperparameter of the optimizer's param group

    @property
    def steps_to_target(self) -> int | None:
        """First step whose iterate has loss ≤ the problem's target (0 = the start)."""
        target = get_problem(self.problem).target
        values = np.append(self.losses, self.final["train_loss"])
        hits = np.flatnonzero(values <= target)
        return int(hits[0]) if hits.size else None


def _point(model: torch.nn.Module) -> list[float]:
    return [float(v) for p in model.parameters() for v in p.detach().reshape(-1).tolist()]


def run(problem_name: str, setting: Setting) -> Run:
    """Train ``setting`` on ``problem_name`` for STEPS full-batch steps, as the lab does."""
    instance = get_problem(problem_name).make(SEED)
    params = list(instance.model.parameters())
    optimizer = optimlab.create_optimizer(setting.name, params, **setting.hparams)
    path, losses = [_point(instance.model)], []
    for step in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        loss = instance.train_loss(step)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        path.append(_point(instance.model))
    group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    return Run(setting, problem_name, np.array(path), np.array(losses), instance.evaluate(), group)


def run_all() -> dict[str, list[Run]]:
    """Every setting on both problems: ``{problem: [Run, ...]}`` in SETTINGS order."""
    return {p: [run(p, s) for s in SETTINGS] for p in PROBLEMS}


# ---------------------------------------------------------------------------------------------
# Tables.


def _par(value: float) -> str:
    """A parameter: four decimals."""
    return f"{value:.4f}"


def _num(value: float) -> str:
    """A loss or a distance: four decimals; three significant digits in scientific notation
    below 1e-3; below 1e-12, where float64 rounding of the losses starts, only the bound."""
    if abs(value) >= 1e-3:
        return f"{value:.4f}"
    if abs(value) >= 1e-12:
        return f"{value:.2e}"
    return "< 1e-12"


def _settings_text(run: Run) -> str:
    parts = [f"lr {run.hparams['lr']:g}"]
    for key in run.setting.shown:
        value = run.hparams[key]
        text = (
            f"({', '.join(f'{v:g}' for v in value)})" if isinstance(value, tuple) else f"{value:g}"
        )
        parts.append(f"{_SYMBOLS.get(key, key)} {text}")
    return ", ".join(parts)


def _steps(run: Run) -> str:
    return "not reached" if run.steps_to_target is None else str(run.steps_to_target)


def quadratic_table(runs: list[Run]) -> str:
    start = runs[0].path[0]
    minimum = np.array(get_problem("tutorial_quadratic").minima[0])
    rows = [
        "| optimizer | settings | θ₁ | θ₂ | J(θ) | ‖θ − θ*‖ | steps to J ≤ 1e-4 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        f"| start | | {_par(start[0])} | {_par(start[1])} | "
        f"{_num(runs[0].losses[0])} | {_num(np.linalg.norm(start - minimum))} | |",
    ]
    for r in runs:
        theta = r.path[-1]
        rows.append(
            f"| {r.setting.label} | {_settings_text(r)} | {_par(theta[0])} | {_par(theta[1])} | "
            f"{_num(r.final['train_loss'])} | {_num(r.final['distance_to_minimum'])} | "
            f"{_steps(r)} |"
        )
    rows.append("| minimum θ* | | 1.0000 | 2.0000 | 0 | 0 | |")
    return "\n".join(rows)


def regression_table(runs: list[Run]) -> str:
    w_star, b_star, mse_star = tutorial_least_squares()
    best = np.array([w_star, b_star])
    start = runs[0].path[0]
    rows = [
        "| optimizer | settings | w | b | train MSE | MSE − MSE* | ‖(w, b) − (w*, b*)‖ "
        "| held-out R² | steps to MSE* + 0.001 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| start | | {_par(start[0])} | {_par(start[1])} | {_num(runs[0].losses[0])} | "
        f"{_num(runs[0].losses[0] - mse_star)} | {_num(np.linalg.norm(start - best))} | | |",
    ]
    for r in runs:
        w, b = r.path[-1]
        mse = r.final["train_loss"]
        rows.append(
            f"| {r.setting.label} | {_settings_text(r)} | {_par(w)} | {_par(b)} | {_num(mse)} | "
            f"{_num(mse - mse_star)} | {_num(np.linalg.norm(r.path[-1] - best))} | "
            f"{_par(r.final['val_metric'])} | {_steps(r)} |"
        )
    rows.append(
        f"| least squares (w*, b*) | closed form | {_par(w_star)} | {_par(b_star)} | "
        f"{_num(mse_star)} | 0 | 0 | | |"
    )
    return "\n".join(rows)


def tables(results: dict[str, list[Run]]) -> dict[str, str]:
    """The generated blocks of the page, by marker name."""
    return {
        "quadratic-table": quadratic_table(results["tutorial_quadratic"]) + "\n",
        "regression-table": regression_table(results["tutorial_regression"]) + "\n",
    }


# ---------------------------------------------------------------------------------------------
# Figures: one panel per optimizer (so that no path hides another) and the loss curves.


def _figure():
    """Eight path panels in two rows of four, and a full-width loss panel under them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.0, 10.0), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, 4)
    paths = [fig.add_subplot(grid[i // 4, i % 4]) for i in range(len(SETTINGS))]
    return fig, paths, fig.add_subplot(grid[2, :])


def _colours() -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {s.label: cmap(i) for i, s in enumerate(SETTINGS)}


def _draw(runs, surface, bounds, minimum, axis_names, loss_label, excess, title) -> object:
    """Small multiples of the paths on the loss contours, and one panel of loss curves.

    ``surface(a, b)`` evaluates the loss on a grid; ``excess`` is subtracted from the losses
    (the lowest reachable value), so the curves can share a log axis.
    """
    colours = _colours()
    fig, axes, loss_ax = _figure()
    (x0, x1), (y0, y1) = bounds
    grid_a, grid_b = np.meshgrid(np.linspace(x0, x1, 161), np.linspace(y0, y1, 161))
    values = surface(grid_a, grid_b)
    levels = np.quantile(values, np.linspace(0.0, 1.0, 14) ** 2)
    for ax, r in zip(axes, runs):
        ax.contour(grid_a, grid_b, values, levels=levels, colors="0.8", linewidths=0.6)
        colour = colours[r.setting.label]
        ax.plot(r.path[:, 0], r.path[:, 1], color=colour, linewidth=1.4)
        ax.plot(*r.path[0], "o", color="black", markersize=4)
        ax.plot(*r.path[-1], "o", color=colour, markersize=5, markeredgecolor="black")
        ax.plot(*minimum, "*", color="black", markersize=9)
        ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel=axis_names[0], ylabel=axis_names[1])
        ax.set_title(_title(r), fontsize=10)
        ax.set_aspect("equal", adjustable="box")
    floor = 1e-16
    for r in runs:
        curve = np.maximum(np.append(r.losses, r.final["train_loss"]) - excess, floor)
        loss_ax.plot(
            np.arange(curve.size),
            curve,
            color=colours[r.setting.label],
            label=_title(r),
            linewidth=1.2,
        )
    loss_ax.set(yscale="log", xlabel="step", ylim=(floor, None))
    # Above the axes, in one row: inside, it would cover curves.
    loss_ax.legend(
        fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(runs), frameon=False
    )
    loss_ax.set_ylabel(f"{loss_label} (floor {floor:g})")
    fig.suptitle(title, fontsize=12)
    return fig


def _title(run: Run) -> str:
    lr = f"lr {run.hparams['lr']:g}"
    return run.setting.label if lr in run.setting.label else f"{run.setting.label}, {lr}"


def quadratic_figure(runs: list[Run]):
    problem = get_problem("tutorial_quadratic")

    def surface(a, b):
        return problem.function(torch.from_numpy(np.stack([a, b], -1))).numpy()

    return _draw(
        runs,
        surface,
        problem.bounds,
        problem.minima[0],
        ("θ₁", "θ₂"),
        "J(θ) − J(θ*)",
        0.0,
        f"J(θ) = (θ₁ − 1)² + (θ₂ − 2)² from (0, 0): {STEPS} steps, ● start, ★ minimum",
    )


def regression_figure(runs: list[Run]):
    data = tutorial_regression_data()
    x, y = data["x_train"].numpy()[:, 0], data["y_train"].numpy()[:, 0]
    w_star, b_star, mse_star = tutorial_least_squares()
    ends = np.concatenate([r.path for r in runs])
    pad = 0.5
    bounds = (
        (min(ends[:, 0].min(), w_star) - pad, max(ends[:, 0].max(), w_star) + pad),
        (min(ends[:, 1].min(), b_star) - pad, max(ends[:, 1].max(), b_star) + pad),
    )

    def surface(w, b):
        return ((w[..., None] * x + b[..., None] - y) ** 2).mean(-1)

    return _draw(
        runs,
        surface,
        bounds,
        (w_star, b_star),
        ("w", "b"),
        "MSE − MSE*",
        mse_star,
        f"y = 3x + 2 + N(0, 1), 100 samples: {STEPS} steps, ● start, ★ least squares",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare the page's tables with a fresh run; write nothing",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = run_all()
    blocks = tables(results)
    if args.check:
        stale = stale_blocks(PAGE, blocks)
        if stale:
            print(
                f"{PAGE.name}: out of date ({', '.join(stale)}); "
                f"run python docs/{Path(__file__).name}",
                file=sys.stderr,
            )
            return 1
        print(f"{PAGE.name}: up to date")
        return 0
    write_blocks(PAGE, blocks)
    save_png(quadratic_figure(results["tutorial_quadratic"]), IMAGES / "tutorial-quadratic.png")
    save_png(regression_figure(results["tutorial_regression"]), IMAGES / "tutorial-regression.png")
    for name, body in blocks.items():
        print(f"{name}:\n{body}")
    print(f"wrote docs/{PAGE.name} and docs/images/tutorial-*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
