"""Muon: momentum whose matrix is orthogonalised by a Newton–Schulz iteration before the step."""

import math

import numpy as np

from ._arrays import finish
from ._decay import begin_step

MOMENTUM_FORMS = ("ema", "sum")
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


def newton_schulz(G, *, ns_coefficients, ns_steps, eps):
    """The approximately orthogonalised matrix of a 2-D ``G``, in float64; returns a new array.

    Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024, the
    ``zeropower_via_newtonschulz5`` of the KellerJordan/Muon code, as torch.optim.Muon has it).
    With (a, b, c) = ns_coefficients:

        X = G / max(‖G‖_F, eps)                    (spectral norm ≤ Frobenius norm ≤ 1)
        transpose X if it has more rows than columns (so X·Xᵀ is the smaller Gram matrix)
        repeat ns_steps times:
            A = X·Xᵀ;  B = b·A + c·A·A;  X = a·X + B·X
        transpose back

    On the SVD X = U·diag(σ)·Vᵀ each iteration maps every singular value through the odd
    quintic p(σ) = a·σ + b·σ³ + c·σ⁵ and keeps U and V, so the result is U·diag(p^k(σ))·Vᵀ. The
    default coefficients (3.4445, −4.775, 2.0315) maximise the slope at 0 rather than converge:
    after 5 steps every normalised singular value above ~3e-3 ends in [0.68, 1.2], not at 1,
    and smaller ones are multiplied by about a⁵ ≈ 480. KellerJordan/Muon and Moonshot's code
    divide by ‖G‖_F + eps instead of clamping; both run this in bfloat16.
    """
    X = np.array(G, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"newton_schulz needs a 2-D matrix, got shape {X.shape}")
    a, b, c = ns_coefficients
    transposed = X.shape[0] > X.shape[1]
    if transposed:
        X = X.T
    X = X / max(float(np.linalg.norm(X)), eps)
    for _ in range(ns_steps):
        A = X @ X.T
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return X.T.copy() if transposed else X


def muon(
    theta,
    grad,
    state,
    *,
    lr,
    weight_decay,
    momentum,
    nesterov,
    ns_coefficients,
    eps,
    ns_steps,
    adjust_lr_fn,
    momentum_form,
    weight_decay_mode,
    initial_lr,
):
    """One Muon step on one parameter of ≥ 2 dimensions; returns the new θ.

    Jordan et al. (2024, kellerjordan.github.io/posts/muon and the KellerJordan/Muon code) as
    torch.optim.Muon computes it; Liu et al., "Muon is Scalable for LLM Training",
    arXiv:2502.16982, Sec. 2 for the "match_rms_adamw" scale and the "sum" momentum of its code.
    With μ = momentum and b the momentum buffer (starts at 0):

        momentum_form="ema" (torch, KellerJordan/Muon):  b ← μ·b + (1 − μ)·g
            direction u = (1 − μ)·g + μ·b  (nesterov)   or   u = b
        momentum_form="sum" (Moonshot's code, torch's docstring):  b ← μ·b + g
            direction u = g + μ·b  (nesterov)   or   u = b
        O = newton_schulz(u reshaped to [rows, −1], ns_coefficients, ns_steps, eps)
        θ ← θ − lr_adj·O                          (O reshaped back to θ's shape)

    A parameter of more than 2 dimensions (a convolution's [out, in, kh, kw]) is orthogonalised
    as the [out, in·kh·kw] matrix, as KellerJordan/Muon does; its A×B below are that matrix's.
    With A rows and B columns:

        adjust_lr_fn None or "original":  lr_adj = lr·√max(1, A/B)
        adjust_lr_fn "match_rms_adamw":   lr_adj = lr·0.2·√max(A, B)   (RMS(O) ≈ 0.2, as AdamW's)

    With a constant μ the two momentum forms give the same θ: the "ema" buffer is exactly
    (1 − μ) times the "sum" buffer, so is u, and the Newton–Schulz input is normalised (unless
    ‖u‖_F < eps). They part when μ changes between steps (a momentum warm-up) and in what a
    checkpoint's buffer holds.

    Weight decay by ``weight_decay_mode``: "decoupled" θ ← θ·(1 − lr·λ) with the unadjusted lr
    (torch, KellerJordan/Muon, Moonshot); "scheduled" θ ← θ·(1 − (lr/initial_lr)·λ); "l2" adds λθ
    to g, which then enters the buffer. There is no ``maximize``: torch.optim.Muon and both
    reference codes have none. The Newton–Schulz step runs in float64 here (torch: bfloat16).

    State: "b" (torch's ``momentum_buffer``, θ's shape). Complex parameters and parameters of
    fewer than 2 dimensions are rejected, as torch.optim.Muon does.
    """
    if momentum_form not in MOMENTUM_FORMS:
        raise ValueError(f"Invalid momentum_form: {momentum_form!r} (expected 'ema' or 'sum')")
    if adjust_lr_fn not in ADJUST_LR_FNS:
        raise ValueError(
            f"Invalid adjust_lr_fn: {adjust_lr_fn!r} (expected None, 'original' or "
            "'match_rms_adamw')"
        )
    if np.iscomplexobj(theta) or np.iscomplexobj(grad):
        raise TypeError("muon does not support complex parameters (as torch.optim.Muon)")
    if np.ndim(theta) < 2:
        raise ValueError(f"muon needs a parameter of at least 2 dimensions, got {np.shape(theta)}")
    theta, g = begin_step(
        theta,
        grad,
        lr=lr,
        weight_decay=weight_decay,
        maximize=False,
        weight_decay_mode=weight_decay_mode,
        initial_lr=initial_lr,
    )
    if not state:
        state["b"] = np.zeros_like(theta)
    if momentum_form == "ema":
        b = state["b"] = momentum * state["b"] + (1 - momentum) * g
        u = (1 - momentum) * g + momentum * b if nesterov else b
    else:
        b = state["b"] = momentum * state["b"] + g
        u = g + momentum * b if nesterov else b

    matrix = u.reshape(u.shape[0], math.prod(u.shape[1:]))
    orthogonal = newton_schulz(matrix, ns_coefficients=ns_coefficients, ns_steps=ns_steps, eps=eps)
    rows, cols = matrix.shape
    if adjust_lr_fn == "match_rms_adamw":
        adjusted_lr = lr * 0.2 * math.sqrt(max(rows, cols))
    else:
        adjusted_lr = lr * math.sqrt(max(1, rows / cols)) if cols else lr
    theta = theta - adjusted_lr * orthogonal.reshape(theta.shape)
    return finish(theta, state)
