"""Numbers as people read them, and the summary table shared by console, HTML and Markdown."""

from __future__ import annotations

import html
import math
from typing import Any


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


def mean_std(mean: Any, std: Any, digits: int = 4) -> str:
    if mean is None:
        return "—"
    if std is None or not math.isfinite(float(mean)) or std == 0 or math.isnan(std):
        return num(mean, digits)
    return f"{num(mean, digits)} ± {num(std, 2)}"


def hparams_text(hparams: dict[str, Any], skip=("lr",)) -> str:
    items = [f"{k}={_short(v)}" for k, v in sorted(hparams.items()) if k not in skip]
    return ", ".join(items)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(_short(v) for v in value) + ")"
    return str(value)


SUMMARY_HEADER = [
    "problem",
    "rank",
    "optimizer",
    "best lr",
    "objective (mean ± std)",
    "final train loss",
    "steps to target",
    "s to target",
    "ms / step",
    "state B / param",
    "trials",
]


def summary_table(results) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per problem × optimizer, best first within each problem."""
    rows = []
    for cell in results.summaries():
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
                str(cell.rank),
                label,
                num(cell.lr, 3),
                f"{cell.objective_label}: {mean_std(cell.objective_mean, cell.objective_std)}",
                mean_std(cell.train_loss_mean, cell.train_loss_std),
                reached,
                num(cell.seconds_to_target, 3),
                num(cell.ms_per_step, 3),
                num(cell.state_bytes_per_param, 3),
                str(cell.tuning_trials),
            ]
        )
    return SUMMARY_HEADER, rows


def ranking_table(results) -> tuple[list[str], list[list[str]]]:
    problems = results.problem_names
    header = ["place", "optimizer", "mean rank", *problems]
    rows = []
    for row in results.ranking():
        ranks = [str(row["ranks"].get(p, "—")) for p in problems]
        rows.append([str(row["place"]), row["optimizer"], f"{row['mean_rank']:.2f}", *ranks])
    return header, rows


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
