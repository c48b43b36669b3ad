"""NAdam: Adam with a Nesterov-style look-ahead in its first moment."""

import numpy as np

from ._arrays import complex_as_real_pairs, finish
from ._decay import begin_step


@complex_as_real_pairs
def nadam(
    theta,
    grad,
    state,
    *,
    lr,
    betas,
    eps,
    weight_decay,
    momentum_decay,
    maximize,
    weight_decay_mode,
    initial_lr,
):
    """One NAdam step on one parameter; returns the new θ.

    Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop track, Alg. 2, with
    the momentum schedule μ_t = β1·(1 − ½·0.96^(t/250)) that the paper recommends; torch writes
    1/250 as ψ = momentum_decay (default 4e-3). With (β1, β2) = betas:

        t ← t + 1
        μ_t    = β1·(1 − 0.5·0.96^(t·ψ))
        μ_next = β1·(1 − 0.5·0.96^((t + 1)·ψ))
        Π ← Π·μ_t                                    (Π = Π_{i≤t} μ_i, starts at 1)
        m ← β1·m + (1 − β1)·g
        v ← β2·v + (1 − β2)·g²
        denom = √(v/(1 − β2^t)) + eps
        θ ← θ − lr·(1 − μ_t)/(1 − Π) · g/denom − lr·μ_next/(1 − Π·μ_next) · m/denom

    The two terms are the current gradient, bias-corrected by the product of the momenta so far,
    and the first moment looked ahead by one step, corrected by the product including μ_next.
    Note that m itself is averaged with the constant β1, as in torch, while the weights of the
    update use the scheduled μ. State: "t" (int), "mu_product" (Π, a float, torch's
    ``mu_product``), "m" (``exp_avg``) and "v" (``exp_avg_sq``).
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
        state["mu_product"] = 1.0
        state["m"] = np.zeros_like(theta)
        state["v"] = np.zeros_like(theta)
    state["t"] += 1
    t = state["t"]

    mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    mu_product = state["mu_product"] = state["mu_product"] * mu_t
    m = state["m"] = beta1 * state["m"] + (1 - beta1) * g
    v = state["v"] = beta2 * state["v"] + (1 - beta2) * g**2
    denom = np.sqrt(v / (1 - beta2**t)) + eps
    theta = (
        theta
        - lr * (1 - mu_t) / (1 - mu_product) * g / denom
        - lr * mu_next / (1 - mu_product * mu_next) * m / denom
    )
    return finish(theta, state)
