"""Model cards: what a saved network expects, how it was trained, and how well it does.

A card is a JSON document. It is written beside the model as ``model_card.json`` and also
stored inside the ``.keras`` file itself, as an extra member ``model_card.json`` of the zip
archive (Keras reads only the members it knows, so the file loads as before). A ``.keras`` file
copied on its own therefore still says what it is; :func:`read_card` reads the card back with
the standard library only, without loading TensorFlow.

Fields (format ``realbogus-model-card/1``)
------------------------------------------
``model``         name, builder settings (``conf/model/<name>.yaml``), parameter count
``input``         shape (29, 29, 3), dtype, channel order (new, ref, diff), units, pixel scale
``normalisation`` the per-stamp, per-channel min-max scaling done inside the network
``output``        logits [bogus, real], the score and the calibrated score
``training``      data set name, source and folder; the run's complete resolved config
``test_metrics``  the run's ``metrics.json`` (AUC, FPR at TPR targets, bogus per night, ...)
``thresholds``    score thresholds at TPR 0.9, 0.95 and 0.99 on the test split with their FPR
``roc``           the test ROC curve (thresholds included), for operating points chosen later
``calibration``   the fitted temperature and Brier scores before and after (or null)
``exports``       input and output names and layout of the SavedModel and ONNX exports
``versions``      realbogus, TensorFlow, Keras, NumPy, Python
``created``       UTC time the card was written
``model_version`` short content hash of the weights and of the rest of the card
                  (:func:`model_version`), written on every score ``predict`` gives

Model version
-------------
Twelve hexadecimal digits of the SHA-256 of every weight array of the network (dtype, shape
and bytes, in the network's weight order) followed by the card without its own
``model_version`` field, as canonical JSON (sorted keys). Reloading the model, copying the
``.keras`` file or exporting it gives the same version; retraining, changing a weight, or
re-finalising the run (new calibration, new ``created`` time) gives another.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from realbogus.errors import ConfigError, DataError
from realbogus.io import atomic_path, save_json, to_jsonable
from realbogus.rundir import RunDir

__all__ = [
    "CARD_FORMAT",
    "CARD_NAME",
    "MODEL_FILE",
    "versions",
    "VERSION_FIELD",
    "EXPORTS",
    "model_version",
    "build_card",
    "embed_card",
    "read_card",
    "write_card",
    "learned_fading_as_stored",
    "resolve_orient",
]

CARD_FORMAT = "realbogus-model-card/1"
#: Name of the card both beside the model and as a member of the ``.keras`` archive.
CARD_NAME = "model_card.json"
MODEL_FILE = "model.keras"
#: Card field holding :func:`model_version`.
VERSION_FIELD = "model_version"
#: What the exports take and give (the same for every model; ``calibrated_score`` only with a temperature).
EXPORTS = {
    "saved_model": {
        "command": "python -m realbogus.deploy.export RUN OUT_DIR",
        "signature": "serving_default",
        "inputs": {"stamps": "float32 [batch, 29, 29, 3]: raw counts, channels last (new, ref, diff)"},
        "outputs": {"logits": "float32 [batch, 2]: [bogus, real]",
                    "score": "float64 [batch]: probability of real, sigmoid(logit_real - logit_bogus)",
                    "calibrated_score": "float64 [batch]: sigmoid((logit_real - logit_bogus) / temperature)"},
    },
    "onnx": {
        "command": "python -m realbogus.deploy.export RUN model.onnx",
        "inputs": {"stamps": "float32 [batch, 29, 29, 3]: raw counts, channels last (NHWC: new, ref, diff); "
                             "batch is a dynamic axis; the min-max normalisation is inside the graph"},
        "outputs": {"logits": "float32 [batch, 2]: [bogus, real]",
                    "score": "float64 [batch]: probability of real, sigmoid(logit_real - logit_bogus)",
                    "calibrated_score": "float64 [batch]: sigmoid((logit_real - logit_bogus) / temperature)"},
        "metadata_props": {"model_card": "this card as JSON", "model_version": "the model version"},
    },
}


def versions() -> dict[str, str]:
    """Versions of the software a model was made with."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("realbogus", "tensorflow", "keras"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _card_bytes(card: Mapping | None) -> bytes:
    if card is None:
        return b"null"
    rest = {k: v for k, v in card.items() if k != VERSION_FIELD}
    return json.dumps(to_jsonable(rest), sort_keys=True, separators=(",", ":")).encode()


