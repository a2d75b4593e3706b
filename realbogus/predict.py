"""Score candidate stamps with a trained model: ``python -m realbogus.predict model=M input=I output=O``.

Examples::

    # a run folder's model on a night's candidates; scores in input order
    python -m realbogus.predict model=experiments/train/quick-complex-ce_ech_vat-s0 \\
        input=night.npz output=night_scores.csv
    # flag candidates so that about 100 bogus a night get through out of 10^6 detections
    python -m realbogus.predict model=RUN input=cutouts/ output=cands.csv bogus_per_night=100
    # keep 95% of real transients; HDF5 output; a .keras file on its own (its model card is used)
    python -m realbogus.predict model=model.keras input=data/custom/test.h5 output=s.h5 target_tpr=0.95

    # brokers' alert packets (Avro, ZTF or DECam schema); an exported ONNX model, without TensorFlow
    python -m realbogus.predict model=model.onnx input=alerts/ output=alerts.csv
    # a cascade: the simple model screens out obvious bogus, losing at most 0.1% of its validation reals
    python -m realbogus.predict model=model.int8.onnx screen=experiments/train/quick-simple-ce-s0 \
        screen_tpr=0.999 input=night.npz output=night.csv target_tpr=0.9

Inputs (see :mod:`realbogus.data.loaders`): our HDF5 files (only ``images`` is needed), ``.npy``
stacks and ``.npz`` archives (``images`` (N, 29, 29, 3), channels new, ref, diff), the
published Zenodo layout, FITS cutouts (one file, one triplet or a directory), and Avro alert
packets (one ``.avro`` file or a directory of them, see :mod:`realbogus.data.alerts`). Stamps
are read and scored block by block, so memory stays bounded whatever the input's size.

Models: a run folder or a ``.keras`` file (TensorFlow), or an ``.onnx`` file written by
``python -m realbogus.deploy.export``, float32 or int8 (scored by ONNX Runtime or OpenVINO,
``runtime=``; TensorFlow is not imported). ``precision=auto`` times the Keras model in float32
and bfloat16 on this machine and keeps the faster; an ONNX model is likewise timed under ONNX
Runtime and OpenVINO (``runtime=auto``, when ``openvino`` is installed) and, under ONNX
Runtime, using the cores inside each operator or on one batch each (all cached,
:mod:`realbogus.speed`). With ``screen=`` a second, cheaper model screens every stamp first and
only those passing it reach ``model`` (see :mod:`realbogus.deploy.cascade`; the output gains
``screen_score`` and ``screened_out``).

Output (CSV or HDF5, by suffix), one row per input stamp in input order:
``index`` (row in the input), the input's own per-sample columns (identifiers such as
``candid``, ``objectId`` or ``name``, and ``label``, ``sensor_id``, ``kind``, ``mag`` when it
has them; for alerts also ``isdiffpos``, ``alert_file``, ``swapped``, ``centre_offset`` and
``off_centre``), ``score`` (probability of real, float64; empty for an off-centre alert),
``calibrated_score`` (when the model has a temperature), ``is_candidate`` (1/0, when an
operating point was chosen) and ``model_version`` (:func:`realbogus.deploy.card.model_version`).
Beside it, ``<output>.meta.json`` records the model and its version, the threshold and where it
came from, the operating point with its expected TPR and FPR, the candidate count and the
speed. Both appear complete or not at all.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from realbogus.errors import ConfigError, DataError, report_errors
from realbogus.faults import fault_point

__all__ = ["LAYOUTS", "predict_file", "resolve_model", "check_output_path", "predict", "main"]

#: Input layouts: those of :mod:`realbogus.data.loaders`, and ``avro`` alert packets.
LAYOUTS = ("auto", "zenodo", "npy", "fits", "hdf5", "avro")
_CSV_SUFFIXES = (".csv",)
_H5_SUFFIXES = (".h5", ".hdf5")
DEFAULT_BATCH_SIZE = 512
#: Stamps per block read from the input (a multiple of the batch size is used).
DEFAULT_BLOCK_ROWS = 4096


def meta_path(output: str | os.PathLike) -> Path:
    """Where the metadata of ``output`` goes: ``<output>.meta.json``."""
    output = Path(output)
    return output.with_name(output.name + ".meta.json")


def resolve_model(path: str | os.PathLike, onnx: bool = False) -> tuple[Path, Path | None]:
    """``(model_file, run_folder or None)`` for a ``model=`` path.

    Parameters
    ----------
    path
        A run folder, a ``.keras`` file, or (with ``onnx``) an ``.onnx`` file.
    onnx
        Accept ``.onnx`` files.

    Raises
    ------
    DataError
        The path does not exist, a folder holds no ``model.keras``, or a file is not a model.
    """
    path = Path(path)
    accepted = "a run folder, a .keras file or an .onnx file" if onnx else "a run folder or a .keras file"
    if not path.exists():
        raise DataError(f"{path}: no such run folder or model file")
    if path.is_dir():
        keras_path = path / "model.keras"
        if not keras_path.is_file():
            raise DataError(f"{path}: no model.keras in this folder (model= takes {accepted})")
        return keras_path, path
    if path.suffix == ".keras" or (onnx and path.suffix == ".onnx"):
        return path, None
    raise DataError(f"{path}: not a .keras file (model= takes {accepted})")


def check_output_path(path: str | os.PathLike, overwrite: bool) -> None:
    """Refuse an output that cannot be written, before any work starts.

    Raises
    ------
    DataError
        ``path`` exists (without ``overwrite``) or is a directory; a folder on its way is a
        file; or the nearest existing folder is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory")
    if path.exists() and not overwrite:
        raise DataError(f"{path}: already exists (pass overwrite=true to replace it)")
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise DataError(f"{path}: cannot be created, {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"{path}: cannot be created, folder {folder} is not writable")


def _temperature(run_dir: Path | None, card: dict | None) -> float | None:
    if run_dir is not None and (run_dir / "calibration.json").is_file():
        try:
            with open(run_dir / "calibration.json") as fh:
                return float(json.load(fh)["temperature"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{run_dir / 'calibration.json'}: unreadable ({exc})") from None
    if card and card.get("calibration"):
        return float(card["calibration"]["temperature"])
    return None


def _operating_point(request, detections: float, run_dir: Path | None, model_path: Path, card: dict | None):
    """The operating point for ``request`` from the run's test predictions, else the model card."""
    from realbogus.deploy import thresholds as T

    if request is None:
        return None
    mode, value = request
    if run_dir is not None and (run_dir / "predictions.csv").is_file():
        from realbogus.evaluation.report import read_predictions

        ref = read_predictions(run_dir)
        fpr, tpr, thr, n_real, n_bogus = T.roc_points(ref["score"], ref["label"])
        return T.operating_point_from_curve(fpr, tpr, thr, n_real, n_bogus, mode, value, detections,
                                            reference=f"{run_dir / 'predictions.csv'} (test split)")
    if card and card.get("roc"):
        return T.from_card_curve(card["roc"], mode, value, detections, reference=f"{model_path} (model card ROC curve)")
    if mode == "threshold":
        nan = float("nan")
        return T.OperatingPoint(mode, value, value, nan, nan, nan, detections, nan, nan, 0, 0, "none", False,
                                ["no reference set (no run folder predictions, no model card): rates unknown"])
    raise DataError(
        f"{model_path}: {mode}= needs reference results: give the run folder (with predictions.csv) "
        "or a .keras or .onnx file carrying a model card"
    )


def _output_columns(src, scores, calibrated, candidate, n_masked) -> dict[str, np.ndarray]:
    from realbogus.data.kinds import KIND_NAMES

    cols: dict[str, np.ndarray] = {"index": np.arange(src.n, dtype=np.int64)}
    for name, col in src.columns.items():
        if name in ("index", "score", "calibrated_score", "is_candidate"):
            name = f"input_{name}"
        col = np.asarray(col)
        if name == "kind" and col.dtype.kind in "iu":
            names = np.asarray(src.attrs.get("kind_names") or KIND_NAMES)
            col = names[np.clip(col, 0, names.size - 1)]
        cols[name] = col
    if n_masked is not None:
        cols["n_masked"] = n_masked
    cols["score"] = scores
    if calibrated is not None:
        cols["calibrated_score"] = calibrated
    if candidate is not None:
        cols["is_candidate"] = candidate.astype(np.int8)
    return cols


def _text(col: np.ndarray) -> list[str]:
    if col.dtype.kind == "f":
        if col.dtype == np.float64:
            return ["" if not np.isfinite(v) else repr(v) for v in col.tolist()]
        return ["" if not np.isfinite(v) else f"{v:.7g}" for v in col.tolist()]
    if col.dtype.kind == "S":
        return [v.decode("utf-8", "replace") for v in col.tolist()]
    return [str(v) for v in col.tolist()]


def _write_csv(path: Path, cols: dict[str, np.ndarray]) -> None:
    import csv

    from realbogus.io import atomic_write

    names = list(cols)
    with atomic_write(path, newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(names)
        n = len(cols["index"])
        step = 65536
        for s in range(0, n, step):
            writer.writerows(zip(*(_text(cols[k][s:s + step]) for k in names)))


def _write_h5(path: Path, cols: dict[str, np.ndarray], attrs: dict) -> None:
    import h5py

    from realbogus.io import atomic_path

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name, col in cols.items():
                if col.dtype.kind in "USO":
                    data = np.asarray([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in col],
                                      dtype=object)
                    f.create_dataset(name, data=data, dtype=h5py.string_dtype("utf-8"))
                else:
                    f.create_dataset(name, data=col)
            for key, value in attrs.items():
                f.attrs[key] = value


def _open_input(input, layout: str, split: str | None, orient: bool, max_centre_offset: float):
    """The input as a :class:`~realbogus.data.loaders.StampSource` (alert packets included)."""
    from realbogus.data.alerts import is_alert_path, open_alerts
    from realbogus.data.loaders import open_stamps

    if layout == "avro" or (layout == "auto" and Path(input).exists() and is_alert_path(input)):
        return open_alerts(input, orient=orient, max_centre_offset=max_centre_offset)
    return open_stamps(input, layout=layout, split=split)


def _keras_scorer(model_path: Path, card: dict | None, batch_size: int, precision: str):
    """(scorer, model version) of a ``.keras`` file: the step that starts TensorFlow."""
    from realbogus.deploy.card import model_version
    from realbogus.deploy.inference import Scorer
    from realbogus.models import load_model

    network = load_model(model_path)
    return Scorer(network, batch_size=batch_size, precision=precision), model_version(network, card)


def _onnx_metadata(model_path: Path, batch_size: int) -> dict:
    """An ONNX model's metadata, read by a plain session (checks that it loads and its interface)."""
    from realbogus.deploy.inference import OnnxScorer

    return OnnxScorer(model_path, batch_size=batch_size, parallel="threads", optimization="basic").metadata


def _onnx_scorer(model_path: Path, batch_size: int, runtime: str):
    """The scorer of an ONNX model: ``runtime=auto`` times ONNX Runtime against OpenVINO (and ONNX
    Runtime's threads against streams) on first use (:func:`~realbogus.deploy.inference.onnx_scorer`)."""
    from realbogus.deploy.inference import onnx_scorer

    return onnx_scorer(model_path, batch_size=batch_size, runtime=runtime)


def _onnx_card(metadata: dict, model_path: Path) -> dict | None:
    """The model card stored in an ONNX model's metadata (read by ONNX Runtime)."""
    text = metadata.get("model_card")
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DataError(f"{model_path}: its model_card metadata is not valid JSON ({exc})") from None


def _measured(scorer, attribute: str = "auto") -> dict | None:
    """What ``auto`` chose for ``scorer`` (Keras: the precision; ONNX: threads or streams; with
    ``attribute="runtime_auto"``: the ONNX runtime) and the rates."""
    auto = getattr(scorer, attribute, None)
    if auto is None:
        return None
    return {"choice": auto.choice, "samples_per_s": auto.rates, "cached": not auto.measured}


def _check_screen(screen, screen_threshold, screen_tpr):
    """``None``, or the screen request ``{"mode", "requested"}``; bad combinations are a ConfigError."""
    given = screen not in (None, "")
    if not given:
        if screen_threshold is not None or screen_tpr is not None:
            raise ConfigError("screen_threshold= and screen_tpr= need screen= (the screening model)")
        return None
    if (screen_threshold is None) == (screen_tpr is None):
        raise ConfigError("screen= needs exactly one of screen_threshold= (a screen score) and screen_tpr= (the "
                          "fraction of the screen's validation reals to keep, e.g. 0.999)")
    if screen_threshold is not None:
        if not 0.0 < float(screen_threshold) < 1.0:
            raise ConfigError(f"screen_threshold={screen_threshold!r} must lie between 0 and 1 (exclusive)")
        return {"mode": "screen_threshold", "requested": float(screen_threshold)}
    if not 0.0 < float(screen_tpr) <= 1.0:
        raise ConfigError(f"screen_tpr={screen_tpr!r} must lie in (0, 1]")
    return {"mode": "screen_tpr", "requested": float(screen_tpr)}


def _screen_threshold(request: dict, screen_run: Path | None, screen_path: Path) -> dict:
    """The request with its ``threshold`` (and, for ``screen_tpr``, the validation counts)."""
    from realbogus.deploy.cascade import VALIDATION_FILE, screen_threshold_from_validation

    if request["mode"] == "screen_threshold":
        return {**request, "threshold": request["requested"], "reference": "given"}
    if screen_run is None:
        raise DataError(f"{screen_path}: screen_tpr= needs the screen's run folder (its {VALIDATION_FILE}); "
                        "give screen=RUN_FOLDER or screen_threshold=")
    return {**request, **screen_threshold_from_validation(screen_run, request["requested"])}


def predict_file(
    model: str | os.PathLike,
    input: str | os.PathLike,
    output: str | os.PathLike,
    threshold: float | None = None,
    target_tpr: float | None = None,
    bogus_per_night: float | None = None,
    detections_per_night: float = 1e6,
    overwrite: bool = False,
    batch_size: int | None = None,
    precision: str = "auto",
    runtime: str = "auto",
    nan_policy: str = "error",
    max_masked_fraction: float = 0.25,
    layout: str = "auto",
    split: str | None = None,
    block_rows: int | None = None,
    progress: bool = False,
    orient: bool | str = "auto",
    max_centre_offset: float = 3.0,
    screen: str | os.PathLike | None = None,
    screen_threshold: float | None = None,
    screen_tpr: float | None = None,
) -> dict:
    """Score every stamp of ``input`` with ``model`` and write ``output`` and its ``.meta.json``.

    Parameters are those of ``conf/predict.yaml``. Everything that can be checked before the
    network is loaded is checked first (options, output paths, model path, the input's format
    and its first block), so most mistakes fail within a second.

    Returns
    -------
    dict
        The content of the ``.meta.json`` file.

    Raises
    ------
    ConfigError, DataError
        Invalid options; missing model; unreadable, truncated or malformed input (wrong stamp
        size or channel count, NaN/inf pixels under ``nan_policy=error``); existing output
        without ``overwrite``, or an output that cannot be created. Nothing is written then.

    Notes
    -----
    With ``screen`` (a run folder, ``.keras`` or ``.onnx`` file of a cheaper model) and one of
    ``screen_threshold`` / ``screen_tpr``, the screen scores every stamp and ``model`` only
    those whose screen score is at least the screen threshold; see
    :mod:`realbogus.deploy.cascade` for the score the others get.
    """
    from realbogus.data.loaders import NAN_POLICIES
    from realbogus.deploy import thresholds as T
    from realbogus.deploy.card import VERSION_FIELD, read_card, resolve_orient
    from realbogus.deploy.inference import PRECISIONS, check_runtime

    t_start = time.perf_counter()
    request = T.check_request(threshold, target_tpr, bogus_per_night, detections_per_night)
    detections = float(detections_per_night)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    check_runtime(runtime)  # a known runtime; openvino only when installed
    if nan_policy not in NAN_POLICIES:
        raise ConfigError(f"nan_policy={nan_policy!r} is not one of {', '.join(NAN_POLICIES)}")
    if layout not in LAYOUTS:
        raise ConfigError(f"layout={layout!r} is not one of {', '.join(LAYOUTS)}")
    if not (isinstance(orient, (bool, np.bool_)) or orient == "auto"):
        raise ConfigError(f"orient={orient!r} must be true, false or auto")
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer")
    if block_rows is None:
        block_rows = max(DEFAULT_BLOCK_ROWS // batch_size, 1) * batch_size
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in _CSV_SUFFIXES + _H5_SUFFIXES:
        raise ConfigError(f"output={output}: unknown format {suffix!r}; use .csv, .h5 or .hdf5")
    meta_file = meta_path(output)
    for path in (output, meta_file):
        check_output_path(path, overwrite)
    screen_request = _check_screen(screen, screen_threshold, screen_tpr)
    model_path, run_dir = resolve_model(model, onnx=True)
    is_onnx = model_path.suffix == ".onnx"
    if is_onnx and precision == "mixed_bfloat16":
        raise ConfigError("precision=mixed_bfloat16 needs a Keras model; ONNX models score in float32 or int8")
    screen_path = screen_run = screen_scorer = screen_version = None
    if screen_request is not None:
        screen_path, screen_run = resolve_model(screen, onnx=True)
        if screen_path.resolve() == model_path.resolve():
            raise ConfigError(f"screen={screen}: is the model itself; the screen is a cheaper model")
        screen_request = _screen_threshold(screen_request, screen_run, screen_path)
    if runtime != "auto" and not (is_onnx or (screen_path is not None and screen_path.suffix == ".onnx")):
        raise ConfigError(f"runtime={runtime} applies to .onnx models; {model_path} runs under TensorFlow")
    version = None
    if is_onnx:  # ONNX Runtime starts in a fraction of a second: read the card now
        metadata = _onnx_metadata(model_path, batch_size)
        card = _onnx_card(metadata, model_path)
        version = metadata.get(VERSION_FIELD) or (card or {}).get(VERSION_FIELD)
    else:
        card = read_card(model_path)
    if card is None and run_dir is not None:
        card = read_card(run_dir)
    temperature = _temperature(run_dir, card)
    point = _operating_point(request, detections, run_dir, model_path, card)
    if screen_path is not None and screen_path.suffix == ".onnx":
        screen_version = _onnx_metadata(screen_path, batch_size).get(VERSION_FIELD)

    orient = resolve_orient(orient, card)
    with _open_input(input, layout, split, orient, max_centre_offset) as src:
        if Path(input).resolve() == output.resolve():
            raise DataError(f"{output}: is the input file")
        blocks = src.iter_blocks(block_rows, nan_policy, max_masked_fraction)
        first = next(blocks)  # fails fast on a bad first block, before TensorFlow starts

        from realbogus.progress import progress_bar

        from realbogus.deploy.inference import prefetch
        from realbogus.evaluation.scoring import scores_from_logits

        # the scorers are built (and, the first time on this machine, timed) once the input is known good
        if is_onnx:
            scorer = _onnx_scorer(model_path, batch_size, runtime)
        else:
            scorer, version = _keras_scorer(model_path, card, batch_size, precision)
        if screen_path is not None and screen_path.suffix == ".onnx":
            screen_scorer = _onnx_scorer(screen_path, batch_size, runtime)
        elif screen_path is not None:
            screen_scorer, screen_version = _keras_scorer(screen_path, read_card(screen_path), batch_size, precision)
        cascade = None
        if screen_scorer is not None:
            from realbogus.deploy.cascade import Cascade

            cascade = Cascade(screen_scorer, scorer, screen_request["threshold"], src.n,
                              flush_rows=4 * max(batch_size, DEFAULT_BATCH_SIZE))
        t_model = time.perf_counter()
        logits = np.empty((src.n, 2), np.float32)
        n_masked = np.zeros(src.n, np.int16) if nan_policy == "fill" else None
        done = 0
        with progress_bar(total=src.n, unit="stamp", desc=f"scoring {Path(input).name}", disable=not progress,
                  dynamic_ncols=True, file=sys.stderr) as bar:
            for images, cols in prefetch(itertools.chain([first], blocks)):
                k = images.shape[0]
                if cascade is None:
                    logits[done:done + k] = scorer.logits(images)
                else:
                    cascade.feed(images, done)
                if n_masked is not None:
                    n_masked[done:done + k] = cols["n_masked"]
                done += k
                bar.update(k)
                fault_point("scoring")
            if cascade is not None:
                cascade.flush()
                logits = cascade.logits
        t_scored = time.perf_counter()
        if done != src.n:
            raise DataError(f"{input}: read {done} stamps, expected {src.n}")
        bad = ~np.isfinite(logits).all(axis=1)
        if cascade is not None:
            bad = (bad & cascade.passed) | ~np.isfinite(cascade.screen_logits).all(axis=1)
        if bad.any():
            raise DataError(f"{input}: the model gives NaN/inf for {int(bad.sum())} stamp(s) (first at row "
                            f"{int(np.argmax(bad))})")
        scores = scores_from_logits(logits)
        margins = logits[:, 1].astype(np.float64) - logits[:, 0]
        screen_cols = None
        if cascade is not None:
            from realbogus.deploy.cascade import SCREEN_CEILING, screened_scores

            screen_score = scores_from_logits(cascade.screen_logits)
            out = ~cascade.passed
            ceiling = SCREEN_CEILING if point is None else min(SCREEN_CEILING, point.threshold)
            scores[out] = screened_scores(screen_score[out], screen_request["threshold"], ceiling)
            with np.errstate(divide="ignore"):
                margins[out] = np.log(scores[out]) - np.log1p(-scores[out])
            screen_cols = {"screen_score": screen_score, "screened_out": out.astype(np.int8)}
        calibrated = None
        if temperature is not None:
            from scipy.special import expit

            calibrated = expit(margins / temperature)
        off_centre = np.asarray(src.columns.get("off_centre", np.zeros(src.n)), bool)
        scores[off_centre] = np.nan  # refused: the crop is not centred on the candidate
        if calibrated is not None:
            calibrated[off_centre] = np.nan
        candidate = None if point is None else scores >= point.threshold
        cols = _output_columns(src, scores, calibrated, candidate, n_masked)
        if screen_cols is not None:
            cols.update(screen_cols)
        cols["model_version"] = np.full(src.n, version or "", dtype=object)
        input_layout = src.layout

    from realbogus.deploy.card import versions
    from realbogus.io import atomic_path, save_json, to_jsonable

    seconds = t_scored - t_model
    meta = {
        "model": str(model_path),
        "model_format": "onnx" if is_onnx else "keras",
        "model_version": version,
        "run_dir": None if run_dir is None else str(run_dir),
        "model_name": (card or {}).get("model", {}).get("name") or model_path.stem,
        "model_card_created": (card or {}).get("created"),
        "input": str(input),
        "input_layout": input_layout,
        "output": str(output),
        "n": int(src.n),
        "columns": list(cols),
        "temperature": temperature,
        "threshold": None if point is None else point.threshold,
        "threshold_source": None if point is None else {"mode": point.mode, "requested": point.requested,
                                                        "reference": point.reference},
        "operating_point": None if point is None else point.to_dict(),
        "n_candidates": None if candidate is None else int(candidate.sum()),
        "n_off_centre": int(off_centre.sum()) if "off_centre" in src.columns else None,
        "precision": scorer.precision,
        "runtime": getattr(scorer, "runtime", "keras"),
        "runtime_auto_measured": _measured(scorer, "runtime_auto"),
        "onnx_session": f"{scorer.parallel}/{scorer.optimization}" if is_onnx else None,
        "auto_measured": _measured(scorer),
        "screen": None,
        "batch_size": batch_size,
        "nan_policy": nan_policy,
        "n_masked_pixels": None if n_masked is None else int(n_masked.astype(np.int64).sum()),
        "scoring_seconds": round(seconds, 3),
        "stamps_per_second": round(src.n / seconds, 1) if seconds > 0 else None,
        "total_seconds": None,
        "cpu_count": os.cpu_count(),
        "versions": versions(),
    }
    if cascade is not None:
        n_out = int((~cascade.passed).sum())
        meta["screen"] = {
            "model": str(screen_path), "run_dir": None if screen_run is None else str(screen_run),
            "model_version": screen_version, "precision": screen_scorer.precision,
            "runtime": getattr(screen_scorer, "runtime", "keras"),
            "auto_measured": _measured(screen_scorer),
            "threshold": screen_request["threshold"],
            "threshold_source": {k: v for k, v in screen_request.items() if k != "threshold"},
            "n_screened_out": n_out, "fraction_screened_out": n_out / src.n if src.n else None,
            "n_scored_by_model": int(src.n - n_out),
            "screened_out_score": f"{ceiling:g} * screen_score / screen_threshold (in [0, {ceiling:g}): below the "
                                  "operating threshold, never a candidate)",
            "note": "operating_point's expected rates are those of the model alone; the screen also removes the "
                    "reals scoring below its threshold (threshold_source.tpr of its validation reals pass)",
        }
    stored = (card or {}).get(VERSION_FIELD)
    if not is_onnx and stored and stored != version:
        meta["model_version_note"] = (f"the model card says {stored}: the weights or the card changed after the "
                                      "card was written")
    if "swapped" in src.columns:
        meta["orientation"] = {"orient": bool(orient), "n_swapped": int(np.count_nonzero(src.columns["swapped"])),
                               "rule": "isdiffpos false (template - science): science and template exchanged"
                               if orient else "every alert scored as stored (the model learned fadings so)"}
    meta["total_seconds"] = round(time.perf_counter() - t_start, 3)
    meta = to_jsonable(meta)

    # both files appear together: the scores are renamed into place only once the metadata is
    with atomic_path(output) as tmp_out:
        if suffix in _CSV_SUFFIXES:
            _write_csv(tmp_out, cols)
        else:
            _write_h5(tmp_out, cols, {"format": "realbogus-scores", "meta": json.dumps(meta)})
        fault_point("outputs")
        save_json(meta_file, meta)
    return meta


@report_errors
def predict(cfg: DictConfig) -> dict:
    """Run :func:`predict_file` from the composed config and print a one-line summary."""
    for key in ("model", "input", "output"):
        if OmegaConf.is_missing(cfg, key) or cfg[key] in (None, ""):
            raise ConfigError(
                f"{key}= is required: python -m realbogus.predict model=RUN_KERAS_OR_ONNX input=PATH output=FILE "
                "(--help lists every key)"
            )
    if cfg.progress not in ("auto", "bar", "none"):
        raise ConfigError(f"progress={cfg.progress!r} is not one of auto, bar, none")
    progress = cfg.progress == "bar" or (cfg.progress == "auto" and sys.stderr.isatty())
    if not (isinstance(cfg.orient, bool) or cfg.orient == "auto"):
        raise ConfigError(f"orient={cfg.orient!r} must be true, false or auto")

    def number(key):
        value = cfg[key]
        if value is None:
            return None
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} is not a number") from None

    meta = predict_file(
        cfg.model, cfg.input, cfg.output, threshold=number("threshold"), target_tpr=number("target_tpr"),
        bogus_per_night=number("bogus_per_night"), detections_per_night=number("detections_per_night"),
        overwrite=bool(cfg.overwrite), batch_size=cfg.batch_size, precision=cfg.precision, runtime=cfg.runtime,
        nan_policy=cfg.nan_policy, max_masked_fraction=cfg.max_masked_fraction, layout=cfg.layout, split=cfg.split,
        progress=progress, orient=cfg.orient, max_centre_offset=number("max_centre_offset"), screen=cfg.screen,
        screen_threshold=number("screen_threshold"), screen_tpr=number("screen_tpr"),
    )
    runtime = f" under {meta['runtime']}" if meta["model_format"] == "onnx" else ""
    line = (f"scored {meta['n']:,} stamps ({meta['stamps_per_second']:,.0f}/s, {meta['precision']}{runtime}, model "
            f"{meta['model_version']}) -> {meta['output']}")
    if meta["screen"]:
        line += (f"; screen {Path(meta['screen']['model']).name} at {meta['screen']['threshold']:.4g} screened out "
                 f"{meta['screen']['fraction_screened_out']:.1%}")
    if meta["n_off_centre"]:
        line += f"; {meta['n_off_centre']:,} off-centre alert(s) left unscored"
    point = meta["operating_point"]
    if point is not None:
        line += f"; threshold {point['threshold']:.6g}: {meta['n_candidates']:,} candidates"
        if point["expected_tpr"] is not None:
            line += f", expected TPR {point['expected_tpr']:.3g}, FPR {point['expected_fpr']:.3g}"
    print(line)
    return meta


# ``model=`` would name the ``conf/model/`` config group if conf/ were the search path, so the
# command's own file is loaded into Hydra's config store and composed without a search path.
_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "predict.yaml"
ConfigStore.instance().store(name="predict_command", node=OmegaConf.load(_CONFIG))


@hydra.main(version_base="1.3", config_path=None, config_name="predict_command")
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()
