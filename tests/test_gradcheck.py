"""Tests of nnjax.gradcheck: it passes right derivatives, catches wrong ones, and reports kinks."""

import functools
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


def test_args_are_passed_as_data_not_kept_from_an_earlier_check():
    """``f(params, *args)``: a second check of the same functions sees its own data, though it
    reuses the first check's compiled program."""
    x = jnp.linspace(-1.0, 1.0, 5)
    ones, twos = jnp.ones(5), jnp.full(5, 2.0)

    def f(x, c):
        return jnp.sum(c * jnp.sin(x))

    def ignores_c(x, c):
        return jnp.cos(x)

    assert gradcheck.check_gradient(f, ignores_c, x, args=(ones,)).passed
    report = gradcheck.check_gradient(f, ignores_c, x, args=(twos,))
    assert not report.passed
    assert report.reverse_error == pytest.approx(0.5)


def test_check_vjp_passes_args_after_the_cotangent():
    x, w = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), jnp.arange(12.0).reshape(3, 4) / 10

    def f(x, w):
        return jnp.tanh(x @ w)

    def manual_vjp(x, u, w):
        return (u * (1 - f(x, w) ** 2)) @ w.T

    report = gradcheck.check_vjp(f, manual_vjp, x, args=(w,))
    assert report.passed, str(report)


def test_compiler_options_this_xla_rejects_fall_back_to_the_optimization_level(monkeypatch):
    assert gradcheck._compiler_options() is gradcheck._COMPILER_OPTIONS
    bogus = {**gradcheck._COMPILER_OPTIONS, "xla_no_such_option": True}
    monkeypatch.setattr(gradcheck, "_COMPILER_OPTIONS", bogus)
    gradcheck._compiler_options.cache_clear()
    try:
        assert gradcheck._compiler_options() == {"xla_backend_optimization_level": 0}
    finally:
        gradcheck._compiler_options.cache_clear()


def test_tree_relative_error_is_nan_if_any_leaf_is():
    expected = {"a": jnp.ones(3), "b": jnp.ones(2)}
    actual = {"a": jnp.ones(3), "b": jnp.array([1.0, jnp.nan])}
    assert math.isnan(gradcheck.tree_relative_error(actual, expected))
    assert gradcheck.tree_relative_error(expected, expected) == 0.0


def _softplus(x):
    return jnp.logaddexp(x, 0.0)


def test_str_shows_tolerances_worst_coordinate_and_verdict():
    """A bare array is named ``params``; each witness's tolerance, the worst coordinate with its
    manual and reference values, and the failing witnesses are in the text."""
    x = jnp.linspace(-2.0, 2.0, 6).reshape(2, 3)
    report = gradcheck.check_gradient(
        lambda x: jnp.sum(jnp.sin(x)), lambda x: jnp.cos(x).at[1, 2].multiply(1.5), x
    )
    (leaf,) = report.leaves
    assert leaf.path == "params"
    assert leaf.worst.index == (1, 2)
    assert leaf.worst.manual == pytest.approx(1.5 * math.cos(2.0))
    assert leaf.worst.reference == pytest.approx(math.cos(2.0))
    assert leaf.worst_finite_difference.index == (1, 2)
    text = str(report)
    lines = text.splitlines()
    assert lines[3].split() == ["tolerance", "1e-10", "1e-10", "1e-06"]
    assert any(line.startswith("params[1, 2]") and "reverse mode" in line for line in lines)
    assert f"{1.5 * math.cos(2.0):.12g}" in text
    assert lines[-1] == "FAIL: params (reverse mode, forward mode, finite differences)"


def test_float32_inside_f_is_told_apart_from_kinks():
    x = jnp.linspace(-1.0, 1.0, 7)

    def f32(x):
        return jnp.sum(jnp.sin(x.astype(jnp.float32)))

    for f in (f32, lambda x: f32(x).astype(jnp.float64)):
        report = gradcheck.check_gradient(f, jnp.cos, x)
        (leaf,) = report.leaves
        assert leaf.float32 and leaf.near_kink == 0 and leaf.checked == 7
        assert not report.passed
        assert "f computes in float32: use float64 inside f for a tight check" in str(report)
    float64 = gradcheck.check_gradient(lambda x: jnp.sum(jnp.sin(x)), jnp.cos, x)
    assert float64.passed and not float64.leaves[0].float32


def test_check_vjp_random_cotangent_catches_what_ones_hide():
    """A centring's derivative with the mean taken over the wrong axis: the mean of a ones
    cotangent is one along either axis, so only a random cotangent tells them apart."""
    x = jax.random.normal(jax.random.key(1), (3, 4))

    def f(x):
        return jnp.tanh(x) - jnp.mean(x, axis=1, keepdims=True)

    def manual_vjp(x, u, axis):
        return (1 - jnp.tanh(x) ** 2) * u - jnp.mean(u, axis=axis, keepdims=True)

    wrong = functools.partial(manual_vjp, axis=0)
    ones = gradcheck.check_vjp(f, wrong, x, cotangent=jnp.ones((3, 4)))
    assert ones.passed, str(ones)
    random = gradcheck.check_vjp(f, wrong, x, key=jax.random.key(2))
    assert not random.passed
    assert random.reverse_error > 1e-2
    assert random.leaves[0].path == "x"
    right = gradcheck.check_vjp(f, functools.partial(manual_vjp, axis=1), x)
    assert right.passed, str(right)


def test_check_elementwise_checks_a_derivative_in_one_call():
    report = gradcheck.check_elementwise(_softplus, nnjax.sigmoid)
    assert report.passed, str(report)
    assert report.leaves[0].checked == 64
    wrong = gradcheck.check_elementwise(_softplus, lambda x: nnjax.sigmoid(x) * (1 - 1e-6))
    assert not wrong.passed
    assert wrong.reverse_error == pytest.approx(1e-6, rel=1e-3)
    at_points = gradcheck.check_elementwise(_softplus, nnjax.sigmoid, jnp.array([[0.5, -3.0]]))
    assert at_points.passed and at_points.leaves[0].checked == 2
    with pytest.raises(ValueError, match=r"f\(x\) has shape \(\) but x has shape \(64,\)"):
        gradcheck.check_elementwise(jnp.sum, nnjax.sigmoid)
