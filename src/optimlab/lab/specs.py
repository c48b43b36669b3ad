"""Optimizer specs as the lab understands them: registry names, presets and overrides.

A spec is a short string a person can type on the command line:

* a registry name, ``"adam"`` (any name from :func:`optimlab.available_optimizers`);
* a preset, ``"momentum"`` (SGD with momentum 0.9) or ``"nesterov"`` (Nesterov momentum 0.9);
* either of these with hyperparameters, ``"adam:betas=(0.9,0.99),eps=1e-6"`` or
  ``"momentum:momentum=0.95"``.

Values are Python literals (numbers, ``True``/``False``, ``None``, tuples); lowercase
``true``/``false``/``none`` are accepted too because that is what people type in shells and
TOML. Commas inside parentheses belong to the value, so tuples need no quoting tricks.

The learning rate is what the lab tunes, so it is normally left out; a spec that fixes ``lr``
is run at that one learning rate (no tuning) and the report says so.

This module only reads the text: whether the hyperparameters are valid for the optimizer is
checked by :func:`optimlab.lab.optimizers.parse_optimizers`, which builds it once.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from optimlab.lab.errors import LabError
from optimlab.lab.identity import jsonable

#: Presets: name -> (registry name, hyperparameters, one-line description).
PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "momentum": ("sgd", {"momentum": 0.9}, "SGD with heavy-ball momentum 0.9"),
    "nesterov": ("sgd", {"momentum": 0.9, "nesterov": True}, "SGD with Nesterov momentum 0.9"),
}

_WORDS = {"true": True, "false": False, "none": None, "null": None}


@dataclass(frozen=True)
class OptimizerSpec:
    """A parsed optimizer spec.

    ``label`` is what tables and plots show (the text the user typed, normalised);
    ``name`` is the registry name and ``hparams`` every hyperparameter that the spec fixes.
    Two specs that build the same optimizer (``"momentum"`` and ``"sgd:momentum=0.9"``) share
    their runs in the store because runs are identified by ``name`` and ``hparams``.
    """

    label: str
    name: str
    hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def fixed_lr(self) -> float | None:
        """The learning rate the spec fixes, or ``None`` when the lab should tune it."""
        lr = self.hparams.get("lr")
        return None if lr is None else float(lr)

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, "hparams": jsonable(self.hparams)}

    def __hash__(self) -> int:  # dict fields are unhashable; the canonical JSON is not
        return hash(json.dumps(self.to_json(), sort_keys=True))


def registry_names() -> list[str]:
    """Names accepted by :func:`optimlab.create_optimizer` (lower case, registry order)."""
    from optimlab import available_optimizers

    return [name.lower() for name in available_optimizers()]


def split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside (), [] or {}; empty pieces are dropped."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def split_specs(values: Sequence[str] | str | None) -> list[str]:
    """Optimizer or problem specs from ``nargs='+'`` values that may also be comma-separated.

    ``adam:betas=(0.9,0.99),eps=1e-6`` stays one spec: a piece holding ``=`` but no ``:``
    continues the previous spec's hyperparameters.
    """
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for value in values:
        for piece in split_top_level(str(value)):
            if out and "=" in piece and ":" not in piece and ":" in out[-1]:
                out[-1] += "," + piece
            else:
                out.append(piece)
    return out


def _parse_value(spec: str, key: str, raw: str) -> Any:
    if raw.lower() in _WORDS:
        return _WORDS[raw.lower()]
    try:
        value = ast.literal_eval(raw)
        if _has_complex(value):
            raise ValueError(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise LabError(
            f"bad optimizer spec '{spec}': value of '{key}' is not a number, bool or tuple: {raw!r}"
        ) from None
    if isinstance(value, list):
        value = tuple(value)
    if not _finite(value):
        raise LabError(f"bad optimizer spec '{spec}': value of '{key}' must be finite: {raw!r}")
    return value


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (tuple, list)):
        return all(_finite(v) for v in value)
    return True


def _has_complex(value: Any) -> bool:
    if isinstance(value, (tuple, list, set, frozenset)):
        return any(_has_complex(v) for v in value)
    return isinstance(value, complex)


def parse_optimizer(text: str, known: list[str] | None = None) -> OptimizerSpec:
    """Parse ``"name[:key=value,...]"`` into an :class:`OptimizerSpec`.

    ``known`` are the registry names (default: :func:`registry_names`); unknown names raise
    :class:`LabError` listing the choices. Whether the hyperparameters are valid for that
    optimizer is checked by :func:`optimlab.lab.optimizers.validate_spec`, which builds it once.
    """
    if known is None:
        known = registry_names()
    original = text
    text = text.strip()
    head, _, tail = text.partition(":")
    head = head.strip().lower()
    if not head:
        raise LabError(f"bad optimizer spec '{original}': no optimizer name")
    if head in PRESETS:
        name, hparams, _ = PRESETS[head]
        hparams = dict(hparams)
    elif head in known:
        name, hparams = head, {}
    else:
        choices = ", ".join([*known, *PRESETS])
        raise LabError(f"unknown optimizer '{head}' (choose from: {choices})")
    overrides: dict[str, Any] = {}
    for item in split_top_level(tail):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise LabError(
                f"bad optimizer spec '{original}': expected key=value, got {item!r} "
                "(example: adam:betas=(0.9,0.99),eps=1e-6)"
            )
        overrides[key] = _parse_value(original, key, raw.strip())
    hparams.update(overrides)
    label = head
    if overrides:
        label += ":" + ",".join(f"{k}={_format(v)}" for k, v in overrides.items())
    return OptimizerSpec(label=label, name=name, hparams=hparams)


def _format(value: Any) -> str:
    if isinstance(value, tuple):
        inner = ",".join(_format(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value) if isinstance(value, str) else str(value)


def preset_descriptions() -> dict[str, str]:
    """Preset name -> description, for ``optimlab list``."""
    return {name: desc for name, (_, _, desc) in PRESETS.items()}
