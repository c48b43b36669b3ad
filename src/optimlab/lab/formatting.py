"""Numbers as people read them, and the summary table shared by console, HTML and Markdown."""

from __future__ import annotations

import html
import math
from typing import Any

from optimlab.lab.errors import LabError


def num(value: Any, digits: int = 4) -> str:
    """``None`` → "—", inf → "diverged", NaN → "n/a", else ``digits`` significant digits."""
    if value is None:
        return "—"
    value = float(value)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "diverged"
    return f"{value:.{digits}g}"


def duration(seconds: float) -> str:
    """A wall time as people say it: "8.2 s", "1 min 35 s", "1 h 02 min"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def mean_std(mean: Any, std: Any, digits: int = 4) -> str:
    if mean is None:
        return "—"
    if std is None or not math.isfinite(float(mean)) or std == 0 or math.isnan(std):
        return num(mean, digits)
    return f"{num(mean, digits)} ± {num(std, 2)}"


def hparams_text(hparams: dict[str, Any], skip=("lr",), sep: str = ",") -> str:
    """``key=value`` pairs, sorted, each value as :func:`hparam` writes it."""
    items = [f"{k}={hparam(v, sep)}" for k, v in sorted(hparams.items()) if k not in skip]
    return ", ".join(items)


def hparam(value: Any, sep: str = ",") -> str:
    """A hyperparameter value as people read it: three significant digits, except that a
    value just below 1 keeps three significant digits of its distance to 1.

    β2 = 0.99951 is 0.99951, not 1 (``.3g`` would round it to 1, an invalid β2), and
    0.5228791626764394 is 0.523. Tuples (``betas``) are written element by element.
    """
    if isinstance(value, (list, tuple)):
        return "(" + sep.join(hparam(v, sep) for v in value) + ")"
    if isinstance(value, bool) or not isinstance(value, float) or not math.isfinite(value):
        return str(value)
    if 0.9 <= value < 1:
        decimals = 2 - math.floor(math.log10(1 - value))
        return f"{value:.{decimals}f}".rstrip("0")
    return f"{value:.3g}"


def signed(value: float, digits: int = 2) -> str:
    text = num(value, digits)
    return text if text.startswith("-") or not math.isfinite(value) else f"+{text}"


def vs_leader_text(cell) -> str:
    """The gap to the problem's leader with its interval, e.g. ``-0.0029 [-0.021, +0.015]``."""
    if cell.vs_leader is None:
        return "leader" if cell.leader else "—"
    estimate, low, high = cell.vs_leader
    if low == high == estimate:
        return f"{signed(estimate)} (exact)"
    return f"{signed(estimate)} [{signed(low)}, {signed(high)}]"


def lr_text(cell) -> str:
    text = num(cell.lr, 3)
    if cell.lr_edge:
        text += f" ({cell.lr_edge} edge)"
    return text


def trials_text(cell) -> str:
    added = sum(cell.lr_grid_added.values())
    return f"{cell.tuning_trials - added}+{added}" if added else str(cell.tuning_trials)


SUMMARY_HEADER = [
    "problem",
    "place",
    "optimizer",
    "best lr",
    "objective (mean ± std)",
    "vs leader [95% CI]",
    "decided by",
    "val loss",
    "final train loss",
    "steps to target",
    "s to target",
    "ms / step",
    "state B / param",
    "trials",
]


#: The columns that answer "which optimizer, which lr, and how sure".
VERDICT_COLUMNS = SUMMARY_HEADER[:7]


