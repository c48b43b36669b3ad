"""Parameter layouts for the optimizer-step benchmarks: lists of (name, shape), no model code.

A layout is only the shapes of a model's trainable tensors, because an optimizer step sees
nothing else. Three are built in:

* ``gpt2``: GPT-2 small as published (124,439,808 parameters in 148 tensors; the output head
  is tied to the token embedding, so it is not a separate tensor). Linear weights are stored
  the way the original checkpoint stores them, ``(in_features, out_features)``.
* ``many_small``: 2,000 tensors of 4,096 elements, where per-tensor overhead dominates.
* ``resnet50``: ResNet-50 v1.5 for ImageNet (25,557,032 parameters in 161 tensors): convs
  without bias, each followed by a batch norm with a weight and a bias.
"""

from __future__ import annotations

import math

Shape = tuple[int, ...]
Layout = list[tuple[str, Shape]]


def gpt2_small() -> Layout:
    d, vocab, ctx, n_layer = 768, 50257, 1024, 12
    shapes: Layout = [("wte.weight", (vocab, d)), ("wpe.weight", (ctx, d))]
    for i in range(n_layer):
        h = f"h.{i}."
        shapes += [
            (h + "ln_1.weight", (d,)),
            (h + "ln_1.bias", (d,)),
            (h + "attn.c_attn.weight", (d, 3 * d)),
            (h + "attn.c_attn.bias", (3 * d,)),
            (h + "attn.c_proj.weight", (d, d)),
            (h + "attn.c_proj.bias", (d,)),
            (h + "ln_2.weight", (d,)),
            (h + "ln_2.bias", (d,)),
            (h + "mlp.c_fc.weight", (d, 4 * d)),
            (h + "mlp.c_fc.bias", (4 * d,)),
            (h + "mlp.c_proj.weight", (4 * d, d)),
            (h + "mlp.c_proj.bias", (d,)),
        ]
    shapes += [("ln_f.weight", (d,)), ("ln_f.bias", (d,))]
    return shapes


def many_small(count: int = 2000, numel: int = 4096) -> Layout:
    return [(f"t{i}", (numel,)) for i in range(count)]


def _conv_bn(prefix: str, c_out: int, c_in: int, k: int, bn: str) -> Layout:
    return [
        (prefix + ".weight", (c_out, c_in, k, k)),
        (bn + ".weight", (c_out,)),
        (bn + ".bias", (c_out,)),
    ]


def resnet50() -> Layout:
    shapes = _conv_bn("conv1", 64, 3, 7, "bn1")
    c_in = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        c_out = 4 * width
        for b in range(blocks):
            p = f"layer{stage}.{b}."
            shapes += _conv_bn(p + "conv1", width, c_in, 1, p + "bn1")
            shapes += _conv_bn(p + "conv2", width, width, 3, p + "bn2")
            shapes += _conv_bn(p + "conv3", c_out, width, 1, p + "bn3")
            if b == 0:
                shapes += _conv_bn(p + "downsample.0", c_out, c_in, 1, p + "downsample.1")
            c_in = c_out
    shapes += [("fc.weight", (1000, 2048)), ("fc.bias", (1000,))]
    return shapes


LAYOUTS = {"gpt2": gpt2_small, "many_small": many_small, "resnet50": resnet50}

#: (tensor count, parameter count) of each built-in layout; the smoke test checks them.
EXPECTED = {
    "gpt2": (148, 124_439_808),
    "many_small": (2000, 8_192_000),
    "resnet50": (161, 25_557_032),
}


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; choose from {', '.join(LAYOUTS)}")
    return LAYOUTS[name]()


def numel(layout: Layout) -> int:
    return sum(math.prod(shape) for _, shape in layout)
