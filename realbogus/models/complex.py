"""The complex network: feature convolutions, then stages of residual blocks, pooled to logits.

With the default arguments: conv 32 (5x5) and 4 conv 32 (3x3) feature layers at 29x29 ->
max-pool -> conv 64 -> residual block 64 -> max-pool -> conv 128 -> residual block 128 ->
residual block 256 (stride 2) -> residual block 256 -> global average pooling -> dense 2.
That is 2,314,022 parameters and 208.8 MFLOP per 29x29x3 sample (TensorFlow profiler), as
in the paper (2.3 M, 209 MFLOP). All convolutions and poolings use "same" padding
(29 -> 15 -> 8 -> 4 pixels).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import keras
from keras import layers

from realbogus.models.base import assemble_network
from realbogus.models.layers import ResidualBlock

__all__ = ["build_complex", "DEFAULT_STAGES"]

DEFAULT_STAGES = (
    {"conv": 64, "blocks": ((64, 1),)},
    {"conv": 128, "blocks": ((128, 1), (256, 2), (256, 1))},
)


def build_complex(
    name: str = "complex",
    input_shape: Sequence[int] = (29, 29, 3),
    normalization_epsilon: float = 1e-6,
    feature_filters: int = 32,
    stem_kernel_size: int = 5,
    feature_layers: int = 4,
    stages: Sequence[Mapping] = DEFAULT_STAGES,
    se_ratio: int = 2,
    frn_epsilon: float = 1e-6,
    frn_learned_eps: bool = False,
    frn_spatial: str = "mean",
    zero_init_residual: bool = False,
) -> keras.Model:
    """Build the complex network.

    Parameters
    ----------
    name : str
        Model name.
    input_shape : sequence of int
        Stamp shape (height, width, channels).
    normalization_epsilon : float
        Smallest channel range of the stamp normalisation, in counts.
    feature_filters : int
        Width of the stem convolution and of the feature layers.
    stem_kernel_size : int
        Kernel size of the stem convolution.
    feature_layers : int
        Number of 3x3 feature convolutions after the stem.
    stages : sequence of mappings
        Each stage is a 2x2 max-pooling, a 3x3 convolution of width ``conv`` (ReLU), then the
        residual blocks ``blocks``, given as ``[width, stride]`` pairs.
    se_ratio : int
        Channel reduction of the squeeze-and-excitation gates.
    frn_epsilon : float
        ``epsilon`` of the filter response normalisations (with ``frn_learned_eps``, its floor).
    frn_learned_eps : bool
        Learn each FRN's epsilon as ``frn_epsilon + softplus(v)``, ``v`` starting at 0 (about
        0.69), as the authors' scripts do.
    frn_spatial : {"mean", "sum"}
        FRN divides by the root of the mean square over the feature map (Singh & Krishnan) or of
        the sum of squares (the authors' scripts).
    zero_init_residual : bool
        Multiply each residual branch by a learned per-channel scale starting at zero, so that
        the blocks start as their shortcuts.

    Returns
    -------
    keras.Model
        Raw counts (N, *input_shape) -> logits (N, 2) [bogus, real].
    """
    body = [
        layers.Conv2D(int(feature_filters), int(stem_kernel_size), padding="same", activation="relu", name="stem")
    ]
    for i in range(1, int(feature_layers) + 1):
        body.append(layers.Conv2D(int(feature_filters), 3, padding="same", activation="relu", name=f"feature{i}"))
    for s, stage in enumerate(stages, start=1):
        unknown = set(stage) - {"conv", "blocks"}
        if unknown or "conv" not in stage:
            raise ValueError(f"stage {s} must have the key 'conv' and optionally 'blocks', got {sorted(stage)}")
        body.append(layers.MaxPooling2D(2, padding="same", name=f"stage{s}_pool"))
        body.append(layers.Conv2D(int(stage["conv"]), 3, padding="same", activation="relu", name=f"stage{s}_conv"))
        for b, block in enumerate(stage.get("blocks", ()), start=1):
            if len(block) != 2:
                raise ValueError(f"stage {s} block {b} must be [width, stride], got {list(block)}")
            width, stride = block
            body.append(
                ResidualBlock(int(width), int(stride), se_ratio, frn_epsilon, frn_learned_epsilon=bool(frn_learned_eps),
                              frn_spatial=frn_spatial, zero_init=bool(zero_init_residual), name=f"stage{s}_res{b}")
            )
    body.append(layers.GlobalAveragePooling2D(name="gap"))
    # float32 logits under a mixed-precision policy
    body.append(layers.Dense(2, dtype="float32", name="logits"))
    return assemble_network(name, input_shape, body, normalization_epsilon)
