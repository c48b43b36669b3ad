"""``optimlab``: the lab's command line (also ``python -m optimlab``).

A thin layer over the Python API: it parses arguments (and an optional JSON/TOML config
file, :mod:`optimlab.lab.config_file`), calls the functions of :mod:`optimlab.lab.commands`
and hands what they return to :mod:`optimlab.lab.console` to show. Mistakes in what was asked
for (names, values, files, directories) print one line on stderr and exit with status 2,
never a traceback.

Adding a subcommand (``bench`` is planned): write ``_add_<name>(subparsers, name)`` that
registers its parser with ``func=<handler>`` and returns it, and list it in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from optimlab.lab import commands, console
from optimlab.lab.errors import LabError, RunFailed
from optimlab.lab.limits import (
    MAX_BUDGET,
    MAX_GRACE_PERIOD,
    MAX_SEED,
    MAX_SEEDS,
    MAX_STEPS,
    PER_CORE,
    check_lr,
    check_lr_range,
    max_processes,
)
from optimlab.lab.protocol import LR_FIND_STEPS, QUICK_LR_FIND_STEPS
from optimlab.lab.specs import split_specs
from optimlab.lab.tracking.arguments import add_tracking_arguments, tracking_kwargs
from optimlab.lab.tuning import GRACE_PERIOD


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line too (what was wrong, where to get help).

    ``options`` maps each option's ``dest`` to its ``argparse.Action`` (what ``add_argument``
    returns), so a config file can be checked against the options; ``commands`` maps each
    subcommand's name to its parser.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.options: dict[str, argparse.Action] = {}
        self.commands: dict[str, _Parser] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        help_text, default = kwargs.get("help"), kwargs.get("default")
        # Say the default where it tells something: not for flags (off unless given), not for
        # "no default" (None), and not twice when the help text already explains it.
        if (
            isinstance(help_text, str)
            and help_text != argparse.SUPPRESS
            and "default" not in help_text
            and default not in (None, argparse.SUPPRESS)
            and not isinstance(default, bool)
        ):
            shown = " ".join(map(str, default)) if isinstance(default, list) else default
            kwargs["help"] = f"{help_text} (default: {shown})"
        action = super().add_argument(*args, **kwargs)
        self.options[action.dest] = action
        return action

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


_Formatter = argparse.RawDescriptionHelpFormatter


# -- argument helpers ------------------------------------------------------------------------


def _add_grid_extend(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--grid-extend",
        type=_int_type(0, MAX_BUDGET),
        default=None,
        metavar="N",
        help="while the best lr lies at an edge of the grid, grow the grid on that side by "
        "one log step, at most N points in all (default 3; --quick 1; 0: never)",
    )


#: A shared store's URL, as --help shows it.
STORAGE_URL = "postgresql://USER:PASSWORD@HOST/DATABASE"


def _add_storage(p: argparse.ArgumentParser) -> None:
    """``--storage`` and ``--grace-period`` of the commands that run a search."""
    p.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help=f"keep the runs and the Optuna studies in this PostgreSQL database ({STORAGE_URL}) "
        "instead of OUT/lab.db: every process that runs the same command against it, on any "
        "machine, shares the search and the runs",
    )
    p.add_argument(
        "--grace-period",
        type=_int_type(1, MAX_GRACE_PERIOD),
        default=GRACE_PERIOD,
        metavar="SECONDS",
        help="with a shared --storage: a worker whose running trials send no heartbeat for "
        "this long is taken for dead, and its trials are run again by another",
    )


def _shown(text: str) -> str:
    """The user's text in an error message, cut short (a 5000-digit number is one long line)."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _int_type(low: int, high: int | Callable[[], int], note: str = ""):
    """An argparse type: an integer in ``[low, high]`` (``high`` may depend on the machine)."""

    def integer(text: str) -> int:
        top = high() if callable(high) else high
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= top:
            raise argparse.ArgumentTypeError(
                f"expected an integer from {low} to {top}{note}, got {_shown(text)}"
            )
        return value

    return integer


def _lr_type(text: str) -> float:
    try:
        return check_lr(text, "value")
    except LabError:
        raise argparse.ArgumentTypeError(
            f"expected a positive, finite number, got {_shown(text)}"
        ) from None


