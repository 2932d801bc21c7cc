"""The README's Python examples run as written and do what they say."""

import ast
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def run(code):
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


def test_readme_has_the_training_examples_the_tour_and_a_derivative_check():
    assert len(python_blocks()) == 4


def test_checking_a_derivative_you_wrote_passes_and_says_so(capsys):
    (block,) = [b for b in python_blocks() if "check_elementwise" in b]
    namespace = run(block)
    assert namespace["report"].passed
    assert "PASS" in capsys.readouterr().out


def test_training_example_reaches_its_accuracy(capsys):
    (block,) = [b for b in python_blocks() if "training.train(" in b and "Sequential" not in b]
    namespace = run(block)
    assert namespace["result"].history["val_accuracy"][-1] >= 0.97
    assert capsys.readouterr().out.strip()


def test_cnn_example_learns_the_digits_as_images(capsys):
    (block,) = [b for b in python_blocks() if "Sequential(" in b]
    namespace = run(block)
    assert namespace["result"].history["train_accuracy"][-1] >= 0.97
    assert float(capsys.readouterr().out) >= 0.97


def test_tour_learns_xor(capsys):
    (block,) = [b for b in python_blocks() if "A tour" not in b and "backward_pass(" in b]
    namespace = run(block)
    # The first line printed: the largest difference from autodiff, for every W and b.
    printed = ast.literal_eval(capsys.readouterr().out.splitlines()[0])
    assert [sorted(layer) for layer in printed] == [["W", "b"], ["W", "b"]]
    assert all(0 <= d < 1e-6 for layer in printed for d in layer.values()), printed
    nnjax = namespace["nnjax"]
    predictions = np.asarray(
        nnjax.predict(namespace["params"], namespace["x"], **namespace["arch"])
    )
    np.testing.assert_array_equal(predictions.round(), [[0], [1], [1], [0]])
