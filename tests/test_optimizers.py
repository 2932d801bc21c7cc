"""Tests of nnjax.optimizers against optax, the spec's NumPy classes and closed forms.

The long trajectories (100 steps on a nested pytree) of every optimizer and its optax reference
run in lockstep inside one ``jax.lax.scan`` per dtype, computed once and shared by the
parametrized tests, so the whole comparison costs two compilations. Each distinct jitted function
costs a compilation (a good fraction of a second on a slow CPU), so the tests share functions and
shapes wherever they can.
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnjax
from nnjax import optimizers
from nnjax.optimizers import AdamState, MomentumState, SgdState

from helpers import jit_unoptimized, standard_promotion

STEPS = 100
# Relative error allowed, entry by entry, and also relative to the largest entry of each leaf
# (as an atol), so an entry that happens to pass near zero is not held to a relative error its
# magnitude cannot carry.
RTOL = {"float32": 1e-6, "float64": 1e-12}


def make_params(dtype, seed: int = 0):
    """The nested test pytree: a list of layer dicts and a tuple, with N(0, 1) values."""
    rng = np.random.default_rng(seed)
    return {
        "layers": [
            {
                "W": jnp.asarray(rng.normal(size=(3, 4)), dtype),
                "b": jnp.asarray(rng.normal(size=(4,)), dtype),
            }
        ],
        "extra": (jnp.asarray(rng.normal(size=(5,)), dtype),),
    }


def objective(p):
    """Smooth and non-quadratic, a different curvature per leaf: the gradient changes each step.

    Polynomial on purpose: transcendental functions here would make each compilation several
    times slower on CPU.
    """
    return sum(
        jnp.sum(0.05 * (i + 1) * w**4 + 0.5 * (w - 0.3) ** 2)
        for i, w in enumerate(jax.tree.leaves(p))
    )


def weights_only(p):
    """The leaves add_l2_penalty penalizes by default: those with two or more dimensions."""
    return [w for w in jax.tree.leaves(p) if w.ndim >= 2]


L2 = 0.03


def l2_objective(p):
    return objective(p) + nnjax.l2_regularization(weights_only(p), L2)


def schedule():
    return optax.exponential_decay(0.01, transition_steps=10, decay_rate=0.8)


def cases():
    """Name -> ((mine, its loss), (reference, its loss)).

    Learning rates small enough that no two optimizers have reached the optimum after
    ``STEPS`` steps, so the trajectories stay distinguishable.
    """
    s = schedule()
    same = lambda mine, ref: ((mine, objective), (ref, objective))  # noqa: E731
    return {
        "sgd": same(nnjax.sgd(0.02), optax.sgd(0.02)),
        "momentum": same(
            nnjax.momentum(0.03, 0.9),
            optax.chain(optax.ema(0.9, debias=False), optax.scale(-0.03)),
        ),
        "momentum_schedule_beta0.5": same(
            nnjax.momentum(s, 0.5),
            optax.chain(optax.ema(0.5, debias=False), optax.scale_by_learning_rate(s)),
        ),
        "classical_momentum": same(
            nnjax.classical_momentum(0.004, 0.9), optax.sgd(0.004, momentum=0.9)
        ),
        "classical_momentum_nesterov_schedule": same(
            nnjax.classical_momentum(s, 0.7, nesterov=True),
            optax.sgd(s, momentum=0.7, nesterov=True),
        ),
        "adam": same(nnjax.adam(0.01), standard_promotion(optax.adam(0.01))),
        "adam_schedule_hyperparameters": same(
            nnjax.adam(s, beta1=0.8, beta2=0.99, epsilon=1e-6, eps_root=1e-8),
            standard_promotion(optax.adam(s, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8)),
        ),
        # Composition: the L2 transformation chained before adam equals adam on the
        # gradients of loss + l2_regularization of the weight matrices (biases excluded).
        "l2_chain_adam": (
            (optax.chain(nnjax.add_l2_penalty(L2), nnjax.adam(0.01)), objective),
            (standard_promotion(optax.adam(0.01)), l2_objective),
        ),
    }


CASE_NAMES = list(cases())


def run_lockstep(entries, params, steps):
    """Runs every (optimizer, loss) of ``entries`` from ``params`` for ``steps``; one scan."""

    def body(carry, _):
        new = {}
        for name, (opt, loss) in entries.items():
            p, state = carry[name]
            updates, state = opt.update(jax.grad(loss)(p), state, p)
            new[name] = (optax.apply_updates(p, updates), state)
        return new, None

    init = {name: (params, opt.init(params)) for name, (opt, _) in entries.items()}
    final, _ = jax.lax.scan(body, init, None, length=steps)
    return {name: p for name, (p, _) in final.items()}


@functools.cache
def trajectories(dtype_name: str):
    """(start, {name: (mine, reference)}): parameters after ``STEPS`` steps, as NumPy arrays."""
    with jax.enable_x64(dtype_name == "float64"):
        params = make_params(jnp.dtype(dtype_name))
        entries = {}
        for name, (mine, ref) in cases().items():
            entries[f"{name}/mine"], entries[f"{name}/ref"] = mine, ref
        final = jit_unoptimized(lambda p: run_lockstep(entries, p, STEPS))(params)
        final, params = jax.tree.map(np.asarray, (final, params))
    return params, {name: (final[f"{name}/mine"], final[f"{name}/ref"]) for name in CASE_NAMES}


def assert_close_to_scale(actual, expected, rtol):
    """Each entry within rtol of the reference, or within rtol of its leaf's largest entry."""
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        chex.assert_trees_all_close(a, e, rtol=rtol, atol=rtol * float(np.max(np.abs(e))))


