"""Where reports go in an output directory, and the index that lists them.

Every command keeps its own files in a folder of its own, named after its kind and id, so
several commands writing into one ``--out`` (one after the other, or at the same time) never
overwrite each other's report::

    OUT/reports/compare-3fa9c2e1b0d4/report.html   (+ report.md, report.json, figures/)
    OUT/reports/tune-81d0a2c4e5f6/report.html
    OUT/reports/lr-find-5c1e09b7aa21/lr-find-digits_mlp.png   (+ .json)

The latest report of each kind is also copied to the top of ``OUT`` under the names earlier
versions used (``report.html``, ``trajectories.html``, ``tune.html``, ``figures/``,
``lr-find-<problem>.json``), and ``OUT/index.html`` lists every report in the folder, newest
first, with what it compared and whether it is complete.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optimlab.lab.files import atomic_write_bytes, atomic_write_text

REPORTS = "reports"
INDEX = "index.html"
#: The one file of each report folder the index reads (written last, so a folder without it
#: is still being written).
SUMMARY = "report.json"


def report_dir(out_dir: str | os.PathLike, kind: str, ident: str) -> Path:
    """The folder of one command's report: ``OUT/reports/<kind>-<id>``."""
    return Path(out_dir) / REPORTS / f"{kind}-{ident[:12]}"


def copy_latest(pairs: list[tuple[Path, Path]]) -> None:
    """Copy each ``(own file, top-level name)``: the latest report of a kind at the top."""
    for source, target in pairs:
        atomic_write_bytes(target, source.read_bytes())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` where the platform has one (POSIX ``flock``)."""
    try:
        import fcntl
    except ImportError:  # Windows: the index is rewritten whole and atomically anyway
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _entries(out_dir: Path) -> list[dict[str, Any]]:
    entries = []
    for summary in (out_dir / REPORTS).glob(f"*/{SUMMARY}"):
        try:
            data = json.loads(summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a report being replaced right now, or damaged: the next index has it
        if not isinstance(data, dict):
            continue
        data["folder"] = summary.parent.name
        entries.append(data)
    entries.sort(key=lambda e: str(e.get("updated_at") or ""), reverse=True)
    return entries


def status_of(summary: dict[str, Any]) -> str:
    """ "complete", "partial" (the sweep did not finish) and/or "smoke run" (``--quick``)."""
    words = ["complete" if summary.get("completed_at") else "partial"]
    if summary.get("plan", {}).get("quick"):
        words.append("smoke run")
    return ", ".join(words)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1150px;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .55em;
text-align:left}th{background:#f3f3f3}.meta{color:#666;font-size:.85em}
"""


def write_index(out_dir: str | os.PathLike) -> Path:
    """Rewrite ``OUT/index.html`` from the report folders present; returns its path."""
    out_dir = Path(out_dir)
    path = out_dir / INDEX
    with _locked(out_dir / ".index.lock"):
        rows = []
        for entry in _entries(out_dir):
            plan = entry.get("plan", {})
            link = f"{REPORTS}/{entry['folder']}/{entry.get('page', 'report.html')}"
            optimizers = plan.get("optimizers", [])
            labels = [o["label"] if isinstance(o, dict) else str(o) for o in optimizers]
            cells = [
                str(entry.get("updated_at") or "")[:19].replace("T", " "),
                str(entry.get("kind", "")),
                " ".join(map(str, plan.get("problems", []))),
                " ".join(labels),
                status_of(entry),
            ]
            row = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            anchor = html.escape(entry["folder"])
            rows.append(f'<tr>{row}<td><a href="{html.escape(link)}">{anchor}</a></td></tr>')
        header = "".join(
            f"<th>{h}</th>"
            for h in ("updated (UTC)", "kind", "problems", "optimizers", "status", "report")
        )
        body = "\n".join(rows) or '<tr><td colspan="6">No reports yet.</td></tr>'
        page = (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>optimlab: reports in {html.escape(out_dir.name)}</title>"
            f"<style>{_CSS}</style></head><body><h1>optimlab: reports</h1>"
            f'<p class="meta">Every report written into {html.escape(str(out_dir.resolve()))}, '
            "newest first. Each folder holds one command's report; report.html at the top is the "
            "latest comparison.</p>"
            f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"
            "</body></html>\n"
        )
        atomic_write_text(path, page)
    return path
