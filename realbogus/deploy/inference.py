"""Fast batch inference: the network rebuilt in bfloat16, run as one compiled graph per batch shape.

What makes scoring fast on a CPU (measured by ``benchmarks/bench_inference.py``):

- **bfloat16 compute** where the hardware has it (AVX512-BF16 or AMX): a copy of the network
  under the ``mixed_bfloat16`` policy, holding the same float32 weights. The stamp
  normalisation, the statistics inside the custom layers and the logits layer stay float32.
  The first convolution may stay float32 too (``float32_first_layer``), sparing the normalised
  pixels the rounding to 8 significant bits; it was measured to change the AUC by less than
  1e-4 either way while costing the simple network, whose first convolution is 40% of its
  work, almost half its speed, so by default it computes in bfloat16 like the rest.
- **one traced graph with a fixed batch shape** (a ``tf.function`` with an input signature),
  called directly rather than through ``Model.predict``, so no per-call Keras machinery or
  retracing; a short last batch is padded.
- **two batches in flight**: the graph is called from two threads at once, so the cores that
  one batch's small, poorly parallel operations (pooling, normalisation statistics, gates)
  leave idle work on the other batch (on two cores 2-5% more stamps/s than one batch at a time).
- **reading overlapped with computing**: the next block of stamps is read in a background
  thread (file reads and NumPy release the GIL) while TensorFlow works on the current one.

XLA compilation (``jit_compile``) was measured slower on CPU for these convolutions and is off
by default.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

import numpy as np

from realbogus.errors import ConfigError

__all__ = [
    "PRECISIONS",
    "cpu_has_bfloat16",
    "resolve_precision",
    "reduced_precision_copy",
    "Scorer",
    "OnnxScorer",
    "prefetch",
]

PRECISIONS = ("auto", "float32", "mixed_bfloat16")
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bfloat16() -> bool:
    """Whether the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16; Linux only)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(f in flags for f in _BF16_FLAGS)
    except OSError:
        pass
    return False


