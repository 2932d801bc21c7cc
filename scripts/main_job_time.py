"""How long the main job takes as a user sees it: `nnjax train` from a shell, start to finish.

Each run is a fresh process writing a fresh `--output`. "cold" runs start with an empty
compilation cache (a new `NNJAX_CACHE_DIR` each), "warm" runs share one the first warm run
filled. For each, the script prints the median and range of the wall time, of the time outside
training (the wall time minus the training wall time nnjax reports), and the number of XLA
compilations of one run (`JAX_LOG_COMPILES`). The machine's load shows in the ranges: run it
idle, and again busy, and report both.

Run it with `python scripts/main_job_time.py [--runs 5] [-- extra nnjax train options]`.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(work: Path, cache: Path, extra: list[str], count: bool = False) -> tuple[float, float]:
    """Wall seconds of one `nnjax train`, and its reported training wall time (or compilations)."""
    output = Path(tempfile.mkdtemp(dir=work)) / "run"
    command = [sys.executable, "-m", "nnjax", "train", "--output", str(output)]  # with its bar
    env = (
        os.environ | {"NNJAX_CACHE_DIR": str(cache)} | ({"JAX_LOG_COMPILES": "1"} if count else {})
    )
    start = time.perf_counter()
    done = subprocess.run([*command, *extra], capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - start
    if count:
        return wall, float(done.stderr.count("Compiling "))
    training = float(re.search(r"wall time ([0-9.]+) s", done.stdout).group(1))
    return wall, training


def summary(name: str, values: list[float]) -> str:
    return f"{name} median {statistics.median(values):.2f} s (range {min(values):.2f}-{max(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("extra", nargs="*", help="options passed on to nnjax train")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        # Cold: a cache folder of its own each time. Warm: one shared cache, filled once first.
        cold = [one_run(work, work / f"cold-{i}", args.extra) for i in range(args.runs)]
        one_run(work, work / "warm", args.extra)
        warm = [one_run(work, work / "warm", args.extra) for _ in range(args.runs)]
        _, compilations = one_run(work, work / "count", args.extra, count=True)
    for name, runs in (("cold", cold), ("warm", warm)):
        print(summary(f"{name}: end to end", [wall for wall, _ in runs]))
        print(summary(f"{name}: outside training", [wall - train for wall, train in runs]))
    print(f"XLA compilations in one cold run: {compilations:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
