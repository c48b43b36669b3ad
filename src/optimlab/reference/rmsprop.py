"""RMSprop, plain and centred, with optional momentum."""

import numpy as np

from ._arrays import complex_as_real_pairs, finish
from ._decay import begin_step


@complex_as_real_pairs
def rmsprop(
    theta,
    grad,
    state,
    *,
    lr,
    alpha,
    eps,
    weight_decay,
    momentum,
    centered,
    maximize,
    weight_decay_mode,
    initial_lr,
    eps_inside_sqrt,
):
    """One RMSprop step on one parameter; returns the new θ.

    Tieleman & Hinton, COURSERA "Neural Networks for Machine Learning", lecture 6.5 (2012):
    divide the gradient by a running root mean square of recent gradients. The centred variant
    divides by a running standard deviation instead (Graves, "Generating Sequences With
    Recurrent Neural Networks", arXiv:1308.0850, Section 4). With α = alpha, μ = momentum:

        v ← α·v + (1 − α)·g²
        centered:  ḡ ← α·ḡ + (1 − α)·g;  s = v − ḡ²        otherwise: s = v
        denom = √s + eps                  (eps_inside_sqrt=False, torch)
        denom = √(s + eps)                (eps_inside_sqrt=True, as in Graves and TensorFlow)
        μ > 0:  b ← μ·b + g/denom;  θ ← θ − lr·b          otherwise: θ ← θ − lr·g/denom

    The momentum buffer accumulates already-normalised steps, as in Graves' update, not raw
    gradients. State: "v" (torch's ``square_avg``), "g_bar" (``grad_avg``, centred only) and
    "b" (``momentum_buffer``, μ > 0 only), each starting at 0.
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
    zeros = np.zeros_like(theta)

    v = state["v"] = alpha * state.get("v", zeros) + (1 - alpha) * g**2
    if centered:
        g_bar = state["g_bar"] = alpha * state.get("g_bar", zeros) + (1 - alpha) * g
        s = v - g_bar**2
    else:
        s = v
    denom = np.sqrt(s + eps) if eps_inside_sqrt else np.sqrt(s) + eps

    if momentum > 0:
        b = state["b"] = momentum * state.get("b", zeros) + g / denom
        theta = theta - lr * b
    else:
        theta = theta - lr * g / denom
    return finish(theta, state)
