"""Tests of nnjax.run_data: a data file goes the built-in datasets' way; regression targets."""

import jax
import numpy as np
import pytest

from nnjax import datasets, run_data, runs

SEED = 0
KEY = run_data.run_keys(SEED)[0]  # the data key of a run of seed SEED


def write_line(path, n=20):
    """A regression file of ``n`` rows, target = 10 + 1.5 i, one input: the CLI test's shapes."""
    targets = 10.0 + 1.5 * np.arange(n)
    path.write_text("x,target\n" + "".join(f"{t / 3},{t}\n" for t in targets))
    return targets


def config(**options):
    return runs.make_config(**options)


def test_a_data_file_is_split_and_standardized_as_the_dataset_it_holds(tmp_path):
    x, y = datasets.make_moons(jax.random.split(KEY)[0], 101)
    np.savez(tmp_path / "moons.npz", x=np.asarray(x), y=np.asarray(y))
    loaded = run_data.load(config(data=tmp_path / "moons.npz"), SEED)
    built_in = datasets.load_dataset("moons", KEY, n_samples=101)
    assert loaded.dataset.name == "moons" and loaded.dataset.num_classes == 2
    for got, expected in zip(loaded.dataset[1:5], built_in[1:5], strict=True):
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == expected.dtype
    assert loaded.target_scale is None and len(loaded.sha256) == 64
    sized = run_data.load(config(dataset="moons", n_samples=101), SEED).dataset
    for got, expected in zip(sized[1:5], built_in[1:5], strict=True):
        np.testing.assert_array_equal(got, expected)


def test_regression_targets_are_standardized_with_the_training_split_statistics(tmp_path):
    targets = write_line(tmp_path / "line.csv")
    # Seed 1: seed 0's four test targets happen to have the training targets' mean.
    loaded = run_data.load(config(data=tmp_path / "line.csv", loss="mse"), 1)
    data, (mean, std) = loaded.dataset, loaded.target_scale
    assert data.num_classes == 0 and data.y_train.shape == (16, 1) and data.y_test.shape == (4, 1)
    assert data.y_train.dtype == np.float32
    y_train = np.asarray(data.y_train, np.float64)
    assert abs(y_train.mean()) < 1e-6 and abs(y_train.std() - 1) < 1e-6
    assert abs(np.asarray(data.y_test).mean()) > 1e-3  # the test split's own mean is not used
    restored = np.concatenate([np.asarray(data.y_train), np.asarray(data.y_test)]) * std + mean
    np.testing.assert_allclose(np.sort(restored[:, 0]), targets, rtol=1e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"loss": "mse"}, "--loss mse trains on regression targets"),
        ({"n_samples": 50}, "'digits' has a fixed size"),
        ({"label_column": "y"}, "--label-column names a column of a --data .csv file"),
        ({"data": "f.csv", "n_samples": 50}, "--n-samples sizes the synthetic datasets, not"),
        ({"data": "half.csv"}, "non-integer values .*regression targets take --loss mse"),
        ({"data": "one.csv"}, "holds class 0 only"),
        ({"data": "huge.csv", "loss": "mse"}, "y holds values up to 1e\\+39, beyond float32"),
        ({"data": "wide.csv"}, "x holds values up to 1e\\+39, beyond float32"),
    ],
)
def test_data_that_does_not_fit_the_loss_or_options_is_refused(
    tmp_path, monkeypatch, options, message
):
    monkeypatch.chdir(tmp_path)
    for name, row in (("half", "1,0.5"), ("one", "1,0"), ("huge", "1,1e39"), ("wide", "1e39,1")):
        (tmp_path / f"{name}.csv").write_text(f"x,y\n{row}\n2,0\n")
    with pytest.raises(ValueError, match=message):
        run_data.load(config(**options), SEED)


def test_a_changed_data_file_is_refused_and_another_one_left_to_the_options_check():
    saved = {"data": "/d.csv", "data_sha256": "a" * 64}
    run_data.check_unchanged(saved, {"data": "/d.csv", "data_sha256": "a" * 64})
    run_data.check_unchanged(saved, {"data": "/e.csv", "data_sha256": "b" * 64})
    run_data.check_unchanged({}, {"data": None})
    with pytest.raises(ValueError, match=r"/d.csv changed since the run trained on it \(SHA-256"):
        run_data.check_unchanged(saved, {"data": "/d.csv", "data_sha256": "b" * 64})
