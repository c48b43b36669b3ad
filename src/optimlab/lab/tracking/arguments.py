"""The command-line options that choose tracking backends (``--track``, ``--mlflow-uri``)."""

from __future__ import annotations

import argparse
from typing import Any

from optimlab.lab.tracking import BACKENDS


def backend(text: str) -> str:
    """An argparse type: one backend name, case-insensitive."""
    name = text.strip().lower()
    if name not in BACKENDS:
        raise argparse.ArgumentTypeError(
            f"unknown tracking backend {text!r} (choose from: {', '.join(BACKENDS)})"
        )
    return name


def add_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--track",
        nargs="+",
        type=backend,
        default=None,
        metavar="BACKEND",
        help="log every run to any of: tensorboard (event files in OUT/tensorboard), "
        "wandb (offline runs in OUT/wandb unless WANDB_MODE is set; upload them with "
        "`wandb sync`), mlflow (OUT/mlflow.db unless --mlflow-uri or MLFLOW_TRACKING_URI)",
    )
    parser.add_argument(
        "--mlflow-uri",
        default=None,
        metavar="URI",
        help="MLflow tracking URI, e.g. http://localhost:5000 or sqlite:///runs.db "
        "(implies --track mlflow)",
    )
    parser.add_argument("--tensorboard", action="store_true", help="same as --track tensorboard")


def tracking_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`optimlab.lab.compare` that the options above set."""
    return {
        "track": args.track or [],
        "tensorboard": args.tensorboard,
        "mlflow_uri": args.mlflow_uri,
    }
