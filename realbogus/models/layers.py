"""Custom Keras layers of the real/bogus networks, registered so that ``.keras`` files reload.

All layers use ``keras.ops`` only and work under the ``float32`` and ``mixed_bfloat16`` dtype
policies. Statistics (stamp minimum and maximum, FRN's mean square, the squeeze step of the
channel gate) are always computed in float32: bfloat16 keeps 8 significant bits, which is not
enough for raw counts of tens of thousands of ADU nor for sums over a feature map.
"""

from __future__ import annotations

import random

import keras
import tensorflow as tf
from keras import layers, ops

__all__ = [
    "StampNormalization",
    "FilterResponseNormalization",
    "SqueezeExcitation",
    "ResidualBlock",
    "StepDropout",
    "FRN_SPATIAL",
]

#: How FRN reduces a feature map: the mean square (Singh & Krishnan) or the sum of squares
#: (the authors' scripts).
FRN_SPATIAL = ("mean", "sum")
#: Mixed into a dropout layer's stateless seed so that its masks differ from VAT's directions.
_DROPOUT_SALT = 0x44524F50

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

    ``y = max(gamma * x / sqrt(nu2 + eps) + beta, tau)`` with learned per-channel ``gamma``,
    ``beta`` and ``tau``, where ``nu2`` is the mean square of each channel over the feature map
    (``spatial="mean"``) or its sum of squares (``spatial="sum"``, as in the authors' scripts,
    which makes the output ``sqrt(H * W)`` times smaller at initialisation). ``eps`` is the fixed
    ``epsilon``, or with ``learned_epsilon`` ``epsilon + softplus(v)`` with a learned per-channel
    ``v`` initialised at 0 (so about 0.69 at first), as in the authors' scripts. It normalises
    each sample on its own (no batch statistics), so training and inference behave the same and
    the batch size does not matter.

    Parameters
    ----------
    epsilon : float
        Added to ``nu2`` before the square root (the floor of the learned value).
    learned_epsilon : bool
        Learn a per-channel addition ``softplus(v)`` to ``epsilon``.
    spatial : {"mean", "sum"}
        Reduction of the squares over the feature map.
    """

    def __init__(self, epsilon: float = 1e-6, learned_epsilon: bool = False, spatial: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if spatial not in FRN_SPATIAL:
            raise ValueError(f"FRN spatial reduction must be one of {FRN_SPATIAL}, got {spatial!r}")
        self.epsilon = float(epsilon)
        self.learned_epsilon = bool(learned_epsilon)
        self.spatial = spatial

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")
        self.tau = self.add_weight(shape=(channels,), initializer="zeros", name="tau")
        # created only when learned, so that weight files of the fixed variant keep their layout
        self.epsilon_logit = None
        if self.learned_epsilon:
            self.epsilon_logit = self.add_weight(shape=(channels,), initializer="zeros", name="epsilon_logit")

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        reduce = ops.mean if self.spatial == "mean" else ops.sum
        nu2 = reduce(ops.square(x), axis=_SPATIAL_AXES, keepdims=True)
        eps = self.epsilon
        if self.epsilon_logit is not None:
            eps = eps + ops.softplus(ops.cast(self.epsilon_logit, "float32"))
        x = ops.cast(x * ops.rsqrt(nu2 + eps), self.compute_dtype)
        return ops.maximum(self.gamma * x + self.beta, self.tau)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "epsilon": self.epsilon,
            "learned_epsilon": self.learned_epsilon,
            "spatial": self.spatial,
        }


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
    With ``zero_init``, the residual branch is multiplied by a learned per-channel scale
    initialised at zero (SkipInit, De & Smith 2020), so that every block starts as its shortcut
    and the branches grow only as far as training wants them.

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
    frn_learned_epsilon : bool
        Whether the FRNs learn their epsilon (see :class:`FilterResponseNormalization`).
    frn_spatial : {"mean", "sum"}
        FRN's reduction over the feature map.
    zero_init : bool
        Scale the residual branch by a learned per-channel factor starting at zero.
    """

    def __init__(self, filters: int, strides: int = 1, se_ratio: int = 2, frn_epsilon: float = 1e-6,
                 frn_learned_epsilon: bool = False, frn_spatial: str = "mean", zero_init: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)
        self.se_ratio = int(se_ratio)
        self.frn_epsilon = float(frn_epsilon)
        self.frn_learned_epsilon = bool(frn_learned_epsilon)
        if frn_spatial not in FRN_SPATIAL:
            raise ValueError(f"frn_spatial must be one of {FRN_SPATIAL}, got {frn_spatial!r}")
        self.frn_spatial = frn_spatial
        self.zero_init = bool(zero_init)

    def build(self, input_shape):
        in_width = input_shape[-1]
        policy = self.dtype_policy
        frn = {"learned_epsilon": self.frn_learned_epsilon, "spatial": self.frn_spatial, "dtype": policy}
        self.norm1 = FilterResponseNormalization(self.frn_epsilon, name="frn1", **frn)
        self.conv1 = layers.Conv2D(in_width, 3, strides=self.strides, padding="same", dtype=policy, name="conv1")
        self.norm2 = FilterResponseNormalization(self.frn_epsilon, name="frn2", **frn)
        self.conv2 = layers.Conv2D(self.filters, 3, padding="same", dtype=policy, name="conv2")
        self.gate = SqueezeExcitation(self.se_ratio, dtype=policy, name="se")
        self.shortcut = None
        if self.filters != in_width or self.strides != 1:
            self.shortcut = layers.Conv2D(
                self.filters, 1, strides=self.strides, padding="same", dtype=policy, name="shortcut"
            )
        # created only with zero_init, so that weight files without it keep their layout
        self.branch_scale = None
        if self.zero_init:
            self.branch_scale = self.add_weight(shape=(self.filters,), initializer="zeros", name="branch_scale")

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
        if self.branch_scale is not None:
            h = h * ops.cast(self.branch_scale, h.dtype)
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
            "frn_learned_epsilon": self.frn_learned_epsilon,
            "frn_spatial": self.frn_spatial,
            "zero_init": self.zero_init,
        }


