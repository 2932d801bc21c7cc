"""Benchmark: hand-written backward passes against ``jax.grad``, compiled epochs against per-step
loops, and K models trained together by a vmapped sweep against one after another.

Run ``python scripts/benchmark.py`` (``--quick`` for a short smoke run: tiny, and a small CNN's
compiled epoch; ``--json PATH`` for where the figures go, ``--devices N|all`` to also time
data-parallel epochs; on a CPU, make devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``, set before the script starts). Every
figure is a median over repeats, with the variants alternated inside each repeat so that a slow
moment of the machine hits them alike; compare ratios, not absolute times.

Workloads (ReLU hidden layers, softmax cross-entropy, nnjax's Adam, float32, random data):
  tiny   2-16-16-2        batch 64
  mnist  784-256-256-10   batch 128
  wide   1024-2048-2048-10 batch 512
  cnn    8x8x1 images: conv2d(16,3,same) relu conv2d(32,3,same) relu maxpool(2) dense(64) relu
         dense(10), batch 64 (``nnjax.Sequential``; goal for manual/auto 0.95)

Columns:
  steps/s       optimizer steps per second, data already on the device.
  manual/auto   the manual backward pass's rate over jax.grad's (>= 1.00 means no slower).
  % matmul      achieved FLOP/s over this machine's float32 matmul rate, measured in the same run
                with one large jnp.dot; FLOPs per step = 3 x the forward's as XLA's cost analysis
                counts them: for an MLP 6 x batch x sum(n_in x n_out) and its elementwise work (16%
                more for tiny, 0.3% for mnist); a convolution's taps on its padding do not count.
  compile s     time to compile the epoch (or the step).
  memory MB     what the compiled epoch needs: arguments + outputs + temporaries (XLA's count).

Data parallel (``--devices``): the compiled epoch with each minibatch split over the devices
(``distributed.data_parallel``) against the same epoch on one device; speedup and its fraction of
linear scaling. Forced CPU devices share the same cores, so they show the overhead of the
partitioned program and its all-reduce, not a speedup; on N GPUs a workload whose step is large
enough (mnist, wide) scales towards N.

Loops:
  epoch         one compiled lax.scan over the epoch's minibatches (``make_train_epoch``),
                parameters and optimizer state donated, no host round-trip inside.
  step          a jitted step (``make_train_step``) called from Python for every minibatch,
                parameters and optimizer state donated.

What the profile and the compiled HLO show (2 CPU cores, XLA:CPU, jax 0.10.2):
  - The manual and autodiff steps compile to the same program: the MNIST step's loop body has the
    same op counts either way (49 fusions, 3 dots outside fusions, 17 copies) and differs only in
    how the output error is fused. A manual/auto ratio away from 1.00 is the machine's noise; the
    range column (the ratio in each round) shows how large that is.
  - The tiny step is about 100 XLA:CPU thunks (51 fusions, 17 copies, 27 tuple operations) for
    about 0.12 MFLOP of arithmetic: some 20 us a step of which arithmetic is about 1 us. A jitted
    per-step call costs about 100 us of Python dispatch, so a compiled epoch is about 5x faster,
    short of 10x because the thunks themselves, not the dispatch, now bound the step.
  - The epoch's shuffle was two thirds of the tiny epoch: jax.random.permutation sorts, 7 ms for
    12,800 indices on this CPU. ``steps.shuffle_indices`` (a Feistel permutation, no sort)
    takes 0.7 ms; the tiny epoch went from about 10,000 to about 45,000 steps/s.
  - The non-finite-loss guard: a lax.cond per step copied every parameter; a select costs
    nothing measurable (19.8 against 19.5 us a step without any guard).
  - Sweeps: vmap turns each small matmul into a batched dot that XLA:CPU runs as one small GEMM
    per model, so 64 models still cost about 10 us per model-step. A bare vmapped scan is 2.8x
    one model's rate; with per-epoch evaluation and per-model shuffles the sweep is 1.4-1.7x.
  - Wide: the dots are nearly all the time. Its fraction of the matmul rate ranged from 57% to
    104% between runs on this shared machine, whose reference matmul itself measured from 95 to
    166 GFLOP/s.
  - CNN: XLA:CPU runs a convolution fast (its kernel as (h, w, in, out), the work handed to
    YNNPACK) only in that layout: outside a loop it transposes an (out, in, h, w) kernel itself,
    inside the epoch's lax.scan it does not, and the convolution runs as a plain loop nest some
    20x slower. nnjax.convolution therefore writes every convolution of the forward and the
    hand-written backward in the fast layout (the kernel, and the input and output error of the
    weight gradient, transposed explicitly): the manual epoch runs at about 216 steps/s against
    7 for jax.grad of the same forward, whose transposed convolutions stay in the slow layout
    (manual/auto 34x, range 20-54x, on a busy machine). In the per-step loop, where XLA
    transposes both, the manual step is still the faster (1.86, range 1.19-2.09): jax.grad turns
    the max-pool into a select_and_scatter, which XLA:CPU runs as a scatter; the hand-written
    backward slices and pads.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import nnjax
from nnjax import distributed, steps, sweeps
from nnjax.architecture import parse_layers

MLP = nnjax.DenseNetwork("relu", "softmax_cross_entropy")
HYPER = steps.Hyperparameters(None, 0.0, 0.0)
CNN_LAYERS = (
    "conv2d(16,3,padding=same),relu,conv2d(32,3,padding=same),relu,maxpool(2),flatten,"
    "dense(64),relu,dense(10)"
)
SMALL_CNN_LAYERS = "conv2d(4,3,padding=same),relu,maxpool(2),flatten,dense(10)"


class Workload(NamedTuple):
    """A model to time, the shape of its random data, the loops timed and its manual/auto goal."""

    model: Any
    init: Callable[[jax.Array], Any]  # key -> parameters
    example_shape: tuple[int, ...]
    classes: int
    batch: int
    num_batches: int
    loops: tuple[str, ...] = ("epoch", "step")
    ratio_goal: float = 1.0  # of manual/autodiff


def mlp(sizes: list[int], batch: int, num_batches: int) -> Workload:
    init = functools.partial(nnjax.init_network, layer_sizes=sizes, init="he")
    return Workload(MLP, init, (sizes[0],), sizes[-1], batch, num_batches)


def cnn(layers: str, batch: int, num_batches: int, **options: Any) -> Workload:
    """A CNN on 8x8 grey images (the digits' shape), 10 classes; its goal for manual/autodiff is
    0.95."""
    model = nnjax.Sequential(parse_layers(layers, (8, 8, 1)), (8, 8, 1))

    def init(key):
        return model.init(key)[0]

    return Workload(model, init, (8, 8, 1), 10, batch, num_batches, ratio_goal=0.95, **options)


TINY = [2, 16, 16, 2]
WORKLOADS = {
    "tiny": mlp(TINY, 64, 200),
    "mnist": mlp([784, 256, 256, 10], 128, 20),
    "wide": mlp([1024, 2048, 2048, 10], 512, 3),
    "cnn": cnn(CNN_LAYERS, 64, 20),
}
# --quick: a quarter of tiny's minibatches, and a CNN small enough to compile in about a second.
QUICK = {
    "tiny": WORKLOADS["tiny"]._replace(num_batches=50),
    "cnn": cnn(SMALL_CNN_LAYERS, 16, 2, loops=("epoch",)),
}


def matmul_rate(n: int, repeats: int) -> float:
    """FLOP/s of an (n, n) @ (n, n) float32 jnp.dot: the machine's arithmetic limit here."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dot(a, a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def workload_data(w: Workload):
    """Random examples and labels for every minibatch, and the initial parameters."""
    k_x, k_y, k_p = jax.random.split(jax.random.key(1), 3)
    n = w.batch * w.num_batches
    x = jax.random.normal(k_x, (n, *w.example_shape), jnp.float32)
    y = jax.random.randint(k_y, (n,), 0, w.classes)
    return jax.device_put((x, y)), w.init(k_p)


def step_flops(w: Workload, params, x) -> float:
    """FLOPs of one step: 3 x the forward's on a minibatch, as XLA's cost analysis counts them
    (2 per multiply-add, a convolution's taps on its zero padding not counted)."""
    forward = jax.jit(lambda params, x: w.model.forward(params, x)[0])
    return 3 * forward.lower(params, x[: w.batch]).cost_analysis()["flops"]


def compile_epoch(step, args, batch, num_batches, layout=None):
    """The compiled epoch for ``args = (state, x, y)`` and its compile time in seconds; with a
    ``distributed.DataParallel`` layout, minibatches split over its devices (``args`` placed)."""
    epoch = steps.make_train_epoch(
        step,
        num_batches=num_batches,
        batch_size=batch,
        batch_sharding=None if layout is None else layout.batch,
    )
    start = time.perf_counter()
    exe = jax.jit(epoch, donate_argnums=0).lower(*args, HYPER, jax.random.key(0)).compile()
    return exe, time.perf_counter() - start


def compile_step(step, state, x, y, batch):
    """The jitted step on the minibatch ``x[index]`` (parameters and optimizer state donated),
    and its compile time in seconds."""

    def one_step(params, opt_state, x, y, index, key):
        return step(params, opt_state, x[index], y[index], HYPER, key)[:3]

    start = time.perf_counter()
    exe = (
        jax.jit(one_step, donate_argnums=(0, 1))
        .lower(state.params, state.opt_state, x, y, jnp.arange(batch), jax.random.key(0))
        .compile()
    )
    return exe, time.perf_counter() - start


def build_variants(w: Workload):
    """For each gradient source, a compiled epoch (and a compiled step where ``w.loops`` times
    the per-step loop), with compile times."""
    (x, y), params = workload_data(w)
    optimizer = nnjax.adam(1e-3)
    variants = {}
    for grad in steps.GRADIENT_SOURCES:
        step = steps.make_train_step(w.model, optimizer=optimizer, grad=grad)
        state = steps.EpochState(params, optimizer.init(params), jnp.array(True), jnp.array(-1))
        epoch_exe, epoch_compile = compile_epoch(step, (state, x, y), w.batch, w.num_batches)
        step_exe, step_compile = (
            compile_step(step, state, x, y, w.batch) if "step" in w.loops else (None, None)
        )
        memory = epoch_exe.memory_analysis()
        memory_mb = (
            memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
        ) / 2**20
        variants[grad] = {
            "shuffle": jax.jit(lambda key, n=x.shape[0]: steps.shuffle_indices(key, n)),
            "epoch": epoch_exe,
            "step": step_exe,
            "state": state,
            "compile": {"epoch": epoch_compile, "step": step_compile},
            "memory_mb": memory_mb,
        }
    return (x, y), variants


def time_epoch(variant, x, y, key):
    """One epoch through the compiled lax.scan; returns seconds."""
    state = jax.tree.map(jnp.copy, variant["state"])
    jax.block_until_ready(state)
    start = time.perf_counter()
    state, losses = variant["epoch"](state, x, y, HYPER, key)
    losses.block_until_ready()
    return time.perf_counter() - start


def time_steps(variant, x, y, key, batch, num_batches):
    """The same epoch as a Python loop of jitted steps; returns seconds."""
    params, opt_state = jax.tree.map(
        jnp.copy, (variant["state"].params, variant["state"].opt_state)
    )
    jax.block_until_ready((params, opt_state))
    start = time.perf_counter()
    # The same shuffle as the compiled epoch's, then one dispatch per minibatch.
    order = variant["shuffle"](key).reshape(num_batches, batch)
    step_keys = jax.random.split(key, num_batches)
    for index, step_key in zip(order, step_keys, strict=True):
        params, opt_state, value = variant["step"](params, opt_state, x, y, index, step_key)
    value.block_until_ready()
    return time.perf_counter() - start


def time_rounds(names, run, repeats):
    """``{name: [seconds, ...]}`` from ``repeats`` rounds of ``run(name, key)`` for every name, the
    order alternating between rounds so that a slow moment of the machine hits them alike; round
    ``r`` uses ``jax.random.key(r)``, and a first warm-up round is not counted."""
    times = {name: [] for name in names}
    for r in range(repeats + 1):
        for name in names if r % 2 else names[::-1]:
            seconds = run(name, jax.random.key(r))
            if r > 0:
                times[name].append(seconds)
    return times


def benchmark_workload(name, w: Workload, repeats):
    (x, y), variants = build_variants(w)

    def run(grad_and_loop, key):
        grad, loop = grad_and_loop
        if loop == "epoch":
            return time_epoch(variants[grad], x, y, key)
        return time_steps(variants[grad], x, y, key, w.batch, w.num_batches)

    order = [(grad, loop) for grad in variants for loop in w.loops]
    times = time_rounds(order, run, repeats)
    flops_per_step = step_flops(w, variants["manual"]["state"].params, x)
    rows = []
    for loop in w.loops:
        rate = {g: w.num_batches / statistics.median(times[g, loop]) for g in variants}
        # The speed ratio of each round (both ran within moments of each other): its spread
        # shows how much of a difference is the machine's noise.
        ratios = [
            a / m for m, a in zip(times["manual", loop], times["autodiff", loop], strict=True)
        ]
        rows.append(
            {
                "workload": name,
                "loop": loop,
                "manual_steps_per_s": rate["manual"],
                "autodiff_steps_per_s": rate["autodiff"],
                "manual_over_autodiff": statistics.median(ratios),
                "ratio_range": [min(ratios), max(ratios)],
                "manual_gflops": rate["manual"] * flops_per_step / 1e9,
                "compile_s": {g: variants[g]["compile"][loop] for g in variants},
                "memory_mb": variants["manual"]["memory_mb"],
            }
        )
    return rows


def benchmark_data_parallel(name, w: Workload, devices, repeats):
    """The compiled epoch (manual gradients) on one device against the same epoch with each
    minibatch split over ``devices`` (``distributed.data_parallel``), alternated in each round."""
    (x, y), params = workload_data(w)
    layout = distributed.data_parallel(devices)
    if w.batch % layout.num_devices:
        raise SystemExit(f"{name}: batch {w.batch} does not divide by {layout.num_devices} devices")
    optimizer = nnjax.adam(1e-3)
    step = steps.make_train_step(w.model, optimizer=optimizer)
    state = steps.EpochState(params, optimizer.init(params), jnp.array(True), jnp.array(-1))
    variants = {}
    for variant, placed_layout in (("one_device", None), ("data_parallel", layout)):
        args = (state, x, y)
        if placed_layout is not None:
            args = jax.device_put(args, placed_layout.replicated)
        exe, _ = compile_epoch(step, args, w.batch, w.num_batches, placed_layout)
        variants[variant] = {"epoch": exe, "state": args[0], "data": args[1:]}
    times = time_rounds(
        list(variants),
        lambda name, key: time_epoch(variants[name], *variants[name]["data"], key),
        repeats,
    )
    rates = {variant: w.num_batches / statistics.median(t) for variant, t in times.items()}
    speedup = rates["data_parallel"] / rates["one_device"]
    return {
        "workload": name,
        "devices": layout.num_devices,
        "one_device_steps_per_s": rates["one_device"],
        "data_parallel_steps_per_s": rates["data_parallel"],
        "speedup": speedup,
        "efficiency": speedup / layout.num_devices,
        "times_s": times,
    }


def benchmark_sweep(num_models, epochs, quick):
    """K tiny models in one vmapped program vs the same K models trained one after another.

    "One after another" is the same compiled-epoch program vmapped over a single model, called K
    times (compiled once, so compilation is excluded from both sides).
    """
    tiny = WORKLOADS["tiny"]._replace(num_batches=25 if quick else 50)
    (x, y), _ = workload_data(tiny)
    seeds, rates = np.arange(num_models), np.logspace(-3, -1, num_models)
    common = {
        "layer_sizes": TINY,
        "epochs": epochs,
        "batch_size": tiny.batch,
        "init": "he",
        "model": MLP,
    }
    together = sweeps.sweep(x, y, seeds=seeds, learning_rates=rates, **common)
    steps = epochs * tiny.num_batches
    seconds = 0.0
    for k in range(num_models):
        single = sweeps.sweep(x, y, seeds=seeds[k : k + 1], learning_rates=rates[k], **common)
        seconds += steps / single.model_steps_per_second
    sequential = num_models * steps / seconds
    return {
        "models": num_models,
        "together_model_steps_per_s": together.model_steps_per_second,
        "sequential_model_steps_per_s": sequential,
        "speedup": together.model_steps_per_second / sequential,
        "together_compile_s": together.compile_seconds,
    }


def check(targets, name, value, goal, higher_is_better=True):
    met = value >= goal if higher_is_better else value <= goal
    targets.append({"target": name, "value": value, "goal": goal, "met": bool(met)})


def print_figures(rows, sweep, parallel):
    header = (
        f"{'workload':<8} {'loop':<6} {'manual steps/s':>15} {'autodiff steps/s':>17} "
        f"{'manual/auto (range)':>20} {'% matmul':>9} {'compile s (m/a)':>16} {'memory MB':>10}"
    )
    print(header + "\n" + "-" * len(header))
    for row in rows:
        compile_s = row["compile_s"]
        print(
            f"{row['workload']:<8} {row['loop']:<6} {row['manual_steps_per_s']:>15,.0f} "
            f"{row['autodiff_steps_per_s']:>17,.0f} {row['manual_over_autodiff']:>6.2f} "
            f"({row['ratio_range'][0]:.2f}-{row['ratio_range'][1]:.2f}) "
            f"{100 * row['matmul_fraction']:>8.1f}% "
            f"{compile_s['manual']:>7.2f}/{compile_s['autodiff']:<8.2f} {row['memory_mb']:>10.1f}"
        )
    print(
        f"sweep: {sweep['models']} tiny models together {sweep['together_model_steps_per_s']:,.0f} "
        f"model-steps/s, one after another {sweep['sequential_model_steps_per_s']:,.0f}: "
        f"{sweep['speedup']:.1f}x"
    )
    for row in parallel:
        print(
            f"data parallel: {row['workload']} epoch over {row['devices']} devices "
            f"{row['data_parallel_steps_per_s']:,.0f} steps/s, on one device "
            f"{row['one_device_steps_per_s']:,.0f}: {row['speedup']:.2f}x "
            f"({row['efficiency']:.0%} of linear scaling)"
        )


def check_targets(workloads, rows, sweep):
    """The targets, each ``{"target", "value", "goal", "met"}``, printed with their verdicts."""
    targets = []
    by = {(row["workload"], row["loop"]): row for row in rows}
    for (workload, loop), row in by.items():
        goal = workloads[workload].ratio_goal
        check(targets, f"{workload} {loop}: manual/autodiff", row["manual_over_autodiff"], goal)
    if "wide" in workloads:
        wide = by["wide", "epoch"]["matmul_fraction"]
        check(targets, "wide epoch: fraction of matmul rate", wide, 0.9)
    tiny = by["tiny", "epoch"]["manual_steps_per_s"] / by["tiny", "step"]["manual_steps_per_s"]
    check(targets, "tiny: compiled epoch / per-step loop", tiny, 10.0)
    name = f"sweep: {sweep['models']} models together / one after another"
    check(targets, name, sweep["speedup"], 4.0)
    if "mnist" in workloads:
        compile_s = by["mnist", "epoch"]["compile_s"]["manual"]
        check(targets, "mnist: epoch compile seconds", compile_s, 3.0, higher_is_better=False)
    print("targets:")
    for t in targets:
        verdict = "met" if t["met"] else f"MISSED by {abs(t['value'] - t['goal']) / t['goal']:.0%}"
        print(f"  {t['target']:<50} {t['value']:>8.2f} (goal {t['goal']:g}): {verdict}")
    return targets


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", type=Path, default=Path("runs/benchmark.json"))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--devices",
        default=None,
        metavar="N|all",
        help="also time data-parallel epochs over N local devices (or all) against one device",
    )
    args = parser.parse_args(argv)
    args.devices = (
        "all" if args.devices == "all" else None if args.devices is None else int(args.devices)
    )
    args.repeats = args.repeats or (2 if args.quick else 7)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    repeats, workloads = args.repeats, QUICK if args.quick else WORKLOADS
    rate = matmul_rate(512 if args.quick else 2048, repeats)
    print(f"{jax.devices()[0]}, jax {jax.__version__}: float32 matmul {rate / 1e9:.1f} GFLOP/s")
    rows = [row for name, w in workloads.items() for row in benchmark_workload(name, w, repeats)]
    for row in rows:
        row["matmul_fraction"] = row["manual_gflops"] * 1e9 / rate
    sweep = benchmark_sweep(4 if args.quick else 64, 2 if args.quick else 10, args.quick)
    parallel = []
    if args.devices is not None:
        # --quick: data parallelism on tiny alone (the small CNN adds its compiled epoch only).
        names = ["tiny"] if args.quick else list(workloads)
        parallel = [
            benchmark_data_parallel(name, workloads[name], args.devices, repeats) for name in names
        ]
    print_figures(rows, sweep, parallel)
    targets = check_targets(workloads, rows, sweep)

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "quick": args.quick,
        "repeats": repeats,
        "matmul_gflops": rate / 1e9,
        "peak_rss_mb": peak_rss_mb,
        "rows": rows,
        "sweep": sweep,
        "data_parallel": parallel,
        "targets": targets,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"peak resident memory {peak_rss_mb:.0f} MB; wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
