"""The report: one self-contained HTML file, a Markdown summary and the PNGs behind both.

The HTML embeds every image as base64 and carries its own CSS, so it opens offline, can be
mailed or attached to an issue as a single file. Every file is written atomically.

Each sweep's report lives in its own folder, ``OUT/reports/<kind>-<sweep id>/`` (see
:mod:`optimlab.lab.report_index`), so it always shows that sweep and nothing else; the latest
one of each kind is copied to the top of ``OUT`` (``report.html``, ``trajectories.html``,
``tune.html``) and ``OUT/index.html`` lists them all.

Sections (always present, so readers and tests find them; a section with nothing to show
says why): how to read this, ranking (with the performance profiles), per problem (places,
the intervals behind them and every column of the summary), loss curves, lr sensitivity, lr
range test, trajectories (2-D problems), and for ``tune`` the search history.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from optimlab.lab.files import atomic_write_bytes, atomic_write_json, atomic_write_text, slug
from optimlab.lab.formatting import (
    RANKING_NOTE,
    cell_notes,
    html_table,
    markdown_table,
    ranking_table,
    summary_table,
)
from optimlab.lab.report_index import copy_latest, report_dir, write_index

SECTIONS = (
    ("how-to-read", "How to read this"),
    ("ranking", "Ranking"),
    ("summary", "Per problem"),
    ("loss-curves", "Loss curves"),
    ("lr-sensitivity", "Learning-rate sensitivity"),
    ("lr-finder", "Learning-rate range test"),
    ("trajectories", "Trajectories on 2-D functions"),
)

_NAMES = {"compare": "report", "trajectories": "trajectories", "tune": "tune"}


def report_paths(out_dir: Path, kind: str) -> dict[str, Path]:
    """The latest report of ``kind`` at the top of ``out_dir``."""
    return _paths(Path(out_dir), _NAMES.get(kind, kind))


def sweep_report_paths(out_dir: Path, kind: str, sweep_id: str) -> dict[str, Path]:
    """The report of one sweep, in its own folder: ``OUT/reports/<kind>-<id>/report.html``."""
    return _paths(report_dir(out_dir, kind, sweep_id), "report")


def _paths(out_dir: Path, stem: str) -> dict[str, Path]:
    return {
        "html": out_dir / f"{stem}.html",
        "md": out_dir / f"{stem}.md",
        "json": out_dir / f"{stem}.json",
        "figures": out_dir / "figures",
    }


def how_to_read(results) -> str:
    from optimlab.lab.stats import CONFIDENCE, TAU_MAX

    plan = results.plan
    budget, seeds = plan.get("budget"), len(plan.get("seeds", []))
    conf = f"{CONFIDENCE:.0%}"
    if plan.get("search") == "optuna":
        tuning = (
            f"an Optuna (TPE) search of {budget} trials over the learning rate (log-uniform)"
            + ("" if plan.get("hparams") == "lr" else f" and {plan.get('hparams')}")
        )
    else:
        extend = plan.get("grid_extend", 0)
        tuning = f"a grid of {budget} learning rates, log-spaced over the problem's range" + (
            f"; when the best one was the smallest or largest, the grid grew on that side by "
            f"the same log step, at most {extend} point(s) in all"
            if extend
            else ""
        )
    return f"""
