"""RAdam: Adam whose adaptive step is rectified for the variance of its early second moment."""

import math

import numpy as np

from ._arrays import complex_as_real_pairs, finish
from ._decay import begin_step

BELOW_THRESHOLD_RULES = ("sgd", "skip")


@complex_as_real_pairs
def radam(
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
    rectify_threshold,
    below_threshold,
):
    """One RAdam step on one parameter; returns the new θ.

    Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", arXiv:1908.03265,
    Alg. 2. With (β1, β2) = betas:

        t ← t + 1
        m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²
        bc1 = 1 − β1^t;  bc2 = 1 − β2^t;  m̂ = m/bc1
        ρ∞ = 2/(1 − β2) − 1                               (length of the approximated SMA)
        ρ_t = ρ∞ − 2·t·β2^t / bc2
        if ρ_t > rectify_threshold:
            r = √((ρ_t − 4)(ρ_t − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρ_t))
            θ ← θ − lr · m̂ · r · √bc2 / (√v + eps)
        elif below_threshold == "sgd":   θ ← θ − lr·m̂     (SGD with bias-corrected momentum)
        elif below_threshold == "skip":  θ unchanged        (the moments still advance)

    The paper's test is ρ_t > 4 (r is real from 4 on) and its adaptive factor
    l_t = √((1 − β2^t)/v_t) has no eps; torch uses ρ_t > 5 and adds eps to √v. With the default
    β2 = 0.999, ρ_t is just below t early on (ρ_5 ≈ 4.996, ρ_6 ≈ 5.994), so the rectified step
    first runs at t = 5 with threshold 4 and at t = 6 with threshold 5: the two conventions
    differ in exactly one step. "skip" makes no update at all until the variance is tractable;
    weight decay, applied before this, still acts under "decoupled" and "scheduled".
    State: "t" (int), "m" (torch's ``exp_avg``) and "v" (``exp_avg_sq``).
    """
    if below_threshold not in BELOW_THRESHOLD_RULES:
        raise ValueError(f"Invalid below_threshold: {below_threshold!r} (expected 'sgd' or 'skip')")
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
        state["v"] = np.zeros_like(theta)
    state["t"] += 1
    t = state["t"]

    m = state["m"] = beta1 * state["m"] + (1 - beta1) * g
    v = state["v"] = beta2 * state["v"] + (1 - beta2) * g**2
    bc1 = 1 - beta1**t
    bc2 = 1 - beta2**t
    m_hat = m / bc1
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2**t / bc2

    if rho_t > rectify_threshold:
        r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        theta = theta - lr * m_hat * r * math.sqrt(bc2) / (np.sqrt(v) + eps)
    elif below_threshold == "sgd":
        theta = theta - lr * m_hat
    return finish(theta, state)
