"""Tests of the package itself: lazy submodules, explicit public names."""

import importlib
import subprocess
import sys

import pytest

import nnjax


def test_import_nnjax_loads_no_plotting_progress_or_dataset_library():
    code = (
        "import sys, nnjax; "
        "print(sorted(m for m in ('matplotlib', 'tqdm', 'sklearn') if m in sys.modules))"
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


def test_unknown_attributes_are_attribute_errors():
    with pytest.raises(AttributeError, match="has no attribute 'trainer'"):
        _ = nnjax.trainer
    assert set(nnjax.__all__) <= set(dir(nnjax))
