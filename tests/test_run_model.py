"""Tests of nnjax.run_model: the options of a --layers network and the shape of its examples."""

import jax
import numpy as np
import pytest

from nnjax import datasets, metrics, network, run_model, runs

from helpers import XOR_RUN


@pytest.mark.parametrize(
    ("dataset", "layers", "n_features", "shape"),
    [
        ("digits", "conv2d(4,3),relu,flatten,dense(10)", 64, (8, 8, 1)),
        ("digits", "layernorm,maxpool(2),flatten,dense(10)", 64, (8, 8, 1)),
        ("digits", "conv1d(4,3),relu,flatten,dense(10)", 64, (64, 1)),
        ("digits", "dense(32),relu,dense(10)", 64, (64,)),
        ("iris", "conv(4,2),relu,flatten,dense(3)", 4, (4, 1)),
        ("iris", "layernorm,dense(3)", 4, (4,)),
    ],
)
def test_the_first_convolution_or_pooling_layer_decides_the_example_shape(
    dataset, layers, n_features, shape
):
    config = runs.make_config(dataset=dataset, layers=layers)
    assert run_model.example_shape(config, n_features) == shape


def test_an_example_shape_that_does_not_fit_the_data_is_named():
    config = runs.make_config(dataset="breast_cancer", layers="conv2d(4,3),flatten,dense(1)")
    with pytest.raises(ValueError, match=r"give their shape as --input-shape H,W,C \(H\*W\*C = 30"):
        run_model.example_shape(config, 30)
    assert run_model.example_shape({**config, "input_shape": [5, 6, 1]}, 30) == (5, 6, 1)
    with pytest.raises(ValueError, match="--input-shape 5,5,1 holds 25 values per example, but"):
        run_model.example_shape({**config, "input_shape": [5, 5, 1]}, 30)
    assert run_model.parse_shape("8,8,1") == [8, 8, 1]
    with pytest.raises(ValueError, match="must be a positive integer, got 0"):
        run_model.parse_shape("8,0")


def test_a_layers_config_leaves_the_dense_options_out_and_resumes_with_its_shape():
    config = runs.make_config(layers="conv2d(4, 3),relu, flatten,dense(10)")
    assert config["layers"] == "conv2d(4,3),relu,flatten,dense(10)"
    assert [config[k] for k in ("hidden", "activation", "init", "input_shape")] == [None] * 4
    assert runs.make_config(hidden=None, activation=None) == runs.make_config()
    for dense in ({"hidden": []}, {"init": "he", "dropout": 0.5}, {"diagnostics": 1}):
        with pytest.raises(ValueError, match="--layers gives the whole network, so --"):
            runs.make_config(layers="dense(10)", **dense)
    with pytest.raises(ValueError, match="--input-shape shapes the examples of --layers"):
        runs.make_config(input_shape=[8, 8, 1])
    line = runs.command_line({**config, "input_shape": [8, 8, 1]}, "runs/cnn")
    assert "--layers 'conv2d(4,3),relu,flatten,dense(10)' --input-shape 8,8,1 --output" in line
    assert "--hidden" not in line and "--activation" not in line
    old = {k: v for k, v in runs.make_config(**XOR_RUN).items() if k not in run_model.MODEL_OPTIONS}
    assert runs.saved_config(old) == runs.make_config(**XOR_RUN)


@pytest.mark.parametrize("loss", ["binary_cross_entropy", "mse"])
def test_one_program_gives_the_test_metrics_and_predictions(loss):
    data = datasets.load_dataset("xor", jax.random.key(0))
    if loss == "mse":
        data = data._replace(y_test=data.y_test[:, None].astype(np.float32), num_classes=0)
    model = network.DenseNetwork("sigmoid", loss)
    rng = np.random.default_rng(1)
    params = [
        {"W": rng.normal(size=shape).astype(np.float32), "b": np.full(shape[0], 0.1, np.float32)}
        for shape in ((4, 2), (1, 4))
    ]
    targets = metrics.prepare_targets(data.y_test, loss)
    loss_value, accuracy = jax.jit(metrics.evaluate, static_argnums=3)(
        params, data.x_test, targets, model
    )
    expected = metrics.test_metrics(float(loss_value), float(accuracy), loss, targets)
    assert run_model.test_metrics(model, data, params) == expected
    predicted = run_model.test_predictions(model, data, params)
    if loss == "mse":
        outputs = jax.jit(lambda p, x: model.forward(p, x)[0])(params, data.x_test)
        np.testing.assert_array_equal(predicted, outputs)
    else:
        classes = run_model.class_predictions(model, params, (), data.x_test)
        np.testing.assert_array_equal(predicted, classes)
