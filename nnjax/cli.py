"""The ``nnjax`` command line.

``nnjax check`` proves every hand-written derivative and optimizer of the library (see
``nnjax.gradcheck``); it exits with status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnjax",
        description="The mathematics of neural networks in JAX, with proven hand-written gradients.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "check",
        help="verify every hand-written derivative against jax.grad, jax.jvp and finite differences",
        description=(
            "Check each hand-written derivative in nnjax (activations, losses, backward_pass for "
            "every hidden activation and output/loss pair, with L2 and dropout) against reverse "
            "mode, forward mode and central finite differences in float64, and each optimizer "
            "against its optax reference over 100 steps. Prints one row per check; exits 1 if "
            "any fails.\n\nexample:\n  nnjax check"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``nnjax`` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "check":
        from nnjax import gradcheck

        return gradcheck.main()
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
