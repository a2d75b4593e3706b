"""Custom Keras layers of the real/bogus networks, registered so that ``.keras`` files reload.

All layers use ``keras.ops`` only and work under the ``float32`` and ``mixed_bfloat16`` dtype
policies. Statistics (stamp minimum and maximum, FRN's mean square, the squeeze step of the
channel gate) are always computed in float32: bfloat16 keeps 8 significant bits, which is not
enough for raw counts of tens of thousands of ADU nor for sums over a feature map.
"""

from __future__ import annotations

import keras
from keras import layers, ops

__all__ = [
    "StampNormalization",
    "FilterResponseNormalization",
    "SqueezeExcitation",
    "ResidualBlock",
]

_SPATIAL_AXES = (1, 2)  # channels-last (N, H, W, C)


@keras.saving.register_keras_serializable(package="realbogus")
class StampNormalization(layers.Layer):
    """Min-max scale each stamp and channel to [0, 1].

    Each of the three channels (new, reference, difference) of each sample is shifted and
    scaled independently, so the network sees shapes rather than brightness: stamps whose
    counts differ by an offset or a positive factor give the same output. A flat channel
    (range below ``epsilon``) maps to zeros instead of dividing by zero.

    The layer always computes in float32, whatever the global dtype policy, because raw
    counts cannot be represented in bfloat16 without losing the faint signal.

    Parameters
    ----------
    epsilon : float
        Smallest channel range (in input units, ADU) used as the divisor.
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        if kwargs.get("dtype") is None:
            kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        low = ops.min(x, axis=_SPATIAL_AXES, keepdims=True)
        high = ops.max(x, axis=_SPATIAL_AXES, keepdims=True)
        return (x - low) / ops.maximum(high - low, self.epsilon)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="realbogus")
class FilterResponseNormalization(layers.Layer):
    """Filter response normalisation with a thresholded linear unit (Singh & Krishnan 2019).

    ``y = max(gamma * x / sqrt(mean_hw(x^2) + epsilon) + beta, tau)`` with learned per-channel
    ``gamma``, ``beta`` and ``tau``. It normalises each sample on its own (no batch statistics),
    so training and inference behave the same and the batch size does not matter.

    Parameters
    ----------
    epsilon : float
        Added to the mean square before the square root.
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")
        self.tau = self.add_weight(shape=(channels,), initializer="zeros", name="tau")

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        mean_square = ops.mean(ops.square(x), axis=_SPATIAL_AXES, keepdims=True)
        x = ops.cast(x * ops.rsqrt(mean_square + self.epsilon), self.compute_dtype)
        return ops.maximum(self.gamma * x + self.beta, self.tau)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="realbogus")
class SqueezeExcitation(layers.Layer):
    """Concurrent channel and spatial squeeze-and-excitation (scSE, Roy et al. 2018).

    The channel gate squeezes the map by global average pooling and excites the channels
    through a two-layer bottleneck (``channels // ratio`` units, ReLU then sigmoid); the spatial
    gate is a 1x1 convolution to one sigmoid map. The output is the sum of the two gated copies
    of the input.

    Parameters
    ----------
    ratio : int
        Channel reduction of the bottleneck of the channel gate.
    """

    def __init__(self, ratio: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.ratio = int(ratio)

    def build(self, input_shape):
        channels = input_shape[-1]
        units = max(1, channels // self.ratio)
        policy = self.dtype_policy
        self.squeeze = layers.Dense(units, activation="relu", dtype=policy, name="squeeze")
        self.excite = layers.Dense(channels, activation="sigmoid", dtype=policy, name="excite")
        self.spatial = layers.Conv2D(1, 1, activation="sigmoid", dtype=policy, name="spatial")
        self.squeeze.build((None, channels))
        self.excite.build((None, units))
        self.spatial.build(input_shape)

    def call(self, inputs):
        pooled = ops.mean(ops.cast(inputs, "float32"), axis=_SPATIAL_AXES)
        channel_gate = self.excite(self.squeeze(ops.cast(pooled, self.compute_dtype)))
        channel_gate = ops.expand_dims(ops.expand_dims(channel_gate, 1), 1)
        return inputs * channel_gate + inputs * self.spatial(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio}


@keras.saving.register_keras_serializable(package="realbogus")
class ResidualBlock(layers.Layer):
    """Pre-activation residual block: FRN, conv 3x3, FRN, conv 3x3, scSE, plus a shortcut.

    The first convolution keeps the input width and carries the stride; the second one sets
    the output width (this reproduces the published parameter count). The shortcut is the
    identity, or a 1x1 convolution with the same stride when the width or the stride changes.

    Parameters
    ----------
    filters : int
        Output width.
    strides : int
        Stride of the first convolution and of the shortcut.
    se_ratio : int
        Channel reduction of the squeeze-and-excitation gate.
    frn_epsilon : float
        ``epsilon`` of the two filter response normalisations.
    """

    def __init__(self, filters: int, strides: int = 1, se_ratio: int = 2, frn_epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)
        self.se_ratio = int(se_ratio)
        self.frn_epsilon = float(frn_epsilon)

    def build(self, input_shape):
        in_width = input_shape[-1]
        policy = self.dtype_policy
        self.norm1 = FilterResponseNormalization(self.frn_epsilon, dtype=policy, name="frn1")
        self.conv1 = layers.Conv2D(in_width, 3, strides=self.strides, padding="same", dtype=policy, name="conv1")
        self.norm2 = FilterResponseNormalization(self.frn_epsilon, dtype=policy, name="frn2")
        self.conv2 = layers.Conv2D(self.filters, 3, padding="same", dtype=policy, name="conv2")
        self.gate = SqueezeExcitation(self.se_ratio, dtype=policy, name="se")
        self.shortcut = None
        if self.filters != in_width or self.strides != 1:
            self.shortcut = layers.Conv2D(
                self.filters, 1, strides=self.strides, padding="same", dtype=policy, name="shortcut"
            )

        self.norm1.build(input_shape)
        self.conv1.build(input_shape)
        inner_shape = self.conv1.compute_output_shape(input_shape)
        self.norm2.build(inner_shape)
        self.conv2.build(inner_shape)
        out_shape = self.conv2.compute_output_shape(inner_shape)
        self.gate.build(out_shape)
        if self.shortcut is not None:
            self.shortcut.build(input_shape)

    def call(self, inputs):
        h = self.conv1(self.norm1(inputs))
        h = self.gate(self.conv2(self.norm2(h)))
        skip = inputs if self.shortcut is None else self.shortcut(inputs)
        return skip + h

    def compute_output_shape(self, input_shape):
        n, height, width, _ = input_shape

        def shrink(size):
            return None if size is None else -(-size // self.strides)

        return (n, shrink(height), shrink(width), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "se_ratio": self.se_ratio,
            "frn_epsilon": self.frn_epsilon,
        }
