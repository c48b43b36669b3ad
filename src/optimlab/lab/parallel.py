"""Worker processes for the lab's runs.

Runs are independent, so the lab spreads them over processes (default: one per core). Each
worker sets ``torch.set_num_threads(1)`` unless told otherwise: several workers that each
start one thread per core would oversubscribe the machine (on two cores, two workers × two
threads fight over the same cores and every run gets slower, with noisy timings). One thread
per worker also keeps a run's floating-point sums in the same order whatever the machine, which
is part of "same seed, same numbers".

Workers are started with ``spawn``: forking a parent that already runs torch's thread pools can
deadlock, and spawn behaves the same on Linux, macOS and Windows. A worker whose parent
disappears (``kill -9`` on the CLI) notices within a second and exits, so a killed sweep leaves
no orphans burning CPU.

With ``workers=1`` runs execute in the calling process: no start-up cost, and tracebacks and
debuggers work as usual.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any


def default_workers() -> int:
    """The cores this process may use (respects CPU affinity, e.g. in containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(1)


def _init_worker(threads: int | None, parent_pid: int) -> None:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
        # It can be set only once per process; a second attempt raises RuntimeError.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


class WorkerPool:
    """``submit(fn, *args) -> Future`` over worker processes, or inline when ``workers == 1``.

    ``fn`` must be importable by name (a module-level function) because workers are spawned.
    """

    def __init__(self, workers: int | None = None, threads: int | None = 1) -> None:
        self.workers = default_workers() if workers is None else max(1, int(workers))
        self.threads = threads
        self._executor: ProcessPoolExecutor | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        if self.workers == 1:
            future: Future = Future()
            try:
                future.set_result(fn(*args, self.threads))
            except BaseException as exc:  # noqa: BLE001  (handed to the caller via the future)
                if isinstance(exc, KeyboardInterrupt):
                    raise
                future.set_exception(exc)
            return future
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.threads, os.getpid()),
            )
        return self._executor.submit(fn, *args, self.threads)

    def close(self, cancel: bool = False) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=not cancel, cancel_futures=cancel)
            self._executor = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type, *rest: object) -> None:
        self.close(cancel=exc_type is not None)
