"""Export a trained network for serving: a TensorFlow SavedModel, or an ONNX model.

    python -m realbogus.deploy.export MODEL OUT_DIR [--overwrite]          # SavedModel folder
    python -m realbogus.deploy.export MODEL model.onnx [--overwrite] [--check STAMPS]
    python -m realbogus.deploy.export MODEL model.int8.onnx --calibrate TRAIN.h5 [--check LABELLED.h5]

``MODEL`` is a run folder or a ``.keras`` file; the output's suffix chooses the format. Both
take ``stamps``, float32 (batch, 29, 29, 3) raw counts, channels last (new, ref, diff), with the
per-stamp normalisation inside the model, and give

- ``logits``: float32 (batch, 2), [bogus, real];
- ``score``: float64 (batch,), ``softmax(logits)[:, 1]``, the probability of real (the float64
  value the package writes; float32 would round every margin above about 17 to 1.0);
- ``calibrated_score``: float64 (batch,), ``sigmoid(margin / temperature)``, when the model's card
  holds a temperature.

SavedModel: the default signature ``serving_default``; the card, with the model version
(:func:`realbogus.deploy.card.model_version`), is copied into the folder as ``model_card.json``.
Loading needs TensorFlow only (``tf.saved_model.load(OUT_DIR).signatures["serving_default"]``),
not this package nor Keras. The folder appears complete or not at all.

ONNX: the network is converted by Keras' own exporter (``model.export(format="onnx")``, through
tf2onnx; opset 15), with a dynamic batch axis named ``batch``; the score outputs are appended
as ONNX nodes in float64. The card (with the model version and an ``onnx_export`` section: opset,
check set, measured differences) is stored in the model's ``metadata_props`` as ``model_card``,
the version as ``model_version``. Before anything is written the ONNX model is run by ONNX Runtime
on a check set - :func:`check_stamps` (256 synthetic count-like stamps spanning sky levels from 1
to 10^4 ADU, faint to saturated sources, flat channels and negative counts), or 1,024 stamps
spread evenly over ``--check`` - and compared with the Keras network: if any score differs by
more than :data:`SCORE_TOLERANCE` or any logit by more than :data:`LOGIT_TOLERANCE` x
max(1, |logit|), the export stops with one line and leaves nothing on disk. ``python -m
realbogus.predict model=model.onnx`` scores with ONNX Runtime alone.

Static int8 (``--calibrate FILE``): the converted network is quantised by ONNX Runtime
(``quantize_static``, QDQ format, which ONNX Runtime fuses into integer convolutions: unsigned
8-bit activations, signed 8-bit weights per output channel, the u8 x s8 products that VNNI
instructions compute) after its activation ranges were calibrated (min-max) on
:data:`CALIBRATION_ROWS` stamps spread evenly over ``FILE`` (training stamps: never the test
split). Only the convolutions and matrix products are quantised, and by default neither the
first convolution nor the logits layer (``--int8-ends`` quantises them too); the per-stamp
normalisation, FRN statistics, gates and the score outputs stay float32/float64. It is then compared with the
float32 ONNX model on :data:`INT8_CHECK_ROWS` stamps spread evenly over ``--check`` (default:
over the calibration file; a held-out labelled file is the better check): the export is refused, with nothing written, if any score
differs by more than :data:`INT8_SCORE_TOLERANCE` or, when the check set is labelled, the AUC
differs by more than :data:`INT8_AUC_TOLERANCE`. The card's ``onnx_export.int8`` section and
the printed line state the largest score difference and both AUCs; the model's metadata has
``precision`` = ``int8``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from realbogus.errors import DataError, report_errors

__all__ = ["SCORE_TOLERANCE", "LOGIT_TOLERANCE", "ONNX_OPSET", "CALIBRATION_ROWS", "INT8_CHECK_ROWS",
           "INT8_SCORE_TOLERANCE", "INT8_AUC_TOLERANCE", "check_stamps", "spread_stamps", "quantize_int8",
           "export_saved_model", "export_onnx", "main"]

SIGNATURE = "serving_default"
#: Largest accepted difference between ONNX Runtime's and Keras' probability of real.
SCORE_TOLERANCE = 1e-4
#: Largest accepted difference of a logit, relative to max(1, |logit|).
LOGIT_TOLERANCE = 1e-4
ONNX_OPSET = 15
_CHECK_ROWS = 1024
#: Stamps (spread evenly over the ``calibrate`` file) on which int8 activation ranges are calibrated.
CALIBRATION_ROWS = 2048
#: Stamps (spread evenly over ``check``) on which the int8 model is compared with float32.
INT8_CHECK_ROWS = 8192
#: Largest accepted difference between the int8 and the float32 probability of real. Rounding
#: each convolution's input and weights to 8 bits moves every score a little; a difference this
#: large points to a badly calibrated range (an outlier stamp, too few calibration stamps).
INT8_SCORE_TOLERANCE = 0.05
#: Largest accepted AUC difference int8 - float32 on a labelled check set.
INT8_AUC_TOLERANCE = 1e-3
#: Operators quantised: the convolutions and matrix products carry nearly all the arithmetic.
INT8_OPS = ("Conv", "MatMul", "Gemm")


def _network_and_card(model, card: dict | None):
    """(network, card) of a network, ``.keras`` file or run folder; the card gains its model version."""
    from realbogus.deploy.card import VERSION_FIELD, model_version, read_card
    from realbogus.models import load_model

    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise DataError(f"{path}: no such run folder or model file")
        keras_path = path / "model.keras" if path.is_dir() else path
        if card is None:
            card = read_card(path)
        model = load_model(keras_path)
    card = dict(card or {})
    card[VERSION_FIELD] = model_version(model, card or None)
    return model, card


def _temperature(card: dict) -> float | None:
    return float(card["calibration"]["temperature"]) if card.get("calibration") else None


def _check_free(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise DataError(f"{out}: already exists (pass --overwrite to replace it)")


def export_saved_model(model, out_dir: str | os.PathLike, card: dict | None = None, overwrite: bool = False) -> Path:
    """Write ``model`` (a network, a ``.keras`` file or a run folder) as a SavedModel.

    Parameters
    ----------
    model
        Network mapping stamps to logits, or the path of a ``.keras`` file or run folder.
    out_dir
        Destination folder.
    card
        Model card to copy in (default: the card of ``model`` when it is a path).
    overwrite
        Replace an existing ``out_dir``.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    import keras
    import tensorflow as tf

    from realbogus.deploy.card import CARD_NAME
    from realbogus.io import save_json

    out_dir = Path(out_dir)
    _check_free(out_dir, overwrite)
    model, card = _network_and_card(model, card)
    temperature = _temperature(card)

    spec = tf.TensorSpec((None, 29, 29, 3), tf.float32, name="stamps")

    def serve(stamps):
        logits = tf.cast(model(stamps, training=False), tf.float32)
        margin = tf.cast(logits[:, 1] - logits[:, 0], tf.float64)
        out = {"logits": logits, "score": tf.sigmoid(margin)}
        if temperature is not None:
            out["calibrated_score"] = tf.sigmoid(margin / temperature)
        return out

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serve, input_signature=[spec])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        archive.write_out(str(tmp), verbose=False)
        save_json(tmp / CARD_NAME, card)
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# ----------------------------------------------------------------------------- ONNX
def check_stamps(n: int = 256, seed: int = 0) -> np.ndarray:
    """Synthetic float32 (n, 29, 29, 3) stamps covering what the normalisation and the network see.

    Sky levels log-uniform from 1 to 10^4 ADU with Poisson-like noise, point sources from
    invisible to a hundred times the sky in the new and the difference channels, a few hot
    pixels, every eighth stamp with a flat channel and every eighth with negative counts.
    """
    rng = np.random.default_rng(seed)
    sky = 10.0 ** rng.uniform(0, 4, (n, 1, 1, 3))
    x = sky + rng.normal(0, 1, (n, 29, 29, 3)) * np.sqrt(sky + 4.0)
    yy, xx = np.mgrid[:29, :29]
    for i in range(n):
        cy, cx = 14 + rng.normal(0, 1, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(0.8, 2.5) ** 2))
        flux = sky[i, 0, 0, 0] * 10.0 ** rng.uniform(-2, 2)
        x[i, ..., 0] += flux * blob
        x[i, ..., 2] = x[i, ..., 0] - x[i, ..., 1] + rng.normal(0, 1, (29, 29))
        x[i, rng.integers(0, 29), rng.integers(0, 29), rng.integers(0, 3)] += 50 * sky[i, 0, 0, 0]
    x[::8, ..., 1] = 500.0
    x[4::8] -= 2 * sky[4::8]
    return x.astype(np.float32)


