"""Problem lookup with the lab's error style: a bad name is one clear line, not a traceback."""

from __future__ import annotations

from collections.abc import Iterable

from optimlab.lab.errors import LabError


def resolve_problem(spec: str, *, require_available: bool = True):
    """Return the :class:`~optimlab.lab.problems.Problem` for a registry name or ``module:func``.

    With ``require_available`` a problem whose data is missing on this machine (Fashion-MNIST
    without its Debian package, for instance) is refused here, with the problem's own hint.
    """
    from optimlab.lab.problems import load_problem

    spec = spec.strip()
    try:
        problem = load_problem(spec)
    except ValueError as exc:
        # The registry's own messages name the spec; a ValueError from inside the user's code
        # (a Problem with a bad field, say) gets the spec in front.
        message = str(exc).splitlines()[0] if str(exc) else "bad problem"
        raise LabError(message if spec in message else f"problem '{spec}': {message}") from exc
    except (Exception, SystemExit) as exc:
        # The user's module or function raised while being imported or called. ``from exc``
        # keeps its traceback for --debug.
        raise LabError(f"problem '{spec}' could not be loaded: {_describe(exc)}") from exc
    if require_available and hasattr(problem, "unavailable_reason"):
        reason = problem.unavailable_reason()
        if reason is not None:
            raise LabError(f"problem '{problem.name}' cannot run here: {reason}")
    return problem


def resolve_problems(specs: Iterable[str], *, kind: str | None = None) -> list[tuple[str, object]]:
    """Resolve several problems to ``(key, problem)`` pairs (duplicates dropped, order kept).

    ``key`` is what a worker process passes to ``load_problem`` to get the same problem back:
    the registry name, or the ``module:function`` spec of a user's own problem. ``kind``
    restricts the problems to one kind (``trajectories`` wants ``"function2d"``).
    """
    resolved: list[tuple[str, object]] = []
    for spec in specs:
        problem = resolve_problem(spec)
        if kind is not None and problem.kind != kind:
            raise LabError(f"problem '{problem.name}' is a {problem.kind} problem, not {kind}")
        key = spec.strip() if ":" in spec else problem.name
        if key not in {k for k, _ in resolved}:
            resolved.append((key, problem))
    if not resolved:
        raise LabError("no problems given")
    return resolved


def _describe(exc: BaseException) -> str:
    """One line for an exception raised by a user's problem code, with a hint where it helps."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if isinstance(exc, TypeError) and "argument" in text:
        line += (
            " (a problem spec names a function that takes no arguments and returns a Problem,"
            " or a Problem itself)"
        )
    return line + " (add --debug for the traceback)"
