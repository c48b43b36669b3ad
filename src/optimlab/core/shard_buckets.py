"""The fused engine on sharded parameters: buckets of local shards.

A plain parameter joins the fused engine's flat buffers by having its ``.data`` re-pointed into
them (:mod:`optimlab.core.flat`). An FSDP2 parameter cannot: FSDP2 all-gathers each parameter
from the padded storage it made for the local shard, so a shard moved elsewhere would be
updated where FSDP2 never reads it. And its gradient is a new DTensor at every step, a view of
FSDP2's reduce-scatter output. So the shards stay where FSDP2 keeps them, and an elementwise
formula (every optimizer but Adafactor and Muon's matrix groups) steps them in place:

* with one of torch's fused kernels where it computes exactly the formula (Adam, AdamW,
  AMSGrad, SGD and Adagrad with torch's switches, on CPU): one call over the lists of local
  shards, gradients and state, which reads and writes each element once;
* otherwise with the same compiled kernel as a flat buffer, called once per local shard with
  the bucket's scalars (also one pass over memory; the calls cost a few microseconds each).

A bucket holds the parameters of one param group that share a device mesh, placements, device,
dtype and per-parameter scalar state (the step count), so one recording and one set of scalars
serve the whole bucket; the step counts live in one vector, as in a flat bucket.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from optimlab.core import flat as storage
from optimlab.core.sharding import Layout, is_dtensor


def bucket_key(p: Tensor) -> tuple | None:
    """What a parameter's bucket family is keyed by besides device and dtype: its mesh and
    placements (``None`` for a plain parameter)."""
    if not is_dtensor(p):
        return None
    return (p.device_mesh, tuple(p.placements))


def unfusable_reason(p: Tensor, state: dict, keys: tuple[str, ...], mode: str) -> str | None:
    """Why the fused engine cannot step the DTensor ``p`` on its local shard (``None`` if it
    can): the formula must be elementwise (``mode == "flat"``), the shard a plain real dense
    floating-point tensor, and every state tensor in ``keys`` a DTensor placed like ``p``."""
    if mode != "flat":
        return (
            "sharded parameter (DTensor) of a formula that reduces over whole tensors: stepped "
            "on the foreach path, its reductions all-reduced"
        )
    shard = p.to_local()
    if type(shard) not in storage.PLAIN_TYPES or shard.is_complex() or shard.is_sparse:
        return "sharded parameter whose local shard is not a plain real dense tensor"
    if not shard.dtype.is_floating_point:
        return "sparse or non-floating-point parameter"
    layout = Layout.of(p)
    for key in keys:
        value = state.get(key)
        if not is_dtensor(value) or not Layout.of(value).same_split(layout):
            return f"state {key!r} of a sharded parameter is not sharded like it"
        value = value.to_local()
        if value.shape != shard.shape or value.dtype != shard.dtype:
            return f"state {key!r} of another shape, dtype or device"
    return None


@dataclass
class ShardBucket:
    """Sharded parameters of one group that the fused engine steps on their local shards (see
    the module docstring). It offers what the engine asks of a :class:`~flat.FlatBucket`."""

    params: list[Tensor]
    states: list[dict]
    keys: tuple[str, ...]
    scalars: dict[str, Tensor]
    first: dict[str, Tensor]
    layout: Layout
    scalar_buffer: Tensor | None = None
    #: what a flat bucket has and a shard bucket does not: no direct gradients, no batch shape
    direct: list = field(default_factory=list)
    shape: None = None

    @classmethod
    def build(cls, params: list[Tensor], states: list[dict], keys: tuple[str, ...]):
        scalars = storage.stack_scalars(states, keys)
        return cls(
            params=list(params),
            states=list(states),
            keys=keys,
            scalars=scalars,
            first={key: vec[0] for key, vec in scalars.items()},
            layout=Layout.of(params[0]),
        )

    @property
    def like(self) -> Tensor:
        return self.params[0].to_local()

    def _shards(self, keys: tuple[str, ...]) -> list[tuple[Tensor, Tensor, list[Tensor]]]:
        """``(param, grad, [state in keys order])`` local shards of this step, empty ones
        (a process that holds no rows of a small parameter) left out."""
        out = []
        for p, state in zip(self.params, self.states):
            shard = p.to_local()
            if shard.numel():
                out.append((shard, p.grad.to_local(), [state[k].to_local() for k in keys]))
        return out

    def kernel_calls(self, keys: tuple[str, ...]) -> list[list[Tensor]]:
        """One kernel call per local shard, on 1-D views of it."""
        return [
            [p.view(-1), g.view(-1), *(s.view(-1) for s in state)]
            for p, g, state in self._shards(keys)
        ]

    def torch_lists(self) -> tuple[list[Tensor], list[Tensor], dict]:
        shards = self._shards(self.keys)
        state = {key: [s[j] for _, _, s in shards] for j, key in enumerate(self.keys)}
        return [p for p, _, _ in shards], [g for _, g, _ in shards], state

    def sync(self, stats: dict) -> int:
        """``SYNC_OK`` when every parameter has a gradient sharded like it whose local shard
        the kernels can take as it is; ``SYNC_NONE`` (this step runs eagerly) otherwise. FSDP2
        may give a parameter a new local tensor (after ``model.to()`` or loading a state dict
        with ``assign=True``): the shards are read afresh at every step, so that is no move."""
        for p in self.params:
            g = p.grad
            if g is None or not is_dtensor(g) or not Layout.of(g).same_split(self.layout):
                return storage.SYNC_NONE
            shard, gshard = p.to_local(), g.to_local()
            if (
                not gshard.is_contiguous()
                or not shard.is_contiguous()
                or gshard.shape != shard.shape
                or gshard.dtype != shard.dtype
                or gshard.is_sparse
            ):
                return storage.SYNC_NONE
        return storage.SYNC_OK

    def zero_grad(self, set_to_none: bool) -> None:
        storage.zero_grad_(self.params, set_to_none)

    def release(self) -> None:
        """Nothing to undo: the shards never moved."""


def build(params: list[Tensor], states: list[dict], keys: tuple[str, ...]) -> ShardBucket:
    with torch.no_grad():
        return ShardBucket.build(params, states, keys)
