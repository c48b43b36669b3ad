"""Paper-form NumPy references: one function per optimizer, one parameter per call.

Every function has the form ``fn(theta, grad, state, *, <hyperparameters>) -> new_theta``:

- ``theta`` and ``grad`` are arrays of any shape (0-d and zero-size included), computed in
  float64; complex arrays are optimised as (real, imag) pairs, like torch.optim does. Two
  exceptions follow torch: ``muon`` needs ≥ 2 dimensions, and ``adafactor`` and ``muon`` reject
  complex arrays, whose (real, imag) axis would become one of their matrix dimensions;
- ``state`` is a dict that the function fills on its first call and updates in place, with keys
  named after the paper's symbols (``"t"``, ``"m"``, ``"v"``, ``"v_max"``, ``"b"``...); each
  function's docstring names the torch state each key corresponds to. State arrays have the
  parameter's shape, except Adafactor's factored row and column statistics "R" and "C";
- the hyperparameters are keyword-only and named as in the optimizer's param group;
- a new array is returned; ``theta`` and ``grad`` are never written to.

Each step runs in the same order: (1) g = −grad if ``maximize`` (Muon has no ``maximize``);
(2) weight decay by ``weight_decay_mode`` ("l2", "decoupled" or "scheduled", see ``_decay``);
(3) the algorithm. ``newton_schulz`` is exported beside the optimizers: Muon's matrix step on
its own, for tests that check it in closed form.

This package imports nothing from torch or the rest of optimlab: it is the oracle the optimizer
classes are tested against, so it must not share their code.
"""

from .adabound import adabound, amsbound
from .adadelta import adadelta
from .adafactor import adafactor
from .adagrad import adagrad
from .adam import adam, adamw, amsgrad
from .adamax import adamax
from .lion import lion
from .muon import muon, newton_schulz
from .nadam import nadam
from .radam import radam
from .rmsprop import rmsprop
from .sgd import sgd

REFERENCES = {
    "sgd": sgd,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "adadelta": adadelta,
    "adam": adam,
    "adamw": adamw,
    "amsgrad": amsgrad,
    "adamax": adamax,
    "nadam": nadam,
    "radam": radam,
    "adabound": adabound,
    "amsbound": amsbound,
    "lion": lion,
    "adafactor": adafactor,
    "muon": muon,
}

__all__ = [
    "REFERENCES",
    "adabound",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "amsbound",
    "amsgrad",
    "lion",
    "muon",
    "nadam",
    "newton_schulz",
    "radam",
    "rmsprop",
    "sgd",
]
