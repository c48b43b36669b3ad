"""The instance shared by every (x, y) dataset problem: regression, images, MNIST-1D."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import EpochSampler

Tensor = torch.Tensor

# Evaluation runs in chunks so a 10k-example pass through a CNN never holds all activations.
EVAL_CHUNK = 1000


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Fraction of correct predictions; one logit column means binary (``logit > 0``)."""
    pred = (logits.squeeze(-1) > 0).to(y.dtype) if logits.shape[-1] == 1 else logits.argmax(-1)
    return (pred == y.reshape(pred.shape)).double().mean().item()


def r2_score(pred: Tensor, y: Tensor) -> float:
    """Coefficient of determination ``R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)²``."""
    pred, y = pred.reshape(-1).double(), y.reshape(-1).double()
    return 1.0 - ((y - pred) ** 2).sum().item() / ((y - y.mean()) ** 2).sum().item()


class SupervisedInstance:
    """``loss_fn(model(prepare(x[batch])), y[batch])`` over seeded epochs of minibatches.

    Args:
        model: the network (already initialised under the problem's seed).
        loss_fn: mean loss ``(output, target) -> scalar``.
        train: ``(x, y)`` training tensors; minibatches are drawn from these.
        val: ``(x, y)`` held-out tensors, or ``None``.
        batch_size: minibatch size, ``None`` for full batch.
        seed: drives the minibatch order (see :class:`~.base.EpochSampler`).
        metric: ``(output, target) -> float`` for ``val_metric``, or ``None``.
        prepare: turns stored inputs into model inputs per batch (e.g. ``uint8 → float / 255``)
            so large datasets stay compact in memory.
        train_eval: the ``(x, y)`` on which ``evaluate()`` reports ``train_loss``; defaults to
            the whole training set (a fixed subset only where a full pass is too slow).
        extra_loss: ``model -> scalar`` added to every loss (an explicit regulariser that is
            part of the objective, e.g. an L2 term making a separable problem well posed).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        train: tuple[Tensor, Tensor],
        val: tuple[Tensor, Tensor] | None,
        batch_size: int | None,
        seed: int,
        metric: Callable[[Tensor, Tensor], float] | None = None,
        prepare: Callable[[Tensor], Tensor] | None = None,
        train_eval: tuple[Tensor, Tensor] | None = None,
        extra_loss: Callable[[torch.nn.Module], Tensor] | None = None,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.x, self.y = train
        self.val = val
        self.train_eval = train if train_eval is None else train_eval
        self.metric = metric
        self.prepare = prepare if prepare is not None else (lambda x: x)
        self.extra_loss = extra_loss
        self.sampler = EpochSampler(len(self.y), batch_size, seed)

    def _objective(self, out: Tensor, y: Tensor) -> Tensor:
        loss = self.loss_fn(out, y)
        return loss if self.extra_loss is None else loss + self.extra_loss(self.model)

    def train_loss(self, step: int) -> Tensor:
        self.model.train()
        if self.sampler.full_batch:  # no gather copy
            x, y = self.x, self.y
        else:
            idx = self.sampler(step)
            x, y = self.x[idx], self.y[idx]
        return self._objective(self.model(self.prepare(x)), y)

    @torch.no_grad()
    def _outputs(self, x: Tensor) -> Tensor:
        return torch.cat([self.model(self.prepare(c)) for c in x.split(EVAL_CHUNK)])

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        x, y = self.train_eval
        result = {"train_loss": self._objective(self._outputs(x), y).item()}
        if self.val is not None:
            vx, vy = self.val
            out = self._outputs(vx)
            result["val_loss"] = self._objective(out, vy).item()
            if self.metric is not None:
                result["val_metric"] = self.metric(out, vy)
        self.model.train()
        return result
