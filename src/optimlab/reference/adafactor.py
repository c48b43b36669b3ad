"""Adafactor: a second moment kept as row and column statistics, with update clipping and a
step size relative to the parameter's own scale."""

import numpy as np

from ._arrays import finish
from ._decay import begin_step

EPS1_MODES = ("clamp", "add")


def adafactor(
    theta,
    grad,
    state,
    *,
    lr,
    beta2_decay,
    eps,
    d,
    weight_decay,
    maximize,
    relative_step,
    scale_parameter,
    beta1,
    eps1_mode,
    factored,
    weight_decay_mode,
    initial_lr,
):
    """One Adafactor step on one parameter; returns the new θ.

    Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
    arXiv:1804.04235, Alg. 4 (matrices) and 5 (vectors) with Sec. 5-9; the defaults are
    torch.optim.Adafactor's. With (ε1, ε2) = eps, ε1 = None meaning float64's machine epsilon
    (torch uses the parameter dtype's), RMS(x) = √mean(x²) over the whole tensor and g after
    sign and weight decay:

        t ← t + 1
        1 − β̂2 = t^beta2_decay                   (Sec. 7.1: β̂2_t = 1 − t^−0.8; t = 1 gives 0)
        ρ = min(lr, 1/√t)   (relative_step)  or  ρ = lr
        α = max(ε2, RMS(θ_{t−1}))·ρ   (scale_parameter)  or  α = ρ          (Sec. 8)

    The second moment, factored when ``factored`` and θ has ≥ 2 dimensions, over its last two
    (rows i on axis −2, columns j on axis −1, batched over any leading axes; state of torch's
    shapes: R has a last axis of 1, C an axis −2 of 1):

        R ← β̂2·R + (1 − β̂2)·mean_j(q)            (row means, torch's ``row_var``)
        C ← β̂2·C + (1 − β̂2)·mean_i(q)            (column means, ``col_var``)
        V̂ = R·C / mean_i(R)                       (rank-1 reconstruction, Alg. 4 lines 6-7)
    or, unfactored (Alg. 5),
        v ← β̂2·v + (1 − β̂2)·q;  V̂ = v            (``variance``)

    where ε1 enters by ``eps1_mode``:

    - "clamp" (torch): q = g², the denominator mean_i(R) is clamped below at ε1 and V̂ at ε1²;
    - "add" (the paper, Alg. 4 lines 5-6, and tensor2tensor, HF, fairseq, optax): q = g² + ε1,
      and nothing is clamped. The paper's ε1 is 1e-30: pass eps=(1e-30, ε2).

    The paper writes R and C as row and column sums and V̂ = R·C/(1ᵀR); with means, as every
    implementation keeps them, the same V̂ is R·C/mean_i(R). Then

        U = g/√V̂
        Û = U / max(1, RMS(U)/d)                  (update clipping, Sec. 6)
        θ ← θ − α·Û                               (beta1 None: no first moment, the paper's form)
        m ← β1·m + (1 − β1)·α·Û;  θ ← θ − m       (beta1 a float)

    The paper's Alg. 4-5 have no first moment; with ``beta1`` the average is taken of the
    clipped update already scaled by α, as in the authors' tensor2tensor code and in HF,
    fairseq and optax (transformers#34506 questions this order; see the research notes). Any
    float, 0.0 included, keeps m.

    Weight decay by ``weight_decay_mode`` (the paper has none): "decoupled" is torch's
    θ ← θ·(1 − lr·λ), scaled by lr itself, not by ρ or α; "scheduled" θ ← θ·(1 − (lr/initial_lr)·λ);
    "l2" adds λθ to g. The parameter scale RMS(θ_{t−1}) is taken before the decay, as torch does.

    State: "t" (int, torch's ``step``), "R" and "C" (``row_var``, ``col_var``) or "v"
    (``variance``), and "m" with beta1. Complex parameters are rejected, as torch does: a
    (real, imag) axis would become one of the two factored dimensions.
    """
    if eps1_mode not in EPS1_MODES:
        raise ValueError(f"Invalid eps1_mode: {eps1_mode!r} (expected 'clamp' or 'add')")
    if np.iscomplexobj(theta) or np.iscomplexobj(grad):
        raise TypeError("adafactor does not support complex parameters (as torch.optim.Adafactor)")
    eps1, eps2 = eps
    if eps1 is None:
        eps1 = np.finfo(np.float64).eps
    theta_scale = _rms(np.asarray(theta, dtype=np.float64))
    theta, g = begin_step(
        theta,
        grad,
        lr=lr,
        weight_decay=weight_decay,
        maximize=maximize,
        weight_decay_mode=weight_decay_mode,
        initial_lr=initial_lr,
    )
    is_factored = factored and theta.ndim >= 2
    if not state:
        state["t"] = 0
        if is_factored:
            state["R"] = np.zeros(theta.shape[:-1] + (1,))
            state["C"] = np.zeros(theta.shape[:-2] + (1,) + theta.shape[-1:])
        else:
            state["v"] = np.zeros_like(theta)
        if beta1 is not None:
            state["m"] = np.zeros_like(theta)
    state["t"] += 1
    t = state["t"]
    mix = t**beta2_decay  # 1 − β̂2
    rho = min(lr, 1 / t**0.5) if relative_step else lr
    alpha = max(eps2, theta_scale) * rho if scale_parameter else rho

    q = g**2 + eps1 if eps1_mode == "add" else g**2
    if is_factored:
        R = state["R"] = (1 - mix) * state["R"] + mix * _mean(q, axis=-1)
        C = state["C"] = (1 - mix) * state["C"] + mix * _mean(q, axis=-2)
        row_mean = _mean(R, axis=-2)
        if eps1_mode == "clamp":
            row_mean = np.maximum(row_mean, eps1)
        v_hat = R * C / row_mean
    else:
        v_hat = state["v"] = (1 - mix) * state["v"] + mix * q
    if eps1_mode == "clamp":
        v_hat = np.maximum(v_hat, eps1 * eps1)
    u = g / np.sqrt(v_hat)
    u_hat = u / max(1.0, _rms(u) / d)

    if beta1 is None:
        theta = theta - alpha * u_hat
    else:
        m = state["m"] = beta1 * state["m"] + (1 - beta1) * alpha * u_hat
        theta = theta - m
    return finish(theta, state)


def _rms(x):
    """√mean(x²) over the whole array; 0 for an empty one (nothing to scale or clip)."""
    return float(np.sqrt(np.mean(x**2))) if x.size else 0.0


def _mean(x, axis):
    """Mean over ``axis`` with the axis kept; over an empty axis 0, where NumPy would give NaN
    (torch's ``col_var`` does hold NaN there; either way no parameter entry depends on it)."""
    return np.sum(x, axis=axis, keepdims=True) / max(x.shape[axis], 1)