<p><b>Protocol.</b> Every optimizer got the same tuning budget on every problem: {tuning},
run on the first seed. The best setting was then rerun on {seeds} seed(s) (the 2-D test
functions are deterministic, so one run is all they need). "Best" means the highest
validation metric when the problem has one (accuracy, R²), otherwise the lowest final loss.
A run whose loss blows up is stopped and counts as diverged, the worst possible result.</p>
<ul>
<li><b>Place</b> (per problem): 1 + the number of optimizers that are <i>better</i>, where
better means that the {conf} Welch t interval for the difference of the two means over seeds
lies entirely on the better side of zero. <b>1=</b> marks a shared place: those optimizers
cannot be told apart from each other by the seeds, though one of them may still be told apart
from an optimizer further down. A diverged seed ranks an optimizer below every optimizer
with fewer; a deterministic problem gives exact numbers, so any difference counts. No place
is broken by a hidden number: within a shared place rows are listed by their mean.
<b>Decided by</b> says which rule settled the place and which optimizers are above it.</li>
<li><b>vs leader [{conf} CI]</b>: the optimizer's mean minus the first-listed one's, with
the Welch interval. An interval that contains 0 means the data cannot tell the two apart.
With three seeds intervals are wide: a difference of a few tenths of a percent in accuracy
is usually noise.</li>
<li><b>Ranking</b>: the overall place is by the mean of the per-problem places (equal means
share a place; such rows are listed by their AlgoPerf score). The <b>AlgoPerf score</b>
beside it is the MLCommons AlgoPerf benchmark score: for each problem the time to reach
the target (median over seeds, a seed that never reaches it counts as never), divided by the
fastest optimizer's; the performance profile is the fraction of problems reached within τ ×
the fastest time, and the score its average over τ from 1 to {TAU_MAX:g} (1: fastest
everywhere; 0: never within {TAU_MAX:g} × the fastest). "By steps" is the same score with
steps instead of seconds: seconds include each optimizer's cost per step but vary with the
machine's load from run to run, steps do not.
Place and score answer different questions: how good the result is, and how soon the
target is reached.</li>
<li><b>Best lr</b>: "(high edge)" or "(low edge)" flags a learning rate that is still the
largest or smallest one tried: the optimizer's optimum may lie beyond, so its result may
understate it. Trials "8+2" means 8 grid points and 2 added beyond an edge.</li>
<li><b>Steps / seconds to target</b>: the first step at which the running mean of the
training loss (about ten steps) reaches the problem's target, as a median over the seeds that
reached it; "(k/n)" says how many did. Seconds count only the optimizer's steps (forward,
backward, update), not evaluation.</li>
<li><b>ms / step</b>: median time of one step with one thread per run. It depends on the
machine and its load; compare it within one report only. <b>State B / param</b>: bytes of
optimizer state per model parameter (in float32, each buffer costs 4: momentum SGD ≈ 4,
Adam ≈ 8).</li>
<li><b>Figures</b> give each optimizer a panel of its own (its colour; the others in grey),
listed by place. Loss curves: the line is the mean over seeds and the band one standard
deviation; on a log axis the geometric mean and × / ÷ one geometric standard deviation. The
validation panels zoom to the range of the final values, where the places are decided.</li>
<li><b>Learning-rate sensitivity</b>: one point per tuning run. A wide, flat curve means the
optimizer forgives a poorly chosen learning rate; a narrow peak means it must be tuned
carefully. × marks diverged runs, the large dot the chosen setting; shaded learning rates lie
beyond the problem's range.</li>
<li><b>Learning-rate range test</b>: the loss while the learning rate grows exponentially over
a short run (Smith, 2015). Good learning rates lie where the curve falls steeply, before its
minimum; the dot is the suggestion.</li>
<li><b>Trajectories</b>: on 2-D test functions, each optimizer's path from the common start
(●) at its tuned learning rate; ★ marks the minima.</li>
</ul>
"""


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1150px;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.8em;margin:.8em 0}
th,td{border:1px solid #ccc;padding:.25em .45em;text-align:left;vertical-align:top}
td{white-space:nowrap}td.wrap{white-space:normal;min-width:14em}
.scroll{overflow-x:auto}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.4em 0}
.meta{color:#666;font-size:.85em}.note{color:#666;font-style:italic}
.banner{background:#fff4d6;border-left:4px solid #e0a800;padding:.5em .8em}
nav a{margin-right:1em}
"""


def _img(data: bytes, alt: str, mime: str = "image/png") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:{mime};base64,{encoded}"></figure>'


class _Writer:
    """Collects a section's HTML and Markdown while saving each figure as a PNG."""

    def __init__(self, results, paths: dict[str, Path]) -> None:
        self.results = results
        self.paths = paths
        self.html: list[str] = []
        self.md: list[str] = []
        self.files: list[Path] = []

    def figure(self, fig, name: str, alt: str) -> None:
        from optimlab.lab.plots import png_bytes

        data = png_bytes(fig)
        kind = self.results.kind
        # compare's figures keep short names; other commands prefix theirs (no doubling).
        prefix = "" if kind == "compare" or name.startswith(kind) else f"{kind}-"
        path = self.paths["figures"] / f"{slug(prefix + name)}.png"
        atomic_write_bytes(path, data)
        self.files.append(path)
        self.html.append(_img(data, alt))
        rel = path.relative_to(self.paths["html"].parent).as_posix()
        self.md.append(f"![{alt}]({rel})\n")

    def gif(self, path: Path, alt: str) -> None:
        self.files.append(path)
        self.html.append(_img(path.read_bytes(), alt, "image/gif"))
        rel = path.relative_to(self.paths["html"].parent).as_posix()
        self.md.append(f"![{alt}]({rel})\n")

    def note(self, text: str) -> None:
        self.html.append(f'<p class="note">{html.escape(text)}</p>')
        self.md.append(f"_{text}_\n")

    def heading(self, anchor: str, title: str) -> None:
        self.html.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>')
        self.md.append(f"## {title}\n")

    def sub(self, title: str) -> None:
        self.html.append(f"<h3>{html.escape(title)}</h3>")
        self.md.append(f"### {title}\n")

    def table(self, header, rows) -> None:
        self.html.append(html_table(header, rows))
        self.md.append(markdown_table(header, rows) + "\n")


