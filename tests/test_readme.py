"""The README's tour runs as written and does what it says."""

import pathlib
import re

import numpy as np


def test_readme_tour_runs_and_learns_xor(capsys):
    readme = pathlib.Path(__file__).parents[1] / "README.md"
    code = re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)[0]
    namespace: dict = {}
    exec(compile(code, str(readme), "exec"), namespace)
    predictions = np.asarray(
        namespace["nnjax"].predict(namespace["params"], namespace["x"], **namespace["arch"])
    )
    np.testing.assert_array_equal(predictions.round(), [[0], [1], [1], [0]])
    assert "W" in capsys.readouterr().out