def _lr_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected LOW,HIGH such as 1e-4,1, got {_shown(text)}"
        ) from None
    try:
        return check_lr_range(lo, hi)
    except LabError:
        raise argparse.ArgumentTypeError(
            f"need 0 < LOW < HIGH, both finite, got {_shown(text)}"
        ) from None


_PROCESSES = _int_type(1, max_processes, f" ({PER_CORE} per core)")


def _add_common(p: argparse.ArgumentParser, *, sweep: bool = True) -> None:
    p.add_argument(
        "--out",
        default=commands.DEFAULT_OUT,
        metavar="DIR",
        help="output directory: lab.db, reports, figures",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="JSON or TOML file with option values (keys as the long option names, "
        "e.g. budget = 8); options given on the command line win",
    )
    p.add_argument(
        "--threads",
        type=_PROCESSES,
        metavar="N",
        default=1,
        help="torch threads per worker process",
    )
    p.add_argument(
        "--engine",
        default="auto",
        choices=("auto", "loop", "foreach", "fused"),
        help="optimizer engine",
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny budgets (steps, trials, seeds) for smoke runs"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one line")
    if sweep:
        p.add_argument(
            "--workers",
            metavar="N",
            type=_PROCESSES,
            default=None,
            help="worker processes (default: all cores; 1 runs in-process)",
        )
        p.add_argument(
            "--steps",
            metavar="N",
            type=_int_type(1, MAX_STEPS),
            default=None,
            help="steps per run for every problem (default: each problem's own)",
        )
        p.add_argument(
            "--lr-range",
            type=_lr_range,
            default=None,
            metavar="LOW,HIGH",
            help="learning-rate range to tune over (default: each problem's own)",
        )
        add_tracking_arguments(p)
        p.add_argument("--no-report", action="store_true", help="skip writing the report")


# -- subcommands -----------------------------------------------------------------------------

COMPARE_EPILOG = """\
examples:
  optimlab compare                                   # the default comparison (< 5 min, 2 cores)
  optimlab compare --quick                           # smoke run, seconds
  optimlab compare -p digits_mlp rosenbrock -o sgd momentum adam --budget 8 --seeds 5
  optimlab compare -o "adam:betas=(0.9,0.99),eps=1e-6" adamw:weight_decay=0.1
  optimlab compare --search optuna --hparams all --budget 30
  optimlab compare --search optuna --storage postgresql://lab:pw@db/optimlab  # share a search
  optimlab compare --track wandb mlflow              # W&B (offline) and MLflow (OUT/mlflow.db)

Re-running the same command resumes: finished runs are read from OUT/lab.db, not recomputed.
"""


