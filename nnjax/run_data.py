r"""The data a run trains on: a built-in dataset or a data file, split and standardized.

``load`` reads what a configuration (``runs.make_config``) names: a built-in ``dataset``
(``datasets.load_dataset``, ``n_samples`` sizing the synthetic ones), or ``data``, a ``.npz`` or
``.csv`` file (``nnjax.datafiles``), split and standardized the same way
(``datasets.train_test_split``, then ``datasets.standardize``). With ``loss="mse"`` the file's
``y`` are regression targets, standardized with the training split's statistics as the inputs
are, :math:`y' = (y - \mu) / \sigma`; with the other losses they are class labels
``0 .. K-1``.

``load`` is ``read`` (on the host: the file read and checked, the data's dimensions known) then
``split`` (one compiled program), so that a run can initialize its network meanwhile.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from nnjax import _staging, _validation, datafiles, datasets

__all__ = [
    "DATA_OPTIONS",
    "RunData",
    "Source",
    "check_unchanged",
    "load",
    "name",
    "read",
    "run_keys",
    "split",
]

DATA_OPTIONS = ("data", "label_column", "n_samples")
"""The configuration keys of the data beside ``dataset``, None unless given. Run folders written
before they existed lack them."""


class RunData(NamedTuple):
    r"""What ``load`` returns.

    Attributes:
      dataset: the ``datasets.Dataset``, split and standardized. For regression, ``y_train``
        and ``y_test`` are the standardized targets, float32 ``(n, 1)``, and ``num_classes`` is 0.
      target_scale: for regression, the training targets' ``(mean, std)``, which give the
        targets back as :math:`y = y' \sigma + \mu`; else None.
      sha256: the data file's SHA-256; None for a built-in dataset.
    """

    dataset: datasets.Dataset
    target_scale: tuple[float, float] | None
    sha256: str | None


def name(config: dict[str, Any]) -> str:
    """The name of a configuration's data: the built-in dataset's, or the file's without suffix.

    Args:
      config: a run's configuration (``runs.make_config``).

    Returns:
      E.g. ``"digits"``, or ``"houses"`` for ``data="/data/houses.csv"``.
    """
    return config["dataset"] if config["data"] is None else Path(config["data"]).stem


class Source(NamedTuple):
    """A run's data as ``read`` finds it, before ``split`` splits it.

    Attributes:
      num_features: the number of features of each example.
      num_classes: the number of classes; 0 for regression.
      sha256: the data file's SHA-256; None for a built-in dataset.
      arrays: the data file's ``(x, y)``, checked: float32 inputs, int32 labels ``0 .. K-1`` or
        float32 targets; None for a built-in dataset.
    """

    num_features: int
    num_classes: int
    sha256: str | None = None
    arrays: tuple[np.ndarray, np.ndarray] | None = None


def read(config: dict[str, Any]) -> Source:
    """What ``split`` needs of the data ``config`` names: a data file is read and checked.

    Args:
      config: a run's configuration (``runs.make_config``).

    Returns:
      A ``Source``.

    Raises:
      ValueError: one line, for a malformed data file, labels or targets that do not fit the
        loss, ``n_samples`` for data of a fixed size, or ``label_column`` without a file.
    """
    if config["data"] is not None:
        if config["n_samples"] is not None:
            raise ValueError("--n-samples sizes the synthetic datasets, not a data file")
        return _read_file(config)
    if config["label_column"] is not None:
        raise ValueError("--label-column names a column of a --data .csv file")
    if config["loss"] == "mse":
        raise ValueError(
            "--loss mse trains on regression targets: give them in a data file (--data FILE)"
        )
    if config["n_samples"] is not None and config["dataset"] not in datasets.SYNTHETIC_DATASETS:
        raise ValueError(
            f"--n-samples sizes the synthetic datasets ({', '.join(datasets.SYNTHETIC_DATASETS)})"
            f"; {config['dataset']!r} has a fixed size"
        )
    return Source(*datasets.dimensions(config["dataset"]))


@jax.jit
def run_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A run's three keys, split from ``jax.random.key(seed)``: its data (generating it and
    choosing its split, as ``datasets.load_dataset`` takes a key), its initial parameters, and
    training (shuffling and dropout)."""
    return tuple(jax.random.split(jax.random.key(seed), 3))


