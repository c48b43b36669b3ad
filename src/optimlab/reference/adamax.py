"""Adamax: Adam with the second moment replaced by an exponentially weighted infinity norm."""

import numpy as np

from ._arrays import complex_as_real_pairs, finish
from ._decay import begin_step


@complex_as_real_pairs
def adamax(
    theta,
    grad,
    state,
    *,
    lr,
    betas,
    eps,
    weight_decay,
    maximize,
    weight_decay_mode,
    initial_lr,
):
    """One Adamax step on one parameter; returns the new θ.

    Kingma & Ba, arXiv:1412.6980, Alg. 2 (sec. 7.1). With (β1, β2) = betas:

        t ← t + 1
        m ← β1·m + (1 − β1)·g
        u ← max(β2·u, |g| + eps)          (u starts at 0)
        θ ← θ − lr/(1 − β1^t) · m/u

    The paper's u_t = max(β2·u_{t−1}, |g_t|) needs no bias correction (the maximum is not an
    average that starts at 0) and has no eps; torch puts eps inside the maximum, which keeps u
    positive when a coordinate's gradient has been exactly 0 from the start. State: "t" (int),
    "m" (torch's ``exp_avg``) and "u" (``exp_inf``).
    """
    beta1, beta2 = betas
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
        state["m"] = np.zeros_like(theta)
        state["u"] = np.zeros_like(theta)
    state["t"] += 1
    t = state["t"]

    m = state["m"] = beta1 * state["m"] + (1 - beta1) * g
    u = state["u"] = np.maximum(beta2 * state["u"], np.abs(g) + eps)
    theta = theta - lr / (1 - beta1**t) * m / u
    return finish(theta, state)
