"""The simple (conventional) network: two convolution + max-pooling stages and a dense head.

With the default arguments: conv 32 (5x5, valid) -> max-pool -> conv 64 (3x3, valid) ->
max-pool -> dropout 0.3 -> dense 128 -> dense 64 -> dense 2, i.e. 234,242 parameters and
7.2 MFLOP per 29x29x3 sample (TensorFlow profiler), as in the paper (0.23 M, 7 MFLOP).
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from realbogus.models.base import assemble_network
from realbogus.models.layers import StepDropout

__all__ = ["build_simple"]


def build_simple(
    name: str = "simple",
    input_shape: Sequence[int] = (29, 29, 3),
    normalization_epsilon: float = 1e-6,
    conv_filters: Sequence[int] = (32, 64),
    kernel_sizes: Sequence[int] = (5, 3),
    padding: str = "valid",
    dropout: float = 0.3,
    dense_units: Sequence[int] = (128, 64),
) -> keras.Model:
    """Build the simple network.

    Parameters
    ----------
    name : str
        Model name.
    input_shape : sequence of int
        Stamp shape (height, width, channels).
    normalization_epsilon : float
        Smallest channel range of the stamp normalisation, in counts.
    conv_filters : sequence of int
        Width of each convolution stage (conv + ReLU + 2x2 max-pooling); its length is the depth.
    kernel_sizes : sequence of int
        Kernel size of each convolution stage (same length as ``conv_filters``).
    padding : {"valid", "same"}
        Padding of the convolutions and poolings.
    dropout : float
        Dropout rate before the dense head.
    dense_units : sequence of int
        Widths of the hidden dense layers (ReLU); the 2-logit output layer follows them.

    Returns
    -------
    keras.Model
        Raw counts (N, *input_shape) -> logits (N, 2) [bogus, real].
    """
    if len(kernel_sizes) != len(conv_filters):
        raise ValueError(
            f"kernel_sizes has {len(kernel_sizes)} entries but conv_filters has {len(conv_filters)}"
        )
    body = []
    for i, (filters, size) in enumerate(zip(conv_filters, kernel_sizes), start=1):
        body.append(layers.Conv2D(int(filters), int(size), padding=padding, activation="relu", name=f"conv{i}"))
        body.append(layers.MaxPooling2D(2, padding=padding, name=f"pool{i}"))
    # Keras' Dropout unless the training wrapper gives it a step counter (exact resume, and the
    # same mask for the clean and the perturbed passes of virtual adversarial training)
    body.append(StepDropout(float(dropout), name="dropout"))
    body.append(layers.Flatten(name="flatten"))
    for i, units in enumerate(dense_units, start=1):
        body.append(layers.Dense(int(units), activation="relu", name=f"dense{i}"))
    # float32 logits under a mixed-precision policy
    body.append(layers.Dense(2, dtype="float32", name="logits"))
    return assemble_network(name, input_shape, body, normalization_epsilon)
