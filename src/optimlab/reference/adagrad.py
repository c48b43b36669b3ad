"""Adagrad: per-coordinate step sizes from the running sum of squared gradients."""

import numpy as np

from ._arrays import complex_as_real_pairs, finish
from ._decay import begin_step


@complex_as_real_pairs
def adagrad(
    theta,
    grad,
    state,
    *,
    lr,
    lr_decay,
    weight_decay,
    initial_accumulator_value,
    eps,
    maximize,
    weight_decay_mode,
    initial_lr,
):
    """One Adagrad step on one parameter; returns the new θ.

    Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization", JMLR 12 (2011) 2121-2159, the diagonal update x ← x − η·diag(G_t)^(−1/2)·g_t
    with G_t = Σ_τ≤t g_τ², summed over time for each coordinate separately. torch.optim adds
    eps, an lr decay and a non-zero starting sum; in the code's symbols:

        t ← t + 1
        clr = lr / (1 + (t − 1)·lr_decay)
        G ← G + g²                      (G starts filled with initial_accumulator_value)
        θ ← θ − clr · g / (√G + eps)

    State: "t" (int) and "G" (torch's ``sum``).
    """
    theta, g = begin_step(
        theta,
        grad,
        lr=lr,
        weight_decay=weight_decay,
        maximize=maximize,
        weight_decay_mode=weight_decay_mode,
        initial_lr=initial_lr,
    )
    if not state:
        state["t"] = 0
        state["G"] = np.full_like(theta, initial_accumulator_value)
    state["t"] += 1
    t = state["t"]

    clr = lr / (1 + (t - 1) * lr_decay)
    G = state["G"] = state["G"] + g**2
    theta = theta - clr * g / (np.sqrt(G) + eps)
    return finish(theta, state)
