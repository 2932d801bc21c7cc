"""Strict JAX settings for every test: a silent rank or dtype promotion, or a warning, fails the
test."""

import os

# The suite compiles many small programs and runs each a few times: XLA's optimization passes
# would cost more compile time than they save. Must be set before JAX starts its backend.
# The tests compile afresh: the command line's persistent compilation cache stays off, for the
# CLI run in-process and in every subprocess.
os.environ["NNJAX_COMPILATION_CACHE"] = "0"
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]
).strip()

import jax
import matplotlib

matplotlib.use("Agg")
jax.config.update("jax_numpy_rank_promotion", "raise")
# Strict dtype promotion: mixing two dtypes (float32 with float64, a float with an int array)
# raises instead of promoting.
jax.config.update("jax_numpy_dtype_promotion", "strict")