def summary_table(results, problem: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per problem × optimizer, best first within each problem;
    with ``problem``, that problem's rows only, without the problem column."""
    rows = []
    for cell in results.summaries():
        if problem is not None and cell.problem != problem:
            continue
        reached = f"{num(cell.steps_to_target)} ({cell.reached_target}/{cell.seeds})"
        if cell.reached_target == 0:
            reached = f"not reached (0/{cell.seeds})"
        label = cell.optimizer
        extra = hparams_text(cell.hparams)
        if cell.tuning_trials and extra and results.plan.get("search") == "optuna":
            label += f" [{extra}]"
        rows.append(
            [
                cell.problem,
                cell.place_text,
                label,
                lr_text(cell),
                f"{cell.objective_label}: {mean_std(cell.objective_mean, cell.objective_std)}",
                vs_leader_text(cell),
                cell.decided_by,
                mean_std(cell.val_loss_mean, cell.val_loss_std),
                mean_std(cell.train_loss_mean, cell.train_loss_std),
                reached,
                num(cell.seconds_to_target, 3),
                num(cell.ms_per_step, 3),
                num(cell.state_bytes_per_param, 3),
                trials_text(cell),
            ]
        )
    if problem is not None:
        # One problem has one objective: its name goes into the header, not every row.
        labels = {c.objective_label for c in results.summaries() if c.problem == problem}
        header = list(SUMMARY_HEADER[1:])
        if len(labels) == 1:
            (label,) = labels
            header[header.index("objective (mean ± std)")] = f"{label} (mean ± std)"
            rows = [[*row[:4], row[4].removeprefix(f"{label}: "), *row[5:]] for row in rows]
        return header, [row[1:] for row in rows]
    return SUMMARY_HEADER, rows


def edge_notes(results) -> list[str]:
    """One sentence per cell whose best learning rate is still the smallest or largest tried:
    its optimum may lie beyond, so its result may understate the optimizer."""
    notes = []
    for cell in results.summaries():
        if cell.lr_edge:
            grown = sum(cell.lr_grid_added.values())
            how = f"after growing the grid by {grown}" if grown else "of the grid"
            notes.append(
                f"Edge: {cell.optimizer} on {cell.problem}: best lr {num(cell.lr, 3)} is the "
                f"{'smallest' if cell.lr_edge == 'low' else 'largest'} tried ({how}); "
                "its optimum may lie beyond (--grid-extend, --lr-range)."
            )
    return notes


def fallback_notes(results) -> list[str]:
    """One sentence per optimizer and problem where the optimizer's own method steps none of
    the problem's parameters (Muon on a model without hidden matrices): its fallback group
    stepped them all, so its rows measure that method under the optimizer's name."""
    from optimlab import get_optimizer_class
    from optimlab.lab.specs import parse_optimizer

    notes, seen = [], set()
    for cell in results.summaries():
        if (cell.optimizer, cell.problem) in seen:
            continue
        seen.add((cell.optimizer, cell.problem))
        try:
            cls = get_optimizer_class(parse_optimizer(cell.optimizer).name)
        except (LabError, KeyError, ValueError):
            continue  # a label this version cannot read back: nothing to say
        if cls.fallback is None:
            continue
        model = results.model(cell.problem)
        if model is not None and cls.own_share(model) == 0.0:
            notes.append(
                f"Fallback: {cell.optimizer} on {cell.problem}: no parameter of this problem "
                f"is of the kind {cls.__name__} is for, so its {cls.fallback} group stepped "
                f"them all; these rows measure {cls.fallback} under {cell.optimizer}'s name."
            )
    return notes


def cell_notes(results) -> list[str]:
    """The sentences shown under the ranking: :func:`edge_notes`, then
    :func:`fallback_notes`."""
    return edge_notes(results) + fallback_notes(results)


#: What the ranking's place column is decided by, said wherever the table is shown.
RANKING_NOTE = (
    "place: by the mean of the per-problem places (1 is best, '=' marks a shared place); "
    "AlgoPerf score: the performance profile of the seconds to target integrated over "
    "τ ∈ [1, 4] (1 is best; 'by steps': the same with steps, which do not vary with the "
    "machine's load), shown beside the place, not used for it (rows that share a place are "
    "listed by it)"
)


def _score(value: float) -> str:
    # Scores lie in [0, 1]: a fixed three decimals keep the column aligned.
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def ranking_table(results) -> tuple[list[str], list[list[str]]]:
    problems = results.problem_names
    header = ["place", "optimizer", "mean place", "AlgoPerf score", "by steps", *problems]
    rows = []
    for row in results.ranking():
        places = [row["places"].get(p, "—") for p in problems]
        place = f"{row['place']}=" if row["shared"] else str(row["place"])
        scores = [_score(row["profile_score"]), _score(row["profile_score_steps"])]
        rows.append([place, row["optimizer"], f"{row['mean_rank']:.2f}", *scores, *places])
    return header, rows


#: Columns of running text: they may wrap in HTML; every other cell stays on one line, so a
#: number and its interval are never broken apart.
WRAPPING = frozenset({"decided by", "how"})


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    kinds = ['<td class="wrap">' if h in WRAPPING else "<td>" for h in header]
    body = "".join(
        "<tr>"
        + "".join(f"{kind}{html.escape(c)}</td>" for kind, c in zip(kinds, row, strict=False))
        + "</tr>"
        for row in rows
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