def split(
    config: dict[str, Any], source: Source, seed: int
) -> tuple[datasets.Dataset, tuple[float, float] | None]:
    """The data of ``source`` (``read(config)``), split by the seed's data key and standardized.

    One compiled program derives the key (``run_keys``) and splits the data
    (``datasets.split_arrays``, or a data file's own split).

    Args:
      config: a run's configuration (``runs.make_config``).
      source: its data, read.
      seed: the run's seed.

    Returns:
      ``RunData``'s ``dataset`` and ``target_scale``.
    """
    test_fraction = config["test_fraction"]
    if source.arrays is None:
        dataset, n_samples = config["dataset"], config["n_samples"]
        x, y = datasets.source_arrays(dataset)
        arrays = _split_dataset(seed, x, y, dataset, test_fraction, n_samples)
        return datasets.Dataset(dataset, *arrays, source.num_classes), None
    regression = source.num_classes == 0
    *arrays, (mean, std) = _split_file(seed, *source.arrays, test_fraction, regression)
    scale = (float(np.asarray(mean)[0]), float(np.asarray(std)[0])) if regression else None
    return datasets.Dataset(name(config), *arrays, source.num_classes), scale


def load(config: dict[str, Any], seed: int) -> RunData:
    """The data ``config`` names, split by the data key of ``seed`` (``run_keys``).

    ``read``, then ``split``.

    Args:
      config: a run's configuration (``runs.make_config``).
      seed: the run's seed.

    Returns:
      A ``RunData``.

    Raises:
      ValueError: as ``read``.
    """
    source = read(config)
    return RunData(*split(config, source, seed), source.sha256)


@functools.partial(jax.jit, static_argnums=(3, 4, 5), compiler_options=_staging.RUN_ONCE)
def _split_dataset(
    seed: int,
    x: np.ndarray | None,
    y: np.ndarray | None,
    dataset: str,
    test_fraction: float,
    n_samples: int | None,
) -> tuple:
    """A built-in dataset split by the seed's data key, with the key in the same program."""
    return datasets.split_arrays(run_keys(seed)[0], x, y, dataset, test_fraction, n_samples)


def _read_file(config: dict[str, Any]) -> Source:
    """``read`` of a data file: its arrays checked against the loss."""
    path = config["data"]
    file = datafiles.read_data_file(path, config["label_column"])
    try:
        x = _validation.check_float32_values("x", file.x)
        if config["loss"] == "mse":
            y, num_classes = _validation.check_float32_values("y", file.y), 0
        else:
            y, num_classes = _labels(file.y)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return Source(x.shape[1], num_classes, file.sha256, (x, y))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _split_file(
    seed: int, x: np.ndarray, y: np.ndarray, test_fraction: float, regression: bool
) -> tuple:
    """A data file's arrays split by the seed's data key and standardized, and the targets' mean
    and std, in one compiled program (``_staging``: the same bits as step by step)."""
    arrays = functools.partial(_split_file_arrays, test_fraction, regression)
    return _staging.replay(arrays, run_keys(seed)[0], x, y)


def _split_file_arrays(
    test_fraction: float, regression: bool, key: jax.Array, x: jax.Array, y: jax.Array
) -> tuple:
    """``_split_file``'s steps, one by one."""
    _, split_key = jax.random.split(key)  # as load_dataset: the other half generates data
    x_train, y_train, x_test, y_test = datasets.train_test_split(split_key, x, y, test_fraction)
    x_train, x_test, _, _ = datasets.standardize(x_train, x_test)
    scale = (None, None)
    if regression:
        y_train, y_test, *scale = datasets.standardize(y_train[:, None], y_test[:, None])
    return x_train, y_train, x_test, y_test, tuple(scale)


def _labels(y: np.ndarray) -> tuple[np.ndarray, int]:
    """Class labels ``0 .. K-1`` as int32, and ``K``: at least 2, at most one per sample."""
    try:
        _validation.check_labels("y", y, len(y))
    except ValueError as error:
        raise ValueError(f"{error} (class labels; regression targets take --loss mse)") from None
    num_classes = int(y.max()) + 1
    if num_classes < 2:
        raise ValueError("y holds class 0 only: classification needs two classes or more")
    return y.astype(np.int32), num_classes


def check_unchanged(saved: dict[str, Any], config: dict[str, Any]) -> None:
    """Raises ValueError if the data file of ``config`` changed since ``saved`` recorded it.

    Args:
      saved: the configuration a run folder recorded, with its file's ``data_sha256``.
      config: the configuration of the same run now, the file read again (``runs.Run.config``).

    Raises:
      ValueError: if both name the same file and its SHA-256 differs. A different file is a
        different option, refused as such by ``folders.resume``.
    """
    data = config.get("data")
    if data is None or saved.get("data") != data:
        return
    before, now = saved.get("data_sha256"), config.get("data_sha256")
    if before != now:
        raise ValueError(
            f"the data file {data} changed since the run trained on it (SHA-256 "
            f"{str(before)[:16]}... then, {str(now)[:16]}... now)"
        )
