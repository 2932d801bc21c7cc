"""``python -m nnjax``: the ``nnjax`` command (``nnjax.cli``)."""

from nnjax.cli import run

run()
