"""A tiny character-level transformer language model on text that ships with Python.

Text: the ``pydoc_data.topics`` help pages of the standard library (about 0.46 M characters
on CPython 3.11), joined in sorted-key order. The first 90 % are for training, the last 10 %
for validation. The exact text depends on the Python version, so compare numbers only between
runs on the same minor version. The vocabulary is fixed: newline, the 95 printable ASCII
characters and one "unknown" token for anything else (97 tokens), so the model's shape never
depends on the text.

Model (a decoder-only transformer in the style of GPT-2, Radford et al. 2019, at toy size):
token and learned position embeddings, 2 pre-LayerNorm blocks of causal multi-head
self-attention (4 heads) and a GELU MLP (width 4d), d = 64, context 64, a final LayerNorm
and an untied linear read-out. About 110 k parameters. No dropout, so a step's loss depends
on ``(seed, step)`` alone. Initialisation as in GPT-2: weights ``N(0, 0.02²)``, the two
residual projections of each block ``N(0, (0.02/√(2·layers))²)``, biases 0.

Loss: the mean next-character cross-entropy in nats (``ln 97 ≈ 4.57`` for a uniform guess).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Problem, generator, seeded

__all__ = ["CHAR_TRANSFORMER", "CharTransformer", "VOCAB", "char_corpus"]

VOCAB = "\x00\n" + "".join(chr(c) for c in range(32, 127))  # index 0 = unknown character
CONTEXT = 64
BATCH = 32
D_MODEL, N_HEADS, N_LAYERS = 64, 4, 2
VAL_FRACTION = 0.1
EVAL_WINDOWS = 256  # windows of CONTEXT characters in each evaluation set


@functools.lru_cache(maxsize=1)
def char_corpus() -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, val)`` token ids (int64) of the pydoc topics text, split 90/10 by position."""
    from pydoc_data.topics import topics  # lazy: 0.5 MB of strings

    text = "\n\n".join(topics[k] for k in sorted(topics))
    index = {c: i for i, c in enumerate(VOCAB)}
    ids = torch.tensor([index.get(c, 0) for c in text], dtype=torch.long)
    cut = round(len(ids) * (1 - VAL_FRACTION))
    return ids[:cut], ids[cut:]


def _windows(ids: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``ids[s : s+C]`` and next-character targets ``ids[s+1 : s+C+1]`` per start."""
    chunk = ids[starts.unsqueeze(1) + torch.arange(CONTEXT + 1)]
    return chunk[:, :-1], chunk[:, 1:]


class Block(nn.Module):
    """``x + attn(ln(x))`` then ``x + mlp(ln(x))`` (pre-LayerNorm)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(n, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(n, t, d))
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    """``forward(ids[N, T]) -> logits[N, T, vocab]``."""

    def __init__(
        self, vocab: int = len(VOCAB), d: int = D_MODEL, heads: int = N_HEADS, layers: int = 2
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(CONTEXT, d)
        self.blocks = nn.Sequential(*(Block(d, heads) for _ in range(layers)))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            # Residual branches add up over layers; scaling them keeps the stream's variance
            # independent of depth (GPT-2).
            for m in (block.proj, block.mlp[2]):
                nn.init.normal_(m.weight, 0.0, 0.02 / math.sqrt(2 * layers))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
        return self.head(self.ln(self.blocks(x)))


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class CharLMInstance:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.train, self.val = char_corpus()
        self.model = seeded(seed, lambda: CharTransformer(layers=N_LAYERS))
        # Fixed evaluation windows, the same for every seed: random ones from the training
        # text, and evenly spaced ones covering the validation text.
        g = generator(0, 0xC4A2)
        self.train_eval = _windows(
            self.train, torch.randint(len(self.train) - CONTEXT, (EVAL_WINDOWS,), generator=g)
        )
        last = len(self.val) - CONTEXT - 1
        self.val_eval = _windows(self.val, torch.linspace(0, last, EVAL_WINDOWS).long())

    def train_loss(self, step: int) -> torch.Tensor:
        g = generator(self.seed, step, 0x7E47)
        starts = torch.randint(len(self.train) - CONTEXT, (BATCH,), generator=g)
        x, y = _windows(self.train, starts)
        return _cross_entropy(self.model(x), y)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        out = {
            "train_loss": _cross_entropy(self.model(self.train_eval[0]), self.train_eval[1]),
            "val_loss": _cross_entropy(self.model(self.val_eval[0]), self.val_eval[1]),
        }
        self.model.train()
        return {k: v.item() for k, v in out.items()}


CHAR_TRANSFORMER = Problem(
    name="char_transformer",
    description="2-layer char transformer (d=64, ctx 64) on Python's pydoc topics text",
    kind="language",
    steps=600,
    quick_steps=20,
    batch_size=BATCH,
    # Adam at lr 3e-3 passes 1.8 after ~400 steps and ends near 1.63 (bigram-level text is
    # about 2.4 nats; the uniform guess 4.57).
    target=1.8,
    metric=None,
    default_lr_range=(1e-4, 1.0),
    build=CharLMInstance,
)

PROBLEMS = [CHAR_TRANSFORMER]
