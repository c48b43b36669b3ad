"""The problem registry, and loading a user's own problem from ``"package.module:function"``.

A user problem is any function that takes no arguments and returns a
:class:`~optimlab.lab.problems.Problem` (or a module attribute that *is* a ``Problem``).
``load_problem`` accepts three spellings::

    load_problem("digits_mlp")                  # a registered name
    load_problem("mypkg.problems:my_problem")   # importable module : function
    load_problem("path/to/problems.py:my_problem")  # a file : function

For the ``module:function`` form the current directory is searched as well, so a file
``myproblems.py`` next to where ``optimlab`` is run works as ``myproblems:my_problem``.
See ``docs/problems.md`` for a complete example.

A user's module whose file has changed since this process loaded it is loaded again, so a
notebook that edits its problem file and compares again runs what the file now says.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import keyword
import os
import sys
from pathlib import Path

from .base import Problem

__all__ = ["available_problems", "get_problem", "load_problem", "register_problem"]

_REGISTRY: dict[str, Problem] = {}
#: module name -> SHA-256 of the source file it was loaded from (user modules only).
_LOADED_FROM: dict[str, str] = {}


def _file_digest(path: str | os.PathLike) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def register_problem(problem: Problem, *, overwrite: bool = False) -> Problem:
    """Add ``problem`` under ``problem.name`` and return it.

    Raises ``ValueError`` if the name is taken (unless ``overwrite``) or ``problem`` is not a
    :class:`Problem`.
    """
    if not isinstance(problem, Problem):
        raise ValueError(f"Invalid problem: expected a Problem, got {type(problem).__name__}")
    if problem.name in _REGISTRY and not overwrite and _REGISTRY[problem.name] is not problem:
        raise ValueError(
            f"Problem {problem.name!r} is already registered (pass overwrite=True to replace it)"
        )
    _REGISTRY[problem.name] = problem
    return problem


def available_problems(*, only_available: bool = False) -> list[str]:
    """Registered names in registration order (grouped by kind for the built-ins).

    Problems whose data is missing (see :meth:`Problem.available`) are listed too unless
    ``only_available``.
    """
    return [n for n, p in _REGISTRY.items() if not only_available or p.available()]


def get_problem(name: str) -> Problem:
    """The registered problem ``name``; an unknown name raises ``ValueError`` naming the
    closest registered ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(_unknown_message(name)) from None


def _unknown_message(name: str) -> str:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return (
        f"Unknown problem {name!r}; {hint}available: {', '.join(_REGISTRY)} "
        "(or give your own as 'package.module:function')"
    )


def load_problem(spec: str) -> Problem:
    """A problem from a registry name or from ``"module:function"`` / ``"file.py:function"``.

    The function is called with no arguments and must return a :class:`Problem`; the
    attribute may also be a ``Problem`` itself. A malformed spec, a module or file that cannot
    be imported, a missing attribute or a wrong return type raise ``ValueError`` with a
    one-line message. Errors raised *inside* the user's function propagate unchanged, with
    their traceback. The loaded problem is not registered; call :func:`register_problem` for
    that.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"Invalid problem spec: {spec!r} (a name or 'package.module:function')")
    spec = spec.strip()
    if ":" not in spec:
        return get_problem(spec)
    # rpartition keeps Windows drive letters ("C:\\p\\probs.py:make") in the module part.
    target, _, attr = spec.rpartition(":")
    if not target or not attr.isidentifier() or keyword.iskeyword(attr):
        raise ValueError(
            f"Invalid problem spec: {spec!r} (expected 'package.module:function' or "
            "'path/to/file.py:function')"
        )
    module = _import_file(spec, target) if target.endswith(".py") else _import(spec, target)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"Problem spec {spec!r}: {target!r} has no attribute {attr!r}") from None
    if isinstance(obj, Problem):
        return obj
    if not callable(obj):
        raise ValueError(f"Problem spec {spec!r}: {attr!r} is neither a Problem nor a function")
    problem = obj()
    if not isinstance(problem, Problem):
        raise ValueError(
            f"Problem spec {spec!r}: {attr}() returned {type(problem).__name__}, not a Problem"
        )
    return problem


def _import(spec: str, module_name: str):
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise ValueError(f"Invalid problem spec: {spec!r} ({module_name!r} is not a module name)")
    # Console scripts do not put the working directory on sys.path (python -m does); add it,
    # last so it never shadows an installed package, for the duration of the import.
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
        file = getattr(module, "__file__", None)
        digest = None if file is None else _file_digest(file)
        if digest is not None and _LOADED_FROM.setdefault(module_name, digest) != digest:
            module = importlib.reload(module)  # edited since this process imported it
            _LOADED_FROM[module_name] = digest
        return module
    except ImportError as exc:
        raise ValueError(f"Problem spec {spec!r}: cannot import {module_name!r}: {exc}") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


class _SourceOnly(importlib.machinery.SourceFileLoader):
    """A loader that always compiles the source (``path_stats`` failing disables the bytecode
    cache, as the ``SourceLoader`` protocol specifies)."""

    def path_stats(self, path):
        raise OSError("no bytecode cache for user problems")


def _import_file(spec: str, filename: str):
    path = Path(filename).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"Problem spec {spec!r}: no such file {str(path)!r}")
    # A stable name per file (not hash(), which changes per process) so that a worker process
    # loading the same spec gets the same module name.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"optimlab_user_problem_{path.stem}_{digest}"
    source = _file_digest(path)
    if name in sys.modules and _LOADED_FROM.get(name) == source:
        # Loading the same, unchanged file twice gives the same problem objects.
        return sys.modules[name]
    # Compiled from the source every time, never from a cached .pyc: a cache is keyed on the
    # file's mtime (whole seconds) and size, so an edit that keeps the size within the same
    # second would run the old code.
    file_spec = importlib.util.spec_from_file_location(
        name, path, loader=_SourceOnly(name, str(path))
    )
    if file_spec is None or file_spec.loader is None:
        raise ValueError(f"Problem spec {spec!r}: cannot load {str(path)!r} as Python")
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        file_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    _LOADED_FROM[name] = source
    return module