# ---------------------------------------------------------------------------------------------
# 100-step trajectories against optax
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("name", CASE_NAMES)
def test_trajectory_matches_optax(name, dtype_name):
    start, results = trajectories(dtype_name)
    mine, ref = results[name]
    chex.assert_trees_all_equal_structs(mine, ref)
    chex.assert_trees_all_equal_dtypes(mine, start)
    assert_close_to_scale(mine, ref, RTOL[dtype_name])
    # The parameters really moved, so this is not a no-op matching a no-op.
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), mine, start)
    assert min(jax.tree.leaves(moved)) > 0.02


def test_trajectories_differ_between_optimizers():
    """The optimizers end in different places, so the comparisons above can tell them apart."""
    _, results = trajectories("float64")
    finals = {name: mine["layers"][0]["W"] for name, (mine, _) in results.items()}
    for i, a in enumerate(CASE_NAMES):
        for b in CASE_NAMES[i + 1 :]:
            assert np.max(np.abs(finals[a] - finals[b])) > 1e-3, (a, b)


# ---------------------------------------------------------------------------------------------
# Single update steps, jitted and not
# ---------------------------------------------------------------------------------------------


def step_cases():
    """Name -> (nnjax optimizer, optax reference), with a constant learning rate."""
    return {
        "momentum": (
            nnjax.momentum(0.1, 0.9),
            optax.chain(optax.ema(0.9, debias=False), optax.scale(-0.1)),
        ),
        "classical_momentum": (nnjax.classical_momentum(0.1, 0.9), optax.sgd(0.1, momentum=0.9)),
        "nesterov": (
            nnjax.classical_momentum(0.1, 0.9, nesterov=True),
            optax.sgd(0.1, momentum=0.9, nesterov=True),
        ),
        "adam": (
            nnjax.adam(0.1, eps_root=1e-9),
            standard_promotion(optax.adam(0.1, eps_root=1e-9)),
        ),
    }


def two_steps(which: int, params, grad_seq):
    """Each step case's (updates, state) after each step, for nnjax (0) or optax (1)."""
    out = {}
    for name, pair in step_cases().items():
        opt = pair[which]
        state, steps = opt.init(params), []
        for grads in grad_seq:
            updates, state = opt.update(grads, state, params)
            params = optax.apply_updates(params, updates)
            steps.append((updates, state))
        out[name] = steps
    return out


def step_inputs():
    return make_params(jnp.float32), [make_params(jnp.float32, seed=10 + k) for k in range(2)]


@functools.cache
def reference_steps():
    params, grad_seq = step_inputs()
    return jit_unoptimized(functools.partial(two_steps, 1))(params, grad_seq)


