"""AdaBound and AMSBound: Adam whose per-coordinate step size is clipped into bounds that
close in on a final SGD learning rate."""

import numpy as np

from ._arrays import complex_as_real_pairs, finish
from ._decay import begin_step


@complex_as_real_pairs
def adabound(
    theta,
    grad,
    state,
    *,
    lr,
    betas,
    final_lr,
    gamma,
    eps,
    weight_decay,
    amsbound,
    maximize,
    weight_decay_mode,
    initial_lr,
    bounds_follow_lr,
):
    """One AdaBound step on one parameter; returns the new θ.

    Luo, Xiong, Liu & Sun, "Adaptive Gradient Methods with Dynamic Bound of Learning Rate",
    arXiv:1902.09843, Alg. 2 (AdaBound) and Alg. 3 (AMSBound), in the form of the authors'
    released code. With (β1, β2) = betas and γ = gamma:

        t ← t + 1
        m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²
        amsbound:  v_max ← max(v_max, v);  denom = √v_max + eps      otherwise: denom = √v + eps
        step = lr·√(1 − β2^t)/(1 − β1^t)
        f = final_lr·lr/initial_lr  (bounds_follow_lr)     or  f = final_lr
        lower = f·(1 − 1/(γ·t + 1));  upper = f·(1 + 1/(γ·t))
        η = clip(step/denom, lower, upper)   (elementwise)
        θ ← θ − η·m

    Both bounds start wide (at t = 1, lower = f·γ/(1 + γ) and upper = f·(1 + 1/γ)) and close in
    on f as 1/(γ·t), so
    AdaBound starts like Adam and ends like SGD with learning rate f. With ``bounds_follow_lr``
    f is rescaled by the lr schedule, as the authors' code does, so decaying lr also lowers the
    final SGD rate; without it the bounds ignore the schedule.

    How the paper's Alg. 2 differs from this (the code's) form:

    - the bounds are written with 1 − β2 in the place of γ (η_l = 0.1 − 0.1/((1 − β2)·t + 1),
      η_u = 0.1 + 0.1/((1 − β2)·t)); the code makes that rate a separate γ (default 1e-3, which
      equals 1 − β2 for the default β2 = 0.999) and the 0.1 a separate final_lr;
    - the clipped rate is further divided by √t (η_t = Clip(α/√V_t, η_l, η_u)/√t), which the
      code leaves out;
    - there is no bias correction (neither 1 − β1^t nor 1 − β2^t) and no eps; the paper also
      allows a decaying β1t, where the code keeps β1 constant.

    State: "t" (int), "m" (torch's ``exp_avg``), "v" (``exp_avg_sq``) and, with amsbound,
    "v_max" (``max_exp_avg_sq``).
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
        state["v"] = np.zeros_like(theta)
    state["t"] += 1
    t = state["t"]

    m = state["m"] = beta1 * state["m"] + (1 - beta1) * g
    v = state["v"] = beta2 * state["v"] + (1 - beta2) * g**2
    if amsbound:
        v_max = state["v_max"] = np.maximum(state.get("v_max", np.zeros_like(theta)), v)
        denom = np.sqrt(v_max) + eps
    else:
        denom = np.sqrt(v) + eps

    step = lr * np.sqrt(1 - beta2**t) / (1 - beta1**t)
    f = final_lr * lr / initial_lr if bounds_follow_lr else final_lr
    lower = f * (1 - 1 / (gamma * t + 1))
    upper = f * (1 + 1 / (gamma * t))
    eta = np.clip(step / denom, lower, upper)
    theta = theta - eta * m
    return finish(theta, state)


def amsbound(
    theta,
    grad,
    state,
    *,
    lr,
    betas,
    final_lr,
    gamma,
    eps,
    weight_decay,
    maximize,
    weight_decay_mode,
    initial_lr,
    bounds_follow_lr,
):
    """One AMSBound step on one parameter; returns the new θ.

    AdaBound on the running maximum of the second moment (Luo et al., arXiv:1902.09843, Alg. 3);
    see :func:`adabound` for the update and how the authors' code differs from the paper.
    """
    return adabound(
        theta,
        grad,
        state,
        lr=lr,
        betas=betas,
        final_lr=final_lr,
        gamma=gamma,
        eps=eps,
        weight_decay=weight_decay,
        amsbound=True,
        maximize=maximize,
        weight_decay_mode=weight_decay_mode,
        initial_lr=initial_lr,
        bounds_follow_lr=bounds_follow_lr,
    )
