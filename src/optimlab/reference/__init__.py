"""Paper-form NumPy references: one function per optimizer, one parameter per call.

Every function has the form ``fn(theta, grad, state, *, <hyperparameters>) -> new_theta``:

- ``theta`` and ``grad`` are arrays of any shape (0-d and zero-size included), computed in
  float64; complex arrays are optimised as (real, imag) pairs, like torch.optim does;
- ``state`` is a dict that the function fills on its first call and updates in place, with keys
  named after the paper's symbols (``"t"``, ``"m"``, ``"v"``, ``"v_max"``, ``"b"``...);
- the hyperparameters are keyword-only and named as in the optimizer's param group;
- a new array is returned; ``theta`` and ``grad`` are never written to.

Each step runs in the same order: (1) g = −grad if ``maximize``; (2) weight decay by
``weight_decay_mode`` ("l2", "decoupled" or "scheduled", see ``_decay``); (3) the algorithm.

This package imports nothing from torch or the rest of optimlab: it is the oracle the optimizer
classes are tested against, so it must not share their code. Its modules are found by name, so
adding a reference is adding its module.
"""

import importlib as _importlib
import inspect as _inspect
import pkgutil as _pkgutil

#: name -> reference: every public function of this package's modules whose parameters start
#: with (theta, grad, state), under its own name (a new module needs no edit here); the other
#: public functions (``newton_schulz``) are exported beside them
REFERENCES = {}
_public = {}
for _module in _pkgutil.iter_modules(__path__):
    if _module.name.startswith("_"):
        continue
    _loaded = _importlib.import_module(f".{_module.name}", __name__)
    for _name, _fn in vars(_loaded).items():
        if (
            _name.startswith("_")
            or not _inspect.isfunction(_fn)
            or _fn.__module__ != _loaded.__name__
        ):
            continue
        _public[_name] = _fn
        if list(_inspect.signature(_fn).parameters)[:3] == ["theta", "grad", "state"]:
            REFERENCES[_name] = _fn
globals().update(_public)

__all__ = ["REFERENCES", *sorted(_public)]
