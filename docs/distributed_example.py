"""FSDP2 training with optimlab on a laptop: two CPU processes (gloo), a checkpoint, a resume.

    python docs/distributed_example.py                      # 2 processes, 40 steps, checkpoint
    python docs/distributed_example.py --resume --steps 10  # 10 more steps from the checkpoint
    python docs/distributed_example.py --world 1 --resume   # the same, resharded to 1 process

Each process holds half of every weight's rows (``fully_shard``) and trains on its half of each
global batch; FSDP2 averages the gradients. The optimizer and its guards are optimlab's: AdamW
on its default engine (elementwise, on each process's local shards), gradient clipping by the
norm of the whole gradient (every process computes the same norm from its shards) and the
non-finite guard (a NaN on any process skips the step on all of them). The checkpoint is
torch.distributed.checkpoint's, with the optimizer state sharded like the parameters, so it
loads at any number of processes. docs/distributed.md explains each part.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.fsdp import fully_shard

import optimlab

GLOBAL_BATCH = 64


def make_model() -> nn.Module:
    torch.manual_seed(0)  # every process starts from the same weights
    return nn.Sequential(
        nn.Linear(8, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 1)
    )


def batch(step: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's share of global batch ``step`` (the same global batch at any world
    size): y = sin(x₀) + x₁·x₂ and a little noise."""
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(GLOBAL_BATCH, 8, generator=gen)
    y = (x[:, :1].sin() + x[:, 1:2] * x[:, 2:3]) + 0.01 * torch.randn(
        GLOBAL_BATCH, 1, generator=gen
    )
    per = GLOBAL_BATCH // world
    return x[rank * per : (rank + 1) * per], y[rank * per : (rank + 1) * per]


def train(rank: int, world: int, args: argparse.Namespace, store: str) -> None:
    torch.set_num_threads(1)  # two processes on two cores
    # DCP warns whenever it replaces a checkpoint, even when told to
    warnings.filterwarnings("ignore", message="Detected an existing checkpoint")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model = make_model()
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)  # each layer its own unit: gathered just before it runs
        fully_shard(model)

        adamw = optimlab.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
        opt = optimlab.GradientClipping(optimlab.NonFiniteGuard(adamw), max_norm=1.0)

        start = 0
        checkpoint = Path(args.checkpoint)
        if args.resume:
            # the state dicts of this world size, filled from the checkpoint of any world size
            model_sd, optim_sd = get_state_dict(model, adamw)
            state = {"model": model_sd, "optim": optim_sd, "step": torch.tensor(0)}
            dcp.load(state, checkpoint_id=checkpoint)
            set_state_dict(
                model, adamw, model_state_dict=state["model"], optim_state_dict=state["optim"]
            )
            start = int(state["step"])

        losses = []
        for step in range(start, start + args.steps):
            x, y = batch(step, rank, world)
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()  # FSDP2 reduce-scatters: each process gets its shard of the mean
            opt.step()
            mean = loss.detach().clone()
            dist.all_reduce(mean)  # the global batch's loss, for the log
            losses.append(mean.item() / world)
            if rank == 0 and (step + 1) % 5 == 0:
                print(f"step {step + 1}: loss {losses[-1]:.5f}, |g| {opt.last_norm:.4f}")

        model_sd, optim_sd = get_state_dict(model, adamw)
        state = {"model": model_sd, "optim": optim_sd, "step": torch.tensor(start + args.steps)}
        # each process writes its shards (a resumed run replaces the checkpoint it came from)
        dcp.save(state, storage_writer=dcp.FileSystemWriter(checkpoint, overwrite=True))
        if rank == 0:
            print(f"checkpoint at step {start + args.steps}: {checkpoint}")
            if args.losses:
                torch.save(losses, args.losses)
        dist.barrier()  # leave together: gloo aborts a process whose peer is still talking
    finally:
        dist.destroy_process_group()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=int, default=2, help="processes (default 2)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    ap.add_argument(
        "--checkpoint",
        default=os.path.join(tempfile.gettempdir(), "optimlab-fsdp-example"),
        help="checkpoint folder (default: in the temporary folder)",
    )
    ap.add_argument("--losses", default=None, help=argparse.SUPPRESS)  # for the tests
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:  # the processes meet through a file: no ports
        mp.spawn(train, args=(args.world, args, f"{tmp}/store"), nprocs=args.world, join=True)


if __name__ == "__main__":
    main(sys.argv[1:])
