"""Weight initialisation: `initialize` applies a named scheme to a model, `check_init` checks
that signals neither explode, vanish nor saturate at the start. Formulas: ``docs/init.md``."""

from optimlab.init.apply import InitRecord, InitSummary, initialize
from optimlab.init.check import InitCheck, InitFlag, LayerStats, check_init, random_probe_loss
from optimlab.init.schemes import SCHEMES, fans, truncated_normal_variance

__all__ = [
    "SCHEMES",
    "InitCheck",
    "InitFlag",
    "InitRecord",
    "InitSummary",
    "LayerStats",
    "check_init",
    "fans",
    "initialize",
    "random_probe_loss",
    "truncated_normal_variance",
]
