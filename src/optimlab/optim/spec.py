"""What an optimizer class declares about itself, besides its formula.

Every optimizer is one class, one NumPy reference and one docs section. Everything else the
project knows about it is declared on the class with the records below, and the registry, the
package's exports, the test suite's specs, the lab's search space and the benchmark's baseline
and minimum memory traffic are derived from those declarations (see docs/contributing.md):

* ``name`` (the registry name) and ``year`` (of publication: the registry's order);
* ``torch_twin``: the torch.optim class that computes the same algorithm, as a
  :class:`TorchTwin`, or ``None``; ``stand_in``: for one without a twin, the torch.optim
  configuration that moves the same bytes, for the benchmark;
* ``configs``: settings that exercise every convention switch (the test suite runs each
  against the NumPy reference, torch.optim where the twin computes it, and every engine);
* ``invalid_configs``: settings that must fail, with the start of torch's message;
* ``search_space``: the hyperparameters the lab may tune besides the learning rate, as
  :class:`Hyper` records;
* ``supports_complex`` and ``supports_sparse``;
* ``state_spec``: the state it keeps (see :mod:`optimlab.core.state`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TorchTwin:
    """A torch.optim class, with the arguments that make it compute a given optimlab class's
    algorithm (``TorchTwin("Adam", {"amsgrad": True})`` for AMSGrad)."""

    name: str
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def cls(self):
        import torch

        return getattr(torch.optim, self.name)


@dataclass(frozen=True)
class Hyper:
    """A hyperparameter the lab may search over, besides ``lr``.

    ``name`` is a constructor argument, or one of the reparametrisations ``"beta1"`` (the first
    of ``betas``), ``"one_minus_beta2"`` (1 − the second) and ``"one_minus_alpha"``, which search
    the distance from 1 on a log scale.
    """

    name: str
    low: float
    high: float
    log: bool = False
    description: str = ""


#: every optimizer class that declares a ``name``, by name (see :mod:`optimlab.optim.registry`)
REGISTERED: dict[str, type] = {}


BETA1 = Hyper("beta1", 0.5, 0.99, description="first-moment decay β1")
ONE_MINUS_BETA2 = Hyper("one_minus_beta2", 1e-4, 1e-1, log=True, description="1 − β2")
EPS = Hyper("eps", 1e-10, 1e-4, log=True, description="ε")
WEIGHT_DECAY = Hyper("weight_decay", 1e-6, 1e-1, log=True, description="weight decay")
#: the usual search space of the Adam family
ADAM_SPACE = (BETA1, ONE_MINUS_BETA2, EPS, WEIGHT_DECAY)
