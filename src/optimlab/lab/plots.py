"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

No ``pyplot``: figures are created as ``matplotlib.figure.Figure`` objects, so drawing a
report never opens a window, never needs a display, and never changes the backend of a
notebook the lab is used from.

Conventions:

* one colour per optimizer, the same in every figure of a report; axes are always labelled;
* **small multiples**: with several optimizers, each gets its own panel, its curves in its
  colour over the others' in light grey, so an optimizer whose path another one follows
  (Adam, AdamW and AMSGrad often do) stays visible, and no legend covers data: a panel's
  title names its optimizer. Panels are listed by place on the problem;
* a y axis is logarithmic when the values are positive and span more than a decade and a
  half; there the line is the **geometric** mean over seeds and the band × / ÷ one geometric
  standard deviation, so a band never reaches below zero, or far below the data;
* panels that carry the verdict **zoom to the range it depends on**: the validation curves
  span the final values of every seed, not the first evaluation.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from optimlab.lab.files import atomic_path

_LINESTYLES = ("-", "--", ":", "-.")
#: the other optimizers' curves in a panel
_CONTEXT = {"color": "0.82", "lw": 0.8, "zorder": 1}
#: panels per row in small multiples
NCOLS = 5


def new_figure(width: float = 10.0, height: float = 4.2, ncols: int = 1):
    """A Figure on an Agg canvas, with ``ncols`` axes side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


#: Margins of a small-multiples figure, in inches: room for the supertitle, two-line panel
#: titles, the shared axis labels and the outer tick labels.
_MARGINS = {"left": 0.8, "right": 0.15, "top": 0.78, "bottom": 0.55, "hspace": 0.5, "wspace": 0.15}


def small_multiples(
    n: int,
    *,
    panel=(2.45, 1.9),
    ncols: int = NCOLS,
    sharey: bool = True,
    wspace: float | None = None,
):
    """A Figure with ``n`` panels in rows of ``ncols`` sharing their x axis (and y axis);
    returns the figure and the ``n`` visible axes, row by row.

    The layout is fixed in inches rather than solved by matplotlib's constrained layout,
    which with ten panels would take most of the time of drawing the figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = _MARGINS
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    if wspace is None:  # inches between panels: room for tick labels when y is not shared
        wspace = m["wspace"] if sharey else 0.45
    width = m["left"] + m["right"] + panel[0] * ncols + wspace * (ncols - 1)
    height = m["top"] + m["bottom"] + panel[1] * nrows + m["hspace"] * (nrows - 1)
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(
        left=m["left"] / width,
        right=1 - m["right"] / width,
        bottom=m["bottom"] / height,
        top=1 - m["top"] / height,
        wspace=wspace / panel[0],
        hspace=m["hspace"] / panel[1],
    )
    grid = fig.subplots(nrows, ncols, sharex=True, sharey=sharey, squeeze=False)
    axes = list(grid.ravel())
    for k, ax in enumerate(axes):
        if k >= n:
            ax.set_visible(False)
        elif k + ncols >= n:  # nothing visible below it: it carries the x tick labels
            ax.xaxis.set_tick_params(labelbottom=True)
    return fig, axes[:n]


def _frame(fig, title: str, xlabel: str, ylabel: str) -> None:
    """Supertitle and shared axis labels of a small-multiples figure, in its fixed margins."""
    width, height = fig.get_size_inches()
    fig.suptitle(title, fontsize=10, y=1 - 0.12 / height, va="top")
    fig.supxlabel(xlabel, fontsize=9, y=0.05 / height, va="bottom")
    fig.supylabel(ylabel, fontsize=9, x=0.08 / width, ha="left")


def png_bytes(fig, dpi: int = 100) -> bytes:
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
    """One legend outside the axes, on the right, where it cannot cover a curve."""
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


