"""Tests of the nnjax command line."""

import subprocess
import sys

import pytest

from nnjax import cli, gradcheck


def test_check_exits_with_the_result_of_the_checks(monkeypatch, capsys):
    row = gradcheck.CheckRow("sigmoid_derivative", 0.0, 0.0, 1e-11, None, "1e-10", 0, False)
    monkeypatch.setattr(gradcheck, "run_checks", lambda: [row])
    assert cli.main(["check"]) == 1
    assert "sigmoid_derivative" in capsys.readouterr().out


def test_help_names_every_command_and_has_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["check", "--help"])
    assert exit_info.value.code == 0
    assert "example:" in capsys.readouterr().out


def test_unknown_command_exits_2():
    result = subprocess.run(
        [sys.executable, "-m", "nnjax.cli", "fly"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
