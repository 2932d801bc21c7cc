"""Tests for nnjax.plotting: every figure is a readable PNG, confusion counts are exact."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.figure import Figure

from nnjax import _figures, plotting, run_plots

from helpers import PNG_SIGNATURE


def assert_png(path: Path, *, min_width: int = 200, min_height: int = 200) -> np.ndarray:
    """Checks ``path`` is a PNG matplotlib can read, of a plausible size; returns the image."""
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert min_width <= width <= 3000
    assert min_height <= height <= 3000
    assert image.shape[2] in (3, 4)
    # Not blank: a figure with curves has more than one color.
    assert np.ptp(image[..., :3]) > 0
    # No temporary file is left beside it.
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    return image


def test_never_imports_pyplot(tmp_path: Path) -> None:
    # In a fresh interpreter: importing and plotting never loads pyplot (and so no GUI backend).
    code = (
        "import sys; from nnjax import plotting; "
        f"plotting.plot_history({{'train_loss': [1.0, 0.5]}}, {str(tmp_path / 'h.png')!r}); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert_png(tmp_path / "h.png")


# ----------------------------------------------------------------------------------------------
# plot_activations


def test_plot_activations_writes_png(tmp_path: Path) -> None:
    out = plotting.plot_activations(tmp_path / "nested" / "dir" / "act.png", num=41)
    assert out == tmp_path / "nested" / "dir" / "act.png"
    assert isinstance(out, Path)
    image = assert_png(out, min_width=1000, min_height=300)
    # Three panels side by side: much wider than tall.
    assert image.shape[1] > 2.5 * image.shape[0]


def test_plot_activations_accepts_str_path_and_range(tmp_path: Path) -> None:
    out = plotting.plot_activations(str(tmp_path / "act.png"), x_range=(-2, 3), num=2)
    assert_png(out)


@pytest.mark.parametrize(
    ("x_range", "num"),
    [((1.0, 1.0), 41), ((2.0, -2.0), 41), ((0.0, float("inf")), 41), ((-1.0, 1.0), 1)],
)
def test_plot_activations_bad_args(tmp_path: Path, x_range: tuple[float, float], num: int) -> None:
    with pytest.raises(ValueError):
        plotting.plot_activations(tmp_path / "act.png", x_range=x_range, num=num)
    assert not (tmp_path / "act.png").exists()


def test_a_run_s_activation_figure_is_drawn_once_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn = run_plots._activations_png()  # what runs.Run starts, the same for every run
    assert run_plots._activations_png() is drawn
    drawn.result()  # one figure drawn at a time
    expected = plotting.plot_activations(tmp_path / "expected.png").read_bytes()
    monkeypatch.setattr(plotting, "plot_activations", lambda path: pytest.fail("drawn again"))
    assert run_plots._write_activations(tmp_path / "act.png").read_bytes() == expected


def test_an_activation_figure_the_background_failed_to_draw_is_drawn_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    failed.set_exception(RuntimeError("no font"))
    monkeypatch.setattr(run_plots, "_activations_png", lambda: failed)
    monkeypatch.setattr(plotting, "plot_activations", lambda path: plotting.write_png(b"new", path))
    assert run_plots._write_activations(tmp_path / "act.png").read_bytes() == b"new"


def test_a_figure_drawn_in_memory_is_the_png_save_figure_writes(tmp_path: Path) -> None:
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    png = plotting.png_bytes(fig)
    assert png == plotting.save_figure(fig, tmp_path / "saved.png").read_bytes()
    assert plotting.write_png(png, tmp_path / "written.png").read_bytes() == png
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# ----------------------------------------------------------------------------------------------
# plot_history


def test_plot_history_classification(tmp_path: Path) -> None:
    history = {
        "train_loss": [1.2, 0.7, 0.4, 0.3],
        "train_accuracy": [0.5, 0.7, 0.85, 0.9],
        "val_loss": [1.3, 0.8, 0.6, 0.55],
        "val_accuracy": [0.45, 0.65, 0.8, 0.82],
    }
    image = assert_png(plotting.plot_history(history, tmp_path / "history.png"))
    assert image.shape[1] > 1.5 * image.shape[0]  # two panels


def test_plot_history_regression_without_accuracy(tmp_path: Path) -> None:
    # Losses that reach 0 (or go negative) keep a linear axis; one panel only.
    history = {"train_loss": [2.0, 1.0, 0.0], "val_loss": [2.5, 1.5, 0.5]}
    image = assert_png(plotting.plot_history(history, tmp_path / "history.png"))
    assert image.shape[1] < 1.5 * image.shape[0]


def test_plot_history_single_epoch_and_extra_keys(tmp_path: Path) -> None:
    history = {"train_loss": [0.5], "train_accuracy": [0.8], "learning_rate": [0.1]}
    assert_png(plotting.plot_history(history, tmp_path / "history.png"))


@pytest.mark.parametrize(
    "history",
    [
        {"train_accuracy": [0.5, 0.6]},
        {"train_loss": []},
        {"train_loss": [1.0, 0.5], "val_loss": [1.0]},
        {"train_loss": [1.0, 0.5], "train_accuracy": [0.5, 0.6, 0.7]},
        {"train_loss": [[1.0, 0.5]]},
    ],
)
def test_plot_history_bad_input(tmp_path: Path, history: dict) -> None:
    with pytest.raises(ValueError):
        plotting.plot_history(history, tmp_path / "history.png")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# plot_decision_boundary


def _blobs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    return x, y


def test_plot_decision_boundary_writes_png(tmp_path: Path) -> None:
    x, y = _blobs()
    calls = []

    def predict_fn(p: jnp.ndarray) -> jnp.ndarray:
        calls.append((p.shape, p.dtype))
        return (p[:, 0] > 0).astype(jnp.int32)

    out = plotting.plot_decision_boundary(predict_fn, x, y, tmp_path / "db.png", resolution=30)
    assert_png(out)
    assert calls == [((30 * 30, 2), jnp.float32)]


def test_plot_decision_boundary_three_classes_constant_and_jax_inputs(tmp_path: Path) -> None:
    x, _ = _blobs()
    y = jnp.asarray(np.arange(40) % 3)

    def argmax_fn(p: jnp.ndarray) -> jnp.ndarray:
        scores = jnp.stack([p[:, 0], p[:, 1], -p[:, 0] - p[:, 1]], axis=1)
        return jnp.argmax(scores, axis=1)

    def constant_fn(p: jnp.ndarray) -> jnp.ndarray:
        return jnp.zeros(p.shape[0], dtype=jnp.int32)

    assert_png(
        plotting.plot_decision_boundary(
            argmax_fn, jnp.asarray(x), y, tmp_path / "a.png", resolution=30
        )
    )
    assert_png(
        plotting.plot_decision_boundary(constant_fn, x, y, tmp_path / "b.png", resolution=30)
    )


def test_plot_decision_boundary_draws_only_predicted_classes(tmp_path: Path) -> None:
    # Classes 0 and 2 of 3 meet along x_1 = 0; class 1 is never predicted (nor labelled), so its
    # fill color must appear nowhere, not even as a strip along the boundary.
    x, _ = _blobs()
    y = np.where(x[:, 0] > 0, 2, 0)

    def predict_fn(p: jnp.ndarray) -> jnp.ndarray:
        return jnp.where(p[:, 0] > 0, 2, 0)

    image = assert_png(
        plotting.plot_decision_boundary(predict_fn, x, y, tmp_path / "db.png", resolution=30)
    )
    rgb = image[..., :3].astype(np.float64)
    white = np.ones(3)

    def pixels_of_fill(label: int) -> int:
        color = np.asarray(colormaps["tab10"].colors[label])
        fill = plotting.FILL_ALPHA * color + (1 - plotting.FILL_ALPHA) * white
        return int(np.all(np.abs(rgb - fill) < 2.5 / 255, axis=-1).sum())

    assert pixels_of_fill(0) > 10_000 and pixels_of_fill(2) > 10_000
    assert pixels_of_fill(1) == 0


def test_plot_decision_boundary_single_point(tmp_path: Path) -> None:
    # Zero span on both axes: the grid is padded by a fixed amount instead.
    out = plotting.plot_decision_boundary(
        lambda p: (p[:, 0] > 0).astype(jnp.int32),
        np.zeros((1, 2)),
        np.zeros(1, dtype=int),
        tmp_path / "db.png",
        resolution=30,
    )
    assert_png(out)


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (np.zeros((10, 3)), np.zeros(10, dtype=int)),  # 3 features
        (np.zeros(10), np.zeros(10, dtype=int)),  # 1-D x
        (np.zeros((10, 2)), np.zeros(9, dtype=int)),  # length mismatch
        (np.zeros((10, 2)), np.zeros((10, 1), dtype=int)),  # y not 1-D
        (np.zeros((10, 2)), np.full(10, 0.5)),  # non-integer labels
        (np.zeros((10, 2)), np.full(10, -1)),  # negative labels
        (np.zeros((0, 2)), np.zeros(0, dtype=int)),  # no points
        (np.full((10, 2), np.nan), np.zeros(10, dtype=int)),  # non-finite
    ],
)
def test_plot_decision_boundary_bad_input(tmp_path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with pytest.raises(ValueError):
        plotting.plot_decision_boundary(
            lambda p: (p[:, 0] > 0).astype(jnp.int32), x, y, tmp_path / "db.png", resolution=30
        )
    assert list(tmp_path.iterdir()) == []


def test_plot_decision_boundary_bad_predict_fn_and_resolution(tmp_path: Path) -> None:
    x, y = _blobs()

    def two_columns(p: jnp.ndarray) -> jnp.ndarray:
        return jnp.zeros((p.shape[0], 2), dtype=jnp.int32)

    with pytest.raises(ValueError, match="predict_fn"):
        plotting.plot_decision_boundary(two_columns, x, y, tmp_path / "db.png", resolution=30)
    with pytest.raises(ValueError, match="predict_fn"):
        plotting.plot_decision_boundary(
            lambda p: jnp.zeros(5, dtype=jnp.int32), x, y, tmp_path / "db.png", resolution=30
        )
    with pytest.raises(ValueError, match="resolution"):
        plotting.plot_decision_boundary(
            lambda p: (p[:, 0] > 0).astype(jnp.int32), x, y, tmp_path / "db.png", resolution=1
        )
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# confusion_matrix


def test_confusion_matrix_hand_computed() -> None:
    y_true = [0, 0, 1, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 2, 2, 0, 2]
    expected = np.array(
        [
            [1, 1, 0],  # true 0: one right, one called 1
            [0, 2, 1],  # true 1: two right, one called 2
            [1, 0, 3],  # true 2: three right, one called 0
        ]
    )
    counts = plotting.confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(counts, expected)
    assert counts.shape == (3, 3)
    assert np.issubdtype(counts.dtype, np.integer)
    # A class never seen still gets its row and column.
    np.testing.assert_array_equal(
        plotting.confusion_matrix([0, 1], [1, 1], 4),
        [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    )


@pytest.mark.parametrize("num_classes", [1, 2, 5, 10])
def test_confusion_matrix_matches_numpy_reference(num_classes: int) -> None:
    rng = np.random.default_rng(num_classes)
    y_true = rng.integers(0, num_classes, size=500)
    y_pred = rng.integers(0, num_classes, size=500)
    reference = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(reference, (y_true, y_pred), 1)
    counts = plotting.confusion_matrix(jnp.asarray(y_true), jnp.asarray(y_pred), num_classes)
    np.testing.assert_array_equal(counts, reference)
    assert counts.sum() == 500


@pytest.mark.parametrize("num_classes", [3, np.int64(3), np.array(3), jnp.int32(3)])
def test_confusion_matrix_accepts_integer_scalars(num_classes: object) -> None:
    counts = plotting.confusion_matrix([0, 2], [1, 2], num_classes)
    np.testing.assert_array_equal(counts, [[0, 1, 0], [0, 0, 0], [0, 0, 1]])


@pytest.mark.parametrize("num_classes", [True, np.True_, 3.0, jnp.float32(3.0), jnp.array([3])])
def test_confusion_matrix_rejects_non_integer_num_classes(num_classes: object) -> None:
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1"):
        plotting.confusion_matrix([0, 1], [0, 1], num_classes)


def test_confusion_matrix_empty_and_integral_floats() -> None:
    np.testing.assert_array_equal(
        plotting.confusion_matrix(np.zeros(0, dtype=int), np.zeros(0, dtype=int), 2),
        np.zeros((2, 2), dtype=np.int64),
    )
    np.testing.assert_array_equal(
        plotting.confusion_matrix(np.array([0.0, 1.0]), np.array([1.0, 1.0]), 2), [[0, 1], [0, 1]]
    )


@pytest.mark.parametrize(
    ("y_true", "y_pred", "num_classes"),
    [
        ([0, 1, 2], [0, 1], 3),  # length mismatch
        ([[0, 1]], [[0, 1]], 2),  # not 1-D
        ([0, 3], [0, 1], 3),  # true label out of range
        ([0, 1], [0, 5], 3),  # predicted label out of range
        ([0, -1], [0, 1], 3),  # negative label
        ([0, 1.5], [0, 1], 3),  # non-integer label
        ([True, False], [0, 1], 2),  # boolean labels
        ([0, 1], [0, 1], 0),  # no classes
        ([0, 1], [0, 1], 2.0),  # num_classes not an int
    ],
)
def test_confusion_matrix_bad_input(y_true: list, y_pred: list, num_classes: int) -> None:
    with pytest.raises(ValueError):
        plotting.confusion_matrix(y_true, y_pred, num_classes)


# ----------------------------------------------------------------------------------------------
# plot_confusion_matrix


@pytest.mark.parametrize("num_classes", [2, 10])
def test_plot_confusion_matrix_writes_png(tmp_path: Path, num_classes: int) -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, num_classes, size=200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, num_classes, size=200))
    out = plotting.plot_confusion_matrix(y_true, y_pred, num_classes, tmp_path / "cm.png")
    assert_png(out)


def test_plot_confusion_matrix_empty_and_bad_input(tmp_path: Path) -> None:
    empty = np.zeros(0, dtype=int)
    assert_png(plotting.plot_confusion_matrix(empty, empty, 3, tmp_path / "empty.png"))
    with pytest.raises(ValueError):
        plotting.plot_confusion_matrix([0, 1], [0, 2], 2, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


# ----------------------------------------------------------------------------------------------
# Atomic writes


def test_failed_save_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "act.png"
    target.write_bytes(b"old contents")

    def broken_savefig(self: Figure, file: BinaryIO, **kwargs: object) -> None:
        file.write(b"\x89PNG half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plotting.plot_activations(target, num=41)
    # The old file is untouched and no temporary file is left behind.
    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["act.png"]


def test_overwrites_existing_file_with_umask_permissions(tmp_path: Path) -> None:
    target = tmp_path / "history.png"
    target.write_bytes(b"old contents")
    plotting.plot_history({"train_loss": [1.0, 0.5]}, target)
    assert_png(target)
    if os.name == "posix":
        umask = os.umask(0)
        os.umask(umask)
        assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_plot_sweep_writes_a_png_and_leaves_out_diverged_runs(tmp_path):
    rates = np.logspace(-3, 0, 4)
    losses = np.array([[0.5, 0.4], [0.1, 0.2], [0.01, np.nan], [np.inf, np.nan]])
    path = plotting.plot_sweep(rates, losses, tmp_path / "sweep.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match=r"final_losses \(v, seeds\)"):
        plotting.plot_sweep(rates, losses[:3], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def _sweep_legend(monkeypatch: pytest.MonkeyPatch, values: object, losses: object) -> list[str]:
    """The legend labels of the figure ``plot_sweep`` builds (captured instead of saved)."""
    figures: list[Figure] = []
    monkeypatch.setattr(
        plotting, "save_figure", lambda fig, path: figures.append(fig) or Path(path)
    )
    plotting.plot_sweep(values, losses, "unused.png")
    (fig,) = figures
    return [text.get_text() for text in fig.axes[0].get_legend().get_texts()]


def test_plot_sweep_band_label_counts_finite_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    rates = np.logspace(-3, 0, 4)
    all_finite = np.array([[0.5, 0.4], [0.1, 0.2], [0.01, 0.02], [0.3, 0.6]])
    assert _sweep_legend(monkeypatch, rates, all_finite) == ["min-max over 2 seeds", "median"]
    some_diverged = np.array([[0.5, 0.4], [0.1, 0.2], [0.01, np.nan], [np.inf, np.nan]])
    assert _sweep_legend(monkeypatch, rates, some_diverged) == [
        "min-max over the 1-2 finite of 2 seeds",
        "median",
        "3 runs diverged (left out)",
    ]
    one_each = np.array([[0.5, np.nan], [np.nan, 0.2]])
    assert _sweep_legend(monkeypatch, rates[:2], one_each)[0] == (
        "min-max over the 1 finite of 2 seeds"
    )


@pytest.mark.parametrize("losses", [np.full((3, 2), np.nan), np.full((3, 0), 1.0)])
def test_plot_sweep_rejects_sweeps_without_a_finite_run(tmp_path: Path, losses) -> None:
    with pytest.raises(ValueError, match=r"no run has a finite final loss"):
        plotting.plot_sweep([1e-3, 1e-2, 1e-1], losses, tmp_path / "sweep.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rates", [[0.0, 0.1, 1.0], [-0.1, 0.1, 1.0]])
def test_plot_sweep_rejects_non_positive_values_on_a_log_axis(tmp_path: Path, rates) -> None:
    losses = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"values must be positive for a logarithmic x axis"):
        plotting.plot_sweep(rates, losses, tmp_path / "sweep.png")
    assert list(tmp_path.iterdir()) == []
    # A linear axis shows them.
    assert_png(plotting.plot_sweep(rates, losses, tmp_path / "sweep.png", log_x=False))


def test_plot_sweep_rejects_non_finite_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"values must be finite"):
        plotting.plot_sweep([0.1, np.nan], np.ones((2, 2)), tmp_path / "sweep.png", log_x=False)


# ----------------------------------------------------------------------------------------------
# regression: R² per epoch, predicted against true


def test_plot_history_of_a_regression_draws_its_r2_beside_the_loss(tmp_path: Path) -> None:
    history = {"train_loss": [2.0, 1.0, 0.5], "val_loss": [2.5, 1.5, 0.5], "val_r2": [-1, 0.2, 0.6]}
    image = assert_png(plotting.plot_history(history, tmp_path / "history.png"))
    assert image.shape[1] > 1.5 * image.shape[0]  # two panels
    with pytest.raises(ValueError, match="same length"):
        plotting.plot_history({**history, "val_r2": [0.5]}, tmp_path / "short.png")


def test_plot_predicted_vs_true_writes_png_and_checks_its_input(tmp_path: Path) -> None:
    from nnjax import run_plots

    y = np.linspace(90.0, 110.0, 30)
    path = run_plots.plot_predicted_vs_true(y, y + np.sin(y), tmp_path / "pvt.png")
    assert_png(path)
    with pytest.raises(ValueError, match="they must match exactly"):
        run_plots.plot_predicted_vs_true(y, y[:-1], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="non-finite"):
        run_plots.plot_predicted_vs_true(y, np.full_like(y, np.inf), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_history_evaluated_every_few_epochs_is_drawn_at_those_epochs(tmp_path):
    history = {"train_loss": [1.0, 0.5], "eval_epoch": [5, 10]}
    assert plotting.plot_history(history, tmp_path / "h.png").read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError, match="eval_epoch has 1 epochs for 2 values"):
        plotting.plot_history({**history, "eval_epoch": [5]}, tmp_path / "bad.png")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.5, 0.02, 0.003], {"10⁻³", "10⁻²", "10⁻¹"}),  # decades
        ([0.25, 0.3, 0.45], {"3×10⁻¹", "4×10⁻¹"}),  # within one: the minor ticks are labelled
    ],
)
def test_log_axes_are_labelled_as_matplotlib_does_in_plain_text(values, expected) -> None:
    fig = _figures.figure(4, 3)
    ax = fig.subplots()
    ax.plot(range(len(values)), values)
    _figures.log_scale(ax)
    _figures.png_bytes(fig)  # lays the ticks out
    axis = ax.yaxis
    labels = {tick.get_text() for tick in axis.get_ticklabels(minor=True) + axis.get_ticklabels()}
    assert expected <= labels
    assert not any("$" in label for label in labels)  # no mathtext