class UpdateStepTest(chex.TestCase):
    """Update steps with unrelated gradients, compared with optax after every step."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_update_steps_match_optax(self):
        params, grad_seq = step_inputs()
        results = self.variant(functools.partial(two_steps, 0))(params, grad_seq)
        references = reference_steps()
        assert set(results) == set(step_cases())
        for name, steps in results.items():
            for k, ((updates, state), (ref_updates, _)) in enumerate(
                zip(steps, references[name], strict=True)
            ):
                message = f"{name}, step {k + 1}"
                assert_close_to_scale(updates, ref_updates, 1e-6)
                chex.assert_trees_all_equal_dtypes(updates, params, custom_message=message)
                assert state.count.dtype == jnp.int32, message
                assert int(state.count) == k + 1, message
                # Not trivial: the update moved the weights.
                assert float(jnp.max(jnp.abs(updates["layers"][0]["W"]))) > 1e-2, message
        # Adam's moments equal optax's (its ScaleByAdamState is the first in optax's chain).
        state, ref_state = results["adam"][-1][1], references["adam"][-1][1][0]
        assert isinstance(state, AdamState)
        assert int(ref_state.count) == 2
        assert_close_to_scale(state.mu, ref_state.mu, 1e-6)
        assert_close_to_scale(state.nu, ref_state.nu, 1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_schedule_evaluated_at_count_before_update(self):
        """A schedule sees 0 at the first update, 1 at the second...: update_k = -lr(k) g."""
        opt = nnjax.sgd(lambda count: 0.5 / (1.0 + count.astype(jnp.float32)))
        params, (grads, _) = step_inputs()
        update = self.variant(opt.update)
        state = opt.init(params)
        for k in range(3):
            updates, state = update(grads, state, params)
            expected = jax.tree.map(lambda g, k=k: -0.5 / (1.0 + k) * np.asarray(g), grads)
            chex.assert_trees_all_close(updates, expected, rtol=1e-6, atol=0)
            assert isinstance(state, SgdState)


# ---------------------------------------------------------------------------------------------
# The spec's NumPy classes, copied, as hand-computed references
# ---------------------------------------------------------------------------------------------


class SpecMomentumOptimizer:
    """The spec's MomentumOptimizer, verbatim apart from the names."""

    def __init__(self, learning_rate=0.01, beta=0.9):
        self.lr = learning_rate
        self.beta = beta
        self.velocity = {}

    def update(self, params, gradients):
        if not self.velocity:
            for key in params:
                self.velocity[key] = np.zeros_like(params[key])
        for key in params:
            self.velocity[key] = self.beta * self.velocity[key] + (1 - self.beta) * gradients[key]
            params[key] -= self.lr * self.velocity[key]


class SpecAdamOptimizer:
    """The spec's AdamOptimizer, verbatim apart from the names; keeps m_hat, v_hat for tests."""

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8):
        self.lr = learning_rate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.m = {}
        self.v = {}
        self.t = 0
        self.m_hat = {}
        self.v_hat = {}

    def update(self, params, gradients):
        if not self.m:
            for key in params:
                self.m[key] = np.zeros_like(params[key])
                self.v[key] = np.zeros_like(params[key])
        self.t += 1
        for key in params:
            self.m[key] = self.beta1 * self.m[key] + (1 - self.beta1) * gradients[key]
            self.v[key] = self.beta2 * self.v[key] + (1 - self.beta2) * gradients[key] ** 2
            m_hat = self.m[key] / (1 - self.beta1**self.t)
            v_hat = self.v[key] / (1 - self.beta2**self.t)
            self.m_hat[key], self.v_hat[key] = m_hat, v_hat
            params[key] -= self.lr * m_hat / (np.sqrt(v_hat) + self.epsilon)


def numpy_grad(params):
    """Gradient of sum(log cosh(w - 0.3) + 0.05 w^2), in NumPy."""
    return {k: np.tanh(w - 0.3) + 0.1 * w for k, w in params.items()}


def flat_params():
    rng = np.random.default_rng(7)
    return {"W": rng.normal(size=(3, 4)), "b": rng.normal(size=(4,))}


def test_adam_matches_spec_class_step_by_step():
    """Default hyperparameters of both; m, v, m_hat, v_hat and the parameters at every step."""
    with jax.enable_x64(True):
        spec = SpecAdamOptimizer()
        opt = nnjax.adam()
        update = jit_unoptimized(opt.update)
        np_params = flat_params()
        params = jax.tree.map(jnp.array, np_params)  # copies: the spec updates in place
        state = opt.init(params)
        for t in range(1, 6):
            grads = numpy_grad(np_params)
            spec.update(np_params, grads)
            updates, state = update(jax.tree.map(jnp.asarray, grads), state, params)
            params = optax.apply_updates(params, updates)
            assert isinstance(state, AdamState)
            assert int(state.count) == spec.t == t
            chex.assert_trees_all_close(state.mu, spec.m, rtol=1e-13, atol=0)
            chex.assert_trees_all_close(state.nu, spec.v, rtol=1e-13, atol=0)
            # The spec's bias-corrected update, from nnjax's own moments.
            m_hat = jax.tree.map(lambda m, t=t: np.asarray(m) / (1 - 0.9**t), state.mu)
            v_hat = jax.tree.map(lambda v, t=t: np.asarray(v) / (1 - 0.999**t), state.nu)
            chex.assert_trees_all_close(m_hat, spec.m_hat, rtol=1e-12, atol=0)
            chex.assert_trees_all_close(v_hat, spec.v_hat, rtol=1e-12, atol=0)
            expected = jax.tree.map(lambda m, v: -1e-3 * m / (np.sqrt(v) + 1e-8), m_hat, v_hat)
            chex.assert_trees_all_close(updates, expected, rtol=1e-12, atol=0)
            chex.assert_trees_all_close(params, np_params, rtol=1e-13, atol=1e-15)
            if t == 1:
                # m_hat = g, v_hat = g^2: the first step is lr * g / (|g| + eps) ~ lr * sign(g).
                first = jax.tree.map(lambda g: -1e-3 * g / (np.abs(g) + 1e-8), grads)
                chex.assert_trees_all_close(updates, first, rtol=1e-12, atol=0)


