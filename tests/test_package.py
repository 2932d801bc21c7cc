"""Tests of the package itself: lazy submodules, explicit public names."""

import gc
import importlib
import subprocess
import sys

import pytest

import nnjax


def test_import_nnjax_loads_no_plotting_progress_or_dataset_library_nor_jax():
    code = (
        "import sys, nnjax; "
        "print(sorted(m for m in ('jax', 'matplotlib', 'tqdm', 'sklearn') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"


@pytest.mark.parametrize("name", nnjax.SUBMODULES)
def test_every_public_submodule_is_an_attribute_with_explicit_public_names(name):
    module = getattr(nnjax, name)
    assert module is importlib.import_module(f"nnjax.{name}")
    assert module.__all__, name
    for public in module.__all__:
        assert hasattr(module, public), f"nnjax.{name}.__all__ names a missing {public!r}"


def test_every_re_exported_name_is_its_module_s_object():
    for name in set(nnjax.__all__) - {"SUBMODULES", "__version__"}:
        module = importlib.import_module(f"nnjax.{nnjax._MODULE_OF[name]}")
        assert getattr(nnjax, name) is getattr(module, name), name
        assert name in module.__all__, name


def test_the_command_runs_without_the_cyclic_garbage_collector(monkeypatch):
    from nnjax import __main__ as command
    from nnjax import cli

    seen = []
    monkeypatch.setattr(cli, "run", lambda: seen.append(gc.isenabled()))
    try:
        command.run()
    finally:
        gc.enable()
    assert seen == [False]


def test_unknown_attributes_are_attribute_errors():
    with pytest.raises(AttributeError, match="has no attribute 'trainer'"):
        _ = nnjax.trainer
    assert set(nnjax.__all__) <= set(dir(nnjax))