def write_report(results, out_dir: Path, gif: bool | None = None) -> Path:
    """Write the report for ``results`` into its folder under ``out_dir``, copy it to the top
    of ``out_dir`` as the latest of its kind, and update the index; returns the HTML path in
    the sweep's own folder.

    ``gif``: animate trajectories (default: for ``trajectories`` sweeps only, since
    animations make the file larger and the build slower).
    """
    from optimlab.lab import plots

    out_dir = Path(out_dir)
    paths = sweep_report_paths(out_dir, results.kind, results.sweep_id)
    if gif is None:
        gif = results.kind == "trajectories"
    w = _Writer(results, paths)
    problems = results.problem_names
    title = {
        "compare": "optimlab: optimizer comparison",
        "trajectories": "optimlab: trajectories on 2-D functions",
        "tune": "optimlab: hyperparameter search",
    }.get(results.kind, f"optimlab: {results.kind}")

    w.heading("how-to-read", "How to read this")
    w.html.append(how_to_read(results))
    w.md.append(_strip_tags(how_to_read(results)) + "\n")

    w.heading("ranking", "Ranking")
    if results.summaries():
        w.table(*ranking_table(results))
        w.note(RANKING_NOTE + ".")
        for line in cell_notes(results):
            w.note(line)
        w.figure(
            plots.plot_performance_profiles(results),
            "performance-profiles",
            "performance profiles of time to target",
        )
    else:
        w.note("No finished runs yet.")

    w.heading("summary", "Per problem")
    for problem in problems:
        if any(cell.problem == problem for cell in results.summaries()):
            w.sub(problem)
            w.figure(
                plots.plot_final_results(results, problem),
                f"final-{problem}",
                f"final results and places on {problem}",
            )
            w.table(*summary_table(results, problem))

    w.heading("loss-curves", "Loss curves")
    for problem in problems:
        if results.select(problem, role="final"):
            w.sub(problem)
            w.figure(
                plots.plot_loss_curves(results, problem),
                f"loss-{problem}",
                f"training loss on {problem}",
            )
            validation = plots.plot_validation_curves(results, problem)
            if validation is not None:
                w.figure(validation, f"validation-{problem}", f"validation curves on {problem}")

    w.heading("lr-sensitivity", "Learning-rate sensitivity")
    for problem in problems:
        w.sub(problem)
        w.figure(
            plots.plot_lr_sensitivity(results, problem),
            f"lr-sensitivity-{problem}",
            f"lr sensitivity on {problem}",
        )
        if results.kind == "tune":
            w.figure(
                plots.plot_search_history(results, problem),
                f"history-{problem}",
                f"search history on {problem}",
            )

    w.heading("lr-finder", "Learning-rate range test")
    any_find = False
    for problem in problems:
        order = {c.optimizer: i for i, c in enumerate(results.summaries()) if c.problem == problem}
        items = sorted(results.lr_find_results(problem), key=lambda it: order.get(it[0], 1e9))
        if items:
            any_find = True
            w.sub(problem)
            w.figure(
                plots.plot_lr_finder(items, title=problem),
                f"lr-find-{problem}",
                f"lr range test on {problem}",
            )
            rows = [
                [label, plots_num(res.suggestion), res.method, res.reason] for label, res in items
            ]
            w.table(["optimizer", "suggested lr", "rule", "how"], rows)
    if not any_find:
        w.note(
            "No range test in this sweep (run `optimlab lr-find`, or compare without --no-lr-find)."
        )

    w.heading("trajectories", "Trajectories on 2-D functions")
    two_d = [p for p in problems if results.problem(p).kind == "function2d"]
    for problem in two_d:
        w.sub(problem)
        w.figure(
            plots.plot_trajectories(results, problem),
            f"trajectories-{problem}",
            f"trajectories on {problem}",
        )
        if gif:
            target = paths["figures"] / f"trajectories-{slug(problem)}.gif"
            if plots.save_trajectory_gif(results, problem, target) is not None:
                w.gif(target, f"animated trajectories on {problem}")
    if not two_d:
        w.note("No 2-D function in this sweep (see `optimlab trajectories`).")

    meta = _meta(results)
    banners = banner_lines(results)
    nav = " ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in SECTIONS)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="meta">{html.escape(meta)}</p>'
        + "".join(
            f'<p class="banner"><b>{html.escape(head)}</b> {html.escape(text)}</p>'
            for head, text in banners
        )
        + f"<nav>{nav}</nav>"
        + "\n".join(w.html)
        + "</body></html>\n"
    )
    md_head = f"# {title}\n\n{meta}\n\n" + "".join(f"> **{h}** {t}\n\n" for h, t in banners)
    markdown = md_head + "\n".join(w.md)
    atomic_write_text(paths["html"], page)
    atomic_write_text(paths["md"], markdown)
    # The summary last: the index takes a folder with one as a finished report.
    atomic_write_json(paths["json"], _json_summary(results))

    latest = report_paths(out_dir, results.kind)
    copy_latest(
        [(paths[key], latest[key]) for key in ("html", "json")]
        + [(f, latest["figures"] / f.relative_to(paths["figures"])) for f in w.files]
    )
    # The top-level Markdown points at this sweep's own figures: the top-level figures/ holds
    # the latest figure of each name, which another command may have written since.
    own = paths["md"].parent.relative_to(out_dir).as_posix()
    atomic_write_text(latest["md"], markdown.replace("](figures/", f"]({own}/figures/"))
    write_index(out_dir)
    return paths["html"]