def test_momentum_matches_spec_class_step_by_step():
    with jax.enable_x64(True):
        spec = SpecMomentumOptimizer()  # lr 0.01, beta 0.9: the same defaults as nnjax's
        opt = nnjax.momentum()
        update = jit_unoptimized(opt.update)
        np_params = flat_params()
        params = jax.tree.map(jnp.array, np_params)  # copies: the spec updates in place
        state = opt.init(params)
        for _ in range(5):
            grads = numpy_grad(np_params)
            spec.update(np_params, grads)
            updates, state = update(jax.tree.map(jnp.asarray, grads), state, params)
            params = optax.apply_updates(params, updates)
            assert isinstance(state, MomentumState)
            chex.assert_trees_all_close(state.velocity, spec.velocity, rtol=1e-13, atol=0)
            chex.assert_trees_all_close(params, np_params, rtol=1e-13, atol=1e-15)


def test_sgd_is_minus_lr_times_gradient():
    with jax.enable_x64(True):
        grads = make_params(jnp.float64, seed=4)
        opt = nnjax.sgd(0.3)
        updates, state = opt.update(grads, opt.init(grads))
        expected = jax.tree.map(lambda g: -0.3 * np.asarray(g), grads)
        chex.assert_trees_all_close(updates, expected, rtol=1e-15, atol=0)
        assert isinstance(state, SgdState)
        assert int(state.count) == 1


