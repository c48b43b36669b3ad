"""Hyperparameter checks with torch.optim's messages.

Every check is written as ``not (lo <= x ...)`` so that NaN, which fails every comparison,
is rejected too. Messages follow torch (``Invalid learning rate: -1.0``) so users and tests
recognise them.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor


def _value(x):
    if isinstance(x, Tensor):
        if x.numel() != 1:
            raise ValueError(f"Tensor hyperparameters must have one element, got shape {x.shape}")
        return x.item()
    return x


def check_lr(lr, message: str = "Invalid learning rate: {}") -> None:
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not (_value(lr) >= 0.0):
        raise ValueError(message.format(lr))


def check_tensor_lr_and_betas(group: dict) -> tuple:
    """torch.optim.Adam's rules for tensor ``lr`` and ``betas`` (its messages); returns the betas
    with 1-element tensors squeezed to 0-d, as torch stores them."""
    lr, betas = group["lr"], group["betas"]
    eager_foreach = group.get("foreach") and not group.get("capturable")
    if isinstance(lr, Tensor) and eager_foreach:
        raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
    if isinstance(betas, (str, bytes)) or len(betas) != 2:
        raise ValueError(f"Invalid betas: expected a pair (beta1, beta2), got {betas!r}")
    tensors = [isinstance(b, Tensor) for b in betas]
    if any(tensors) and not all(tensors):
        raise ValueError("betas must be either both floats or both Tensors")
    for i, beta in enumerate(betas):
        if isinstance(beta, Tensor):
            if eager_foreach:
                raise ValueError(
                    f"betas[{i}] as a Tensor is not supported for capturable=False and foreach=True"
                )
            if beta.numel() != 1:
                raise ValueError(f"Tensor betas[{i}] must be 1-element")
    return tuple(b.squeeze() if isinstance(b, Tensor) and b.dim() else b for b in betas)


def check_eps(eps) -> None:
    if not (_value(eps) >= 0.0):
        raise ValueError(f"Invalid epsilon value: {eps}")


def check_nonnegative(name: str, value, message: str = "Invalid {name} value: {value}") -> None:
    """``Invalid <name> value: <value>`` (or ``message``) unless ``value ≥ 0``."""
    if not (_value(value) >= 0.0):
        raise ValueError(message.format(name=name, value=value))


def check_unit_interval(name: str, value, *, closed_right: bool = True) -> None:
    """``Invalid <name> value: <value>`` unless ``0 ≤ value ≤ 1`` (``< 1`` if open)."""
    v = _value(value)
    ok = 0.0 <= v <= 1.0 if closed_right else 0.0 <= v < 1.0
    if not ok:
        raise ValueError(f"Invalid {name} value: {value}")


def check_betas(betas: Sequence) -> None:
    if isinstance(betas, (str, bytes)) or len(betas) != 2:
        raise ValueError(f"Invalid betas: expected a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        if not (0.0 <= _value(beta) < 1.0):
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")


def check_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"Invalid {name}: {value!r} (expected one of {options})")


def check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"Invalid {name}: {value!r} (expected True or False)")