def resolve_precision(precision: str) -> str:
    """``float32`` or ``mixed_bfloat16`` for a requested precision (``auto``: bfloat16 if native)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU") or cpu_has_bfloat16():
        return "mixed_bfloat16"
    return "float32"


def _clone_with_policy(model, policy: str, keep_float32):
    """Clone a functional model, giving every layer ``policy`` except those ``keep_float32`` names."""
    import keras

    def clone(layer):
        config = layer.get_config()
        if not isinstance(layer, keras.layers.InputLayer) and layer.name not in keep_float32:
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def reduced_precision_copy(network, policy: str = "mixed_bfloat16", float32_first_layer: bool = False):
    """A copy of ``network`` computing in ``policy``, with the same (float32) weights.

    Parameters
    ----------
    network
        A network from :func:`realbogus.models.build_model` / :func:`~realbogus.models.load_model`
        (normalisation layer + body).
    policy
        Keras dtype policy of the copy's body.
    float32_first_layer
        Keep the body's first layer in float32 (see the module docstring).

    Returns
    -------
    keras.Model
        Raw counts -> float32 logits, like ``network``.
    """
    import keras

    from realbogus.models import split_model

    normalizer, body = split_model(network)
    compute = [layer for layer in body.layers if not isinstance(layer, keras.layers.InputLayer)]
    keep = {compute[-1].name}  # the logits
    if float32_first_layer:
        keep.add(compute[0].name)
    fast_body = _clone_with_policy(body, policy, keep)
    fast_body.set_weights(body.get_weights())
    stamps = keras.Input(shape=network.input_shape[1:], name="stamps")
    return keras.Model(stamps, fast_body(normalizer(stamps)), name=f"{network.name}_{policy}")


class Scorer:
    """Logits of stamp blocks of any length through one compiled, fixed-shape graph.

    Parameters
    ----------
    network
        Float32 network (raw counts -> logits).
    batch_size
        Stamps per graph call; blocks are cut and the last batch padded to it.
    precision
        ``auto``, ``float32`` or ``mixed_bfloat16`` (see :func:`resolve_precision`).
    jit_compile
        Compile the graph with XLA.
    float32_first_layer
        Keep the body's first layer in float32 under bfloat16 (see :func:`reduced_precision_copy`).
    streams
        Batches computed at the same time, each from its own thread.
    """

    def __init__(self, network, batch_size: int = 512, precision: str = "auto", jit_compile: bool = False,
                 float32_first_layer: bool = False, streams: int = 2):
        import tensorflow as tf

        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be a positive integer")
        self.streams = max(1, int(streams))
        self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="scorer") if self.streams > 1 else None
        self.precision = resolve_precision(precision)
        if self.precision == "float32":
            self.network = network
        else:
            self.network = reduced_precision_copy(network, self.precision, float32_first_layer)
        spec = tf.TensorSpec((self.batch_size, *network.input_shape[1:]), tf.float32)
        net = self.network
        self._call = tf.function(lambda x: tf.cast(net(x, training=False), tf.float32),
                                 input_signature=[spec], jit_compile=bool(jit_compile))

    def logits(self, stamps: np.ndarray) -> np.ndarray:
        """float32 (n, 2) logits of float32 (n, 29, 29, 3) stamps."""
        stamps = np.asarray(stamps, dtype=np.float32)
        n = stamps.shape[0]
        out = np.empty((n, 2), np.float32)
        b = self.batch_size

        def one(start: int) -> None:
            part = stamps[start:start + b]
            k = part.shape[0]
            if k < b:
                part = np.concatenate([part, np.zeros((b - k, *part.shape[1:]), np.float32)])
            out[start:start + k] = self._call(part).numpy()[:k]

        starts = range(0, n, b)
        if self._pool is None or len(starts) < 2:
            for start in starts:
                one(start)
        else:
            for done in self._pool.map(one, starts):  # re-raises the first error
                pass
        return out

    def scores(self, stamps: np.ndarray) -> np.ndarray:
        """float64 probabilities of real (see :func:`realbogus.evaluation.scoring.scores_from_logits`)."""
        from realbogus.evaluation.scoring import scores_from_logits

        return scores_from_logits(self.logits(stamps))


class OnnxScorer:
    """Logits of stamp blocks through an exported ONNX model, run by ONNX Runtime.

    Needs ``onnxruntime`` only: neither TensorFlow nor Keras is imported. The model must take
    ``stamps`` (float32 [batch, 29, 29, 3], raw counts) and give ``logits`` (float32 [batch, 2]),
    as :func:`realbogus.deploy.export.export_onnx` writes it.

    Parameters
    ----------
    path
        The ``.onnx`` file.
    batch_size
        Stamps per call of the session (the batch axis is dynamic, so no padding is needed).

    Attributes
    ----------
    metadata : dict of str
        The model's ``metadata_props`` (``model_card`` JSON, ``model_version``).
    precision : str
        Always ``float32``.
    """

    precision = "float32"

    def __init__(self, path, batch_size: int = 512):
        import onnxruntime as ort

        from realbogus.errors import DataError

        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be a positive integer")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are not the user's concern
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own exception types for unreadable models
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"{path}: not a loadable ONNX model ({message})") from None
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != ["stamps"] or "logits" not in outputs:
            raise DataError(f"{path}: expected input 'stamps' and output 'logits', found inputs {inputs}, "
                            f"outputs {outputs} (export with python -m realbogus.deploy.export)")
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def logits(self, stamps: np.ndarray) -> np.ndarray:
        """float32 (n, 2) logits of float32 (n, 29, 29, 3) stamps."""
        stamps = np.ascontiguousarray(stamps, dtype=np.float32)
        out = np.empty((stamps.shape[0], 2), np.float32)
        for start in range(0, stamps.shape[0], self.batch_size):
            part = stamps[start:start + self.batch_size]
            out[start:start + part.shape[0]] = self.session.run(["logits"], {"stamps": part})[0]
        return out


_DONE = object()


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """Iterate over ``items`` produced ahead by a background thread (at most ``depth`` waiting).

    An exception raised while producing is re-raised in the consumer, at the item where it
    happened. Stopping early (``close()``/garbage collection of the generator) lets the thread
    finish its current item and exit.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer
            put((None, exc))
            return
        put((_DONE, None))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