def test_damped_and_classical_momentum_at_constant_gradient():
    """Constant g: damped steps are lr (1 - beta^t) g, classical ones 1/(1-beta) times that.

    So the first damped step is (1 - beta) lr g and the first classical step a full lr g.
    """
    lr, beta = 0.1, 0.8
    with jax.enable_x64(True):
        params = make_params(jnp.float64)
        g = make_params(jnp.float64, seed=5)
        damped, classical = nnjax.momentum(lr, beta), nnjax.classical_momentum(lr, beta)
        nesterov = nnjax.classical_momentum(lr, beta, nesterov=True)

        @jit_unoptimized
        def steps(params):
            def body(states, _):
                outs, new = [], []
                for opt, s in zip((damped, classical, nesterov), states, strict=True):
                    u, s = opt.update(g, s, params)
                    outs.append(u)
                    new.append(s)
                return tuple(new), tuple(outs)

            init = tuple(o.init(params) for o in (damped, classical, nesterov))
            return jax.lax.scan(body, init, None, length=20)[1]

        u_damped, u_classical, u_nesterov = steps(params)
        t = np.arange(1, 21, dtype=np.float64)
        for leaf_d, leaf_c, leaf_n, leaf_g in zip(
            *(jax.tree.leaves(x) for x in (u_damped, u_classical, u_nesterov, g)), strict=True
        ):
            gg = np.asarray(leaf_g)
            shape = (-1,) + (1,) * gg.ndim
            decay = (1 - beta**t).reshape(shape)
            chex.assert_trees_all_close(leaf_d, -lr * decay * gg, rtol=1e-13, atol=0)
            chex.assert_trees_all_close(leaf_c, -lr * decay * gg / (1 - beta), rtol=1e-13, atol=0)
            velocity = decay * gg / (1 - beta)
            chex.assert_trees_all_close(leaf_n, -lr * (gg + beta * velocity), rtol=1e-13, atol=0)
            # First steps: (1 - beta) lr g versus lr g, a ratio of 1 / (1 - beta).
            chex.assert_trees_all_close(leaf_d[0], -(1 - beta) * lr * gg, rtol=1e-14, atol=0)
            chex.assert_trees_all_close(leaf_c[0], -lr * gg, rtol=1e-14, atol=0)
            np.testing.assert_allclose(leaf_c[0] / leaf_d[0], 1 / (1 - beta), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# State: immutable NamedTuples, int32 count, the parameters' dtype
# ---------------------------------------------------------------------------------------------

ALL_OPTIMIZERS = {
    "sgd": lambda lr: nnjax.sgd(lr),
    "momentum": lambda lr: nnjax.momentum(lr, 0.9),
    "classical_momentum": lambda lr: nnjax.classical_momentum(lr, 0.9, nesterov=True),
    "adam": lambda lr: nnjax.adam(lr),
}
STATE_TYPES = {
    "sgd": SgdState,
    "momentum": MomentumState,
    "classical_momentum": MomentumState,
    "adam": AdamState,
}


def test_registry_lists_the_four_optimizers():
    expected = {
        "sgd": nnjax.sgd,
        "momentum": nnjax.momentum,
        "classical_momentum": nnjax.classical_momentum,
        "adam": nnjax.adam,
    }
    assert expected == optimizers.OPTIMIZERS


@pytest.mark.parametrize("name", list(ALL_OPTIMIZERS))
def test_state_is_immutable_namedtuple_with_int32_count(name):
    opt = ALL_OPTIMIZERS[name](0.1)
    params, (grads, _) = step_inputs()
    state = opt.init(params)
    assert type(state) is STATE_TYPES[name]
    assert isinstance(state, tuple)
    assert state.count.dtype == jnp.int32
    assert state.count.shape == ()
    assert int(state.count) == 0
    with pytest.raises(AttributeError):
        state.count = jnp.ones([], jnp.int32)
    zeros = jax.tree.map(jnp.zeros_like, params)
    for field in state._fields[1:]:
        # Moments start at zero with the parameters' structure, shapes and dtypes.
        chex.assert_trees_all_equal_shapes_and_dtypes(getattr(state, field), params)
        chex.assert_trees_all_equal(getattr(state, field), zeros)
    updates, new_state = opt.update(grads, state, params)
    assert type(new_state) is STATE_TYPES[name]
    assert new_state.count.dtype == jnp.int32
    assert int(new_state.count) == 1
    assert int(state.count) == 0, "update must not modify the old state"
    chex.assert_trees_all_equal_structs(updates, params)
    for field in state._fields[1:]:
        chex.assert_trees_all_equal(getattr(state, field), zeros)
        assert float(jnp.max(jnp.abs(getattr(new_state, field)["extra"][0]))) > 0


def dtypes_after_two_steps(opt, params):
    """Dtypes of (updates, state, new params) after two updates, traced but not compiled."""

    def two(params):
        state = opt.init(params)
        for _ in range(2):
            updates, state = opt.update(params, state, params)
        return updates, state, optax.apply_updates(params, updates)

    return jax.tree.map(lambda x: x.dtype, jax.eval_shape(two, params))


LEARNING_RATES = {
    "python_float": lambda: 0.1,
    "optax_schedule": lambda: optax.exponential_decay(0.1, 5, 0.5),
    # Strongly typed float64 rates (under x64): still cast to each leaf's dtype.
    "float64_array": lambda: jnp.asarray(0.1, jnp.float64),
    "float64_schedule": lambda: (
        lambda count: jnp.asarray(0.1, jnp.float64) / (1 + count).astype(jnp.float64)
    ),
}


@pytest.mark.parametrize(
    ("dtype", "x64", "lr_kind"),
    [
        (jnp.float32, True, "python_float"),
        (jnp.float32, True, "optax_schedule"),
        (jnp.float32, True, "float64_array"),
        (jnp.float32, True, "float64_schedule"),
        (jnp.float32, False, "python_float"),
        (jnp.float64, True, "python_float"),
        (jnp.bfloat16, True, "float64_schedule"),
    ],
)
@pytest.mark.parametrize("name", list(ALL_OPTIMIZERS))
def test_updates_and_state_keep_the_parameters_dtype(name, dtype, x64, lr_kind):
    """No float64 leak into float32 updates or state, even with x64 on and a Python rate."""
    with jax.enable_x64(x64):
        lr = LEARNING_RATES[lr_kind]()
        params = make_params(dtype)
        updates, state, new_params = dtypes_after_two_steps(ALL_OPTIMIZERS[name](lr), params)
    expected = jax.tree.map(lambda _: jnp.dtype(dtype), params)
    assert updates == expected
    assert new_params == expected
    for field in state._fields[1:]:
        assert getattr(state, field) == expected, field
    assert state.count == jnp.int32


def test_numpy_float64_beta_keeps_float32_state_under_x64():
    with jax.enable_x64(True):
        params = make_params(jnp.float32)
        updates, state, _ = dtypes_after_two_steps(nnjax.momentum(0.1, np.float64(0.9)), params)
    expected = jax.tree.map(lambda _: jnp.dtype(jnp.float32), params)
    assert state.velocity == expected
    assert updates == expected


# ---------------------------------------------------------------------------------------------
# Traced learning rates: jit and vmap sweeps
# ---------------------------------------------------------------------------------------------


def _sweep(lr):
    """nnjax's adam and damped momentum and optax's, 20 steps each, with a traced rate.

    Constructing the optimizers inside jit/vmap also shows that validation skips a traced
    rate (its value is unknown at trace time) instead of failing.
    """
    params = make_params(jnp.float32)
    entries = {
        "adam": (nnjax.adam(lr), objective),
        "adam_ref": (standard_promotion(optax.adam(lr)), objective),
        "momentum": (nnjax.momentum(lr, 0.9), objective),
        "momentum_ref": (optax.chain(optax.ema(0.9, debias=False), optax.scale(-lr)), objective),
    }
    return run_lockstep(entries, params, 20)


LRS = (0.01, 0.05, 0.2)


@functools.cache
def sweep_results():
    single = jit_unoptimized(_sweep)
    separate = [single(jnp.asarray(lr, jnp.float32)) for lr in LRS]
    swept = jit_unoptimized(jax.vmap(_sweep))(jnp.asarray(LRS, jnp.float32))
    return separate, swept


@pytest.mark.parametrize("name", ["adam", "momentum"])
def test_traced_learning_rate_in_jit_matches_optax(name):
    separate, _ = sweep_results()
    for run in separate:
        assert_close_to_scale(run[name], run[f"{name}_ref"], 1e-6)


@pytest.mark.parametrize("name", ["adam", "momentum"])
def test_vmap_over_learning_rates_equals_separate_runs(name):
    separate, swept = sweep_results()
    for i, run in enumerate(separate):
        assert_close_to_scale(jax.tree.map(lambda x, i=i: x[i], swept[name]), run[name], 1e-6)
    # The three learning rates gave three different results.
    finals = [np.asarray(swept[name]["extra"][0][i]) for i in range(len(LRS))]
    for a in range(len(LRS)):
        for b in range(a + 1, len(LRS)):
            assert np.max(np.abs(finals[a] - finals[b])) > 1e-3


# ---------------------------------------------------------------------------------------------
# Hyperparameter validation
# ---------------------------------------------------------------------------------------------

BAD = [
    ("sgd", {"learning_rate": 0.0}, "learning_rate"),
    ("sgd", {"learning_rate": -0.1}, "learning_rate"),
    ("sgd", {"learning_rate": math.nan}, "learning_rate"),
    ("sgd", {"learning_rate": jnp.asarray(-1.0)}, "learning_rate"),
    ("momentum", {"learning_rate": 0.0}, "learning_rate"),
    ("momentum", {"beta": 1.0}, "beta"),
    ("momentum", {"beta": -0.1}, "beta"),
    ("momentum", {"beta": 1.5}, "beta"),
    ("classical_momentum", {"learning_rate": -1.0}, "learning_rate"),
    ("classical_momentum", {"learning_rate": 0.1, "beta": 1.0}, "beta"),
    ("classical_momentum", {"learning_rate": 0.1, "beta": -0.01}, "beta"),
    ("adam", {"learning_rate": 0.0}, "learning_rate"),
    ("adam", {"beta1": 1.0}, "beta1"),
    ("adam", {"beta1": -0.5}, "beta1"),
    ("adam", {"beta2": 1.0}, "beta2"),
    ("adam", {"beta2": -1e-3}, "beta2"),
    ("adam", {"epsilon": 0.0}, "epsilon"),
    ("adam", {"epsilon": -1e-8}, "epsilon"),
    ("adam", {"eps_root": -1e-8}, "eps_root"),
    ("sgd", {"learning_rate": math.inf}, "learning_rate"),
    ("adam", {"epsilon": math.inf}, "epsilon"),
    # an array of hyperparameters would broadcast every update to its shape
    ("sgd", {"learning_rate": jnp.array([0.1, 0.2])}, "learning_rate"),
    ("momentum", {"beta": np.array([0.5])}, "beta"),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "param"), BAD, ids=[f"{n}-{p}-{list(k.values())[-1]}" for n, k, p in BAD]
)
def test_bad_hyperparameters_raise_value_error_naming_them(name, kwargs, param):
    with pytest.raises(ValueError, match=rf"^{param} "):
        optimizers.OPTIMIZERS[name](**kwargs)


