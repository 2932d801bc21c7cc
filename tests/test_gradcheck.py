"""Tests of nnjax.gradcheck: it passes right derivatives, catches wrong ones, and reports kinks."""

import math

import jax
import jax.numpy as jnp
import pytest

import nnjax
from nnjax import checks, gradcheck


def test_passes_a_correct_derivative_on_every_leaf():
    params = {"x": jnp.linspace(-3.0, 3.0, 7), "nested": [jnp.ones((2, 3))]}

    def f(p):
        return jnp.sum(jnp.tanh(p["x"]) ** 2) + jnp.sum(jnp.sin(p["nested"][0]))

    def manual(p):
        t = jnp.tanh(p["x"])
        return {"x": 2 * t * (1 - t**2), "nested": [jnp.cos(p["nested"][0])]}

    report = gradcheck.check_gradient(f, manual, params)
    assert report.passed
    assert [leaf.path for leaf in report.leaves] == ["['nested'][0]", "['x']"]
    assert report.reverse_error <= 1e-14
    assert report.forward_error <= 1e-14
    assert report.finite_difference_error <= 1e-8
    assert sum(leaf.checked for leaf in report.leaves) == 13
    assert "PASS" in str(report)


@pytest.mark.parametrize("error", [1e-4, 1e-8])
def test_catches_a_derivative_that_is_slightly_wrong(error):
    """A derivative 0.01% (or 1e-6 %) off fails all of reverse and forward mode."""
    x = jnp.linspace(-2.0, 2.0, 9)
    report = gradcheck.check_gradient(
        lambda x: jnp.sum(nnjax.sigmoid(x)),
        lambda x: (1 + error) * nnjax.sigmoid_derivative(x),
        x,
    )
    assert not report.passed
    assert report.reverse_error == pytest.approx(error, rel=1e-3)
    # Forward mode sees the error projected on a random direction: at most the full error.
    assert gradcheck.DEFAULT_TOLERANCES.forward < report.forward_error <= error * (1 + 1e-3)
    assert "FAIL" in str(report)


def test_catches_the_spec_backward_pass_bug():
    """The spec takes the derivative at the wrong layer's z; the checker must notice."""
    layer_sizes, activation, loss = (3, 4, 5, 2), "tanh", "mse"
    with jax.enable_x64(True):
        params = nnjax.init_network(jax.random.key(0), layer_sizes, "xavier", jnp.float64)
        x = jax.random.normal(jax.random.key(1), (4, 3), jnp.float64)
        y = jax.random.normal(jax.random.key(2), (4, 2), jnp.float64)

    def wrong_backward(p):
        _, cache = nnjax.forward_pass(p, x, activation=activation, loss=loss)
        # Shift every hidden z by one layer, as the spec's cache['z' + str(l-1)] does.
        shifted = dict(cache, z2=jnp.pad(cache["z1"], ((0, 0), (0, 1))))
        return nnjax.backward_pass(p, x, y, shifted, activation=activation, loss=loss)

    report = gradcheck.check_gradient(
        lambda p: nnjax.network_loss(p, x, y, activation=activation, loss=loss),
        wrong_backward,
        params,
    )
    assert not report.passed
    assert report.reverse_error > 1e-3


def test_kinks_are_reported_not_silently_passed():
    """ReLU at 0: the coordinate is left out of the finite differences and counted."""
    x = jnp.array([-1.0, 0.0, 2e-6, 1.5])
    report = gradcheck.check_gradient(lambda x: jnp.sum(nnjax.relu(x)), nnjax.relu_derivative, x)
    (leaf,) = report.leaves
    assert leaf.near_kink == 2
    assert leaf.checked == 2
    assert report.passed
    all_kinks = gradcheck.check_gradient(
        lambda x: jnp.sum(nnjax.relu(x)), nnjax.relu_derivative, jnp.zeros(3)
    )
    assert math.isnan(all_kinks.finite_difference_error)
    assert not all_kinks.passed


def test_rejects_a_gradient_of_the_wrong_shape():
    with pytest.raises(
        ValueError, match=r"manual gradient\['b'\] has shape \(2,\), expected \(3,\)"
    ):
        gradcheck.check_gradient(
            lambda p: jnp.sum(p["b"] ** 2),
            lambda p: {"b": jnp.ones(2)},
            {"b": jnp.ones(3)},
        )


def test_large_leaves_sample_coordinates():
    x = jnp.linspace(-1.0, 1.0, 2000)
    report = gradcheck.check_gradient(
        lambda x: jnp.sum(x**3), lambda x: 3 * x**2, x, max_coordinates=64
    )
    assert report.passed
    assert report.leaves[0].checked == 64


@pytest.mark.parametrize("seed", range(5))
def test_every_leaf_gets_coordinates_beside_a_much_larger_leaf(seed):
    """Coordinates are sampled per leaf: a 3-element bias beside a 2000-element weight is checked
    on all 3, the weight on ``max_coordinates``."""
    params = {"W": jnp.linspace(-1.0, 1.0, 2000), "b": jnp.array([0.3, -0.2, 0.5])}
    report = gradcheck.check_gradient(
        lambda p: jnp.sum(p["W"] ** 3) + jnp.sum(jnp.sin(p["b"])),
        lambda p: {"W": 3 * p["W"] ** 2, "b": jnp.cos(p["b"])},
        params,
        key=jax.random.key(seed),
        max_coordinates=64,
    )
    assert report.passed, str(report)
    assert [(leaf.path, leaf.checked) for leaf in report.leaves] == [("['W']", 64), ("['b']", 3)]


def test_nan_in_one_leaf_fails_that_leaf_only_and_the_aggregates_are_nan():
    params = {"a": jnp.linspace(-1.0, 1.0, 5), "b": jnp.array([0.3, -0.2, 0.5])}

    def manual(p):
        return {"a": 2 * p["a"], "b": jnp.cos(p["b"]).at[1].set(jnp.nan)}

    report = gradcheck.check_gradient(
        lambda p: jnp.sum(p["a"] ** 2) + jnp.sum(jnp.sin(p["b"])), manual, params
    )
    a, b = report.leaves
    assert a.passed, str(report)
    assert max(a.reverse_error, a.forward_error) <= 1e-14
    assert a.finite_difference_error <= 1e-8
    assert not b.passed
    assert math.isnan(b.reverse_error) and math.isnan(b.forward_error)
    assert math.isnan(b.finite_difference_error)
    assert not report.passed
    assert math.isnan(report.reverse_error)
    assert math.isnan(report.forward_error)
    assert math.isnan(report.finite_difference_error)
    row = checks._row_from_report("nan_in_b", report)
    assert not row.passed
    assert checks.format_table([row]).splitlines()[2].split()[1:4] == ["nan"] * 3


def test_tree_relative_error_is_nan_if_any_leaf_is():
    expected = {"a": jnp.ones(3), "b": jnp.ones(2)}
    actual = {"a": jnp.ones(3), "b": jnp.array([1.0, jnp.nan])}
    assert math.isnan(gradcheck.tree_relative_error(actual, expected))
    assert gradcheck.tree_relative_error(expected, expected) == 0.0
