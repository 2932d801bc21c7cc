"""nnjax: the mathematics of neural networks as pure, jit-compiled JAX functions."""