def _add_compare(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help="compare optimizers on problems with an equal tuning budget",
        description="Tune each optimizer's learning rate with the same budget on each problem "
        "(log-spaced grid, or Optuna), rerun the best setting on several seeds, and write "
        "a report (HTML + Markdown + PNGs).",
        epilog=COMPARE_EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument(
        "-p",
        "--problems",
        nargs="+",
        default=list(commands.DEFAULT_PROBLEMS),
        metavar="PROBLEM",
        help="problem names or module:function specs",
    )
    p.add_argument(
        "-o",
        "--optimizers",
        nargs="+",
        default=list(commands.DEFAULT_OPTIMIZERS),
        metavar="SPEC",
        help="optimizer specs: name, preset, or name:key=value,...",
    )
    p.add_argument(
        "--budget",
        metavar="N",
        type=_int_type(1, MAX_BUDGET),
        default=None,
        help=f"tuning trials per optimizer and problem (default {commands.DEFAULT_BUDGET}; "
        f"--quick {commands.QUICK_BUDGET})",
    )
    p.add_argument(
        "--seeds",
        metavar="N",
        type=_int_type(1, MAX_SEEDS),
        default=None,
        help=f"seeds for the reruns of the best setting (default {commands.DEFAULT_SEEDS}; "
        f"--quick {commands.QUICK_SEEDS})",
    )
    p.add_argument(
        "--search", choices=("grid", "optuna"), default="grid", help="how to spend the budget"
    )
    p.add_argument(
        "--hparams",
        default="lr",
        help="with --search optuna: what to tune besides lr: 'lr', 'all' or names "
        "(e.g. beta1,weight_decay)",
    )
    _add_storage(p)
    p.add_argument("--no-lr-find", action="store_true", help="skip the lr range tests")
    _add_grid_extend(p)
    _add_common(p)
    p.set_defaults(func=_run_compare)
    return p


def _sweep_kwargs(args) -> dict[str, Any]:
    return {
        "steps": args.steps,
        "lr_range": args.lr_range,
        "quick": args.quick,
        "out_dir": args.out,
        "workers": args.workers,
        "threads": args.threads,
        "engine": args.engine,
        **tracking_kwargs(args),
        "report": not args.no_report,
        "progress": not args.no_progress,
    }


def _finish(results, args) -> int:
    store = commands.store_location(args.out, getattr(args, "storage", None))
    console.print_outcome(results, args.out, report=not args.no_report, store=store)
    return 0


def _run_compare(args) -> int:
    results = commands.compare(
        split_specs(args.problems),
        split_specs(args.optimizers),
        budget=args.budget,
        seeds=args.seeds,
        search=args.search,
        hparams=args.hparams,
        storage=args.storage,
        grace_period=args.grace_period,
        lr_find=not args.no_lr_find,
        grid_extend=args.grid_extend,
        **_sweep_kwargs(args),
    )
    return _finish(results, args)


TUNE_EPILOG = """\
examples:
  optimlab tune -p digits_mlp -o adam                       # lr only, 20 trials
  optimlab tune -p digits_mlp -o adamw --hparams all --budget 40
  optimlab tune -p digits_mlp -o sgd --hparams momentum,weight_decay
  # several machines, one search and one run store: run the same command on each
  optimlab tune -p digits_mlp -o adam --budget 100 --storage postgresql://lab:pw@db/optimlab
"""


def _add_tune(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help="Optuna search for one optimizer on one problem",
        description="Search the learning rate (log-uniform over the problem's range) and, on "
        "request, other hyperparameters of one optimizer with Optuna's TPE sampler; the "
        "study and the runs live in OUT/lab.db or in the PostgreSQL database of --storage. "
        "The best setting is rerun on --seeds.",
        epilog=TUNE_EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument("-p", "--problem", required=True, help="problem name or module:function")
    p.add_argument("-o", "--optimizer", required=True, help="optimizer spec")
    p.add_argument(
        "--budget",
        metavar="N",
        type=_int_type(1, MAX_BUDGET),
        default=None,
        help=f"trials (default {commands.TUNE_BUDGET}; --quick {commands.QUICK_TUNE_BUDGET})",
    )
    p.add_argument(
        "--hparams",
        default="lr",
        help="what to tune besides lr: 'lr', 'all' or names such as beta1,eps",
    )
    p.add_argument(
        "--seeds",
        type=_int_type(1, MAX_SEEDS),
        default=1,
        metavar="N",
        help="seeds for the best setting",
    )
    _add_storage(p)
    _add_common(p)
    p.set_defaults(func=_run_tune)
    return p


def _run_tune(args) -> int:
    results = commands.tune(
        args.problem,
        args.optimizer,
        budget=args.budget,
        hparams=args.hparams,
        seeds=args.seeds,
        storage=args.storage,
        grace_period=args.grace_period,
        **_sweep_kwargs(args),
    )
    console.print_best_settings(results)
    return _finish(results, args)


TRAJ_EPILOG = """\
examples:
  optimlab trajectories                                    # all 2-D functions
  optimlab trajectories -f rosenbrock beale -o sgd momentum adam --steps 300
  optimlab trajectories --quick
"""


def _add_trajectories(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help="optimizer paths on 2-D test functions (contour PNGs and animated GIFs)",
        description="Tune each optimizer's learning rate on 2-D test functions, then draw "
        "the paths on contour plots (one PNG per function) and animate them (GIF).",
        epilog=TRAJ_EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument(
        "-f",
        "--functions",
        nargs="+",
        default=list(commands.FUNCTIONS_2D),
        metavar="FUNCTION",
        help="2-D problems",
    )
    p.add_argument(
        "-o",
        "--optimizers",
        nargs="+",
        default=list(commands.DEFAULT_OPTIMIZERS),
        metavar="SPEC",
        help="optimizer specs",
    )
    p.add_argument(
        "--budget",
        metavar="N",
        type=_int_type(1, MAX_BUDGET),
        default=None,
        help=f"learning rates tried per optimizer (default {commands.TRAJECTORY_BUDGET})",
    )
    _add_grid_extend(p)
    _add_common(p)
    p.set_defaults(func=_run_trajectories)
    return p


def _run_trajectories(args) -> int:
    results = commands.trajectories(
        split_specs(args.functions),
        split_specs(args.optimizers),
        budget=args.budget,
        grid_extend=args.grid_extend,
        **_sweep_kwargs(args),
    )
    return _finish(results, args)


LRFIND_EPILOG = """\
examples:
  optimlab lr-find -p digits_mlp -o adam
  optimlab lr-find -p digits_mlp -o sgd momentum adam --suggest steepest
  optimlab lr-find -p linear_regression -o sgd --start-lr 1e-6 --end-lr 10 --steps 200
"""


def _add_lr_find(sub, name: str) -> argparse.ArgumentParser:
    from optimlab.lab.lr_finder import SUGGESTIONS

    p = sub.add_parser(
        name,
        help="learning-rate range test: sweep the lr, suggest one",
        description="Train for a few steps while the learning rate grows exponentially, "
        "smooth the loss and suggest a learning rate (Smith 2015, fastai-style). The model "
        "and optimizer are restored afterwards. Writes the plot and the curves to "
        "OUT/reports/lr-find-ID/lr-find-PROBLEM.png and .json (the latest also to "
        "OUT/figures/lr-find-PROBLEM.png and OUT/lr-find-PROBLEM.json).",
        epilog=LRFIND_EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument("-p", "--problem", required=True, help="problem name or module:function")
    p.add_argument(
        "-o",
        "--optimizers",
        nargs="+",
        default=["adam"],
        metavar="SPEC",
        help="optimizer specs (one curve each)",
    )
    p.add_argument(
        "--start-lr",
        metavar="LR",
        type=_lr_type,
        default=None,
        help="first lr (default: the problem's lowest / 10)",
    )
    p.add_argument(
        "--end-lr",
        metavar="LR",
        type=_lr_type,
        default=None,
        help="last lr (default: the problem's highest × 10)",
    )
    p.add_argument(
        "--steps",
        metavar="N",
        type=_int_type(5, MAX_STEPS),
        default=None,
        help=f"steps of the sweep (default {LR_FIND_STEPS}; --quick {QUICK_LR_FIND_STEPS})",
    )
    p.add_argument(
        "--seed",
        type=_int_type(0, MAX_SEED),
        default=0,
        metavar="N",
        help="seed of the problem instance",
    )
    p.add_argument(
        "--suggest", choices=SUGGESTIONS, default="valley", help="rule that picks the suggested lr"
    )
    _add_common(p, sweep=False)
    p.set_defaults(func=_run_lr_find)
    return p


def _run_lr_find(args) -> int:
    outcome = commands.find_lr(
        args.problem,
        split_specs(args.optimizers),
        start_lr=args.start_lr,
        end_lr=args.end_lr,
        steps=args.steps,
        seed=args.seed,
        suggest=args.suggest,
        quick=args.quick,
        out_dir=args.out,
        threads=args.threads,
        engine=args.engine,
    )
    console.print_lr_find(outcome)
    return 0


REPORT_EPILOG = """\
examples:
  optimlab report                      # rebuild the latest sweep's report in ./optimlab-out
  optimlab report --out runs/exp1 --list
  optimlab report --sweep 3fa9c2 --gif
  optimlab report --track wandb mlflow       # log a stored sweep to W&B and MLflow
  optimlab report --storage postgresql://lab:pw@db/optimlab --kind tune   # a shared search
"""


def _add_report(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help="rebuild a report from the runs stored in OUT/lab.db",
        description="Rebuild the HTML/Markdown report and figures of a stored sweep (the most "
        "recently updated one by default) without running anything. Works on an "
        "unfinished sweep too: it shows what has finished. With --storage the runs are read "
        "from that database (a search shared by several machines) and the report is written "
        "to OUT.",
        epilog=REPORT_EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument("--out", default=commands.DEFAULT_OUT, metavar="DIR", help="output directory")
    p.add_argument("--sweep", default=None, metavar="ID", help="sweep id (a prefix is enough)")
    p.add_argument(
        "--kind",
        choices=("compare", "trajectories", "tune"),
        default=None,
        help="latest sweep of this kind",
    )
    p.add_argument("--list", action="store_true", help="list the stored sweeps and exit")
    p.add_argument("--gif", action="store_true", help="also animate 2-D trajectories")
    p.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help=f"read the runs from this PostgreSQL database ({STORAGE_URL}) instead of "
        "OUT/lab.db, and write the report to OUT",
    )
    add_tracking_arguments(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one line")
    p.set_defaults(func=_run_report, config=None)
    return p


def _run_report(args) -> int:
    if args.list:
        sweeps = commands.list_sweeps(args.out, args.storage)
        store = commands.store_location(args.out, args.storage)
        console.print_sweeps(store, sweeps, args.out)
        return 0
    results = commands.rebuild_report(
        args.out,
        args.sweep,
        args.kind,
        gif=True if args.gif else None,
        storage=args.storage,
        **tracking_kwargs(args),
    )
    if results.summaries():
        console.print_summary(results)
    console.print_banners(results)
    console.print_report_path(results)
    console.print_tracking(results)
    return 0


def _add_list(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help="list the optimizers, presets and problems",
        description="List what the lab can run: optimizer registry names, lab presets, and "
        "problems (with their kind, default steps and whether their data is present).",
        epilog="examples:\n  optimlab list\n  optimlab list optimizers\n",
        formatter_class=_Formatter,
    )
    p.add_argument(
        "what",
        nargs="?",
        choices=("all", "optimizers", "problems"),
        default="all",
        help="what to list",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one line")
    p.set_defaults(func=_run_list, config=None)
    return p


def _run_list(args) -> int:
    if args.what in ("all", "optimizers"):
        console.print_optimizers()
    if args.what in ("all", "problems"):
        console.print_problems()
    return 0


#: Subcommands in the order ``--help`` shows them.
COMMANDS: dict[str, Callable[[Any, str], argparse.ArgumentParser]] = {
    "list": _add_list,
    "compare": _add_compare,
    "lr-find": _add_lr_find,
    "trajectories": _add_trajectories,
    "tune": _add_tune,
    "report": _add_report,
}


def build_parser() -> _Parser:
    import optimlab

    parser = _Parser(
        prog="optimlab",
        description="optimlab lab: compare optimizers with a fair tuning budget, find learning "
        "rates, plot trajectories, and write reports.",
        epilog="examples:\n  optimlab list\n  optimlab compare --quick\n"
        "  optimlab compare -p digits_mlp -o sgd adam\n  optimlab lr-find -p digits_mlp -o adam\n"
        "  optimlab COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"optimlab {getattr(optimlab, '__version__', '?')}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, add in COMMANDS.items():
        parser.commands[name] = add(sub, name)
    return parser


# -- entry point -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 a run failed or the reader of a pipe went
    away, 2 bad input, 130 ^C)."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # `optimlab report --list | head -3`: the reader has what it wanted. Stop quietly
        # with status 1, as rich does for its tables, and keep Python from failing again when
        # it flushes stdout on exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


#: Commands that can take a while: they end by saying how long they took.
TIMED = ("compare", "tune", "trajectories", "lr-find", "report")


def _main(argv: list[str]) -> int:
    started = time.perf_counter()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    debug = getattr(args, "debug", False)
    try:
        if getattr(args, "config", None):
            from optimlab.lab.config_file import apply_config

            args = apply_config(parser, parser.commands[args.command], args.config, argv)
        code = args.func(args)
        if code == 0 and args.command in TIMED and not getattr(args, "list", False):
            console.print_elapsed(time.perf_counter() - started)
        return code
    except LabError as exc:
        if debug:
            raise
        console.error_line(str(exc))
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        console.error_line(
            "interrupted; finished runs are kept in the store: run the same command again to resume"
        )
        return 130
    except RunFailed as exc:
        if debug:
            raise
        console.error_line(f"{exc} (finished runs are kept; add --debug for the traceback)")
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
