"""Lion: the sign of an interpolation between momentum and gradient, found by program search."""

import numpy as np

from ._arrays import complex_as_real_pairs, finish
from ._decay import begin_step


@complex_as_real_pairs
def lion(
    theta,
    grad,
    state,
    *,
    lr,
    betas,
    weight_decay,
    maximize,
    weight_decay_mode,
    initial_lr,
):
    """One Lion step on one parameter; returns the new θ.

    Chen et al., "Symbolic Discovery of Optimization Algorithms", arXiv:2302.06675, Alg. 2
    (Lion, EvoLved Sign Momentum). With (β1, β2) = betas and m starting at 0:

        c = β1·m + (1 − β1)·g                   (interpolate momentum and gradient)
        θ ← θ − lr·(sign(c) + λ·θ)              (the paper's decoupled decay, scaled by lr)
        m ← β2·m + (1 − β2)·g                   (the momentum, updated after the step)

    Two betas, two roles: β1 only mixes the current gradient into the direction, β2 is the decay
    of the stored momentum; the paper's defaults are β1 = 0.9, β2 = 0.99. Every coordinate
    moves by exactly lr (sign(0) = 0 moves it by nothing), so the update is larger in norm than
    SGD's or AdamW's: the authors find lr 3-10× smaller than AdamW's, and λ 3-10× larger to
    keep lr·λ, works (google/automl, lion/README.md).

    Weight decay by ``weight_decay_mode``: "decoupled" is the paper's line above (θ ← θ − lr·λθ,
    like ``optax.lion`` and ``lion_pytorch.Lion(decoupled_weight_decay=False)``); "scheduled"
    is θ ← θ − (lr/initial_lr)·λθ, what ``lion_pytorch.Lion(decoupled_weight_decay=True)`` does
    (it divides λ by the constructor's lr); "l2" adds λθ to g, so it enters c and m.

    A complex parameter is a pair of reals, so the sign is taken per real and imaginary part
    (``torch.view_as_real``); ``lion_pytorch`` instead calls ``Tensor.sgn``, which on a complex
    tensor is the phase z/|z|, a different update. State: "m" (``exp_avg``); no step count.
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
        state["m"] = np.zeros_like(theta)
    m = state["m"]
    c = beta1 * m + (1 - beta1) * g
    theta = theta - lr * np.sign(c)
    state["m"] = beta2 * m + (1 - beta2) * g
    return finish(theta, state)
