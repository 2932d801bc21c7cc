"""Tests of nnjax.checks: the library's rows pass, and the table and exit code report failures."""

import jax
import numpy as np
import pytest

from nnjax import checks, layercheck

from helpers import compile_count


def test_library_rows_for_activations_losses_and_optimizers_pass():
    rows = checks.run_checks(only=["_derivative", "vs optax"])
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


def test_backward_pass_checks_of_one_configuration_share_their_compiled_programs():
    """Another key gives other data to the same programs: nothing is compiled again."""
    options = {"layer_sizes": (3, 5, 4), "activation": "relu", "loss": "softmax_cross_entropy"}
    first = checks.check_backward_pass(jax.random.key(3), **options)
    reports = []
    assert (
        compile_count(
            lambda: reports.append(checks.check_backward_pass(jax.random.key(4), **options))
        )
        == 0
    )
    assert reports[0].passed, str(reports[0])
    assert reports[0].leaves[0].worst != first.leaves[0].worst


def test_table_and_exit_code(monkeypatch, capsys):
    good = checks.CheckRow("good", 0.0, 0.0, 1e-9, None, "1e-10", 0, True)
    bad = checks.CheckRow("bad", 1.0, 1.0, 1.0, None, "1e-10", 0, False)
    monkeypatch.setattr(checks, "iter_checks", lambda **_: iter([good, bad]))
    assert checks.main() == 1
    out = capsys.readouterr().out
    assert "good" in out and "FAIL" in out and "1 passed, 1 failed" in out
    monkeypatch.setattr(checks, "iter_checks", lambda **_: iter([good]))
    assert checks.main() == 0
    assert np.char.count(capsys.readouterr().out, "PASS") == 1


def test_only_selects_rows_by_substring_and_rejects_a_filter_matching_nothing(capsys):
    names = checks.check_names()
    assert len(names) == 66 and len(set(names)) == 66
    assert len(checks.check_names("backward_pass")) == 36
    assert len(checks.check_names("layer ")) == len(layercheck.LAYER_CASES) == 14
    both = checks.check_names(["relu_derivative,sgd vs", "tanh_derivative"])
    assert both == ["relu_derivative", "tanh_derivative", "sgd vs optax, 100 steps"]
    with pytest.raises(ValueError, match="no check's name contains 'nope'"):
        checks.check_names(["relu", "nope"])
    assert checks.main(["nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err


def test_each_row_is_printed_as_soon_as_it_is_done(monkeypatch, capsys):
    good = checks.CheckRow("good", 0.0, 0.0, 1e-9, None, "1e-10", 0, True)
    printed = []

    def rows(**_):
        printed.append(capsys.readouterr().out)
        yield good
        printed.append(capsys.readouterr().out)
        yield good._replace(name="better")
        printed.append(capsys.readouterr().out)

    monkeypatch.setattr(checks, "iter_checks", rows)
    assert checks.main() == 0
    printed.append(capsys.readouterr().out)
    assert printed[0].startswith("check ") and "good" not in printed[0]
    assert printed[1].lstrip().startswith("good") and printed[2].lstrip().startswith("better")
    assert printed[3].startswith("2 passed, 0 failed")


def test_rows_arrive_in_order_and_the_streamed_table_is_format_table(capsys):
    only = "identity_derivative,relu_derivative"
    seen = []
    rows = checks.run_checks(only=only, on_row=lambda row: seen.append(row.name))
    assert seen == [row.name for row in rows] == ["relu_derivative", "identity_derivative"]
    assert all(row.passed for row in rows), checks.format_table(rows)
    assert checks.main(only) == 0
    assert capsys.readouterr().out.rstrip("\n") == checks.format_table(rows)
