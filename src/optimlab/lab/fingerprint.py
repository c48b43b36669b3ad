"""What a user's problem is, as a fingerprint that goes into the identity of its runs.

A run is identified by the hash of its configuration (:mod:`optimlab.lab.identity`). For a
built-in problem the name and the protocol version say everything: the code ships with
optimlab and ``PROTOCOL_VERSION`` changes when what a run measures does. A user's own problem
(``module:function`` or ``file.py:function``) can change under the same name, so its runs also
carry a fingerprint of

* ``source``: the SHA-256 of the file that defines the function (the whole module: the
  instance class and its loss live there too), and
* ``built``: the SHA-256 of what it builds for seed 0, under the runner's seeding: every
  tensor of the initial model's ``state_dict`` and every tensor, array or plain value held by
  the instance (the data), with names, dtypes and shapes.

Edit the problem's code, its data files or its model, and the fingerprint changes: its runs are
computed afresh instead of read back stale from ``lab.db``. Code the module imports from
elsewhere is covered through what it builds (data and initial model), not through its text.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optimlab.lab.errors import LabError
from optimlab.lab.reproducible import seeded_globals, torch_threads

#: How deep the instance's attributes are searched for data (lists of tensors, dicts, ...).
_DEPTH = 3


def is_user_problem(spec: str) -> bool:
    """Whether ``spec`` names a user's problem (``module:function``) rather than a built-in."""
    return ":" in spec


def source_file(spec: str) -> Path | None:
    """The file behind a user's problem spec (its module must be loaded already)."""
    target = spec.strip().rpartition(":")[0]
    if target.endswith(".py"):
        return Path(target).expanduser().resolve()
    module = sys.modules.get(target)
    file = getattr(module, "__file__", None)
    return None if file is None else Path(file)


def source_digest(spec: str) -> str:
    """SHA-256 of the file that defines a user's problem."""
    path = source_file(spec)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path else "no-source"
    except OSError as exc:
        raise LabError(f"problem '{spec}': cannot read {path}: {exc.strerror}") from None


def _feed(digest, name: str, value: Any, depth: int) -> None:
    """Add ``value`` (a tensor, an array, a plain value or a container of them) to ``digest``."""
    if torch.is_tensor(value):
        data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        digest.update(f"{name}:tensor:{value.dtype}:{tuple(value.shape)}:".encode())
        digest.update(data.tobytes())
    elif isinstance(value, np.ndarray) and value.dtype != object:
        digest.update(f"{name}:array:{value.dtype}:{value.shape}:".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (bool, int, float, complex, str, bytes, type(None))):
        digest.update(f"{name}:{type(value).__name__}:{value!r};".encode())
    elif depth <= 0:
        return
    elif isinstance(value, np.ndarray):  # an object array: its items, not their addresses
        _feed(digest, name, value.tolist(), depth - 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _feed(digest, f"{name}[{i}]", item, depth - 1)
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            _feed(digest, f"{name}[{key!r}]", value[key], depth - 1)
    elif not callable(value) and isinstance(getattr(value, "__dict__", None), dict):
        # An object holding data (a TensorDataset, a sampler): its attributes.
        digest.update(f"{name}:{type(value).__qualname__};".encode())
        for key in sorted(vars(value)):
            _feed(digest, f"{name}.{key}", vars(value)[key], depth - 1)


def built_digest(problem, seed: int = 0) -> str:
    """SHA-256 of the instance ``problem`` builds for ``seed``: the initial model and the data."""
    with torch_threads(1), seeded_globals(seed):
        try:
            instance = problem.make(seed)
        except Exception as exc:
            raise LabError(
                f"problem '{problem.name}' could not be built: {type(exc).__name__}: {exc} "
                "(add --debug for the traceback)"
            ) from exc
    digest = hashlib.sha256()
    model = getattr(instance, "model", None)
    if isinstance(model, torch.nn.Module):
        for name, tensor in model.state_dict().items():
            _feed(digest, f"model.{name}", tensor, 0)
    attributes = vars(instance) if hasattr(instance, "__dict__") else {}
    for name in sorted(attributes):
        if attributes[name] is not model:
            _feed(digest, name, attributes[name], _DEPTH)
    return digest.hexdigest()


def problem_fingerprint(spec: str, problem) -> dict[str, str] | None:
    """``{"source": ..., "built": ...}`` for a user's problem, ``None`` for a built-in one."""
    if not is_user_problem(spec):
        return None
    return {"source": source_digest(spec)[:16], "built": built_digest(problem)[:16]}


def check_unchanged(config: dict[str, Any]) -> None:
    """Refuse to run a configuration whose user problem file changed after it was planned
    (edited while a sweep runs): its numbers would belong to neither version."""
    fingerprint = config.get("problem_fingerprint")
    if not fingerprint:
        return
    if source_digest(config["problem"])[:16] != fingerprint["source"]:
        raise LabError(
            f"problem '{config['problem']}' changed while the command was running; run the "
            "command again to compute its runs with the new version"
        )