def banner_lines(results) -> list[tuple[str, str]]:
    """What a reader must know before any number: a sweep that did not finish, a smoke run."""
    banners = []
    if not results.sweep.get("completed_at"):
        banners.append(
            (
                "Partial results.",
                "This sweep did not finish: it was interrupted, or is still running. The "
                f"tables show the {len({r['run_id'] for r in results.runs})} runs stored so "
                "far; run the same command again to complete it.",
            )
        )
    for key, count in results.replaced.items():
        banners.append(
            (
                "Problem changed.",
                f"'{key}' is not the version behind {count} other run(s) stored in this "
                "lab.db (its source, data or initial model differ): those were not reused, "
                "and every number here comes from the version run now.",
            )
        )
    if results.plan.get("quick"):
        banners.append(
            (
                "Smoke run (--quick).",
                "Tiny budgets, enough to exercise every part of the lab: these numbers say "
                "nothing about the optimizers.",
            )
        )
    return banners


def plots_num(value) -> str:
    from optimlab.lab.formatting import num

    return num(value, 3)


def _meta(results) -> str:
    plan = results.plan
    versions: dict[str, Any] = results.runs[0]["versions"] if results.runs else {}
    version_text = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
    steps = ", ".join(f"{k}: {v}" for k, v in plan.get("steps", {}).items())
    return (
        f"sweep {results.sweep_id[:12]} · {len({r['run_id'] for r in results.runs})} runs · "
        f"search {plan.get('search')} · budget {plan.get('budget')} · "
        f"seeds {plan.get('seeds')} · steps {steps} · engine {plan.get('engine')} · "
        f"{version_text} · updated {results.sweep.get('updated_at', '')[:19]}"
    )


def _json_summary(results) -> dict[str, Any]:
    from optimlab.lab.stats import CONFIDENCE, TAU_MAX

    return _finite(
        {
            "sweep_id": results.sweep_id,
            "kind": results.kind,
            "updated_at": results.sweep.get("updated_at"),
            "completed_at": results.sweep.get("completed_at"),
            "plan": results.plan,
            "ranking": results.ranking(),
            "verdict": {
                "place": "1 + the number of optimizers better by a Welch interval",
                "confidence": CONFIDENCE,
                "overall_place": "mean of the per-problem places",
                "profiles": {
                    "tau_max": TAU_MAX,
                    "times": {m: results.profile_times(m) for m in ("seconds", "steps")},
                    "scores": {m: results.profile_scores(m) for m in ("seconds", "steps")},
                },
            },
            "cells": results.to_records(),
        }
    )


def _finite(value: Any) -> Any:
    """Strict JSON has no NaN or inf: write them as null (``diverged`` says why)."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _strip_tags(text: str) -> str:
    text = re.sub(r"<li>", "- ", text)
    text = re.sub(r"</?(b|i|p|ul|li)>", "", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
