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


def check_lr(lr) -> None:
    if not (_value(lr) >= 0.0):
        raise ValueError(f"Invalid learning rate: {lr}")


def check_eps(eps) -> None:
    if not (_value(eps) >= 0.0):
        raise ValueError(f"Invalid epsilon value: {eps}")


def check_nonnegative(name: str, value) -> None:
    """``Invalid <name> value: <value>`` unless ``value ≥ 0``."""
    if not (_value(value) >= 0.0):
        raise ValueError(f"Invalid {name} value: {value}")


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
