"""Option values from a JSON or TOML file (``--config FILE``).

Keys are the long option names of the subcommand (``budget``, ``problems``, ``lr-range`` or
``lr_range``); the file's values become the parser's defaults, so anything given on the
command line still wins. Each value is checked the way argparse checks it on the command
line, and any mistake is one :class:`LabError` line naming the file and the option.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from optimlab.lab.errors import LabError

#: A config file holds a handful of option values; anything larger is the wrong file (or a
#: device such as /dev/zero, which would never end).
MAX_CONFIG_BYTES = 1 << 20


def load_config(path: str) -> dict[str, Any]:
    """Option values from a JSON or TOML file (by extension; JSON otherwise)."""
    file = Path(path)
    try:
        with open(file, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise LabError(f"cannot read config file '{path}': {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise LabError(f"bad config file '{path}': larger than {MAX_CONFIG_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LabError(
            f"bad config file '{path}': not UTF-8 text (byte {data[exc.start]:#04x} at "
            f"offset {exc.start}); save it as UTF-8"
        ) from None
    try:
        if file.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                raise LabError("TOML config files need Python 3.11+; use JSON") from None
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except LabError:
        raise
    except ValueError as exc:
        raise LabError(f"bad config file '{path}': {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise LabError(f"bad config file '{path}': expected a table/object of option values")
    return data


def apply_config(parser: argparse.ArgumentParser, sub, path: str, argv):
    """Re-parse ``argv`` with the config file's values as ``sub``'s defaults (the command line
    still wins).

    ``sub`` is the subcommand's parser as :func:`optimlab.lab.cli.build_parser` builds it: its
    ``options`` map each option's ``dest`` to the ``argparse.Action`` that checks it.
    """
    data = load_config(path)
    actions = {d: a for d, a in sub.options.items() if d not in ("help", "config", "func")}
    defaults = {}
    for key, value in data.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None:
            known = ", ".join(sorted(actions))
            raise LabError(f"bad config file '{path}': unknown option '{key}' (known: {known})")
        defaults[dest] = _coerce(path, key, value, action)
    sub.set_defaults(**defaults)
    return parser.parse_args(argv)


def _coerce(path: str, key: str, value: Any, action: argparse.Action) -> Any:
    """Check a config value the way argparse would check it on the command line."""

    def one(v):
        if action.type is not None:
            try:
                return action.type(str(v) if not isinstance(v, str) else v)
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise LabError(f"bad config file '{path}': option '{key}': {exc}") from None
        if not isinstance(v, str):
            # Names, paths and URLs: a number or a table here is a mistake, not a value.
            raise LabError(
                f"bad config file '{path}': option '{key}' takes text, got {type(v).__name__} {v!r}"
            )
        return v

    if action.nargs == 0:  # a flag such as --quick
        if not isinstance(value, bool):
            raise LabError(f"bad config file '{path}': option '{key}' must be true or false")
        return value
    if action.nargs in ("+", "*"):
        values = value if isinstance(value, list) else [value]
        return [one(v) for v in values]
    if isinstance(value, list) and action.type is not None:
        # A pair such as lr-range = [1e-4, 1] is spelled LOW,HIGH on the command line.
        value = ",".join(str(v) for v in value)
    if isinstance(value, (list, dict)):
        raise LabError(f"bad config file '{path}': option '{key}' takes a single value")
    result = one(value)
    if action.choices is not None and result not in action.choices:
        raise LabError(
            f"bad config file '{path}': option '{key}' must be one of "
            f"{', '.join(map(str, action.choices))}, got {value!r}"
        )
    return result
