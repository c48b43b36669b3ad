"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

No ``pyplot``: figures are created as ``matplotlib.figure.Figure`` objects, so drawing a
report never opens a window, never needs a display, and never changes the backend of a
notebook the lab is used from.

Conventions: one colour per optimizer, the same in every figure of a report; axes are always
labelled; a y axis is logarithmic when the values are positive and span more than a decade
and a half, because loss curves live on a log scale.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

_LINESTYLES = ("-", "--", ":", "-.")


def new_figure(width: float = 10.0, height: float = 4.2, ncols: int = 1):
    """A Figure on an Agg canvas, with ``ncols`` axes side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def png_bytes(fig, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def style_for(labels: list[str]) -> dict[str, dict[str, Any]]:
    """A stable colour (and, past ten optimizers, line style) per optimizer label."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {
        label: {"color": cmap(i % 10), "linestyle": _LINESTYLES[(i // 10) % len(_LINESTYLES)]}
        for i, label in enumerate(labels)
    }


def _legend(fig, ax) -> None:
    """One legend outside the axes, on the right: with ten optimizers a legend inside would
    hide the curves."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=7, frameon=False)


def _use_log(values) -> bool:
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if values.size == 0 or (values <= 0).any():
        return False
    return values.max() / values.min() > 30


def _stack(series: list[list[float]]) -> np.ndarray:
    """Rows padded with NaN to the longest (a diverged seed stops early)."""
    n = max(len(s) for s in series)
    out = np.full((len(series), n), np.nan)
    for i, s in enumerate(series):
        out[i, : len(s)] = s
    return out


def _band(ax, x, rows: np.ndarray, style: dict, label: str, log: bool) -> None:
    with np.errstate(all="ignore"):
        rows = np.where(np.isfinite(rows), rows, np.nan)
        mean = np.nanmean(rows, axis=0)
        std = np.nanstd(rows, axis=0) if rows.shape[0] > 1 else np.zeros_like(mean)
    ax.plot(x, mean, label=label, lw=1.6, **style)
    if rows.shape[0] > 1:
        low, high = mean - std, mean + std
        if log:
            # A band reaching below zero cannot be drawn on a log axis; clamp it to the curve's
            # own scale instead of letting it vanish.
            low = np.where(low > 0, low, mean / 10)
        ax.fill_between(x, low, high, color=style["color"], alpha=0.18, lw=0)


def plot_loss_curves(results, problem: str):
    """Train loss (running mean) against steps, mean ± std over seeds, one line per optimizer;
    next to it the validation metric (or loss) at the evaluation points."""
    finals = results.select(problem, role="final")
    has_metric = any("val_metric" in run["curve"]["evals"] for run in finals)
    has_val_loss = any("val_loss" in run["curve"]["evals"] for run in finals)
    second = "val_metric" if has_metric else ("val_loss" if has_val_loss else None)
    fig, axes = new_figure(width=12.0 if second else 9.5, ncols=2 if second else 1)
    styles = style_for(results.optimizer_labels)
    all_values = [v for run in finals for v in run["curve"]["smooth"]]
    log = _use_log(all_values)
    for label in results.optimizer_labels:
        runs = [r for r in finals if r["label"] == label]
        if not runs:
            continue
        longest = max(runs, key=lambda r: len(r["curve"]["step"]))
        rows = _stack([r["curve"]["smooth"] for r in runs])
        x = np.asarray(longest["curve"]["step"]) + 1
        _band(axes[0], x, rows, styles[label], f"{label} (lr={_lr(runs[0])})", log)
        if second:
            ev = [r["curve"]["evals"] for r in runs if second in r["curve"]["evals"]]
            if ev:
                longest_ev = max(ev, key=lambda e: len(e["step"]))
                rows2 = _stack([e[second] for e in ev])
                _band(axes[1], np.asarray(longest_ev["step"]), rows2, styles[label], label, False)
    target = results.problem(problem).target
    axes[0].axhline(target, color="0.4", lw=0.8, ls=":", label=f"target {target:g}")
    axes[0].set_yscale("log" if log else "linear")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("train loss (running mean, ~10 steps)")
    axes[0].set_title(f"{problem}: training loss, mean ± std over seeds")
    axes[0].grid(True, which="major", alpha=0.3)
    _legend(fig, axes[0])
    if second:
        name = results.problem(problem).metric if second == "val_metric" else "loss"
        axes[1].set_xlabel("step")
        axes[1].set_ylabel(f"validation {name}")
        axes[1].set_title(f"{problem}: validation {name}")
        axes[1].grid(True, alpha=0.3)
    return fig


def _lr(run) -> str:
    lr = run["config"]["hparams"].get("lr")
    return "?" if lr is None else f"{lr:.3g}"


def plot_lr_sensitivity(results, problem: str):
    """The tuning runs: objective against learning rate, one line per optimizer.

    Diverged runs are drawn as crosses on the worst edge of the plot, and the chosen setting
    as a larger dot, so a flat wide curve (a forgiving optimizer) is easy to tell from a sharp
    one.
    """
    objective = results.objective(problem)
    fig, (ax,) = new_figure(width=9.5, height=4.2)
    styles = style_for(results.optimizer_labels)
    cells = {c.optimizer: c for c in results.summaries() if c.problem == problem}
    scattered = results.plan.get("search") == "optuna"
    finite = [
        v for c in cells.values() for _, v in c.sensitivity if v is not None and math.isfinite(v)
    ]
    log = objective.metric is None and _use_log(finite)
    # Diverged runs are drawn at the worst finite value seen, the edge of the plot.
    worst = (min(finite) if objective.higher_is_better else max(finite)) if finite else 1.0
    for label in [label for label in results.optimizer_labels if label in cells]:
        cell = cells[label]
        pts = [(lr, v) for lr, v in cell.sensitivity if math.isfinite(lr)]
        ok = [(lr, v) for lr, v in pts if math.isfinite(v)]
        bad = [lr for lr, v in pts if not math.isfinite(v)]
        style = styles[label]
        if ok:
            # Optuna trials vary other hyperparameters too: joining them by lr would draw a
            # curve that does not exist.
            line = {"linestyle": "none"} if scattered else {"lw": 1.3}
            ax.plot(*zip(*ok, strict=True), marker="o", ms=3.5, label=label, **{**style, **line})
        if bad:
            ax.plot(bad, [worst] * len(bad), ls="none", marker="x", color=style["color"])
        if cell.lr is not None and math.isfinite(cell.objective_mean):
            ax.plot([cell.lr], [cell.objective_mean], marker="o", ms=8, color=style["color"])
    ax.set_xscale("log")
    ax.set_yscale("log" if log else "linear")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"{objective.label()} after tuning run")
    direction = "higher" if objective.higher_is_better else "lower"
    ax.set_title(f"{problem}: lr sensitivity ({direction} is better; × = diverged)")
    ax.grid(True, which="major", alpha=0.3)
    _legend(fig, ax)
    return fig


def plot_lr_finder(items, title: str = "", ax=None):
    """Range-test curves: smoothed loss against lr (raw loss faint), suggestion marked."""
    if ax is None:
        fig, (ax,) = new_figure(width=8.0, height=4.2)
    else:
        fig = ax.figure
    styles = style_for([label for label, _ in items])
    tops, bottoms = [], []
    for label, res in items:
        if not res.lrs:
            continue
        style = styles[label]
        ax.plot(res.lrs, res.losses, color=style["color"], alpha=0.2, lw=0.8)
        text = label
        if res.suggestion is not None:
            text += f" → {res.suggestion:.2g}"
            i = int(np.argmin(np.abs(np.log(res.lrs) - math.log(res.suggestion))))
            ax.plot([res.suggestion], [res.smoothed[i]], marker="o", ms=7, color=style["color"])
        ax.plot(res.lrs, res.smoothed, lw=1.6, label=text, **style)
        finite = [v for v in res.smoothed if math.isfinite(v)]
        if finite:
            tops.append(finite[0])
            bottoms.append(min(finite))
    if tops:
        # Frame the useful part: from the lowest point up to a bit above where curves start,
        # so that the divergence spike at the end does not flatten everything else.
        low, high = min(bottoms), max(tops)
        pad = 0.08 * (high - low) if high > low else abs(high) * 0.1 + 1e-12
        ax.set_ylim(low - pad, high + 3 * pad)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (exponential sweep)")
    ax.set_ylabel("train loss (smoothed)")
    method = items[0][1].method if items else ""
    ax.set_title(f"{title}: lr range test (dot = suggestion, rule: {method})".lstrip(": "))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


# -- 2-D trajectories ------------------------------------------------------------------------


def _contour(ax, problem, fast: bool = False) -> None:
    """Draw the function's landscape: filled log-spaced contours, or for animation frames
    (``fast``) a shaded image with a few contour lines, which redraws many times faster."""
    import torch

    (x0, x1), (y0, y1) = problem.bounds
    n = 150 if fast else 240
    xs = np.linspace(x0, x1, n)
    ys = np.linspace(y0, y1, n)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1)
    with torch.no_grad():
        z = problem.function(torch.as_tensor(grid, dtype=torch.float64)).numpy()
    shift = z - np.nanmin(z) + 1e-12
    # Log-spaced levels show both the valley floor and the walls of functions like Rosenbrock.
    levels = np.geomspace(max(np.nanpercentile(shift, 0.5), 1e-3), np.nanmax(shift) + 1e-3, 25)
    if fast:
        ax.imshow(
            shift,
            extent=(x0, x1, y0, y1),
            origin="lower",
            cmap="Greys",
            alpha=0.45,
            norm=_lognorm(),
            aspect="auto",
            interpolation="bilinear",
        )
        ax.contour(xs, ys, shift, levels=levels[::2], colors="0.55", linewidths=0.4)
    else:
        ax.contourf(xs, ys, shift, levels=levels, cmap="Greys", alpha=0.45, norm=_lognorm())
        ax.contour(xs, ys, shift, levels=levels, colors="0.55", linewidths=0.4)
    for mx, my in problem.minima:
        ax.plot(mx, my, marker="*", ms=13, color="gold", mec="black", mew=0.7, ls="none")
    ax.plot(*problem.start, marker="o", ms=6, color="black")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def _lognorm():
    from matplotlib.colors import LogNorm

    return LogNorm()


def trajectory_paths(results, problem: str) -> dict[str, np.ndarray]:
    """Path of the best setting per optimizer (first seed's final run), as arrays (n, 2)."""
    paths = {}
    for label in results.optimizer_labels:
        runs = sorted(results.select(problem, label, "final"), key=lambda r: r["seed"])
        if runs and runs[0]["curve"].get("path"):
            paths[label] = np.asarray(runs[0]["curve"]["path"], dtype=float)
    return paths


def plot_trajectories(results, problem: str):
    """Contour plot of the function with each optimizer's path at its tuned lr."""
    prob = results.problem(problem)
    fig, (ax,) = new_figure(width=9.0, height=6.0)
    _contour(ax, prob)
    styles = style_for(results.optimizer_labels)
    for label, path in trajectory_paths(results, problem).items():
        lr = results.best(problem, label).lr
        ax.plot(path[:, 0], path[:, 1], lw=1.5, label=f"{label} (lr={lr:.3g})", **styles[label])
        ax.plot(path[-1, 0], path[-1, 1], marker="o", ms=4, color=styles[label]["color"])
    ax.set_title(f"{problem}: paths at the tuned learning rates (★ minimum, ● start)")
    _legend(fig, ax)
    return fig


def save_trajectory_gif(results, problem: str, path: Path, frames: int = 40, fps: int = 8):
    """Animate every optimizer's path on the contour plot; written atomically as a GIF
    with matplotlib's ``PillowWriter``."""
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    prob = results.problem(problem)
    paths = trajectory_paths(results, problem)
    if not paths:
        return None
    # A fixed layout: constrained layout would be solved again for every frame.
    fig = Figure(figsize=(6.0, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.1, 0.1, 0.85, 0.82))
    _contour(ax, prob, fast=True)
    styles = style_for(results.optimizer_labels)
    n = max(len(p) for p in paths.values())
    # Sample frame indices densely at the start, where paths move most.
    idx = np.unique(np.round(np.geomspace(1, n, frames)).astype(int)) - 1
    lines = {label: ax.plot([], [], lw=1.5, label=label, **styles[label])[0] for label in paths}
    heads = {
        label: ax.plot([], [], marker="o", ms=5, color=styles[label]["color"])[0] for label in paths
    }
    title = ax.set_title("")
    ax.legend(fontsize=7, loc="best")

    def draw(k):
        step = idx[k]
        for label, p in paths.items():
            upto = p[: min(step, len(p) - 1) + 1]
            lines[label].set_data(upto[:, 0], upto[:, 1])
            heads[label].set_data(upto[-1:, 0], upto[-1:, 1])
        title.set_text(f"{problem}: step {step}")
        return [*lines.values(), *heads.values(), title]

    anim = FuncAnimation(fig, draw, frames=len(idx), blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".gif")
    os.close(fd)
    try:
        from optimlab.lab.files import _default_mode

        anim.save(tmp, writer=PillowWriter(fps=fps), dpi=80)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def plot_search_history(results, problem: str):
    """Objective of each tuning trial in the order they finished, with the best so far."""
    objective = results.objective(problem)
    fig, (ax,) = new_figure(width=8.0, height=4.0)
    styles = style_for(results.optimizer_labels)
    for label in results.optimizer_labels:
        runs = results.select(problem, label, "tune")
        if not runs:
            continue
        values = np.asarray([objective.value(r["final"]) for r in runs], dtype=float)
        x = np.arange(1, len(values) + 1)
        ok = np.isfinite(values)
        ax.plot(x[ok], values[ok], ls="none", marker="o", ms=4, color=styles[label]["color"])
        best = np.maximum.accumulate(values) if objective.higher_is_better else None
        if best is None:
            best = np.minimum.accumulate(values)
        ax.step(
            x, np.where(np.isfinite(best), best, np.nan), where="post", label=label, **styles[label]
        )
    ax.set_xlabel("trial (in order of completion)")
    ax.set_ylabel(objective.label())
    ax.set_title(f"{problem}: search history (line = best so far)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig
