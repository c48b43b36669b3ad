"""The first two moves of every reference step: the sign for maximisation, then weight decay.

With λ = weight_decay, the three conventions are

- ``"l2"``, coupled L2 regularisation: g ← g + λ·θ. The decay term then passes through every
  moment and every adaptive denominator of the algorithm, as in Loshchilov & Hutter,
  "Decoupled Weight Decay Regularization", arXiv:1711.05101, Alg. 2 line 6.
- ``"decoupled"``, the torch.optim.AdamW form: θ ← θ − lr·λ·θ, applied to θ before the update
  and never seen by the moments.
- ``"scheduled"``, the paper's own form of decoupling: θ ← θ − η·λ·θ with η = lr / initial_lr,
  the schedule multiplier η_t of arXiv:1711.05101 Alg. 2 lines 11-12. There λ is multiplied by
  the schedule alone, not by the base learning rate α, so λ values are not interchangeable with
  the ``"decoupled"`` ones: decoupled λ corresponds to scheduled λ·initial_lr.
"""

from ._arrays import as_float64

WEIGHT_DECAY_MODES = ("l2", "decoupled", "scheduled")


def begin_step(theta, grad, *, lr, weight_decay, maximize, weight_decay_mode, initial_lr):
    """Return float64 copies ``(theta, g)`` after the sign flip and the weight decay.

    1. if maximize: g = −grad (ascent on f is descent on −f);
    2. "l2": g = g + λ·θ; "decoupled": θ = θ − lr·λ·θ; "scheduled": θ = θ − (lr/initial_lr)·λ·θ.

    Raises ValueError for any other ``weight_decay_mode``, whatever λ is, so a misspelt mode never
    goes unnoticed just because decay happens to be off.
    """
    if weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise ValueError(
            f"Invalid weight_decay_mode: {weight_decay_mode!r} (expected one of "
            f"{', '.join(repr(mode) for mode in WEIGHT_DECAY_MODES)})"
        )
    theta = as_float64(theta)
    g = as_float64(grad)
    if maximize:
        g = -g
    if weight_decay_mode == "l2":
        g = g + weight_decay * theta
    elif weight_decay_mode == "decoupled":
        theta = theta - lr * weight_decay * theta
    else:
        schedule_multiplier = lr / initial_lr
        theta = theta - schedule_multiplier * weight_decay * theta
    return theta, g