def center_and_band(rows: np.ndarray, log: bool):
    """Per column: the centre line and the band (low, high) over the rows (seeds).

    Linear axis: mean ± one sample standard deviation. Log axis: the geometric mean
    exp(mean(log y)) and exp(mean(log y) ± std(log y)), which stays positive and is
    symmetric on the axis the reader sees. With one row the band is the line itself.
    """
    rows = np.asarray(rows, dtype=float)
    ok = np.isfinite(rows) & (rows > 0 if log else True)
    data = np.where(ok, np.log(np.where(ok, rows, 1.0)) if log else rows, np.nan)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        center = np.nanmean(data, axis=0)
        spread = np.nanstd(data, axis=0, ddof=1) if rows.shape[0] > 1 else np.zeros_like(center)
    spread = np.where(np.isfinite(spread), spread, 0.0)
    low, high = center - spread, center + spread
    if log:
        return np.exp(center), np.exp(low), np.exp(high)
    return center, low, high


def _band(ax, x, rows: np.ndarray, style: dict, log: bool, label: str | None = None):
    center, low, high = center_and_band(rows, log)
    ax.plot(x, center, lw=1.5, label=label, zorder=3, **style)
    if rows.shape[0] > 1:
        ax.fill_between(x, low, high, color=style["color"], alpha=0.22, lw=0, zorder=2)
    return center


def _tidy(ax) -> None:
    """Small tick labels and no minor ticks: in a panel of a few centimetres they would only
    crowd it (and building them is most of the drawing time of a small-multiples figure)."""
    from matplotlib.ticker import NullLocator

    ax.tick_params(labelsize=7)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_locator(NullLocator())


def _ordered_cells(results, problem: str):
    """The problem's cells in the order of its places."""
    return [c for c in results.summaries() if c.problem == problem]


def _panel_title(ax, cell, extra: str = "", color="black") -> None:
    text = f"{cell.place_text}  {cell.optimizer}" if cell is not None else ""
    ax.set_title(text + (f"\n{extra}" if extra else ""), fontsize=8.5, color=color, loc="left")


def _series_panels(cells, series: dict, styles: dict, log: bool):
    """One panel per cell that has a series ``(x, rows over seeds)``: the others' centre lines
    in grey, then its own line and band. Returns the figure and ``[(ax, cell, (x, rows))]``."""
    shown = [c for c in cells if c.optimizer in series]
    fig, axes = small_multiples(max(1, len(shown)))
    centers = {label: center_and_band(rows, log)[0] for label, (_, rows) in series.items()}
    panels = []
    for ax, cell in zip(axes, shown, strict=False):
        for other, (x, _) in series.items():
            if other != cell.optimizer:
                ax.plot(x, centers[other], **_CONTEXT)
        x, rows = series[cell.optimizer]
        _band(ax, x, rows, styles[cell.optimizer], log)
        panels.append((ax, cell, (x, rows)))
    return fig, panels


def _train_series(runs, key="smooth"):
    longest = max(runs, key=lambda r: len(r["curve"]["step"]))
    return np.asarray(longest["curve"]["step"]) + 1, _stack([r["curve"][key] for r in runs])


def plot_loss_curves(results, problem: str):
    """Training loss (running mean) against steps, one panel per optimizer: its mean over
    seeds with a band of one standard deviation (geometric on a log axis), the others in grey,
    the target dotted."""
    finals = results.select(problem, role="final")
    cells = _ordered_cells(results, problem)
    styles = style_for(results.optimizer_labels)
    log = _use_log([v for run in finals for v in run["curve"]["smooth"]])
    series = {}
    for cell in cells:
        runs = [r for r in finals if r["label"] == cell.optimizer]
        if runs:
            series[cell.optimizer] = _train_series(runs)
    target = results.problem(problem).target
    fig, panels = _series_panels(cells, series, styles, log)
    for ax, cell, _ in panels:
        ax.axhline(target, color="0.35", lw=0.8, ls=":", zorder=4)
        _panel_title(ax, cell, f"lr {_num(cell.lr)}")
        ax.set_yscale("log" if log else "linear")
        ax.grid(True, which="major", alpha=0.3)
        _tidy(ax)
    how = "geometric mean × / ÷ geometric std" if log else "mean ± std"
    _frame(
        fig,
        f"{problem}: training loss, {how} over seeds (dotted: target {target:g})",
        "step",
        "train loss (running mean, ~10 steps)",
    )
    return fig


