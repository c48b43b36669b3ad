"""Running code the same way every time: seeded global RNGs and a fixed thread count.

Problems draw their data and minibatches from private generators, but models are often
initialised (and dropout masks drawn) from torch's and NumPy's global RNGs; and the number of
intra-op threads can change the order of floating-point sums, hence the last bits. A run, a
range test and a problem's fingerprint all execute inside these two context managers.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def torch_threads(threads: int | None):
    """Run with ``threads`` intra-op threads (``None``: leave torch's setting alone)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def seeded_globals(seed: int):
    """Seed torch's and NumPy's global RNGs (for dropout and the like), restoring them after."""
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(np_state)
