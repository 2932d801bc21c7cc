"""Benchmark: hand-written ``backward_pass`` against ``jax.grad``, compiled epochs against per-step
loops, and K models trained together by a vmapped sweep against one after another.

Run ``python scripts/benchmark.py`` (``--quick`` for a short smoke run, ``--json PATH`` for where
the figures go, ``--devices N|all`` to also time data-parallel epochs; on a CPU, make devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``, set before the script starts). Every
figure is a median over repeats, with the variants alternated inside each repeat so that a slow
moment of the machine hits them alike; compare ratios, not absolute times.

Workloads (ReLU hidden layers, softmax cross-entropy, nnjax's Adam, float32):
  tiny   2-16-16-2        batch 64
  mnist  784-256-256-10   batch 128
  wide   1024-2048-2048-10 batch 512

Columns:
  steps/s       optimizer steps per second, data already on the device.
  manual/auto   the manual backward pass's rate over jax.grad's (>= 1.00 means no slower).
  % matmul      achieved FLOP/s over this machine's float32 matmul rate, measured in the same run
                with one large jnp.dot; FLOPs per step = 6 x batch x sum(n_in x n_out).
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
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import nnjax
from nnjax import distributed, steps, sweeps

WORKLOADS = {
    "tiny": ([2, 16, 16, 2], 64),
    "mnist": ([784, 256, 256, 10], 128),
    "wide": ([1024, 2048, 2048, 10], 512),
}
MODEL = nnjax.DenseNetwork("relu", "softmax_cross_entropy")
HYPER = steps.Hyperparameters(None, 0.0, 0.0)


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


def workload_data(sizes, batch, num_batches):
    k_x, k_y, k_p = jax.random.split(jax.random.key(1), 3)
    n = batch * num_batches
    x = jax.random.normal(k_x, (n, sizes[0]), jnp.float32)
    y = jax.random.randint(k_y, (n,), 0, sizes[-1])
    return jax.device_put((x, y)), nnjax.init_network(k_p, sizes, "he")


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


def build_variants(sizes, batch, num_batches):
    """For each gradient source, a compiled epoch and a compiled step, with compile times."""
    (x, y), params = workload_data(sizes, batch, num_batches)
    optimizer = nnjax.adam(1e-3)
    variants = {}
    for grad in steps.GRADIENT_SOURCES:
        step = steps.make_train_step(MODEL, optimizer=optimizer, grad=grad)

        def one_step(params, opt_state, x, y, index, key, step=step):
            new_params, new_state, value = step(params, opt_state, x[index], y[index], HYPER, key)
            return new_params, new_state, value

        state = steps.EpochState(params, optimizer.init(params), jnp.array(True), jnp.array(-1))
        epoch_exe, epoch_compile = compile_epoch(step, (state, x, y), batch, num_batches)
        index = jnp.arange(batch)
        start = time.perf_counter()
        step_exe = (
            jax.jit(one_step, donate_argnums=(0, 1))
            .lower(params, state.opt_state, x, y, index, jax.random.key(0))
            .compile()
        )
        step_compile = time.perf_counter() - start
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


def benchmark_workload(name, repeats, quick):
    sizes, batch = WORKLOADS[name]
    num_batches = {"tiny": 200, "mnist": 20, "wide": 3}[name] // (4 if quick else 1)
    (x, y), variants = build_variants(sizes, batch, num_batches)

    def run(grad_and_loop, key):
        grad, loop = grad_and_loop
        if loop == "epoch":
            return time_epoch(variants[grad], x, y, key)
        return time_steps(variants[grad], x, y, key, batch, num_batches)

    order = [(grad, loop) for grad in variants for loop in ("epoch", "step")]
    times = time_rounds(order, run, repeats)
    flops_per_step = 6 * batch * sum(a * b for a, b in itertools.pairwise(sizes))
    rows = []
    for loop in ("epoch", "step"):
        rate = {g: num_batches / statistics.median(times[g, loop]) for g in variants}
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


def benchmark_data_parallel(name, devices, repeats, quick):
    """The compiled epoch (manual gradients) on one device against the same epoch with each
    minibatch split over ``devices`` (``distributed.data_parallel``), alternated in each round."""
    sizes, batch = WORKLOADS[name]
    num_batches = {"tiny": 200, "mnist": 20, "wide": 3}[name] // (4 if quick else 1)
    (x, y), params = workload_data(sizes, batch, num_batches)
    layout = distributed.data_parallel(devices)
    if batch % layout.num_devices:
        raise SystemExit(f"{name}: batch {batch} does not divide by {layout.num_devices} devices")
    optimizer = nnjax.adam(1e-3)
    step = steps.make_train_step(MODEL, optimizer=optimizer)
    state = steps.EpochState(params, optimizer.init(params), jnp.array(True), jnp.array(-1))
    variants = {}
    for variant, placed_layout in (("one_device", None), ("data_parallel", layout)):
        args = (state, x, y)
        if placed_layout is not None:
            args = jax.device_put(args, placed_layout.replicated)
        exe, _ = compile_epoch(step, args, batch, num_batches, placed_layout)
        variants[variant] = {"epoch": exe, "state": args[0], "data": args[1:]}
    times = time_rounds(
        list(variants),
        lambda name, key: time_epoch(variants[name], *variants[name]["data"], key),
        repeats,
    )
    rates = {variant: num_batches / statistics.median(t) for variant, t in times.items()}
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
    sizes, batch = WORKLOADS["tiny"]
    (x, y), _ = workload_data(sizes, batch, 25 if quick else 50)
    seeds, rates = np.arange(num_models), np.logspace(-3, -1, num_models)
    common = {
        "layer_sizes": sizes,
        "epochs": epochs,
        "batch_size": batch,
        "init": "he",
        "model": MODEL,
    }
    together = sweeps.sweep(x, y, seeds=seeds, learning_rates=rates, **common)
    steps = epochs * (x.shape[0] // batch)
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


def main(argv: list[str] | None = None) -> int:
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
    devices = (
        "all" if args.devices == "all" else None if args.devices is None else int(args.devices)
    )
    repeats = args.repeats or (2 if args.quick else 7)
    workloads = ["tiny"] if args.quick else list(WORKLOADS)

    rate = matmul_rate(512 if args.quick else 2048, repeats)
    print(f"{jax.devices()[0]}, jax {jax.__version__}: float32 matmul {rate / 1e9:.1f} GFLOP/s")
    rows = [row for name in workloads for row in benchmark_workload(name, repeats, args.quick)]
    for row in rows:
        row["matmul_fraction"] = row["manual_gflops"] * 1e9 / rate
    sweep = benchmark_sweep(4 if args.quick else 64, 2 if args.quick else 10, args.quick)
    parallel = []
    if devices is not None:
        parallel = [benchmark_data_parallel(w, devices, repeats, args.quick) for w in workloads]

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

    targets = []
    by = {(row["workload"], row["loop"]): row for row in rows}
    for (workload, loop), row in by.items():
        check(targets, f"{workload} {loop}: manual/autodiff", row["manual_over_autodiff"], 1.0)
    if "wide" in workloads:
        check(
            targets,
            "wide epoch: fraction of matmul rate",
            by["wide", "epoch"]["matmul_fraction"],
            0.9,
        )
    tiny = by["tiny", "epoch"]["manual_steps_per_s"] / by["tiny", "step"]["manual_steps_per_s"]
    check(targets, "tiny: compiled epoch / per-step loop", tiny, 10.0)
    check(
        targets,
        f"sweep: {sweep['models']} models together / one after another",
        sweep["speedup"],
        4.0,
    )
    if "mnist" in workloads:
        compile_s = by["mnist", "epoch"]["compile_s"]["manual"]
        check(targets, "mnist: epoch compile seconds", compile_s, 3.0, higher_is_better=False)
    print("targets:")
    for t in targets:
        verdict = "met" if t["met"] else f"MISSED by {abs(t['value'] - t['goal']) / t['goal']:.0%}"
        print(f"  {t['target']:<50} {t['value']:>8.2f} (goal {t['goal']:g}): {verdict}")

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