def _num(value) -> str:
    return "?" if value is None else f"{value:.3g}"


def _zoom(values, log: bool, pad: float = 0.15):
    """Limits that hold ``values`` with a margin (in log space on a log axis)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if log:
        v = np.log10(v[v > 0])
    if v.size == 0:
        return None
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo if hi > lo else max(abs(hi) * 0.02, 1e-3)
    lo, hi = lo - pad * span, hi + pad * span
    return (10**lo, 10**hi) if log else (lo, hi)


def plot_validation_curves(results, problem: str):
    """The validation metric (or loss) at the evaluations, one panel per optimizer, zoomed to
    the range of every seed's final value: the range the places depend on. ``None`` when the
    problem has no validation data."""
    finals = results.select(problem, role="final")
    has_metric = any("val_metric" in run["curve"]["evals"] for run in finals)
    has_val_loss = any("val_loss" in run["curve"]["evals"] for run in finals)
    key = "val_metric" if has_metric else ("val_loss" if has_val_loss else None)
    if key is None:
        return None
    cells = _ordered_cells(results, problem)
    styles = style_for(results.optimizer_labels)
    series = {}
    last = []
    for cell in cells:
        evs = [
            r["curve"]["evals"]
            for r in finals
            if r["label"] == cell.optimizer and key in r["curve"]["evals"]
        ]
        if evs:
            longest = max(evs, key=lambda e: len(e["step"]))
            series[cell.optimizer] = (np.asarray(longest["step"]), _stack([e[key] for e in evs]))
            last += [e[key][-1] for e in evs if e[key]]
    log = key == "val_loss" and _use_log(last)
    fig, panels = _series_panels(cells, series, styles, log)
    axes = [ax for ax, _, _ in panels]
    for ax, cell, (x, rows) in panels:
        ax.plot(
            np.full(rows.shape[0], x[-1]),
            rows[:, -1],
            ls="none",
            marker="o",
            ms=3,
            color=styles[cell.optimizer]["color"],
            zorder=4,
        )
        _panel_title(ax, cell, f"final {_num(cell.objective_mean)}")
        ax.set_yscale("log" if log else "linear")
        ax.grid(True, which="major", alpha=0.3)
        _tidy(ax)
    limits = _zoom(last, log)
    if limits is not None and axes:
        axes[0].set_ylim(*limits)  # shared by every panel
    name = results.problem(problem).metric if key == "val_metric" else "loss"
    _frame(
        fig,
        f"{problem}: validation {name}, zoomed to the final values of every seed (dots)",
        "step",
        f"validation {name}",
    )
    return fig


def _stacked_rows(values: list[float], row: float, step: float = 0.14) -> list[float]:
    """y positions for dots on one row: equal values (common with accuracy on a small
    validation set) are spread up and down so that each seed stays visible."""
    seen: dict[float, int] = {}
    out = []
    for v in values:
        k = seen.get(v, 0)
        seen[v] = k + 1
        out.append(row + step * ((k + 1) // 2) * (1 if k % 2 else -1) if k else row)
    return out


def plot_final_results(results, problem: str):
    """The numbers behind the places: each seed's final objective (dots) and the mean (bar)
    per optimizer, listed by place; beside them, each optimizer's difference to the leader
    with its 95 % Welch interval (an interval across 0: not told apart from the leader)."""
    from optimlab.lab.stats import CONFIDENCE

    cells = _ordered_cells(results, problem)
    objective = results.objective(problem)
    styles = style_for(results.optimizer_labels)
    gaps = [c for c in cells if c.vs_leader is not None]
    exact = results.problem(problem).deterministic
    two = bool(gaps) and not exact
    fig, axes = new_figure(
        width=11.0 if two else 7.0, height=0.3 * len(cells) + 1.3, ncols=2 if two else 1
    )
    ax = axes[0]
    values = [v for c in cells for v in c.objective_values if math.isfinite(v)]
    log = objective.metric is None and _use_log(values)
    for i, cell in enumerate(cells):
        color = styles[cell.optimizer]["color"]
        vals = [v for v in cell.objective_values if math.isfinite(v)]
        ax.plot(vals, _stacked_rows(vals, i), ls="none", marker="o", ms=4, alpha=0.8, color=color)
        if vals:
            ax.plot([float(np.mean(vals))], [i], marker="|", ms=15, mew=2.5, color=color)
        if cell.diverged:
            ax.annotate(
                f"× {cell.diverged} diverged",
                (1.0, i),
                xycoords=("axes fraction", "data"),
                ha="right",
                va="center",
                fontsize=7,
                color="firebrick",
            )
    labels = [f"{c.place_text:>3}  {c.optimizer}" for c in cells]
    ax.set_yticks(range(len(cells)), labels, fontsize=8)
    ax.set_ylim(len(cells) - 0.5, -0.5)
    ax.set_xscale("log" if log else "linear")
    direction = "higher" if objective.higher_is_better else "lower"
    label = cells[0].objective_label if cells else objective.label()
    ax.set_xlabel(
        f"{label if label.startswith('final') else 'final ' + label} ({direction} is better)"
    )
    ax.set_title(f"{problem}: each seed (dots) and mean (bar), by place", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    if two:
        gx = axes[1]
        for i, cell in enumerate(cells):
            color = styles[cell.optimizer]["color"]
            if cell.leader:
                gx.plot([0], [i], marker="D", ms=5, color=color)
            elif cell.vs_leader is not None:
                est, lo, hi = cell.vs_leader
                gx.errorbar(
                    [est], [i], xerr=[[est - lo], [hi - est]], fmt="o", ms=4, color=color, capsize=3
                )
        gx.axvline(0, color="0.3", lw=0.8)
        gx.set_yticks(range(len(cells)), [""] * len(cells))
        gx.set_ylim(len(cells) - 0.5, -0.5)
        gx.set_xlabel(f"this − leader ({label})")
        gx.set_title(
            f"difference to the leader, {CONFIDENCE:.0%} Welch interval (across 0: not told apart)",
            fontsize=10,
        )
        gx.grid(True, axis="x", alpha=0.3)
    return fig


def plot_lr_sensitivity(results, problem: str):
    """The tuning runs: objective against learning rate, one panel per optimizer, the others
    in grey. The chosen setting is the large dot (its mean over seeds); × marks diverged runs
    (at the worst finite value); grey bands mark learning rates beyond the problem's range,
    tried because the best lay at an edge; a best still at an edge is titled in red."""
    objective = results.objective(problem)
    cells = _ordered_cells(results, problem)
    styles = style_for(results.optimizer_labels)
    scattered = results.plan.get("search") == "optuna"
    finite = [v for c in cells for _, v in c.sensitivity if v is not None and math.isfinite(v)]
    log = objective.metric is None and _use_log(finite)
    worst = (min(finite) if objective.higher_is_better else max(finite)) if finite else 1.0
    lr_range = results.plan.get("lr_ranges", {}).get(results.problem_key(problem))
    fig, axes = small_multiples(max(1, len(cells)))
    curves = {
        c.optimizer: [(lr, v) for lr, v in c.sensitivity if math.isfinite(lr) and math.isfinite(v)]
        for c in cells
    }
    all_lrs = [lr for c in cells for lr, _ in c.sensitivity if math.isfinite(lr)]
    for ax, cell in zip(axes, cells, strict=False):
        style = styles[cell.optimizer]
        line = {"linestyle": "none"} if scattered else {"lw": 1.3}
        for other, pts in curves.items():
            if other != cell.optimizer and pts and not scattered:
                ax.plot(*zip(*pts, strict=True), **_CONTEXT)
        if lr_range is not None and all_lrs and not scattered:
            lo, hi = lr_range
            if min(all_lrs) < lo * (1 - 1e-5):
                ax.axvspan(min(all_lrs) / 1.5, lo, color="0.93", lw=0, zorder=0)
            if max(all_lrs) > hi * (1 + 1e-5):
                ax.axvspan(hi, max(all_lrs) * 1.5, color="0.93", lw=0, zorder=0)
        pts = curves[cell.optimizer]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", ms=3, zorder=3, **{**style, **line})
        bad = [lr for lr, v in cell.sensitivity if math.isfinite(lr) and not math.isfinite(v)]
        if bad:
            ax.plot(bad, [worst] * len(bad), ls="none", marker="x", color=style["color"])
        if cell.lr is not None and math.isfinite(cell.objective_mean):
            ax.plot([cell.lr], [cell.objective_mean], marker="o", ms=7, color=style["color"])
        edge = f" — at the {cell.lr_edge} edge" if cell.lr_edge else ""
        _panel_title(ax, cell, f"best lr {_num(cell.lr)}{edge}", "firebrick" if edge else "black")
        ax.set_xscale("log")
        ax.set_yscale("log" if log else "linear")
        ax.grid(True, which="major", alpha=0.3)
        _tidy(ax)
    direction = "higher" if objective.higher_is_better else "lower"
    _frame(
        fig,
        f"{problem}: lr sensitivity ({direction} is better; large dot: chosen, mean over "
        "seeds; × diverged)",
        "learning rate (shaded: beyond the problem's range)",
        f"{objective.label()} after tuning run",
    )
    return fig


def _lr_finder_frame(ax, items) -> None:
    """Frame the useful part: from the lowest point up to a bit above where curves start, so
    that the divergence spike at the end does not flatten everything else."""
    tops, bottoms = [], []
    for _, res in items:
        finite = [v for v in res.smoothed if math.isfinite(v)]
        if finite:
            tops.append(finite[0])
            bottoms.append(min(finite))
    if tops:
        low, high = min(bottoms), max(tops)
        pad = 0.08 * (high - low) if high > low else abs(high) * 0.1 + 1e-12
        ax.set_ylim(low - pad, high + 3 * pad)


def _lr_finder_curve(ax, res, style) -> None:
    ax.plot(res.lrs, res.losses, color=style["color"], alpha=0.2, lw=0.8)
    ax.plot(res.lrs, res.smoothed, lw=1.6, zorder=3, **style)
    if res.suggestion is not None:
        i = int(np.argmin(np.abs(np.log(res.lrs) - math.log(res.suggestion))))
        ax.plot([res.suggestion], [res.smoothed[i]], marker="o", ms=7, color=style["color"])


def plot_lr_finder(items, title: str = "", ax=None):
    """Range-test curves: smoothed loss against lr (raw loss faint), suggestion marked; one
    panel per optimizer (the others in grey) when there are several."""
    items = [(label, res) for label, res in items if res.lrs]
    styles = style_for([label for label, _ in items])
    method = items[0][1].method if items else ""
    if ax is not None or len(items) <= 1:
        if ax is None:
            fig, (ax,) = new_figure(width=7.0, height=4.0)
        else:
            fig = ax.figure
        for label, res in items:
            _lr_finder_curve(ax, res, styles[label])
        _lr_finder_frame(ax, items)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (exponential sweep)")
        ax.set_ylabel("train loss (smoothed)")
        suggestion = f" → {items[0][1].suggestion:.2g}" if items and items[0][1].suggestion else ""
        name = items[0][0] if items else ""
        head = f"{title}: " if title else ""
        ax.set_title(f"{head}{name}{suggestion} (dot: suggestion, rule: {method})")
        ax.grid(True, which="major", alpha=0.3)
        return fig
    fig, axes = small_multiples(len(items))
    for ax_i, (label, res) in zip(axes, items, strict=False):
        for other, o_res in items:
            if other != label:
                ax_i.plot(o_res.lrs, o_res.smoothed, **_CONTEXT)
        _lr_finder_curve(ax_i, res, styles[label])
        suggestion = "no suggestion" if res.suggestion is None else f"→ {res.suggestion:.2g}"
        ax_i.set_title(f"{label} {suggestion}", fontsize=8.5, loc="left")
        ax_i.set_xscale("log")
        ax_i.grid(True, which="major", alpha=0.3)
        _tidy(ax_i)
    _lr_finder_frame(axes[0], items)
    head = f"{title}: " if title else ""
    _frame(
        fig,
        f"{head}lr range test (dot: suggestion, rule: {method})",
        "learning rate (exponential sweep)",
        "train loss (smoothed)",
    )
    return fig


def plot_performance_profiles(results):
    """AlgoPerf's performance profiles, one panel per optimizer in the order of the ranking:
    the fraction of problems whose target it reached within τ × the fastest optimizer's time,
    for τ ∈ [1, 4] (solid: seconds, the scored one; dashed: steps)."""
    from optimlab.lab.stats import TAU_MAX, performance_ratios, profile

    problems = results.problem_names
    rows = results.ranking()
    styles = style_for(results.optimizer_labels)
    taus = np.linspace(1.0, TAU_MAX, 601)
    curves = {}
    for measure in ("seconds", "steps"):
        ratios = performance_ratios(results.profile_times(measure))
        curves[measure] = {label: profile(r, taus, len(problems)) for label, r in ratios.items()}
    # The panels end at τ = 1 and τ = 4, both labelled: a wider gap keeps neighbours apart.
    fig, axes = small_multiples(max(1, len(rows)), panel=(2.45, 1.7), wspace=0.3)
    for ax, row in zip(axes, rows, strict=False):
        label = row["optimizer"]
        for other, rho in curves["seconds"].items():
            if other != label:
                ax.plot(taus, rho, drawstyle="steps-post", **_CONTEXT)
        color = styles[label]["color"]
        ax.plot(taus, curves["steps"][label], drawstyle="steps-post", color=color, lw=1.0, ls="--")
        ax.plot(taus, curves["seconds"][label], drawstyle="steps-post", color=color, lw=1.8)
        place = f"{row['place']}=" if row["shared"] else str(row["place"])
        ax.set_title(
            f"{place}  {label}\nscore {row['profile_score']:.2f} "
            f"(by steps {row['profile_score_steps']:.2f})",
            fontsize=8.5,
            loc="left",
        )
        ax.set_xlim(1.0, TAU_MAX)
        ax.set_xticks(np.arange(1, math.floor(TAU_MAX) + 1))
        ax.set_ylim(-0.04, 1.04)
        ax.grid(True, alpha=0.3)
        _tidy(ax)
    _frame(
        fig,
        f"Performance profiles over {len(problems)} problem(s): solid by seconds (scored, "
        "AlgoPerf), dashed by steps; title: overall place and score",
        "τ (time to target ÷ the fastest optimizer's)",
        "fraction of problems",
    )
    return fig


# -- 2-D trajectories ------------------------------------------------------------------------


def _landscape(problem, n: int):
    """The function on an ``n`` × ``n`` grid over its bounds, shifted to a minimum of ~0, and
    log-spaced contour levels (they show both the valley floor and the walls of functions
    like Rosenbrock)."""
    import torch

    (x0, x1), (y0, y1) = problem.bounds
    xs = np.linspace(x0, x1, n)
    ys = np.linspace(y0, y1, n)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1)
    with torch.no_grad():
        z = problem.function(torch.as_tensor(grid, dtype=torch.float64)).numpy()
    shift = z - np.nanmin(z) + 1e-12
    levels = np.geomspace(max(np.nanpercentile(shift, 0.5), 1e-3), np.nanmax(shift) + 1e-3, 25)
    return xs, ys, shift, levels


def _contour(ax, problem, fast: bool = False, landscape=None, labels: bool = True) -> None:
    """Draw the function's landscape: filled log-spaced contours, or for animation frames
    (``fast``) a shaded image with a few contour lines, which redraws many times faster."""
    xs, ys, shift, levels = landscape or _landscape(problem, 150 if fast else 240)
    (x0, x1), (y0, y1) = problem.bounds
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
        ax.contourf(xs, ys, shift, levels=levels, cmap="Greys", alpha=0.35, norm=_lognorm())
        ax.contour(xs, ys, shift, levels=levels[::2], colors="0.6", linewidths=0.3)
    for mx, my in problem.minima:
        ax.plot(mx, my, marker="*", ms=11, color="gold", mec="black", mew=0.7, ls="none")
    ax.plot(*problem.start, marker="o", ms=5, color="black")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    if labels:
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
    """Contour plots of the function, one panel per optimizer with its path at its tuned lr
    (the other paths in grey), so paths that coincide stay visible."""
    from matplotlib.ticker import MaxNLocator

    prob = results.problem(problem)
    paths = trajectory_paths(results, problem)
    cells = [c for c in _ordered_cells(results, problem) if c.optimizer in paths]
    styles = style_for(results.optimizer_labels)
    (x0, x1), (y0, y1) = prob.bounds
    aspect = (y1 - y0) / (x1 - x0)
    width = 2.45
    fig, axes = small_multiples(max(1, len(cells)), panel=(width, width * aspect + 0.45))
    landscape = _landscape(prob, 160)
    for ax, cell in zip(axes, cells, strict=False):
        _contour(ax, prob, landscape=landscape, labels=False)
        for other, path in paths.items():
            if other != cell.optimizer:
                ax.plot(path[:, 0], path[:, 1], **{**_CONTEXT, "color": "0.6", "lw": 0.6})
        path = paths[cell.optimizer]
        color = styles[cell.optimizer]["color"]
        ax.plot(path[:, 0], path[:, 1], lw=1.4, zorder=3, **styles[cell.optimizer])
        ax.plot(path[-1, 0], path[-1, 1], marker="o", ms=4, color=color, mec="black", zorder=4)
        _panel_title(ax, cell, f"lr {_num(cell.lr)}, loss {_num(cell.objective_mean)}")
        _tidy(ax)
        # The panels end exactly at the function's bounds: without its end labels, one
        # panel's last tick label cannot run into the next one's first.
        ax.xaxis.set_major_locator(MaxNLocator(4, steps=[1, 2, 5, 10], prune="both"))
    _frame(
        fig,
        f"{problem}: paths at the tuned learning rates (★ minimum, ● start; grey: the others)",
        "x",
        "y",
    )
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
    # A fixed layout: constrained layout would be solved again for every frame. The legend
    # sits in a margin of its own, off the landscape.
    fig = Figure(figsize=(7.4, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.08, 0.1, 0.7, 0.82))
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
    fig.legend(handles=list(lines.values()), loc="center right", fontsize=7, frameon=False)

    def draw(k):
        step = idx[k]
        for label, p in paths.items():
            upto = p[: min(step, len(p) - 1) + 1]
            lines[label].set_data(upto[:, 0], upto[:, 1])
            heads[label].set_data(upto[-1:, 0], upto[-1:, 1])
        title.set_text(f"{problem}: step {step}")
        return [*lines.values(), *heads.values(), title]

    anim = FuncAnimation(fig, draw, frames=len(idx), blit=False)
    with atomic_path(path) as tmp:
        anim.save(tmp, writer=PillowWriter(fps=fps), dpi=80)
    return Path(path)


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
    _legend(fig, ax)
    return fig