def _append_scores(proto, temperature: float | None):
    """Name the graph's input/output axes and tensors, and append float64 score outputs."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    (logits_out,) = graph.output
    old = logits_out.name
    for node in graph.node:
        node.output[:] = ["logits" if o == old else o for o in node.output]
        node.input[:] = ["logits" if o == old else o for o in node.input]
    logits_out.name = "logits"
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    graph.initializer.extend([numpy_helper.from_array(np.array([[-1.0], [1.0]]), "rb_margin_weights"),
                              numpy_helper.from_array(np.array([-1], np.int64), "rb_flat_shape")])
    graph.node.extend([
        helper.make_node("Cast", ["logits"], ["rb_logits64"], to=TensorProto.DOUBLE),
        helper.make_node("MatMul", ["rb_logits64", "rb_margin_weights"], ["rb_margin2d"]),
        helper.make_node("Reshape", ["rb_margin2d", "rb_flat_shape"], ["rb_margin"]),
        helper.make_node("Sigmoid", ["rb_margin"], ["score"]),
    ])
    graph.output.append(helper.make_tensor_value_info("score", TensorProto.DOUBLE, ["batch"]))
    if temperature is not None:
        graph.initializer.append(numpy_helper.from_array(np.array(temperature, np.float64), "rb_temperature"))
        graph.node.extend([helper.make_node("Div", ["rb_margin", "rb_temperature"], ["rb_scaled"]),
                           helper.make_node("Sigmoid", ["rb_scaled"], ["calibrated_score"])])
        graph.output.append(helper.make_tensor_value_info("calibrated_score", TensorProto.DOUBLE, ["batch"]))
    return proto


def _parity(proto, network, stamps: np.ndarray, temperature: float | None) -> dict:
    """Largest differences between ONNX Runtime and Keras on ``stamps``."""
    import onnxruntime as ort
    from scipy.special import expit

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"stamps": stamps})))
    want = np.asarray(network.predict(stamps, batch_size=256, verbose=0), np.float32)
    margin = want[:, 1].astype(np.float64) - want[:, 0]
    scale = np.maximum(1.0, np.abs(want))
    report = {
        "n_stamps": int(len(stamps)),
        "max_score_difference": float(np.max(np.abs(got["score"] - expit(margin)))),
        "max_relative_logit_difference": float(np.max(np.abs(got["logits"] - want) / scale)),
        "score_tolerance": SCORE_TOLERANCE,
        "logit_tolerance": LOGIT_TOLERANCE,
    }
    if temperature is not None:
        report["max_calibrated_score_difference"] = float(np.max(np.abs(got["calibrated_score"]
                                                                        - expit(margin / temperature))))
    return report


def spread_stamps(path: str | os.PathLike, rows: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Up to ``rows`` stamps spread evenly over ``path``, their labels (None if unlabelled), a description.

    Every ``ceil(n / rows)``-th stamp, read block by block, so a file ordered by class or sensor
    still gives a mixed sample; from our HDF5 files, which allow random access, up to 256
    short contiguous runs spread evenly over the file instead (a few hundred chunks read, not
    the whole file). Masked pixels are filled. ``path`` is any input of ``realbogus.predict``
    but alerts.
    """
    from realbogus.data.loaders import apply_nan_policy, open_stamps

    with open_stamps(path) as src:
        if src.n == 0:
            raise DataError(f"{path}: holds no stamps")
        step = -(-src.n // int(rows))
        has_labels = "label" in src.columns
        wanted = np.arange(0, src.n, step)
        how = f"one in {step}"
        if src.layout == "hdf5" and step > 1:
            # random access in at most 256 contiguous runs spread over the file: a paper-scale
            # training file (33 GB, stored in chunks of rows) is not read whole for 2,048 stamps
            from realbogus.data.format import open_dataset

            run = -(-int(rows) // 256)
            runs = -(-int(rows) // run)
            starts = np.unique(np.linspace(0, src.n - run, runs).astype(np.int64))
            wanted = np.unique((starts[:, None] + np.arange(run)).ravel())[: int(rows)]
            with open_dataset(path, required=()) as ds:
                stamps = np.asarray(ds.images(wanted), np.float32)
            stamps, _ = apply_nan_policy(stamps, "fill", 0.25, lambda i: f"{path}: row {wanted[i]}")
            how = f"{len(starts)} runs of {run} spread over {src.n}"
        else:
            parts, start = [], 0
            for images, _ in src.iter_blocks(4096, "fill"):
                parts.append(images[np.arange((-start) % step, len(images), step)])
                start += len(images)
            stamps = np.concatenate(parts)
        y = np.asarray(src.columns["label"])[wanted].astype(int) if has_labels else None
    if y is not None and not ((y == 1).any() and (y == 0).any()):
        y = None  # one class only: no AUC
    return stamps, y, f"{path}: {len(stamps)} stamps, {how} (masked pixels filled)"


def _check_set(check: str | os.PathLike | None, rows: int = _CHECK_ROWS):
    """(stamps, labels or None, description) to compare an export on."""
    if check is None:
        return check_stamps(), None, "check_stamps(256, seed=0): synthetic"
    return spread_stamps(check, rows)


def _session(proto, optimise: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])


def _onnx_scores(session, stamps: np.ndarray, batch: int = 512) -> np.ndarray:
    return np.concatenate([session.run(["score"], {"stamps": stamps[s:s + batch]})[0]
                           for s in range(0, len(stamps), batch)])


def quantize_int8(proto, calibration: np.ndarray, method: str = "minmax", float_ends: bool = True):
    """``proto`` (stamps -> logits, float32) with convolutions and matrix products in static int8.

    Parameters
    ----------
    proto
        The converted network (``onnx.ModelProto``), before the score outputs are appended.
    calibration
        float32 (n, 29, 29, 3) stamps on which the activation ranges are calibrated.
    method
        Calibration: ``minmax``, ``entropy`` or ``percentile`` (99.999%).
    float_ends
        Keep the first convolution (it sees the normalised pixels) and the last matrix product
        (the logits) in float32: the usual guard of a quantised classifier's accuracy, at the
        cost of the two layers' share of the work.

    Returns
    -------
    onnx.ModelProto
        QDQ-format model: activations uint8 (asymmetric), weights int8 per output channel.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise DataError(f"calibration method {method!r} is not one of {', '.join(methods)}")
    input_name = proto.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([{input_name: calibration[s:s + 128]} for s in range(0, len(calibration), 128)])

        def get_next(self):
            return next(self._batches, None)

    with tempfile.TemporaryDirectory(prefix=".onnx-int8.") as tmp:
        src, pre, out = (os.path.join(tmp, f) for f in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(proto, src)
        try:  # shape inference and graph clean-up help the quantiser find every convolution
            quant_pre_process(src, pre, skip_symbolic_shape=True)
        except Exception:  # the clean-up is an optimisation; quantise the graph as converted
            pre = src
        exclude = []
        if float_ends:
            nodes = [n for n in onnx.load(pre).graph.node if n.op_type in INT8_OPS]
            convs = [n for n in nodes if n.op_type == "Conv"]
            exclude = [n.name for n in (convs[:1] + nodes[-1:]) if n.name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(INT8_OPS),
                            nodes_to_exclude=exclude,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method],
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        return onnx.load(out)


def _int8_parity(fp32_proto, int8_proto, stamps: np.ndarray, labels: np.ndarray | None) -> dict:
    """Largest score difference and AUCs of the int8 model against the float32 ONNX model."""
    a = _onnx_scores(_session(fp32_proto), stamps)
    b = _onnx_scores(_session(int8_proto), stamps)
    report = {"n_check_stamps": int(len(stamps)), "max_score_difference": float(np.max(np.abs(a - b))),
              "mean_score_difference": float(np.mean(np.abs(a - b)))}
    if labels is not None:
        from sklearn.metrics import roc_auc_score

        keep = labels >= 0
        report["auc_float32"] = float(roc_auc_score(labels[keep], a[keep]))
        report["auc_int8"] = float(roc_auc_score(labels[keep], b[keep]))
        report["auc_difference"] = report["auc_int8"] - report["auc_float32"]
        report["n_real"], report["n_bogus"] = int((labels == 1).sum()), int((labels == 0).sum())
    return report


def export_onnx(model, out_path: str | os.PathLike, card: dict | None = None, overwrite: bool = False,
                check: str | os.PathLike | None = None, calibrate: str | os.PathLike | None = None,
                calibration_rows: int = CALIBRATION_ROWS, check_rows: int = INT8_CHECK_ROWS,
                score_tolerance: float = INT8_SCORE_TOLERANCE, auc_tolerance: float = INT8_AUC_TOLERANCE,
                calibration_method: str = "minmax", float_ends: bool = True) -> dict:
    """Write ``model`` (a network, a ``.keras`` file or a run folder) as an ONNX model.

    Parameters
    ----------
    model
        Network mapping stamps to logits, or the path of a ``.keras`` file or run folder.
    out_path
        The ``.onnx`` file to write.
    card
        Model card to store (default: the card of ``model`` when it is a path).
    overwrite
        Replace an existing file.
    check
        Stamps to compare ONNX Runtime with Keras on (any input of ``realbogus.predict`` but
        alerts; default :func:`check_stamps`); with ``calibrate`` also the int8 check set (its
        labels, when it has both classes, give the AUC check).
    calibrate
        Training stamps to calibrate a static int8 quantisation on; None writes float32.
    calibration_rows, check_rows
        Stamps taken (spread evenly) from ``calibrate`` and, for the int8 check, from ``check``.
    score_tolerance, auc_tolerance
        int8: the largest accepted score and AUC differences from float32.
    calibration_method
        int8: ``minmax``, ``entropy`` or ``percentile`` (see :func:`quantize_int8`).
    float_ends
        int8: keep the first convolution and the logits layer in float32 (see :func:`quantize_int8`).

    Returns
    -------
    dict
        The ``onnx_export`` section of the stored card: opset, check set and the differences
        (with ``calibrate``, an ``int8`` section too).

    Raises
    ------
    DataError
        The output exists, the model or a data file is missing, or the ONNX model's scores
        differ from the Keras network's (int8: from float32) beyond the tolerances (then
        nothing is written).
    """
    import onnx
    from onnx import helper

    from realbogus.deploy.card import VERSION_FIELD, _now
    from realbogus.io import atomic_path

    out_path = Path(out_path)
    _check_free(out_path, overwrite)
    for name, path in (("check", check), ("calibrate", calibrate)):
        if path is not None and not Path(path).exists():
            raise DataError(f"{path}: no such file or folder (--{name})")
    stamps, _, check_name = _check_set(check)
    calibration = None
    if calibrate is not None:  # read before the long conversion, so a bad file fails fast
        calibration, _, calibration_name = spread_stamps(calibrate, calibration_rows)
    network, card = _network_and_card(model, card)
    from realbogus.models import float32_copy

    network = float32_copy(network)  # a network trained in bfloat16 keeps that policy; ONNX wants float32
    network(stamps[:1])  # Keras exports only a network that has been called
    with tempfile.TemporaryDirectory(prefix=".onnx-export.") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Keras' numpy-2 patch of tf2onnx probes np.object
        try:
            network.export(os.path.join(tmp, "network.onnx"), format="onnx", verbose=False,
                           opset_version=ONNX_OPSET)
        except Exception as exc:  # tf2onnx raises many types for an operation it cannot convert
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"{out_path}: not written, the network could not be converted to ONNX ({message})") \
                from None
        base = onnx.load(os.path.join(tmp, "network.onnx"))
    temperature = _temperature(card)
    proto = _append_scores(onnx.ModelProto.FromString(base.SerializeToString()), temperature)
    onnx.checker.check_model(proto)
    report = {"created": _now(), "opset": ONNX_OPSET, "check_set": check_name,
              **_parity(proto, network, stamps, temperature)}
    worst_logit = report["max_relative_logit_difference"]
    worst_score = max(report["max_score_difference"], report.get("max_calibrated_score_difference", 0.0))
    if not (worst_score <= SCORE_TOLERANCE and worst_logit <= LOGIT_TOLERANCE):
        raise DataError(f"{out_path}: not written, ONNX scores differ from Keras by up to {worst_score:.3g} "
                        f"(tolerance {SCORE_TOLERANCE:g}) and logits by {worst_logit:.3g} relative "
                        f"(tolerance {LOGIT_TOLERANCE:g}) on {check_name}")
    precision = "float32"
    if calibration is not None:
        int8 = _append_scores(quantize_int8(base, calibration, calibration_method, float_ends), temperature)
        # without --check, in-distribution stamps of the calibration file (the synthetic set's
        # extremes lie outside the ranges calibrated on survey stamps)
        check_stamps_, check_labels, int8_check_name = _check_set(check if check is not None else calibrate,
                                                                  check_rows)
        q = _int8_parity(proto, int8, check_stamps_, check_labels)
        q.update({"format": "QDQ", "activations": "uint8 asymmetric", "weights": "int8 symmetric per channel",
                  "operators": list(INT8_OPS), "float_first_and_last_layer": bool(float_ends),
                  "calibration_set": calibration_name,
                  "calibration_method": calibration_method, "check_set": int8_check_name,
                  "score_tolerance": float(score_tolerance), "auc_tolerance": float(auc_tolerance)})
        auc_diff = q.get("auc_difference")
        if not (q["max_score_difference"] <= score_tolerance
                and (auc_diff is None or abs(auc_diff) <= auc_tolerance)):
            auc_text = "no labels" if auc_diff is None else f"AUC {auc_diff:+.2g} (tolerance {auc_tolerance:g})"
            raise DataError(f"{out_path}: not written, int8 scores differ from float32 by up to "
                            f"{q['max_score_difference']:.3g} (tolerance {score_tolerance:g}), {auc_text} on "
                            f"{int8_check_name}")
        report["int8"] = q
        proto, precision = int8, "int8"
    card["onnx_export"] = report
    proto.doc_string = "realbogus real/bogus classifier: stamps (batch, 29, 29, 3) raw counts -> logits, score"
    helper.set_model_props(proto, {"model_card": json.dumps(card), VERSION_FIELD: card[VERSION_FIELD],
                                   "precision": precision})
    with atomic_path(out_path) as tmp_path:
        onnx.save(proto, str(tmp_path))
    return report


@report_errors
def _run(argv=None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m realbogus.deploy.export",
        description="Export a trained network as a TensorFlow SavedModel folder, or as an ONNX model when the "
                    "output ends in .onnx (checked against the Keras scores before it is written); with "
                    "--calibrate, a static int8 ONNX model checked against float32.")
    parser.add_argument("model", help="run folder or .keras file")
    parser.add_argument("out", help="SavedModel folder to create, or a .onnx file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--check", default=None,
                        help="ONNX: stamps to compare ONNX Runtime with Keras on (default: 256 synthetic stamps); "
                             "int8: a labelled file also checks the AUC")
    parser.add_argument("--calibrate", default=None, metavar="TRAIN",
                        help="ONNX: quantise to static int8, calibrated on stamps of this (training) file")
    parser.add_argument("--calibration-rows", type=int, default=CALIBRATION_ROWS,
                        help=f"int8: calibration stamps spread over TRAIN (default {CALIBRATION_ROWS})")
    parser.add_argument("--calibration-method", default="minmax", choices=["minmax", "entropy", "percentile"])
    parser.add_argument("--int8-ends", action="store_true",
                        help="int8: quantise the first convolution and the logits layer too (default: float32)")
    parser.add_argument("--check-rows", type=int, default=INT8_CHECK_ROWS,
                        help=f"int8: check stamps spread over --check (default {INT8_CHECK_ROWS})")
    parser.add_argument("--score-tolerance", type=float, default=INT8_SCORE_TOLERANCE,
                        help=f"int8: largest accepted |score difference| from float32 (default {INT8_SCORE_TOLERANCE})")
    args = parser.parse_args(argv)
    model = Path(args.model)
    out = Path(args.out)
    if not model.exists():
        raise DataError(f"{model}: no such run folder or model file")
    _check_free(out, args.overwrite)
    if args.calibrate is not None and out.suffix.lower() != ".onnx":
        raise DataError(f"{out}: --calibrate quantises an ONNX model; the output must end in .onnx")
    for n, name in ((args.calibration_rows, "--calibration-rows"), (args.check_rows, "--check-rows")):
        if n < 1:
            raise DataError(f"{name}={n} must be a positive integer")
    if out.suffix.lower() == ".onnx":
        report = export_onnx(model, out, overwrite=args.overwrite, check=args.check, calibrate=args.calibrate,
                             calibration_rows=args.calibration_rows, check_rows=args.check_rows,
                             score_tolerance=args.score_tolerance, calibration_method=args.calibration_method,
                             float_ends=not args.int8_ends)
        line = (f"wrote {out} (ONNX opset {report['opset']}; scores within {report['max_score_difference']:.2g} "
                f"of Keras on {report['n_stamps']} check stamps")
        q = report.get("int8")
        if q:
            line += (f"; int8: largest score difference from float32 {q['max_score_difference']:.3g} on "
                     f"{q['n_check_stamps']} stamps")
            if "auc_difference" in q:
                line += f", AUC {q['auc_int8']:.6f} vs {q['auc_float32']:.6f} ({q['auc_difference']:+.1e})"
        print(line + ")")
        return out
    out = export_saved_model(model, out, overwrite=args.overwrite)
    print(f"wrote {out}")
    return out


def main(argv=None) -> None:
    _run(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