def model_version(network, card: Mapping | None) -> str:
    """Short content hash of a network's weights and its model card (see the module docstring).

    Parameters
    ----------
    network
        The Keras network (a training wrapper is unwrapped).
    card
        Its model card (None: none), with or without a ``model_version`` field.

    Returns
    -------
    str
        Twelve hexadecimal digits.
    """
    from realbogus.models.base import unwrap

    digest = hashlib.sha256()
    for weight in unwrap(network).get_weights():
        array = np.ascontiguousarray(weight)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    digest.update(_card_bytes(card))
    return digest.hexdigest()[:12]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from None


def _pixel_scale(data_cfg: Mapping) -> float | None:
    """Pixel scale recorded in the training file, if it can be opened."""
    from realbogus.data.format import DEFAULT_PIXEL_SCALE

    directory = data_cfg.get("dir")
    if not directory:
        return DEFAULT_PIXEL_SCALE
    path = Path(str(directory)) / "train.h5"
    if not path.is_file():
        return DEFAULT_PIXEL_SCALE
    try:
        from realbogus.data.format import open_dataset

        with open_dataset(path) as ds:
            return float(ds.attrs.get("pixel_scale_arcsec", DEFAULT_PIXEL_SCALE))
    except (DataError, OSError, ValueError):
        return DEFAULT_PIXEL_SCALE


def build_card(run_dir: str | os.PathLike, calibration: Mapping | None = None, n_parameters: int | None = None,
               predictions: Mapping | None = None) -> dict:
    """Assemble the card of a finished run folder.

    Parameters
    ----------
    run_dir
        Run folder with ``run_config.yaml``, ``metrics.json`` and ``predictions.csv``.
    calibration
        Content of ``calibration.json`` (None: no temperature).
    n_parameters
        Parameter count of the network (None: not recorded).
    predictions
        The test predictions (default: read from ``predictions.csv``).

    Returns
    -------
    dict
        The card (JSON-ready).
    """
    from omegaconf import OmegaConf

    from realbogus.data.format import STAMP_SHAPE
    from realbogus.deploy import thresholds as T
    from realbogus.evaluation.report import read_predictions

    run_dir = Path(run_dir)
    config_path = RunDir(run_dir).config_path
    if not config_path.is_file():
        raise DataError(f"{config_path}: no such file (a finished run folder holds it)")
    config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True)
    metrics = _read_json(run_dir / "metrics.json")
    if metrics is None:
        raise DataError(f"{run_dir / 'metrics.json'}: no such file (evaluate the run first)")
    if predictions is None:
        predictions = read_predictions(run_dir)
    model_cfg = dict(config.get("model") or {})
    data_cfg = dict(config.get("data") or {})
    detections = float(metrics.get("bogus_detections_per_night") or T.DEFAULT_DETECTIONS_PER_NIGHT)
    thresholds = T.card_thresholds(predictions["score"], predictions["label"], detections)
    roc = T.curve_points(predictions["score"], predictions["label"])
    roc["source"] = "predictions.csv (test split), label column"
    calib = None
    if calibration is not None:
        temperature = float(calibration["temperature"])
        from realbogus.deploy.calibration import apply_temperature

        for point in thresholds.values():
            point["calibrated_threshold"] = float(apply_temperature(point["threshold"], temperature))
        calib = {
            "temperature": temperature,
            "method": calibration.get("method"),
            "validation": calibration.get("validation"),
            "test": calibration.get("test"),
        }
    card = {
        "card_format": CARD_FORMAT,
        "created": _now(),
        "model": {
            "name": model_cfg.get("name"),
            "file": MODEL_FILE,
            "config": model_cfg,
            "parameters": n_parameters,
        },
        "input": {
            "shape": list(STAMP_SHAPE),
            "dtype": "float32",
            "channel_order": ["new", "ref", "diff"],
            "units": "raw counts (ADU) of the new (science) and reference images and their difference; "
                     "no scaling or background subtraction needed",
            "pixel_scale_arcsec": _pixel_scale(data_cfg),
            "masked_pixels": "not accepted (NaN/inf); replace them first, e.g. predict nan_policy=fill",
            "fading_candidates": _fading_note(config),
        },
        "normalisation": {
            "method": "each stamp and channel min-max scaled to [0, 1] by the network's first layer "
                      "(StampNormalization); flat channels map to 0",
            "epsilon": model_cfg.get("normalization_epsilon"),
        },
        "output": {
            "logits": ["bogus", "real"],
            "score": "softmax(logits)[:, 1], the probability of real; candidate when score >= threshold",
            "calibrated_score": "sigmoid((logit_real - logit_bogus) / temperature)" if calib else None,
        },
        "training": {
            "data": {"name": data_cfg.get("name"), "source": data_cfg.get("source"), "dir": data_cfg.get("dir")},
            "loss": (config.get("loss") or {}).get("name"),
            "run_name": config.get("run_name"),
            "seed": config.get("seed"),
            "config": config,
        },
        "test_metrics": metrics,
        "thresholds": thresholds,
        "roc": roc,
        "calibration": calib,
        "exports": EXPORTS,
        "versions": versions(),
    }
    return to_jsonable(card)


