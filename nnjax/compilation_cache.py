"""The persistent compilation cache of the command line: compiled programs kept between runs.

A second ``nnjax train`` of the same configuration loads its compiled programs from the cache
folder instead of compiling them again. Only the command line turns the cache on (``use``);
``import nnjax`` never does, and the tests keep it off.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["LIMIT_BYTES", "use"]

LIMIT_BYTES = 512 * 2**20


def use() -> None:
    """Keeps compiled programs in the user's cache folder, so a second run skips compiling.

    Off with ``NNJAX_COMPILATION_CACHE=0`` (or the command's ``--no-compilation-cache``). The
    folder is ``$NNJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/nnjax`` or ``~/.cache/nnjax``, capped
    at 512 MiB; a folder that cannot be created leaves the cache off, silently. Only the command
    line turns it on, never ``import nnjax``.
    """
    if os.environ.get("NNJAX_COMPILATION_CACHE", "1") == "0":
        return
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    folder = Path(os.environ.get("NNJAX_CACHE_DIR") or Path(base) / "nnjax")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_compilation_cache_max_size", LIMIT_BYTES)
    # Every program: a run's setup programs compile in 0.1-0.2 s each, more than a read costs.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