def _sign(g):
    return np.sign(g)  # Adam's first update: m / sqrt(v) with m = g, v = g^2 (bias-corrected)


@pytest.mark.parametrize(
    ("make", "lr", "direction", "rtol"),
    [
        (lambda: nnjax.momentum(0.1, beta=0.0), 0.1, np.asarray, 1e-6),
        (lambda: nnjax.classical_momentum(1e-9, beta=0.0), 1e-9, np.asarray, 1e-6),
        (lambda: nnjax.adam(0.1, beta1=0.0, beta2=0.0, eps_root=0.0), 0.1, _sign, 1e-6),
        # float32 rounds 0.999999 to 0.99999899: the bias correction is 1.3% off 1 - beta
        (lambda: nnjax.adam(0.1, beta1=0.999999, beta2=0.999999, epsilon=1e-30), 0.1, _sign, 1e-2),
        (lambda: nnjax.sgd(optax.constant_schedule(0.1)), 0.1, np.asarray, 1e-6),
    ],
)
def test_boundary_hyperparameters_are_accepted(make, lr, direction, rtol):
    """Each builds an optimizer whose first update is ``-lr`` times its first direction."""
    opt = make()
    assert isinstance(opt, optax.GradientTransformation)
    params, grads = jnp.ones(3), jnp.array([0.5, -2.0, 0.25])
    updates, _ = opt.update(grads, opt.init(params), params)
    np.testing.assert_allclose(updates, -lr * direction(grads), rtol=rtol)


