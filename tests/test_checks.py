"""Tests of nnjax.checks: the library's rows pass, and the table and exit code report failures."""

import jax
import numpy as np
import pytest

from nnjax import checks


def test_library_rows_for_activations_losses_and_optimizers_pass():
    key = jax.random.key(0)
    with jax.enable_x64(True):
        rows = [
            *checks._activation_rows(key),
            *checks._loss_rows(key),
            *checks._optimizer_rows(key),
        ]
    names = [row.name for row in rows]
    assert {"sigmoid_derivative", "relu_derivative", "tanh_derivative"} <= set(names)
    assert any(name.startswith("adam vs optax") for name in names)
    assert all(row.passed for row in rows), checks.format_table(rows)


@pytest.mark.parametrize(
    ("activation", "loss", "options"),
    [
        ("relu", "softmax_cross_entropy", {}),
        ("sigmoid", "binary_cross_entropy", {"l2": 0.1}),
        ("tanh", "mse", {"dropout_rate": 0.3}),
    ],
)
def test_backward_pass_checks(activation, loss, options):
    report = checks.check_backward_pass(
        jax.random.key(3), layer_sizes=(3, 5, 4), activation=activation, loss=loss, **options
    )
    assert report.passed, str(report)
    assert len(report.leaves) == 4


def test_table_and_exit_code(monkeypatch, capsys):
    good = checks.CheckRow("good", 0.0, 0.0, 1e-9, None, "1e-10", 0, True)
    bad = checks.CheckRow("bad", 1.0, 1.0, 1.0, None, "1e-10", 0, False)
    monkeypatch.setattr(checks, "run_checks", lambda: [good, bad])
    assert checks.main() == 1
    out = capsys.readouterr().out
    assert "good" in out and "FAIL" in out and "1 passed, 1 failed" in out
    monkeypatch.setattr(checks, "run_checks", lambda: [good])
    assert checks.main() == 0
    assert np.char.count(capsys.readouterr().out, "PASS") == 1
