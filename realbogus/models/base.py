"""How every real/bogus network is put together: stamp normalisation, then a body to logits.

A network is a functional ``keras.Model`` with two named parts:

- ``stamp_normalization`` (:class:`StampNormalization`): raw counts -> [0, 1] per stamp and
  channel;
- ``body`` (a functional ``keras.Model``): normalised stamps -> two logits [bogus, real].

Keeping the body a separate callable lets the training step perturb the *normalised* stamps
(virtual adversarial training), where a fixed perturbation size means the same thing for a
faint and for a bright source.
"""

from __future__ import annotations

from typing import Sequence

import keras

from realbogus.models.layers import StampNormalization

__all__ = ["NORMALIZER_NAME", "BODY_NAME", "assemble_network", "split_model", "unwrap"]

NORMALIZER_NAME = "stamp_normalization"
BODY_NAME = "body"


def assemble_network(
    name: str,
    input_shape: Sequence[int],
    body_layers: Sequence[keras.layers.Layer],
    normalization_epsilon: float,
) -> keras.Model:
    """Chain ``body_layers`` into the body and put stamp normalisation in front of it.

    Parameters
    ----------
    name : str
        Name of the returned model (the model config's ``name``).
    input_shape : sequence of int
        Stamp shape (height, width, channels).
    body_layers : sequence of keras.layers.Layer
        Layers applied one after the other to the normalised stamps; the last one gives logits.
    normalization_epsilon : float
        Smallest channel range used by :class:`StampNormalization`.

    Returns
    -------
    keras.Model
        Raw counts (N, *input_shape) -> logits (N, 2), float32.
    """
    normalized = keras.Input(shape=tuple(input_shape), name="normalized_stamps")
    h = normalized
    for layer in body_layers:
        h = layer(h)
    body = keras.Model(normalized, h, name=BODY_NAME)

    stamps = keras.Input(shape=tuple(input_shape), name="stamps")
    logits = body(StampNormalization(normalization_epsilon, name=NORMALIZER_NAME)(stamps))
    return keras.Model(stamps, logits, name=name)


def unwrap(model: keras.Model) -> keras.Model:
    """Return the network held by a training wrapper (attribute ``network``), or ``model`` itself."""
    inner = getattr(model, "network", None)
    return inner if isinstance(inner, keras.Model) else model


def split_model(model: keras.Model) -> tuple[keras.layers.Layer, keras.Model]:
    """Split a network into ``(normalizer, body)`` with ``model(x) == body(normalizer(x))``.

    Parameters
    ----------
    model : keras.Model
        A network from :func:`realbogus.models.build_model` or
        :func:`realbogus.models.load_model`, or a training wrapper holding one as ``network``.

    Returns
    -------
    normalizer : keras.layers.Layer
        Raw counts -> normalised stamps in [0, 1] (float32).
    body : keras.Model
        Normalised stamps -> logits (float32); pass ``training=`` as for any Keras model.
    """
    model = unwrap(model)
    try:
        return model.get_layer(NORMALIZER_NAME), model.get_layer(BODY_NAME)
    except ValueError as exc:
        raise ValueError(
            f"model {model.name!r} has no {NORMALIZER_NAME!r} and {BODY_NAME!r} parts; "
            "build it with realbogus.models.build_model"
        ) from exc
