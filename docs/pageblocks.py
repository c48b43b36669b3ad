"""Generated blocks in hand-written docs pages.

A page marks each part a script computes (a table, usually) as

    <!-- generated: NAME -->
    ...
    <!-- end generated: NAME -->

and the script replaces only what lies between the markers; the prose around them is the
author's. The scripts beside this file (``tutorial_examples.py``, ``published_numbers.py``)
fill their pages this way, and the tests compare a fresh computation with the page's blocks.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from optimlab.lab.files import atomic_write_bytes, atomic_write_text

_BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)",
    re.S,
)


def page_blocks(text: str) -> dict[str, str]:
    """The generated blocks as they stand in ``text``, by name (each body ends in a newline)."""
    return {m["name"]: m["body"] for m in _BLOCK.finditer(text)}


def update_page(text: str, blocks: dict[str, str]) -> str:
    """``text`` with the named blocks replaced. A name the page lacks is an error: the
    markers belong to the page's author, a script never adds them."""
    missing = set(blocks) - set(page_blocks(text))
    if missing:
        raise ValueError(f"the page has no generated block named {', '.join(sorted(missing))}")
    return _BLOCK.sub(lambda m: m.group(1) + blocks.get(m["name"], m["body"]) + m.group(4), text)


def stale_blocks(page: Path, blocks: dict[str, str]) -> list[str]:
    """Names of ``blocks`` that differ from ``page``'s."""
    current = page_blocks(page.read_text(encoding="utf-8"))
    return [name for name, body in blocks.items() if current.get(name) != body]


def write_blocks(page: Path, blocks: dict[str, str]) -> None:
    """Replace ``blocks`` in ``page``, atomically."""
    atomic_write_text(page, update_page(page.read_text(encoding="utf-8"), blocks))


def save_png(fig, path: Path, dpi: int = 90) -> None:
    """Write a matplotlib figure atomically, without the "Software" entry, so that an
    unchanged figure gives unchanged bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())
