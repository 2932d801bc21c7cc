"""Strict JAX settings for every test: a silent rank promotion or a warning fails the test."""

import jax
import matplotlib

matplotlib.use("Agg")
jax.config.update("jax_numpy_rank_promotion", "raise")
