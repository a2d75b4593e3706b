"""Fast batch inference: Keras paths chosen by measurement, and ONNX models under ONNX Runtime or OpenVINO.

What makes scoring fast on a CPU (measured by ``benchmarks/bench_inference.py``):

- **the faster precision, measured**: ``precision=auto`` times the float32 network and a
  bfloat16 copy of it (:func:`reduced_precision_copy`) for a few batches each on the machine
  at hand and keeps the faster, remembered per processor, usable cores, model content and
  batch size by :func:`realbogus.speed.fastest`. CPU flags do not decide it: on one 2-core
  machine with AVX512-BF16 the bfloat16 copy scored 1.8x float32, on an Intel Xeon with the
  same flags 0.8x. In the bfloat16 copy the stamp normalisation, the statistics inside the
  custom layers and the logits layer stay float32; the first convolution may stay float32 too
  (``float32_first_layer``), which was measured to change the AUC by less than 1e-4 while
  costing the simple network almost half its speed, so by default it computes in bfloat16.
- **one traced graph with a fixed batch shape** (a ``tf.function`` with an input signature),
  called directly rather than through ``Model.predict``, so no per-call Keras machinery or
  retracing; a short last batch is padded.
- **two batches in flight**: the graph is called from two threads at once, so the cores that
  one batch's small, poorly parallel operations (pooling, normalisation statistics, gates)
  leave idle work on the other batch.
- **reading overlapped with computing**: the next block of stamps is read in a background
  thread (file reads and NumPy release the GIL) while the network works on the current one.
- **ONNX Runtime** (:class:`OnnxScorer`, for ``.onnx`` exports, float32 or static int8): all
  graph optimisations (constant folding, convolution + activation fusion, int8 kernels for
  the quantised convolutions); the cores used either inside each operator or on one batch
  each, whichever is measured faster here.
- **OpenVINO** (:class:`OpenVinoScorer`, the same ``.onnx`` exports): the graph compiled for a
  fixed batch shape and run as several batches in flight (one CPU stream per usable core,
  ``PERFORMANCE_HINT=THROUGHPUT``), in float32 - OpenVINO's CPU plugin would otherwise compute
  the float layers in bfloat16 on processors with bf16 instructions, beyond the export's parity
  check. Whether it or ONNX Runtime is faster for a model is measured on the machine at hand by
  :func:`onnx_scorer` (``runtime=auto``); ``benchmarks/bench_inference.py`` does not time
  OpenVINO yet.

XLA compilation (``jit_compile``) was measured slower on CPU for these convolutions and is off
by default.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np

from realbogus.errors import ConfigError

__all__ = [
    "PRECISIONS",
    "AUTO_BATCHES",
    "resolve_precision",
    "model_content",
    "reduced_precision_copy",
    "Scorer",
    "OnnxScorer",
    "OpenVinoScorer",
    "RUNTIMES",
    "RUNTIME_ENV",
    "check_runtime",
    "onnx_scorer",
    "prefetch",
]

PRECISIONS = ("auto", "float32", "mixed_bfloat16")
#: Batches (per stream) timed for each candidate precision by ``precision=auto``, after one warm-up.
AUTO_BATCHES = 2
#: Runtimes scoring an ``.onnx`` model (:func:`onnx_scorer`).
RUNTIMES = ("auto", "onnxruntime", "openvino")
#: Environment variable naming what ``runtime=auto`` resolves to without a measurement.
RUNTIME_ENV = "REALBOGUS_ONNX_RUNTIME"


def resolve_precision(precision: str) -> str:
    """Check ``precision``; ``auto`` stays ``auto`` (a :class:`Scorer` decides it by measurement)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision


def model_content(network) -> str:
    """Sixteen hex digits of the SHA-256 of ``network``'s architecture and weights.

    Part of the key under which the measured scoring precision is remembered: another model,
    or the same architecture with other weights, is measured again.
    """
    h = hashlib.sha256(json.dumps(network.get_config(), sort_keys=True, default=str).encode())
    for w in network.get_weights():
        w = np.ascontiguousarray(w)
        h.update(f"{w.dtype}{w.shape}".encode())
        h.update(w.tobytes())
    return h.hexdigest()[:16]


