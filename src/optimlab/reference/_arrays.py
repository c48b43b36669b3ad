"""Array plumbing shared by the reference optimizers.

The algorithms themselves are written for real float64 arrays of any shape. Two details of
NumPy would otherwise leak into every one of them:

- arithmetic on 0-d arrays returns NumPy scalars rather than 0-d arrays, so a step would hand
  back a different type than it was given;
- a complex parameter must be optimised as a pair of real numbers (its real and imaginary parts),
  as torch.optim does with ``torch.view_as_real``; squaring a complex gradient instead would
  compute g·g rather than the per-component squares the algorithms are defined by.
"""

import functools

import numpy as np


def as_float64(x):
    """A float64 copy of ``x``, so a step never writes into its caller's arrays."""
    return np.array(x, dtype=np.float64)


def finish(theta, state):
    """Return ``theta`` as an ndarray and turn any NumPy scalar left in ``state`` into a 0-d array.

    Python numbers in ``state`` (the step count ``t``, NAdam's running product) stay as they are.
    """
    for key, value in state.items():
        if isinstance(value, np.generic):
            state[key] = np.asarray(value)
    return np.asarray(theta, dtype=np.float64)


def _to_real_pairs(z):
    z = np.asarray(z)
    return np.stack([z.real, z.imag], axis=-1)


def _from_real_pairs(x):
    return x[..., 0] + 1j * x[..., 1]


def complex_as_real_pairs(step):
    """Let ``step(theta, grad, state, **hyperparameters)`` accept complex ``theta`` and ``grad``.

    A complex array of shape S is optimised as a real array of shape S + (2,), (real, imag) on the
    last axis, exactly like ``torch.view_as_real``; the state then holds arrays of that real shape
    and the new parameter is returned as complex128. Real inputs pass straight through.
    """

    @functools.wraps(step)
    def step_on_real_pairs(theta, grad, state, **hyperparameters):
        if not (np.iscomplexobj(theta) or np.iscomplexobj(grad)):
            return step(theta, grad, state, **hyperparameters)
        new_pairs = step(_to_real_pairs(theta), _to_real_pairs(grad), state, **hyperparameters)
        return _from_real_pairs(new_pairs)

    return step_on_real_pairs
