"""Time the README's main command, ``python -m optimlab compare`` with no arguments.

The lab promises that the default comparison finishes in at most five minutes on two CPU
cores. This script runs it exactly as a user would (a fresh process, a fresh output
directory, all cores of the machine or of ``taskset``), reports the wall time, and exits with
status 1 when the limit is exceeded.

    python benchmarks/demo_time.py                 # fresh run, limit 300 s
    taskset -c 0,1 python benchmarks/demo_time.py  # pin to two cores, as on the target machine
    python benchmarks/demo_time.py --keep out/     # keep the output directory to look at

Timing is measured here, never in a test: a shared CI machine would make such a test flaky.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=300.0, help="seconds allowed")
    parser.add_argument("--keep", metavar="DIR", help="output directory to keep (must not exist)")
    parser.add_argument("extra", nargs="*", help="extra arguments for `optimlab compare`")
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="optimlab-demo-") as tmp:
        out = Path(args.keep) if args.keep else Path(tmp) / "optimlab-out"
        if out.exists():
            parser.error(f"{out} exists; the timing must start from an empty directory")
        cmd = [sys.executable, "-m", "optimlab", "compare", "--out", str(out), *args.extra]
        print(f"$ {' '.join(cmd)}   ({cores} cores)", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - start
        print(proc.stdout[-3000:])
        if proc.returncode != 0:
            print(f"FAILED with status {proc.returncode} after {elapsed:.1f} s")
            return proc.returncode
        report = out / "report.html"
        print(
            f"wall time: {elapsed:.1f} s on {cores} cores (limit {args.limit:.0f} s); "
            f"report {report.stat().st_size / 1e6:.1f} MB"
        )
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)
    if elapsed > args.limit:
        print("TOO SLOW")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
