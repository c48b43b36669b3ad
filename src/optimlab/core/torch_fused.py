"""torch's own fused kernels, used on the flat buffers where they compute exactly our formula.

torch ships single-pass kernels for Adam/AdamW, SGD and Adagrad. On the fused engine's flat
buffers one call covers a whole param group, which removes the per-tensor overhead that makes
torch's ``fused=True`` slow on thousands of small tensors. They are used only on CPU (on CUDA
they want the step counters on the device; the compiled path serves there) and only for the
torch-compatible value of every convention switch; anything else takes the compiled path.
Each optimizer says when in ``_torch_kernel_applies``. The kernels take lists of tensors: the
fused engine passes its flat buffers, or runs of them with the gradients of large parameters
where autograd made them (see :func:`optimlab.core.fused.build_bucket`); every entry shares
the bucket's one step count.
"""

from __future__ import annotations

import torch
from torch import Tensor


def adam_(
    p: list[Tensor],
    g: list[Tensor],
    m: list[Tensor],
    v: list[Tensor],
    v_max: list[Tensor] | None,
    step: Tensor,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    decoupled: bool,
    maximize: bool,
) -> None:
    """One Adam/AdamW step (``step`` already incremented), amsgrad when ``v_max`` is given."""
    kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
    kernel(
        p,
        g,
        m,
        v,
        [] if v_max is None else v_max,
        [step] * len(p),
        amsgrad=v_max is not None,
        lr=float(lr),
        beta1=float(betas[0]),
        beta2=float(betas[1]),
        weight_decay=float(weight_decay),
        eps=float(eps),
        maximize=maximize,
    )


def sgd_(
    p: list[Tensor],
    g: list[Tensor],
    buf: list[Tensor] | None,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
    maximize: bool,
) -> None:
    """One SGD step with an existing momentum buffer (or none when ``momentum == 0``)."""
    torch._fused_sgd_(
        p,
        g,
        [] if buf is None else buf,
        weight_decay=float(weight_decay),
        momentum=float(momentum),
        lr=float(lr),
        dampening=float(dampening),
        nesterov=nesterov,
        maximize=maximize,
        is_first_step=False,
    )


def adagrad_(
    p: list[Tensor],
    g: list[Tensor],
    total: list[Tensor],
    step: Tensor,
    *,
    lr: float,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    """One Adagrad step (``step`` already incremented)."""
    torch._fused_adagrad_(
        p,
        g,
        total,
        [step] * len(p),
        lr=float(lr),
        lr_decay=float(lr_decay),
        weight_decay=float(weight_decay),
        eps=float(eps),
        maximize=maximize,
    )
