"""Stochastic gradient descent with heavy-ball or Nesterov momentum, in two conventions."""

import numpy as np

from ._arrays import complex_as_real_pairs, finish
from ._decay import begin_step

MOMENTUM_FORMS = ("torch", "sutskever")


@complex_as_real_pairs
def sgd(
    theta,
    grad,
    state,
    *,
    lr,
    momentum,
    dampening,
    nesterov,
    weight_decay,
    maximize,
    weight_decay_mode,
    initial_lr,
    momentum_form,
):
    """One SGD step on one parameter; returns the new θ.

    With μ = momentum and τ = dampening, and g the gradient after sign and weight decay:

    If μ = 0, both forms are plain SGD, θ ← θ − lr·g, and no state is kept.

    ``momentum_form="torch"`` (torch.optim.SGD). The buffer b (state "b") is the gradient itself
    on its first step, undamped, and then b ← μ·b + (1 − τ)·g. The direction is d = g + μ·b
    with Nesterov, else d = b, and θ ← θ − lr·d.

    ``momentum_form="sutskever"`` (Sutskever, Martens, Dahl & Hinton, "On the importance of
    initialization and momentum in deep learning", ICML 2013, PMLR 28(3), eq. 1-2 for classical
    momentum; Nesterov's eq. 3-4 rewritten, as in Bengio, Boulanger-Lewandowski & Pascanu,
    arXiv:1212.0901, so that the gradient is taken at θ itself rather than at a
    look-ahead point; the paper's v is the negative of the v here). The velocity v (state "v")
    starts at 0 and already contains the learning rate: v ← μ·v + lr·g; θ ← θ − v, or
    θ ← θ − (μ·v + lr·g) with Nesterov. This form has no dampening, so τ ≠ 0 raises ValueError.

    With a constant lr and τ = 0 the two forms give identical iterates (v = lr·b). They part when
    lr changes: the torch buffer stores gradients, so a new lr rescales the whole remembered
    velocity at once; the Sutskever velocity stores steps already scaled by the lr of their
    time, so a new lr only affects the new gradients.
    """
    if momentum_form not in MOMENTUM_FORMS:
        raise ValueError(
            f"Invalid momentum_form: {momentum_form!r} (expected 'torch' or 'sutskever')"
        )
    if momentum_form == "sutskever" and dampening != 0:
        raise ValueError(f"momentum_form='sutskever' has no dampening; got dampening={dampening}")
    theta, g = begin_step(
        theta,
        grad,
        lr=lr,
        weight_decay=weight_decay,
        maximize=maximize,
        weight_decay_mode=weight_decay_mode,
        initial_lr=initial_lr,
    )
    if momentum == 0:
        # Both forms reduce to plain SGD, and neither keeps a buffer (0 bytes of state).
        theta = theta - lr * g
    elif momentum_form == "torch":
        theta = theta - lr * _torch_direction(g, state, momentum, dampening, nesterov)
    else:
        theta = theta - _sutskever_step(g, state, lr, momentum, nesterov)
    return finish(theta, state)


def _torch_direction(g, state, momentum, dampening, nesterov):
    if "b" in state:
        b = state["b"] = momentum * state["b"] + (1 - dampening) * g
    else:
        # The first buffer is the raw gradient: dampening it would shrink the very first step.
        b = state["b"] = g.copy()
    return g + momentum * b if nesterov else b


def _sutskever_step(g, state, lr, momentum, nesterov):
    if "v" not in state:
        state["v"] = np.zeros_like(g)
    v = state["v"] = momentum * state["v"] + lr * g
    return momentum * v + lr * g if nesterov else v
