"""Tests of nnjax.architecture: architectures written as text."""

import pytest

from nnjax.architecture import parse_layers
from nnjax.convolution import Conv1D, Conv2D
from nnjax.layers import Activation, Dense, Dropout, Flatten
from nnjax.pooling import MaxPool1D, MaxPool2D
from nnjax.sequential import Residual


def test_a_cnn_written_as_text_is_its_layers():
    layers = parse_layers(
        "conv2d(16, 3, stride=2, padding=same),relu,maxpool(2),flatten,dense(10)", (8, 8, 1)
    )
    assert layers == (
        Conv2D(16, 3, stride=2, padding="SAME"),
        Activation("relu"),
        MaxPool2D(2),
        Flatten(),
        Dense(10),
    )


def test_the_inputs_rank_resolves_conv_and_pool_and_residual_blocks_nest():
    layers = parse_layers(
        "conv(4,3),maxpool(2),residual(conv(4,1),tanh),flatten,dropout(0.25),dense(2)", (12, 3)
    )
    assert layers[:2] == (Conv1D(4, 3), MaxPool1D(2))
    assert layers[2] == Residual((Conv1D(4, 1), Activation("tanh")))
    assert layers[4] == Dropout(0.25)
    assert parse_layers("conv(4,3)", (8, 8, 1)) == (Conv2D(4, 3),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("conv2d(16,3", "never closed"),
        ("swish", "unknown layer 'swish'"),
        ("dense(8),,dense(2)", "expected a layer name"),
        ("maxpool(2)", "1 or 2 spatial axes"),
        ("dense(size=3)", "unexpected keyword"),
        ("dense(8) dense(2)", "unexpected 'dense'"),
    ],
)
def test_a_malformed_architecture_is_a_one_line_error_naming_it(text, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_layers(text, (4,))
    assert "\n" not in str(error.value) and repr(text) in str(error.value)
