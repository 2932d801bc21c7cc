"""How long the main job takes as a user sees it: `nnjax train` from a shell, start to finish.

Each run is a fresh process writing a fresh `--output`. "cold" runs start with an empty
compilation cache (a new `NNJAX_CACHE_DIR` each), "warm" runs share one the first warm run
filled. For each, the script prints the median and range of the wall time, of the time outside
training (the wall time minus the training wall time nnjax reports), and the number of XLA
compilations of one run (`JAX_LOG_COMPILES`). Then `nnjax plot` of a run folder, end to end
(warm), and a run's PNGs drawn in a fresh process on one thread, matplotlib's import included,
without the cyclic garbage collector as in the command (what `nnjax train` spreads over a
background thread and the end of the run). The machine's load shows in the ranges: run it idle,
and again busy, and report both.

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

# Run in a fresh process: the PNGs of the run folder argv[1] into argv[2], and their seconds,
# without the cyclic garbage collector, as the nnjax command draws them (nnjax/__main__.py).
PNGS = """
import gc; gc.disable()
import json, sys, time
import numpy as np
from nnjax import compilation_cache
compilation_cache.use()
history = json.load(open(sys.argv[1] + "/metrics.json"))["history"]
labels = np.arange(360) % 10  # what is drawn, not what it shows, sets the time
start = time.perf_counter()
from nnjax import plotting
plotting.plot_history(history, sys.argv[2] + "/history.png")
plotting.plot_activations(sys.argv[2] + "/activations.png")
plotting.plot_confusion_matrix(labels, labels[::-1], 10, sys.argv[2] + "/confusion_matrix.png")
print(time.perf_counter() - start)
"""


def environment(cache: Path) -> dict[str, str]:
    """This process's environment, with the compilation cache ``cache``. Python caches the
    bytecode of the modules it compiles, as a user's does: without it (PYTHONDONTWRITEBYTECODE),
    every run would compile nnjax's sources again, about 0.15 s."""
    env = os.environ | {"NNJAX_CACHE_DIR": str(cache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def one_run(
    work: Path, cache: Path, extra: list[str], count: bool = False, output: Path | None = None
) -> tuple[float, float]:
    """Wall seconds of one `nnjax train`, and its reported training wall time (or compilations)."""
    output = output or Path(tempfile.mkdtemp(dir=work)) / "run"
    command = [sys.executable, "-m", "nnjax", "train", "--output", str(output)]  # with its bar
    env = environment(cache) | ({"JAX_LOG_COMPILES": "1"} if count else {})
    start = time.perf_counter()
    done = subprocess.run([*command, *extra], capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - start
    if count:
        return wall, float(done.stderr.count("Compiling "))
    training = float(re.search(r"wall time ([0-9.]+) s", done.stdout).group(1))
    return wall, training


def timed(command: list[str], cache: Path) -> tuple[float, str]:
    """Wall seconds of a command run with the compilation cache ``cache``, and its output."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=environment(cache))
    if done.returncode:
        raise SystemExit(done.stderr)
    return time.perf_counter() - start, done.stdout


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
        folder = work / "folder"
        one_run(work, work / "warm", args.extra, output=folder)
        warm = [one_run(work, work / "warm", args.extra) for _ in range(args.runs)]
        _, compilations = one_run(work, work / "count", args.extra, count=True)
        redraw = [sys.executable, "-m", "nnjax", "plot", str(folder)]
        plot = [timed(redraw, work / "warm")[0] for _ in range(args.runs)]
        draw = [sys.executable, "-c", PNGS, str(folder), str(folder)]
        pngs = [float(timed(draw, work / "warm")[1]) for _ in range(args.runs)]
    for name, runs in (("cold", cold), ("warm", warm)):
        print(summary(f"{name}: end to end", [wall for wall, _ in runs]))
        print(summary(f"{name}: outside training", [wall - train for wall, train in runs]))
    print(f"XLA compilations in one cold run: {compilations:.0f}")
    print(summary("nnjax plot: end to end", plot))
    print(summary("a run's PNGs with matplotlib's import, on one thread", pngs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
