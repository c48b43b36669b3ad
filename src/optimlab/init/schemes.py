"""Initialisation schemes: fill one weight tensor in place, reproducibly from a generator.

``fan_in`` and ``fan_out`` follow torch's convention for a weight of shape
``(out, in, *kernel)``: ``fan_in = in · ∏kernel``, ``fan_out = out · ∏kernel``. The
``variance_scaling`` family draws with ``Var[w] = scale / n`` for ``n`` one of
``fan_in``, ``fan_out`` or ``(fan_in + fan_out) / 2``; a uniform draw on ``(−b, b)`` has
variance ``b² / 3``, so its bound is ``b = √(3 · scale / n)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

FAN_MODES = ("fan_in", "fan_out", "fan_avg")


def fans(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of shape ``(out, in, *kernel)`` (dim ≥ 2)."""
    if len(shape) < 2:
        raise ValueError(f"fan_in and fan_out need a weight of dim >= 2, got shape {tuple(shape)}")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def _fill(tensor: Tensor, generator: torch.Generator | None, draw: Callable[[Tensor], object]):
    """Run ``draw`` (an in-place torch.nn.init call) on ``tensor`` with ``generator``.

    A generator draws on its own device, so a CPU generator (what ``seed=`` makes) gives
    the same weights on every device: we draw on the generator's device, then copy.
    """
    if generator is None or generator.device == tensor.device:
        draw(tensor)
    else:
        scratch = torch.empty(tensor.shape, dtype=tensor.dtype, device=generator.device)
        draw(scratch)
        tensor.copy_(scratch)
    return tensor


def uniform(tensor: Tensor, *, a: float = 0.05, generator=None) -> Tensor:
    """``w ~ U(−a, a)``, ``Var[w] = a² / 3``."""
    return _fill(tensor, generator, lambda t: nn.init.uniform_(t, -a, a, generator=generator))


def normal(tensor: Tensor, *, std: float = 0.02, generator=None) -> Tensor:
    """``w ~ N(0, std²)`` (0.02 is GPT-2's and BERT's choice)."""
    return _fill(tensor, generator, lambda t: nn.init.normal_(t, 0.0, std, generator=generator))


def truncated_normal(tensor: Tensor, *, std: float = 0.02, bound: float = 2.0, generator=None):
    """``w ~ N(0, std²)`` truncated to ``[−bound · std, bound · std]`` (bounds in σ units).

    The truncation lowers the variance to ``std² · (1 − 2kφ(k) / (2Φ(k) − 1))`` with
    ``k = bound``, φ and Φ the standard normal pdf and cdf (0.774 · std² for ``k = 2``).
    Note torch's ``trunc_normal_`` takes absolute bounds, ±2 by default, which with a
    small std truncates nothing.
    """
    lo, hi = -bound * std, bound * std
    return _fill(
        tensor,
        generator,
        lambda t: nn.init.trunc_normal_(t, 0.0, std, lo, hi, generator=generator),
    )


def truncated_normal_variance(std: float, bound: float) -> float:
    """The variance of `truncated_normal`: ``std² · (1 − 2kφ(k) / (2Φ(k) − 1))``."""
    pdf = math.exp(-0.5 * bound**2) / math.sqrt(2 * math.pi)
    mass = math.erf(bound / math.sqrt(2))  # 2Φ(k) − 1
    return std**2 * (1.0 - 2.0 * bound * pdf / mass)


def variance_scaling(
    tensor: Tensor,
    *,
    scale: float,
    mode: str,
    distribution: str,
    generator=None,
) -> Tensor:
    """``Var[w] = scale / n`` with ``n`` given by ``mode``; normal or uniform draws."""
    fan_in, fan_out = fans(tensor.shape)
    if mode not in FAN_MODES:
        raise ValueError(f"Invalid mode: {mode!r} (expected one of {', '.join(FAN_MODES)})")
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    std = math.sqrt(scale / n)
    if distribution == "normal":
        return normal(tensor, std=std, generator=generator)
    if distribution == "uniform":
        return uniform(tensor, a=math.sqrt(3.0) * std, generator=generator)
    raise ValueError(f"Invalid distribution: {distribution!r} (expected 'normal' or 'uniform')")