def test_adam_in_bfloat16_moves_like_optax():
    """bfloat16 rounds 0.999 to 1: the bias correction 1 - beta2^t is computed in float32 (as
    optax does), so parameters move, and a zero gradient leaves them finite."""
    params = {"w": jnp.array([1.0, -2.0, 0.5], jnp.bfloat16), "b": jnp.zeros(2, jnp.bfloat16)}
    grads = {"w": jnp.array([0.3, -0.2, 0.1], jnp.bfloat16), "b": jnp.zeros(2, jnp.bfloat16)}
    results = []
    for opt in (nnjax.adam(0.01), standard_promotion(optax.adam(0.01))):

        def step(_, carry, opt=opt):
            p, state = carry
            updates, state = opt.update(grads, state, p)
            return optax.apply_updates(p, updates), state

        p, _ = jax.jit(lambda p, s, step=step: jax.lax.fori_loop(0, 50, step, (p, s)))(
            params, opt.init(params)
        )
        results.append(jax.tree.map(lambda a: np.asarray(a, np.float32), p))
    mine, reference = results
    assert np.isfinite(mine["b"]).all() and (mine["b"] == 0).all()
    chex.assert_trees_all_close(mine, reference, rtol=2e-2, atol=0.0)
    assert np.abs(mine["w"] - np.asarray(params["w"], np.float32)).min() > 0.3


def test_beta_zero_momentum_is_sgd_for_both_forms():
    """beta = 0: both momentum forms reduce to plain gradient descent."""
    with jax.enable_x64(True):
        params = make_params(jnp.float64)
        grads = make_params(jnp.float64, seed=8)
        expected = jax.tree.map(lambda g: -0.2 * np.asarray(g), grads)
        for opt in (nnjax.momentum(0.2, 0.0), nnjax.classical_momentum(0.2, 0.0)):
            state = opt.init(params)
            for _ in range(2):
                updates, state = opt.update(grads, state, params)
                chex.assert_trees_all_close(updates, expected, rtol=1e-15, atol=0)


WRONG_TYPES = [
    ("sgd", {"learning_rate": "0.1"}, "learning_rate"),
    ("sgd", {"learning_rate": True}, "learning_rate"),
    ("momentum", {"learning_rate": 0.1, "beta": "0.9"}, "beta"),
    ("classical_momentum", {"learning_rate": 0.1, "beta": None}, "beta"),
    ("classical_momentum", {"learning_rate": 0.1, "nesterov": "yes"}, "nesterov"),
    ("adam", {"learning_rate": 1j}, "learning_rate"),
    ("adam", {"beta1": "0.9"}, "beta1"),
    ("adam", {"epsilon": "1e-8"}, "epsilon"),
    ("adam", {"eps_root": [0.0]}, "eps_root"),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "param"), WRONG_TYPES, ids=[f"{n}-{p}" for n, _, p in WRONG_TYPES]
)
def test_hyperparameters_of_the_wrong_type_are_refused_when_built(name, kwargs, param):
    """Refused by the constructor, not at the first update: ``sgd("0.1")`` is a TypeError."""
    with pytest.raises(TypeError, match=rf"^{param} must be a"):
        optimizers.OPTIMIZERS[name](**kwargs)