def _file_content(path) -> str:
    """Sixteen hex digits of the SHA-256 of the file ``path`` (an ONNX model's part of a cache key)."""
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:16]


def _timing_stamps(n: int) -> np.ndarray:
    """Count-like stamps for timing (content barely matters to the speed; no NaN, no flat channel)."""
    rng = np.random.default_rng(0)
    sky = rng.uniform(50, 5000, (n, 1, 1, 3))
    return (sky + rng.normal(0, 1, (n, 29, 29, 3)) * np.sqrt(sky)).astype(np.float32)


def _measure_rate(name: str, run: Callable[[np.ndarray], np.ndarray], stamps: np.ndarray) -> float:
    """Stamps per second of ``run`` (one candidate path, ``name``) on ``stamps``, after a warm-up."""
    run(stamps[: max(1, len(stamps) // AUTO_BATCHES)])  # traces the graph, allocates
    t0 = time.perf_counter()
    run(stamps)
    return len(stamps) / (time.perf_counter() - t0)


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
        ``float32``, ``mixed_bfloat16``, or ``auto``: both timed on :data:`AUTO_BATCHES`
        batches per stream and the faster kept, remembered per processor, usable cores,
        :func:`model_content`, batch size and graph options (:func:`realbogus.speed.fastest`).
    jit_compile
        Compile the graph with XLA.
    float32_first_layer
        Keep the body's first layer in float32 under bfloat16 (see :func:`reduced_precision_copy`).
    streams
        Batches computed at the same time, each from its own thread.

    Attributes
    ----------
    precision : str
        The precision in use (never ``auto``).
    auto : realbogus.speed.Choice or None
        Under ``precision=auto``: the measured (or cached) rates and the choice.
    """

    def __init__(self, network, batch_size: int = 512, precision: str = "auto", jit_compile: bool = False,
                 float32_first_layer: bool = False, streams: int = 2):
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be a positive integer")
        self.streams = max(1, int(streams))
        self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="scorer") if self.streams > 1 else None
        self._options = (bool(jit_compile), bool(float32_first_layer))
        self.auto = None
        precision = resolve_precision(precision)
        if precision != "auto":
            self.precision = precision
            self.network, self._call = self._build(network, precision)
            return
        from realbogus import speed

        built: dict = {}

        def candidate(name: str):
            def measure() -> float:
                built[name] = self._build(network, name)
                stamps = _timing_stamps(self.batch_size * self.streams * AUTO_BATCHES)
                return _measure_rate(name, lambda x: self._run(built[name][1], x), stamps)
            return measure

        work = {"model": model_content(network), "batch": self.batch_size, "streams": self.streams,
                "jit_compile": self._options[0], "float32_first_layer": self._options[1]}
        self.auto = speed.fastest("precision", work, {p: candidate(p) for p in PRECISIONS if p != "auto"},
                                  announce=lambda line: print(line, file=sys.stderr, flush=True))
        self.precision = self.auto.choice
        self.network, self._call = built.get(self.precision) or self._build(network, self.precision)

    def _build(self, network, precision: str):
        """(network, traced call) of ``network`` in ``precision``."""
        import tensorflow as tf

        if precision == "float32":
            net = network
        else:
            net = reduced_precision_copy(network, precision, self._options[1])
        spec = tf.TensorSpec((self.batch_size, *network.input_shape[1:]), tf.float32)
        call = tf.function(lambda x: tf.cast(net(x, training=False), tf.float32),
                           input_signature=[spec], jit_compile=self._options[0])
        return net, call

    def _run(self, call, stamps: np.ndarray) -> np.ndarray:
        stamps = np.asarray(stamps, dtype=np.float32)
        n = stamps.shape[0]
        out = np.empty((n, 2), np.float32)
        b = self.batch_size

        def one(start: int) -> None:
            part = stamps[start:start + b]
            k = part.shape[0]
            if k < b:
                part = np.concatenate([part, np.zeros((b - k, *part.shape[1:]), np.float32)])
            out[start:start + k] = call(part).numpy()[:k]

        starts = range(0, n, b)
        if self._pool is None or len(starts) < 2:
            for start in starts:
                one(start)
        else:
            for done in self._pool.map(one, starts):  # re-raises the first error
                pass
        return out

    def logits(self, stamps: np.ndarray) -> np.ndarray:
        """float32 (n, 2) logits of float32 (n, 29, 29, 3) stamps."""
        return self._run(self._call, stamps)

    def scores(self, stamps: np.ndarray) -> np.ndarray:
        """float64 probabilities of real (see :func:`realbogus.evaluation.scoring.scores_from_logits`)."""
        from realbogus.evaluation.scoring import scores_from_logits

        return scores_from_logits(self.logits(stamps))


class OnnxScorer:
    """Logits of stamp blocks through an exported ONNX model, run by ONNX Runtime.

    Needs ``onnxruntime`` only: neither TensorFlow nor Keras is imported. The model must take
    ``stamps`` (float32 [batch, 29, 29, 3], raw counts) and give ``logits`` (float32 [batch, 2]),
    as :func:`realbogus.deploy.export.export_onnx` writes it (float32, or int8 with
    ``calibrate=``). The session applies every graph optimisation ONNX Runtime has
    (``ORT_ENABLE_ALL``: constant folding, fusions, int8 kernels for quantised convolutions).

    Two ways to use the cores: ``threads`` - one batch at a time, each operator split over one
    intra-op thread per usable core; ``streams`` - one batch per core at the same time, each
    computed by one thread (no synchronisation inside operators, which for the small
    operators of these networks can be the faster). Two graph optimisation levels: ``all``
    (with layout transformations: blocked NCHWc for float convolutions, NHWC for integer ones,
    which puts transposes around the FRN and gate operators of an int8 graph) and
    ``extended`` (every fusion, the layout left as exported). With ``auto`` each combination
    is timed on the model for a couple of batches and the fastest kept, remembered per
    processor, usable cores, model file content and batch size (:func:`realbogus.speed.fastest`).

    Parameters
    ----------
    path
        The ``.onnx`` file.
    batch_size
        Stamps per call of the session (the batch axis is dynamic, so no padding is needed).
    parallel
        ``auto``, ``threads`` or ``streams`` (see above).
    threads
        Cores to use (default: the cores this process may use).
    optimization
        ``auto``, or ONNX Runtime's graph optimisation level: ``all``, ``extended`` (see above)
        or ``basic`` (constant folding and redundant nodes only).
    spinning
        Let idle intra-op threads spin waiting for work (ONNX Runtime's default; lower latency
        on an idle machine, wasted cycles on a shared one).

    Attributes
    ----------
    metadata : dict of str
        The model's ``metadata_props`` (``model_card`` JSON, ``model_version``, ``precision``).
    precision : str
        ``float32``, or ``int8`` for a statically quantised export.
    parallel, optimization : str
        The way the cores are used (``threads`` or ``streams``) and the optimisation level in use.
    auto : realbogus.speed.Choice or None
        Under ``parallel=auto``: the measured (or cached) rates and the choice.
    runtime : str
        ``onnxruntime``.
    runtime_auto : realbogus.speed.Choice or None
        Set by :func:`onnx_scorer` when ``runtime=auto`` chose between the runtimes.
    """

    runtime = "onnxruntime"
    runtime_auto = None
    PARALLEL = ("auto", "threads", "streams")
    OPTIMIZATION = ("auto", "all", "extended", "basic")

    def __init__(self, path, batch_size: int = 512, parallel: str = "auto", threads: int | None = None,
                 optimization: str = "auto", spinning: bool = True):
        from realbogus.speed import usable_cores

        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be a positive integer")
        if parallel not in self.PARALLEL:
            raise ConfigError(f"parallel={parallel!r} is not one of {', '.join(self.PARALLEL)}")
        if optimization not in self.OPTIMIZATION:
            raise ConfigError(f"optimization={optimization!r} is not one of {', '.join(self.OPTIMIZATION)}")
        self._path, self._spinning = path, bool(spinning)
        self.cores = int(threads or usable_cores())
        self.auto = None
        self._pool = None
        ways = ["threads", "streams"] if parallel == "auto" and self.cores > 1 else [
            "threads" if parallel == "auto" else parallel]
        levels = ["all", "extended"] if optimization == "auto" else [optimization]
        candidates = [f"{way}/{level}" for way in ways for level in levels]
        if len(candidates) == 1:
            choice = candidates[0]
            session = self._session(choice)
        else:
            from realbogus import speed

            built: dict = {}

            def candidate(name: str):
                def measure() -> float:
                    built[name] = self._session(name)
                    stamps = _timing_stamps(self.batch_size * self.cores * AUTO_BATCHES)
                    return _measure_rate(name, lambda x: self._run(built[name], name, x), stamps)
                return measure

            work = {"onnx": _file_content(path), "batch": self.batch_size, "spinning": self._spinning}
            self.auto = speed.fastest("onnx session", work, {c: candidate(c) for c in candidates},
                                      announce=lambda line: print(line, file=sys.stderr, flush=True))
            choice = self.auto.choice
            session = built.get(choice) or self._session(choice)
        self.session = session
        self.parallel, self.optimization = choice.split("/")
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.precision = self.metadata.get("precision") or "float32"

    def _session(self, way: str):
        """A checked session of the model for ``way``, ``"<parallel>/<optimization>"``."""
        import onnxruntime as ort

        from realbogus.errors import DataError

        parallel, optimization = way.split("/")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are not the user's concern
        options.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[optimization]
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.cores if parallel == "threads" else 1
        options.inter_op_num_threads = 1
        if not self._spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(self._path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own exception types for unreadable models
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"{self._path}: not a loadable ONNX model ({message})") from None
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if inputs != ["stamps"] or "logits" not in outputs:
            raise DataError(f"{self._path}: expected input 'stamps' and output 'logits', found inputs {inputs}, "
                            f"outputs {outputs} (export with python -m realbogus.deploy.export)")
        return session

    def _run(self, session, way: str, stamps: np.ndarray) -> np.ndarray:
        stamps = np.ascontiguousarray(stamps, dtype=np.float32)
        out = np.empty((stamps.shape[0], 2), np.float32)
        b = self.batch_size

        def one(start: int) -> None:  # session.run is thread-safe and releases the GIL
            part = stamps[start:start + b]
            out[start:start + part.shape[0]] = session.run(["logits"], {"stamps": part})[0]

        starts = range(0, stamps.shape[0], b)
        if way.startswith("threads") or len(starts) < 2:
            for start in starts:
                one(start)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.cores, thread_name_prefix="onnx")
            for done in self._pool.map(one, starts):  # re-raises the first error
                pass
        return out

    def logits(self, stamps: np.ndarray) -> np.ndarray:
        """float32 (n, 2) logits of float32 (n, 29, 29, 3) stamps."""
        return self._run(self.session, self.parallel, stamps)

    def scores(self, stamps: np.ndarray) -> np.ndarray:
        """float64 probabilities of real (``sigmoid(logit_real - logit_bogus)``)."""
        from scipy.special import expit

        logits = self.logits(stamps).astype(np.float64)
        return expit(logits[:, 1] - logits[:, 0])


def _import_openvino():
    """The ``openvino`` module, or a ConfigError saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise ConfigError("runtime=openvino needs the openvino package: pip install openvino") from None
    return openvino


def openvino_available() -> bool:
    """Whether ``import openvino`` works here."""
    try:
        _import_openvino()
    except ConfigError:
        return False
    return True


class OpenVinoScorer:
    """Logits of stamp blocks through an exported ONNX model, run by OpenVINO on the CPU.

    Needs ``openvino`` (and ``onnxruntime``, which reads the model's metadata: OpenVINO does not
    keep ONNX ``metadata_props``); neither TensorFlow nor Keras is imported. The model is the
    one :class:`OnnxScorer` takes (input ``stamps``, float32 [batch, 29, 29, 3]; output
    ``logits``, float32 [batch, 2]; float32 or static int8). It is compiled for a fixed batch of
    ``batch_size`` stamps, with one CPU stream per core (``PERFORMANCE_HINT=THROUGHPUT``), and
    batches are kept in flight through an :class:`openvino.AsyncInferQueue` of as many requests
    as the compiled model asks for. A short last batch is padded with zeros to the fixed batch
    (the padding's logits are dropped): one compiled shape, at the cost of computing up to
    ``batch_size - 1`` unused stamps per call. Inference runs in float32
    (``INFERENCE_PRECISION_HINT=f32``): on processors with bf16 instructions OpenVINO would
    otherwise compute the float layers in bfloat16, beyond the export's parity check.

    Parameters
    ----------
    path
        The ``.onnx`` file.
    batch_size
        Stamps per inference request (the compiled batch shape).
    threads
        Cores to use, one stream each (default: the cores this process may use).

    Attributes
    ----------
    metadata : dict of str
        The model's ``metadata_props`` (``model_card`` JSON, ``model_version``, ``precision``).
    precision : str
        ``float32``, or ``int8`` for a statically quantised export.
    parallel, optimization : str
        ``streams`` and ``openvino`` (for the records, alongside :class:`OnnxScorer`'s).
    streams, requests : int
        CPU streams of the compiled model and inference requests in the queue.
    auto : None
        Nothing is chosen by measurement inside this scorer.
    runtime : str
        ``openvino``.
    runtime_auto : realbogus.speed.Choice or None
        Set by :func:`onnx_scorer` when ``runtime=auto`` chose between the runtimes.

    Notes
    -----
    :meth:`logits` is not meant to be called from several threads at once (one request queue).
    """

    runtime = "openvino"
    runtime_auto = None

    def __init__(self, path, batch_size: int = 512, threads: int | None = None):
        from realbogus.errors import DataError
        from realbogus.speed import usable_cores

        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be a positive integer")
        ov = _import_openvino()
        self._path = path
        self.cores = int(threads or usable_cores())
        self.auto = None
        # a plain ONNX Runtime session checks the file and its interface first (one-line DataError)
        # and reads the metadata, which OpenVINO does not keep
        self.metadata = OnnxScorer(path, batch_size=self.batch_size, parallel="threads", threads=1,
                                   optimization="basic").metadata
        self.precision = self.metadata.get("precision") or "float32"
        config = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": self.cores, "INFERENCE_NUM_THREADS": self.cores,
                  "INFERENCE_PRECISION_HINT": "f32"}
        try:
            core = ov.Core()
            model = core.read_model(str(path))
            model.reshape({"stamps": [self.batch_size, 29, 29, 3]})
            compiled = core.compile_model(model, "CPU", config)
            self._logits = compiled.output("logits")
        except Exception as exc:  # OpenVINO raises RuntimeError with multi-line C++ traces
            lines = [line for line in str(exc).splitlines() if line.strip() and not line.startswith("Exception from")]
            message = lines[0].strip() if lines else type(exc).__name__
            raise DataError(f"{path}: not loadable by OpenVINO ({message})") from None
        self.parallel, self.optimization = "streams", "openvino"
        self.streams = int(compiled.get_property("NUM_STREAMS"))
        self.requests = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.compiled = compiled
        self._queue = ov.AsyncInferQueue(compiled, self.requests)
        self._queue.set_callback(self._done)

    def _done(self, request, where) -> None:
        """Copy a finished request's logits into place (runs in an OpenVINO thread)."""
        out, start, k = where
        out[start:start + k] = request.get_tensor(self._logits).data[:k]

    def logits(self, stamps: np.ndarray) -> np.ndarray:
        """float32 (n, 2) logits of float32 (n, 29, 29, 3) stamps."""
        stamps = np.ascontiguousarray(stamps, dtype=np.float32)
        n = stamps.shape[0]
        out = np.empty((n, 2), np.float32)
        b = self.batch_size
        for start in range(0, n, b):
            part = stamps[start:start + b]
            k = part.shape[0]
            if k < b:
                part = np.concatenate([part, np.zeros((b - k, *part.shape[1:]), np.float32)])
            self._queue.start_async({"stamps": part}, (out, start, k))  # copies the input
        self._queue.wait_all()
        return out

    def scores(self, stamps: np.ndarray) -> np.ndarray:
        """float64 probabilities of real (``sigmoid(logit_real - logit_bogus)``)."""
        from scipy.special import expit

        logits = self.logits(stamps).astype(np.float64)
        return expit(logits[:, 1] - logits[:, 0])


def check_runtime(runtime: str) -> str:
    """Check ``runtime`` (one of :data:`RUNTIMES`; ``openvino`` only when the package is installed).

    Raises
    ------
    ConfigError
        An unknown runtime, or ``openvino`` without the package.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime={runtime!r} is not one of {', '.join(RUNTIMES)}")
    if runtime == "openvino":
        _import_openvino()
    return runtime


def onnx_scorer(path, batch_size: int = 512, runtime: str = "auto", threads: int | None = None):
    """A scorer of the ``.onnx`` model ``path``: :class:`OnnxScorer` or :class:`OpenVinoScorer`.

    Parameters
    ----------
    path
        The ``.onnx`` file.
    batch_size
        Stamps per call (see either scorer).
    runtime
        ``onnxruntime``, ``openvino``, or ``auto``: when ``openvino`` can be imported, both are
        built and timed on :data:`AUTO_BATCHES` batches per core and the faster kept, remembered
        per processor, usable cores, model file content and batch size
        (:func:`realbogus.speed.fastest`); without it, ONNX Runtime, untimed.
        ``$REALBOGUS_ONNX_RUNTIME`` (``onnxruntime`` or ``openvino``) answers ``auto`` without
        measuring: for test suites, whose results must not depend on the machine, and for
        machines whose answer is known.
    threads
        Cores to use (default: the cores this process may use).

    Returns
    -------
    OnnxScorer or OpenVinoScorer
        With ``runtime`` naming it and, when ``auto`` chose between the runtimes, ``runtime_auto``
        the measured (or cached) rates and the choice (else None).

    Raises
    ------
    ConfigError
        An unknown runtime (or value of ``$REALBOGUS_ONNX_RUNTIME``), or ``openvino`` without the package.
    DataError
        A model that cannot be loaded or lacks input ``stamps`` / output ``logits``.
    """
    check_runtime(runtime)
    preset = os.environ.get(RUNTIME_ENV) if runtime == "auto" else None
    if preset:
        if preset not in RUNTIMES[1:]:
            raise ConfigError(f"${RUNTIME_ENV}={preset!r} is not one of {', '.join(RUNTIMES[1:])}")
        runtime = check_runtime(preset)

    def build(name: str):
        if name == "openvino":
            return OpenVinoScorer(path, batch_size=batch_size, threads=threads)
        return OnnxScorer(path, batch_size=batch_size, threads=threads)

    if runtime != "auto":
        return build(runtime)
    if not openvino_available():
        return build("onnxruntime")
    from realbogus import speed

    cores = int(threads or speed.usable_cores())
    built: dict = {}

    def candidate(name: str):
        def measure() -> float:
            built[name] = build(name)
            stamps = _timing_stamps(int(batch_size) * cores * AUTO_BATCHES)
            return _measure_rate(name, built[name].logits, stamps)
        return measure

    work = {"onnx": _file_content(path), "batch": int(batch_size)}
    choice = speed.fastest("onnx runtime", work, {name: candidate(name) for name in RUNTIMES[1:]},
                           announce=lambda line: print(line, file=sys.stderr, flush=True))
    scorer = built.pop(choice.choice, None) or build(choice.choice)
    built.clear()  # the slower runtime's compiled model and threads go now
    scorer.runtime_auto = choice
    return scorer


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
