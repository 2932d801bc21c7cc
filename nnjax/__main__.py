"""``python -m nnjax`` and the ``nnjax`` command: ``nnjax.cli.run``, with Python's cyclic garbage
collector off from the start.

Each of the collector's full passes walks every object JAX, XLA and matplotlib hold: with it on,
importing them and running a command would spend about 0.35 s in it. The cycles a command leaves
are those of its few traced programs (about 35,000 objects for ``nnjax train``), however many
epochs it trains; reference counting frees everything else as it goes. ``import nnjax`` imports
nothing heavy (PEP 562), so the collector is off before JAX is imported.
"""

import gc


def run() -> None:
    """The ``nnjax`` command: ``nnjax.cli.run`` without the cyclic garbage collector."""
    gc.disable()
    from nnjax import cli  # and with it JAX: after gc.disable

    cli.run()


if __name__ == "__main__":
    run()
