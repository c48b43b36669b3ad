"""Adam, and the two names for its variants: AdamW (decoupled decay) and AMSGrad."""

import numpy as np

from ._arrays import complex_as_real_pairs, finish
from ._decay import begin_step

AMSGRAD_FORMS = ("raw", "corrected")


@complex_as_real_pairs
def adam(
    theta,
    grad,
    state,
    *,
    lr,
    betas,
    eps,
    weight_decay,
    amsgrad,
    maximize,
    weight_decay_mode,
    initial_lr,
    eps_inside_sqrt,
    amsgrad_form,
):
    """One Adam step on one parameter; returns the new θ.

    Kingma & Ba, "Adam: A Method for Stochastic Optimization", arXiv:1412.6980, Alg. 1 (its
    lines are not numbered; they are quoted here in order). With (β1, β2) = betas:

        t ← t + 1
        m ← β1·m + (1 − β1)·g                     (biased first moment)
        v ← β2·v + (1 − β2)·g²                    (biased second raw moment)
        bc1 = 1 − β1^t,  bc2 = 1 − β2^t
        v̂ = v / bc2
        denom = √v̂ + eps,  or √(v̂ + eps) with eps_inside_sqrt
        θ ← θ − lr · (m / bc1) / denom

    With ``amsgrad`` the denominator uses the running maximum of the second moment (Reddi, Kale
    & Kumar, "On the Convergence of Adam and Beyond", arXiv:1904.09237, Alg. 2), in one of two
    forms, both starting from v_max = 0:

    - ``amsgrad_form="raw"`` (torch): v_max ← max(v_max, v); v̂ = v_max / bc2.
    - ``amsgrad_form="corrected"``: v_max ← max(v_max, v / bc2); v̂ = v_max.

    The forms differ because bc2 grows with t: a maximum of raw v taken early is later divided
    by a larger bc2, so "raw" can let v̂ shrink where "corrected" cannot. The paper itself has
    neither form: its Alg. 2 uses no bias correction at all (v̂_t = max(v̂_{t−1}, v_t) and
    x ← x − α_t·m_t/√v̂_t, with no eps and α_t = α/√t in the analysis).

    State: "t" (int), "m" (torch's ``exp_avg``), "v" (``exp_avg_sq``) and, with amsgrad,
    "v_max" (``max_exp_avg_sq``).
    """
    if amsgrad_form not in AMSGRAD_FORMS:
        raise ValueError(f"Invalid amsgrad_form: {amsgrad_form!r} (expected 'raw' or 'corrected')")
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
    if amsgrad:
        v_max = state.get("v_max", np.zeros_like(theta))
        if amsgrad_form == "raw":
            v_max = state["v_max"] = np.maximum(v_max, v)
            v_hat = v_max / bc2
        else:
            v_hat = state["v_max"] = np.maximum(v_max, v / bc2)
    else:
        v_hat = v / bc2
    denom = np.sqrt(v_hat + eps) if eps_inside_sqrt else np.sqrt(v_hat) + eps
    theta = theta - lr * (m / bc1) / denom
    return finish(theta, state)


def adamw(
    theta,
    grad,
    state,
    *,
    lr,
    betas,
    eps,
    weight_decay,
    amsgrad,
    maximize,
    weight_decay_mode,
    initial_lr,
    eps_inside_sqrt,
    amsgrad_form,
):
    """One AdamW step on one parameter; returns the new θ.

    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", arXiv:1711.05101, Alg. 2:
    Adam whose weight decay bypasses the moments, line 12
    θ_t ← θ_{t−1} − η_t·(α·m̂_t/(√v̂_t + ε) + λ·θ_{t−1}), instead of entering the gradient as an
    L2 term (line 6). Here that is Adam with ``weight_decay_mode="decoupled"`` (torch.optim.AdamW,
    θ ← θ − lr·λ·θ) or ``"scheduled"`` (the paper's η_t = lr/initial_lr). The mode is an argument
    like any other: AdamW differs from Adam only in its class defaults (λ = 1e-2, decoupled), so
    this function is :func:`adam` itself.
    """
    return adam(
        theta,
        grad,
        state,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        maximize=maximize,
        weight_decay_mode=weight_decay_mode,
        initial_lr=initial_lr,
        eps_inside_sqrt=eps_inside_sqrt,
        amsgrad_form=amsgrad_form,
    )


def amsgrad(
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
    eps_inside_sqrt,
    amsgrad_form,
):
    """One AMSGrad step on one parameter; returns the new θ.

    Adam with the running maximum of the second moment always on (Reddi, Kale & Kumar,
    arXiv:1904.09237, Alg. 2); see :func:`adam` for the update, the two ``amsgrad_form``
    conventions and how both differ from the paper, which has no bias correction.
    """
    return adam(
        theta,
        grad,
        state,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=True,
        maximize=maximize,
        weight_decay_mode=weight_decay_mode,
        initial_lr=initial_lr,
        eps_inside_sqrt=eps_inside_sqrt,
        amsgrad_form=amsgrad_form,
    )
