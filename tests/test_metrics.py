"""Tests of nnjax.metrics: R² from the MSE, per epoch and on the test split."""

import numpy as np
import pytest

from nnjax import metrics


def test_r_squared_is_one_minus_the_mse_over_the_variance():
    y = np.array([[1.0], [2.0], [3.0], [6.0]])  # variance 3.5
    predictions = np.array([[1.5], [2.0], [2.0], [6.5]])
    mse = float(np.mean((y - predictions) ** 2))
    expected = 1 - np.sum((y - predictions) ** 2) / np.sum((y - y.mean()) ** 2)
    assert metrics.r_squared(mse, y) == pytest.approx(expected, rel=1e-12)
    assert metrics.r_squared([0.0, 3.5, 7.0], y) == pytest.approx([1.0, 0.0, -1.0])
    assert np.isnan(metrics.r_squared(0.5, [2.0, 2.0]))  # constant targets: undefined


def test_only_a_regression_history_gains_val_r2_and_test_metrics_name_theirs():
    classifier = {"train_loss": [0.5], "val_loss": [0.4], "val_accuracy": [0.9]}
    assert metrics.with_r_squared(classifier, "softmax_cross_entropy", [0, 1]) is classifier
    regression = {"train_loss": [2.0, 1.0], "val_loss": [1.0, 0.25]}
    derived = metrics.with_r_squared(regression, "mse", [[-1.0], [1.0]])
    assert derived == {**regression, "val_r2": [0.0, 0.75]}
    assert metrics.with_r_squared(derived, "mse", [[-1.0], [1.0]]) == derived
    assert metrics.DERIVED_KEYS == ("val_r2",)
    assert metrics.test_metrics(0.3, 0.9, "binary_cross_entropy", None) == {
        "loss": 0.3,
        "accuracy": 0.9,
    }
    assert metrics.test_metrics(0.25, float("nan"), "mse", [[-1.0], [1.0]]) == {
        "loss": 0.25,
        "r2": 0.75,
    }
