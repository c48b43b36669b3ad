"""Adadelta: step sizes from the ratio of two running RMS values, of updates and of gradients."""

import numpy as np

from ._arrays import complex_as_real_pairs, finish
from ._decay import begin_step


@complex_as_real_pairs
def adadelta(
    theta,
    grad,
    state,
    *,
    lr,
    rho,
    eps,
    weight_decay,
    maximize,
    weight_decay_mode,
    initial_lr,
):
    """One Adadelta step on one parameter; returns the new θ.

    Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, Alg. 1. With
    ρ = rho, v = E[g²] and u = E[Δx²] (both start at 0):

        v ← ρ·v + (1 − ρ)·g²                    (line 4, accumulate gradient)
        Δ = √(u + eps) / √(v + eps) · g         (line 5, RMS[Δx]_{t−1} / RMS[g]_t · g)
        u ← ρ·u + (1 − ρ)·Δ²                    (line 6, accumulate updates)
        θ ← θ − lr·Δ                            (line 7; the paper has no lr, i.e. lr = 1)

    Δ uses u from the previous step: the update's own size is not known yet. On the first step
    u = 0, so every coordinate moves by lr·√eps·g/√((1 − ρ)·g² + eps), at most lr·√(eps/(1 − ρ)).
    State: "v" (torch's ``square_avg``) and "u" (``acc_delta``).
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
        state["v"] = np.zeros_like(theta)
        state["u"] = np.zeros_like(theta)

    v = state["v"] = rho * state["v"] + (1 - rho) * g**2
    delta = np.sqrt(state["u"] + eps) / np.sqrt(v + eps) * g
    state["u"] = rho * state["u"] + (1 - rho) * delta**2
    theta = theta - lr * delta
    return finish(theta, state)
