"""Real/bogus networks: build from a ``conf/model/*.yaml`` config, load, split, measure.

Every network maps float32 (N, 29, 29, 3) raw counts (channels new, reference, difference) to
float32 (N, 2) logits [bogus, real]; the score is ``softmax(logits)[:, 1]``. The per-stamp
normalisation is the first layer inside the network, and :func:`split_model` returns it and
the rest of the network (the body) separately, for perturbations in normalised space.
"""

from __future__ import annotations

import importlib
import inspect
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import keras

from realbogus.errors import ConfigError, DataError
from realbogus.models.base import split_model, unwrap
from realbogus.models.complex import build_complex
from realbogus.models.layers import (
    FilterResponseNormalization,
    ResidualBlock,
    SqueezeExcitation,
    StampNormalization,
    StepDropout,
)
from realbogus.models.simple import build_simple

__all__ = [
    "BUILDERS",
    "build_model",
    "float32_copy",
    "load_model",
    "split_model",
    "flops_per_sample",
    "build_simple",
    "build_complex",
    "StampNormalization",
    "FilterResponseNormalization",
    "SqueezeExcitation",
    "ResidualBlock",
    "StepDropout",
]

BUILDERS: dict[str, Callable[..., keras.Model]] = {"simple": build_simple, "complex": build_complex}


def _plain(cfg: Any) -> dict:
    """An OmegaConf config or a mapping as a plain, resolved dict."""
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf comes with hydra-core
        DictConfig = ()
    if DictConfig and isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise ConfigError(f"model config must be a mapping, got {type(cfg).__name__}")


def build_model(cfg: Mapping | Any) -> keras.Model:
    """Build the network described by a model config.

    Parameters
    ----------
    cfg : mapping or omegaconf.DictConfig
        The contents of ``conf/model/<name>.yaml``: ``name`` (``simple`` or ``complex``) and
        any keyword arguments of :func:`build_simple` / :func:`build_complex`.

    Returns
    -------
    keras.Model
        Raw counts (N, 29, 29, 3) -> logits (N, 2) [bogus, real], with two parts named
        ``stamp_normalization`` and ``body`` (see :func:`split_model`).

    Raises
    ------
    ConfigError
        Unknown model name, unknown setting or an inconsistent value.
    """
    settings = _plain(cfg)
    name = settings.get("name")
    if name not in BUILDERS:
        raise ConfigError(f"model.name: unknown model {name!r}, expected one of {sorted(BUILDERS)}")
    builder = BUILDERS[name]
    known = inspect.signature(builder).parameters
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigError(
            f"model.{unknown[0]}: not a setting of the {name} model (settings: {', '.join(known)})"
        )
    try:
        return builder(**settings)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model ({name}): {exc}") from exc


def load_model(path: str | os.PathLike) -> keras.Model:
    """Load a network saved as ``.keras`` (a bare network or a training run's ``model.keras``).

    Parameters
    ----------
    path : str or path-like
        The ``.keras`` file.

    Returns
    -------
    keras.Model
        The network (a training wrapper is unwrapped to its ``network``); ``predict`` gives
        logits.

    Raises
    ------
    DataError
        The file is missing or is not a loadable Keras model.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: model file not found")
    # the training wrapper class must be registered before a run's model.keras can load
    importlib.import_module("realbogus.training")
    try:
        model = keras.saving.load_model(path, compile=False)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a loadable Keras model ({message})") from exc
    return unwrap(model)


def flops_per_sample(model: keras.Model) -> int:
    """Floating-point operations of one inference on one sample, counted by TensorFlow's profiler.

    Multiply-adds count as two operations, as in the paper's figures (simple 7 MFLOP,
    complex 209 MFLOP).
    """
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    model = unwrap(model)
    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(model_analyzer.profile(graph, options=options).total_float_ops)


def _float32_policies(node):
    """A serialised Keras config with every mixed/reduced dtype policy replaced by float32."""
    if isinstance(node, dict):
        if node.get("class_name") in ("DTypePolicy", "DTypePolicyMap") or "policy" in str(node.get("class_name", "")).lower():
            cfg = node.get("config") or {}
            if isinstance(cfg.get("name"), str) and cfg["name"] != "float32":
                return {**node, "config": {**cfg, "name": "float32"}}
        return {k: _float32_policies(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_float32_policies(v) for v in node]
    if node in ("mixed_bfloat16", "bfloat16", "mixed_float16", "float16"):
        return "float32"
    return node


def float32_copy(network: keras.Model) -> keras.Model:
    """``network`` computing in float32 throughout, with the same weights.

    A network trained under ``trainer.precision=mixed_bfloat16`` keeps that dtype policy in its
    layers when saved; exporters that know no bfloat16 (ONNX) and float32 references need a
    float32 copy. A float32 network is returned as it is.
    """
    if all(getattr(layer, "compute_dtype", "float32") == "float32" for layer in network._flatten_layers()):
        return network
    config = _float32_policies(keras.saving.serialize_keras_object(network))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(network.get_weights())
    return copy