BETAS_ROUNDING_TO_ONE = [
    (lambda: nnjax.adam(1e-3, beta1=0.99999999), "beta1"),
    (lambda: nnjax.adam(1e-3, beta2=0.99999999), "beta2"),
    (lambda: nnjax.momentum(1e-3, beta=0.99999999), "beta"),
    (lambda: nnjax.classical_momentum(1e-3, beta=0.99999999), "beta"),
]


@pytest.mark.parametrize(
    ("make", "param"),
    BETAS_ROUNDING_TO_ONE,
    ids=["adam-beta1", "adam-beta2", "momentum", "classical_momentum"],
)
def test_betas_that_round_to_one_in_the_parameters_dtype_are_refused(make, param):
    """0.99999999 < 1 passes the constructor but is 1.0 in float32: init and update refuse it."""
    opt = make()
    params = make_params(jnp.float32)
    with pytest.raises(ValueError, match=rf"^{param}=0.99999999 rounds to 1.0 in float32"):
        opt.init(params)
    with jax.enable_x64(True):
        state = opt.init(make_params(jnp.float64))  # exact in float64
    with pytest.raises(ValueError, match=rf"^{param}=0.99999999 rounds to 1.0 in float32"):
        opt.update(params, state, params)


def test_momentum_beta_rounding_to_one_in_bfloat16_is_refused():
    """The velocity is kept in the parameters' dtype, where 0.999 is 1.0 in bfloat16."""
    with pytest.raises(ValueError, match=r"^beta=0.999 rounds to 1.0 in bfloat16"):
        nnjax.momentum(0.1, 0.999).init(make_params(jnp.bfloat16))


def test_adam_default_epsilon_is_the_smallest_normal_number_in_float16():
    """1e-8 rounds to 0 in float16 (a zero gradient would give 0 / 0); the default is raised."""
    params = make_params(jnp.float16)
    zeros = jax.tree.map(jnp.zeros_like, params)
    opt = nnjax.adam(1e-3)
    state = opt.init(params)
    for grads in (zeros, make_params(jnp.float16, seed=3)):
        updates, state = opt.update(grads, state, params)
        assert all(np.isfinite(np.asarray(u, np.float32)).all() for u in jax.tree.leaves(updates))
    # the same bits as an explicit epsilon of float16's smallest normal number
    explicit = nnjax.adam(1e-3, epsilon=float(jnp.finfo(jnp.float16).tiny))
    grads = make_params(jnp.float16, seed=3)
    chex.assert_trees_all_equal(
        opt.update(grads, opt.init(params), params),
        explicit.update(grads, opt.init(params), params),
    )


def test_adam_explicit_epsilon_that_rounds_to_zero_is_refused():
    opt = nnjax.adam(1e-3, epsilon=1e-8)
    with pytest.raises(ValueError, match=r"^epsilon=1e-08 is not representable in float16"):
        opt.init(make_params(jnp.float16))
    opt.init(make_params(jnp.bfloat16))  # bfloat16 has float32's range


def test_adam_default_epsilon_is_unchanged_in_float32():
    """The default stays 1e-8 where it is a normal number: the same bits as an explicit 1e-8."""
    params, grads = make_params(jnp.float32), make_params(jnp.float32, seed=5)
    results = []
    for opt in (nnjax.adam(1e-3), nnjax.adam(1e-3, epsilon=1e-8)):
        state = opt.init(params)
        for _ in range(3):
            updates, state = opt.update(jax.tree.map(lambda g: 1e-9 * g, grads), state, params)
        results.append(updates)
    chex.assert_trees_all_equal(*results)


def test_an_equal_optimizer_built_again_reuses_the_compiled_training_program():
    from nnjax import program, training

    assert nnjax.adam(2e-2) is nnjax.adam(2e-2) and nnjax.sgd(0.1) is not nnjax.sgd(0.2)
    traced = jnp.float32(2e-2)  # an array argument is never kept: a new transformation
    assert nnjax.adam(traced) is not nnjax.adam(traced)
    x = jax.random.normal(jax.random.key(0), (8, 2))
    y = (x[:, 0] > 0).astype(jnp.int32)
    params = nnjax.init_network(jax.random.key(1), [2, 3, 2], "he")
    options = {"epochs": 1, "batch_size": 8, "key": jax.random.key(2)}
    training.train(params, x, y, optimizer=nnjax.adam(2e-2), **options)
    compiled = program._compile.cache_info().misses
    training.train(params, x, y, optimizer=nnjax.adam(2e-2), **options)
    assert program._compile.cache_info().misses == compiled
