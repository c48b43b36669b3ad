"""What "better" means on a problem: the number the tuning optimises and the ranking sorts by.

* A problem with a metric (accuracy, R²; always higher-is-better) is judged by the final
  validation metric, as DeepOBS and AlgoPerf judge on held-out data.
* Otherwise by the final validation loss, or the final train loss when the problem has no
  validation set (2-D test functions, quadratics): lower is better.

A diverged run scores the worst possible value, so it never wins a tuning budget.

Ties are common with a metric measured on a few hundred validation examples (two settings
with the same accuracy), so ties are broken by the loss: validation loss where there is one,
else the final train loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Objective:
    metric: str | None  # the problem's metric name, or None for a loss

    @property
    def direction(self) -> str:
        return "minimize" if self.metric is None else "maximize"

    @property
    def higher_is_better(self) -> bool:
        return self.metric is not None

    def label(self, final: dict[str, Any] | None = None) -> str:
        if self.metric is not None:
            return f"val {self.metric}"
        if final is not None and "val_loss" in final:
            return "val loss"
        return "final loss"

    def raw(self, final: dict[str, Any]) -> float:
        """The number itself (NaN when missing or the run diverged)."""
        if final.get("diverged"):
            return math.nan
        key = "val_metric" if self.metric is not None else "val_loss"
        value = final.get(key, final.get("train_loss") if self.metric is None else None)
        return math.nan if value is None else float(value)

    def value(self, final: dict[str, Any]) -> float:
        """The number with failures mapped to the worst value (±inf), for comparisons."""
        raw = self.raw(final)
        if math.isfinite(raw):
            return raw
        return -math.inf if self.higher_is_better else math.inf

    def tiebreak(self, final: dict[str, Any]) -> float:
        """Secondary key (lower is better): the validation loss, else the train loss."""
        if final.get("diverged"):
            return math.inf
        value = final.get("val_loss", final.get("train_loss"))
        return math.inf if value is None or not math.isfinite(value) else float(value)

    def sort_key(self, value: float) -> float:
        """Ascending sort key: better first, NaN last."""
        if value is None or math.isnan(value):
            return math.inf
        return -value if self.higher_is_better else value


def objective_for(problem) -> Objective:
    return Objective(metric=getattr(problem, "metric", None))
