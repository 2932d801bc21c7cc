"""The example scripts run end to end as a user runs them, reach their targets and write figures."""

import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import PNG_SIGNATURE

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def run_script(
    name: str, *args: str, cwd: Path, optimized: bool = True
) -> subprocess.CompletedProcess:
    # conftest.py turns XLA's optimizations off for this process; the scripts get the defaults
    # (unless `optimized` is False: a run that only checks what a script reports compiles faster).
    env = dict(os.environ)
    if optimized:
        flags = env.get("XLA_FLAGS", "").replace("--xla_backend_optimization_level=0", "")
        env["XLA_FLAGS"] = flags.strip()
        if not env["XLA_FLAGS"]:
            del env["XLA_FLAGS"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_xor_learns_xor_and_backward_pass_matches_autodiff(tmp_path):
    out = run_script("xor.py", cwd=tmp_path).stdout
    assert re.search(r"accuracy 100%", out), out
    difference = re.search(r"max abs difference: (\S+)", out)
    assert difference and float(difference.group(1)) < 1e-6, out
    assert list(tmp_path.iterdir()) == []  # writes nothing


@pytest.mark.parametrize(
    ("script", "pngs"),
    [
        ("two_moons.py", ["decision_boundary.png", "history.png"]),
        ("digits.py", ["confusion_matrix.png", "history.png"]),
    ],
)
def test_script_reaches_its_accuracy_and_writes_figures(tmp_path, script, pngs):
    out_dir = tmp_path / "out"
    out = run_script(script, str(out_dir), cwd=tmp_path).stdout
    accuracy = re.search(r"test accuracy (?:after \d+ epochs: )?([\d.]+)%", out)
    assert accuracy, out
    assert float(accuracy.group(1)) >= (99.0 if script == "two_moons.py" else 97.0), out
    for png in pngs:
        assert (out_dir / png).read_bytes().startswith(PNG_SIGNATURE), png
        assert f"wrote {out_dir / png}" in out
    if script == "digits.py":
        difference = re.search(r"max relative difference (\S+)", out)
        assert difference and float(difference.group(1)) < 1e-3, out


def test_learning_rate_sweep_plots_loss_against_rate(tmp_path):
    out = run_script("sweep_learning_rate.py", str(tmp_path), cwd=tmp_path).stdout
    assert "48 models" in out
    best = re.search(r"best learning rate: (\S+)", out)
    assert best and 1e-3 < float(best.group(1)) < 1.0, out
    assert (tmp_path / "sweep.png").read_bytes().startswith(PNG_SIGNATURE)


def test_benchmark_quick_runs_and_reports(tmp_path):
    import json

    report_path = tmp_path / "benchmark.json"
    arguments = ("--quick", "--devices", "all", "--json", str(report_path))
    out = run_script("benchmark.py", *arguments, cwd=tmp_path, optimized=False).stdout
    assert "GFLOP/s" in out and "targets:" in out
    report = json.loads(report_path.read_text())
    assert report["quick"] is True
    # The quick CNN's compiled epoch only: its per-step loop would add two compilations.
    timed = {(row["workload"], row["loop"]) for row in report["rows"]}
    assert timed == {("tiny", "epoch"), ("tiny", "step"), ("cnn", "epoch")}
    assert report["repeats"] == 2
    for row in report["rows"]:
        assert row["manual_steps_per_s"] > 0 and row["autodiff_steps_per_s"] > 0
        low, high = row["ratio_range"]
        # Two rounds: the median of their speed ratios is the mean, and the ratio of the median
        # speeds lies between the two rounds' ratios.
        assert row["manual_over_autodiff"] == pytest.approx((low + high) / 2)
        speed_ratio = row["manual_steps_per_s"] / row["autodiff_steps_per_s"]
        assert low * (1 - 1e-9) <= speed_ratio <= high * (1 + 1e-9)
    assert report["sweep"]["models"] == 4
    (parallel,) = report["data_parallel"]  # the tiny workload over this process's one device
    assert parallel["devices"] == 1 and "data parallel: tiny epoch over 1 devices" in out
    # Two programs timed separately (a one-device mesh and no mesh), each in 2 rounds.
    one, mesh = parallel["times_s"]["one_device"], parallel["times_s"]["data_parallel"]
    assert len(one) == len(mesh) == 2 and one != mesh
    assert parallel["speedup"] == pytest.approx(statistics.median(one) / statistics.median(mesh))
    check_targets(report, out)


def check_targets(report: dict, out: str) -> None:
    """The quick benchmark's targets: each value taken from the report, each verdict from it."""
    rows = {(row["workload"], row["loop"]): row for row in report["rows"]}
    epoch, step, cnn = rows["tiny", "epoch"], rows["tiny", "step"], rows["cnn", "epoch"]
    expected = {
        "tiny epoch: manual/autodiff": (epoch["manual_over_autodiff"], 1.0),
        "tiny step: manual/autodiff": (step["manual_over_autodiff"], 1.0),
        "cnn epoch: manual/autodiff": (cnn["manual_over_autodiff"], 0.95),
        "tiny: compiled epoch / per-step loop": (
            epoch["manual_steps_per_s"] / step["manual_steps_per_s"],
            10.0,
        ),
        "sweep: 4 models together / one after another": (report["sweep"]["speedup"], 4.0),
    }
    targets = {t["target"]: t for t in report["targets"]}
    assert set(targets) == set(expected)
    for name, (value, goal) in expected.items():
        target = targets[name]
        assert (target["value"], target["goal"]) == pytest.approx((value, goal)), target
        assert target["met"] is (value >= goal), target
        verdict = "met" if target["met"] else "MISSED"
        assert re.search(rf"{re.escape(name)} .*: {verdict}", out), target