@keras.saving.register_keras_serializable(package="realbogus")
class StepDropout(layers.Dropout):
    """Dropout whose masks are a stateless function of (seed, training step) when given a step.

    Keras' own dropout draws each mask from a stateful seed generator whose state is not part
    of a model's weights: a run resumed from saved weights draws other masks than an
    uninterrupted run, and every call within one training step (the clean pass and each pass of
    virtual adversarial training) draws a new mask. Once :meth:`follow_step` has given it a step
    counter (the training wrapper passes its optimizer's iteration count), the mask depends only
    on ``seed`` and the step: the same for every call within a step, and the same after a
    resume. Without a step counter it is Keras' ``Dropout``.

    Parameters
    ----------
    rate : float
        Fraction of the inputs dropped.
    seed : int, optional
        Seed of the masks; drawn from Python's ``random`` (seeded by
        ``keras.utils.set_random_seed``) when None, and saved in the config.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        if seed is None:
            seed = random.randint(0, 2**31 - 1)
        super().__init__(rate, seed=int(seed), **kwargs)
        # a callable, not a variable: the step counter belongs to the optimizer, not to this layer
        object.__setattr__(self, "_step", None)

    def follow_step(self, step, seed: int | None = None) -> None:
        """Draw masks statelessly from a seed and ``step()`` (a callable giving an int tensor).

        ``seed`` replaces the layer's own seed for these draws (the training wrapper passes one
        derived from its seed and the layer's name, so that the masks do not depend on how much
        of Python's random stream was used before the layer was built).
        """
        object.__setattr__(self, "_step", step)
        object.__setattr__(self, "_step_seed", self.seed if seed is None else int(seed))

    def call(self, inputs, training=False):
        if not training or self.rate <= 0 or self._step is None or self.noise_shape is not None:
            return super().call(inputs, training=training)
        step = tf.cast(self._step(), tf.int64)
        seed = tf.random.experimental.stateless_fold_in(
            tf.constant([self._step_seed, _DROPOUT_SALT], tf.int64), step
        )
        keep = tf.random.stateless_uniform(tf.shape(inputs), seed=seed, dtype=tf.float32) >= self.rate
        scaled = inputs / ops.cast(1.0 - self.rate, inputs.dtype)
        return ops.where(keep, scaled, ops.zeros_like(inputs))