def xavier_uniform(tensor: Tensor, *, gain: float = 1.0, generator=None) -> Tensor:
    """Glorot & Bengio (2010): ``Var[w] = gain² · 2 / (fan_in + fan_out)``, uniform."""
    return _fill(tensor, generator, lambda t: nn.init.xavier_uniform_(t, gain, generator=generator))


def xavier_normal(tensor: Tensor, *, gain: float = 1.0, generator=None) -> Tensor:
    """Glorot & Bengio (2010): ``Var[w] = gain² · 2 / (fan_in + fan_out)``, normal."""
    return _fill(tensor, generator, lambda t: nn.init.xavier_normal_(t, gain, generator=generator))


def kaiming_uniform(tensor: Tensor, *, gain: float, mode: str = "fan_in", generator=None):
    """He et al., arXiv:1502.01852: ``Var[w] = gain² / fan`` (``fan`` per ``mode``), uniform.

    ``gain = √2`` (ReLU) by default through ``initialize``'s ``nonlinearity="relu"``.
    """
    _check_he_mode(mode)
    return variance_scaling(
        tensor, scale=gain**2, mode=mode, distribution="uniform", generator=generator
    )


def kaiming_normal(tensor: Tensor, *, gain: float, mode: str = "fan_in", generator=None):
    """He et al., arXiv:1502.01852: ``Var[w] = gain² / fan`` (``fan`` per ``mode``), normal."""
    _check_he_mode(mode)
    return variance_scaling(
        tensor, scale=gain**2, mode=mode, distribution="normal", generator=generator
    )


def _check_he_mode(mode: str) -> None:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Invalid mode: {mode!r} (expected 'fan_in' or 'fan_out')")


def lecun_uniform(tensor: Tensor, *, gain: float = 1.0, generator=None) -> Tensor:
    """LeCun et al., "Efficient BackProp" (1998): ``Var[w] = gain² / fan_in``, uniform."""
    return variance_scaling(
        tensor, scale=gain**2, mode="fan_in", distribution="uniform", generator=generator
    )


def lecun_normal(tensor: Tensor, *, gain: float = 1.0, generator=None) -> Tensor:
    """LeCun et al., "Efficient BackProp" (1998): ``Var[w] = gain² / fan_in``, normal."""
    return variance_scaling(
        tensor, scale=gain**2, mode="fan_in", distribution="normal", generator=generator
    )


def orthogonal(tensor: Tensor, *, gain: float = 1.0, generator=None) -> Tensor:
    """Saxe et al., arXiv:1312.6120: ``W`` reshaped to ``(out, rest)`` is ``gain`` times a
    (semi-)orthogonal matrix: ``W Wᵀ = gain² I`` if ``out ≤ rest``, else ``Wᵀ W = gain² I``."""
    return _fill(tensor, generator, lambda t: nn.init.orthogonal_(t, gain, generator=generator))


SCHEMES: dict[str, Callable[..., Tensor]] = {
    "uniform": uniform,
    "normal": normal,
    "truncated_normal": truncated_normal,
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "kaiming_uniform": kaiming_uniform,
    "kaiming_normal": kaiming_normal,
    "lecun_uniform": lecun_uniform,
    "lecun_normal": lecun_normal,
    "orthogonal": orthogonal,
}

# Schemes that take a gain, and the nonlinearity whose gain they use when none is given.
DEFAULT_NONLINEARITY = {
    "xavier_uniform": "linear",
    "xavier_normal": "linear",
    "kaiming_uniform": "relu",
    "kaiming_normal": "relu",
    "lecun_uniform": "linear",
    "lecun_normal": "linear",
    "orthogonal": "linear",
}