def _fading_note(config: Mapping) -> str:
    if learned_fading_as_stored({"training": {"config": config}}):
        return ("as the survey stores them: new and reference as they are, the difference negated "
                "(reference minus new); predict and realdata orient=auto score them so")
    return ("trained on brightenings only: score a fading candidate with new and reference exchanged "
            "(predict and realdata orient=auto do)")


def embed_card(keras_path: str | os.PathLike, card: Mapping) -> Path:
    """Store ``card`` inside a ``.keras`` archive as the member ``model_card.json`` (atomically).

    The archive is rewritten with every other member unchanged, so a card written earlier is
    replaced rather than duplicated.
    """
    keras_path = Path(keras_path)
    if not keras_path.is_file():
        raise DataError(f"{keras_path}: no such file")
    payload = json.dumps(to_jsonable(card), indent=2).encode() + b"\n"
    try:
        with zipfile.ZipFile(keras_path) as src, atomic_path(keras_path) as tmp:
            with zipfile.ZipFile(tmp, "w") as dst:
                for info in src.infolist():
                    if info.filename != CARD_NAME:
                        dst.writestr(info, src.read(info))
                dst.writestr(CARD_NAME, payload, compress_type=zipfile.ZIP_DEFLATED)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{keras_path}: not a .keras archive ({exc})") from None
    return keras_path


def read_card(path: str | os.PathLike) -> dict | None:
    """Read the card of a ``.keras`` file or a run folder (None if there is none).

    For a run folder the card inside its ``model.keras`` is preferred, then ``model_card.json``.
    Only the standard library is used: no TensorFlow import.

    Raises
    ------
    DataError
        The path is missing, not a zip archive, or the card is not valid JSON.
    """
    path = Path(path)
    if path.is_dir():
        inside = read_card(path / MODEL_FILE) if (path / MODEL_FILE).is_file() else None
        return inside if inside is not None else _read_json(path / CARD_NAME)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as zf:
            if CARD_NAME not in zf.namelist():
                return None
            return json.loads(zf.read(CARD_NAME))
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not a .keras archive (not a zip file)") from None
    except ValueError as exc:
        raise DataError(f"{path}: member {CARD_NAME} is not valid JSON ({exc})") from None


def learned_fading_as_stored(card: Mapping | None) -> bool:
    """Whether the model was trained on fading candidates stored as surveys store them.

    True when its training data came from a camera with ``instrument.negative_detections``: the
    simulator then writes fadings with the difference negated (reference minus new) and new and
    reference unchanged, as ZTF stores ``isdiffpos='f'`` alerts. Otherwise the model has seen
    only brightenings, and fading alerts are best scored with science and template exchanged.
    """
    try:
        inst = card["training"]["config"]["data"]["simulation"]["instrument"]
    except (KeyError, TypeError):
        return False
    return bool(isinstance(inst, Mapping) and inst.get("negative_detections") is True)


def resolve_orient(orient, card: Mapping | None) -> bool:
    """``orient`` (true, false or "auto") as a bool: auto exchanges science and template of
    fading alerts unless the model learned them as stored (:func:`learned_fading_as_stored`)."""
    if isinstance(orient, str) and orient == "auto":
        return not learned_fading_as_stored(card)
    if isinstance(orient, (bool, np.bool_)):
        return bool(orient)
    raise ConfigError(f"orient={orient!r} must be true, false or auto")


def write_card(run_dir: str | os.PathLike, card: Mapping) -> Path:
    """Write ``card`` as ``run_dir/model_card.json`` and into ``run_dir/model.keras``."""
    run_dir = Path(run_dir)
    embed_card(run_dir / MODEL_FILE, card)
    return save_json(run_dir / CARD_NAME, card)
