"""docs/distributed_example.py, the FSDP2 example of docs/distributed.md, runs as documented:
two processes train like one on the same global batches, and a checkpoint the two saved
resumes on one process as if nothing had stopped."""

from __future__ import annotations

import pytest
import torch

from distributed_cases import needs_gloo
from docs_scripts import docs_script

pytestmark = needs_gloo


def _losses(example, tmp_path, name: str, *argv: str) -> list[float]:
    out = tmp_path / f"{name}.pt"
    example.main([*argv, "--losses", str(out)])
    return torch.load(out)


def test_example_trains_on_two_processes_like_one_and_resumes_resharded(tmp_path):
    with docs_script("distributed_example") as example:
        two = _losses(example, tmp_path, "two", "--steps", "6", "--checkpoint", str(tmp_path / "a"))
        one = _losses(
            example, tmp_path, "one", "--world", "1", "--steps", "8",
            "--checkpoint", str(tmp_path / "b"),
        )  # fmt: skip
        resumed = _losses(
            example, tmp_path, "resumed", "--world", "1", "--resume", "--steps", "2",
            "--checkpoint", str(tmp_path / "a"),
        )  # fmt: skip
    # float32: the gradient of the global batch is summed in another order on two processes
    assert two == pytest.approx(one[:6], rel=1e-5)
    assert resumed == pytest.approx(one[6:], rel=1e-5)
    assert one[-1] < 0.8 * one[0]  # and it learns
