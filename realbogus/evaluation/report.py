"""Write the evaluation outputs of a run folder from its test-set predictions.

Files written into the output folder (all atomically)::

    predictions.csv        index,score,label,true_label,sensor_id,kind,mag (one row per sample)
    metrics.json           summary metrics (see realbogus.evaluation.metrics.compute_metrics)
    metrics_by_sensor.csv  counts, TPR, FPR and AUC per sensor at the global TPR-0.9 threshold
    metrics_by_mag.csv     the same per magnitude bin (bin -1: no magnitude, e.g. most bogus)
    metrics_by_kind.csv    the same per sample kind (which artefacts get through, which reals not)
    roc.csv                fpr,tpr,threshold of the ROC curve (straight-segment points dropped)
    roc.png, roc.pdf       ROC curve, log FPR axis, operating point at TPR 0.9 marked
    scores.png             score histograms per class

Every output is computed from ``predictions.csv`` as read back from disk, so recomputing a
run's outputs later (``python -m realbogus.evaluate run_dir=...``) gives identical numbers.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from realbogus.data.kinds import KIND_CODES, KIND_NAMES, true_class_of_kind
from realbogus.errors import DataError
from realbogus.evaluation import metrics as M
from realbogus.evaluation.plots import plot_roc, plot_scores
from realbogus.faults import fault_point
from realbogus.io import atomic_write, save_csv_table, save_json, to_jsonable

__all__ = [
    "PREDICTION_COLUMNS",
    "write_evaluation",
    "write_reports",
    "write_predictions",
    "read_predictions",
    "read_roc",
    "format_summary",
]

PREDICTION_COLUMNS: tuple[str, ...] = ("index", "score", "label", "true_label", "sensor_id", "kind", "mag")
PREDICTIONS_FILE = "predictions.csv"


# ---------------------------------------------------------------------------- predictions.csv
def _normalise(predictions: Mapping, kind_names: Sequence[str] | None) -> dict[str, np.ndarray]:
    """Check the columns and fill the optional ones with their 'unknown' values."""
    for name in ("score", "label"):
        if name not in predictions:
            raise ValueError(f"predictions lack the {name!r} column (have {', '.join(predictions)})")
    score = np.asarray(predictions["score"], dtype=np.float64).reshape(-1)
    n = score.size
    out = {"score": score}
    defaults = {"index": np.arange(n), "true_label": np.full(n, -1), "sensor_id": np.full(n, -1),
                "kind": np.full(n, "unknown"), "mag": np.full(n, np.nan)}
    for name in PREDICTION_COLUMNS:
        if name == "score":
            continue
        col = predictions.get(name)
        col = defaults[name] if col is None else np.asarray(col).reshape(-1)
        if col.size != n:
            raise ValueError(f"predictions column {name!r} has {col.size} rows, 'score' has {n}")
        out[name] = col
    kind = out["kind"]
    if kind.dtype.kind in "iu":
        names = np.asarray(list(kind_names) if kind_names is not None else KIND_NAMES)
        if kind.size and (kind.min() < 0 or kind.max() >= names.size):
            raise ValueError(f"kind codes must lie in [0, {names.size})")
        out["kind"] = names[kind] if kind.size else np.empty(0, dtype=str)
    else:
        out["kind"] = kind.astype(str)
    for name in ("index", "label", "true_label", "sensor_id"):
        out[name] = out[name].astype(np.int64)
    out["mag"] = out["mag"].astype(np.float64)
    return out


def write_predictions(path: str | os.PathLike, predictions: Mapping,
                      kind_names: Sequence[str] | None = None) -> Path:
    """Write per-sample predictions as CSV, atomically.

    Parameters
    ----------
    path
        Destination (usually ``<run>/predictions.csv``).
    predictions
        Columns: ``score`` and ``label`` (required), ``index``, ``true_label``, ``sensor_id``,
        ``kind`` (codes or names), ``mag`` (optional).
    kind_names
        Names of integer kind codes (default: the registry, :data:`realbogus.data.kinds.KIND_NAMES`).

    Scores are written with full float64 precision (the shortest exact decimal); unknown
    ``true_label``/``sensor_id`` as -1, missing magnitudes as an empty field.
    """
    cols = _normalise(predictions, kind_names)
    score = [repr(v) for v in cols["score"].tolist()]
    mag = np.char.mod("%.7g", cols["mag"])
    mag[~np.isfinite(cols["mag"])] = ""
    with atomic_write(path, newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(PREDICTION_COLUMNS)
        writer.writerows(zip(cols["index"].tolist(), score, cols["label"].tolist(), cols["true_label"].tolist(),
                             cols["sensor_id"].tolist(), cols["kind"].tolist(), mag.tolist()))
    return Path(path)


def _parse(values: tuple[str, ...], name: str, dtype, path: Path, blank=None) -> np.ndarray:
    arr = np.asarray(values, dtype=str)
    if blank is not None:
        arr = np.where(arr == "", blank, arr)
    try:
        return arr.astype(dtype)
    except ValueError:
        for i, v in enumerate(arr):
            try:
                np.asarray(v).astype(dtype)
            except ValueError:
                raise DataError(
                    f"{path}: line {i + 2}: column {name!r} holds {v!r}, not a {np.dtype(dtype).name}"
                ) from None
        raise


def read_predictions(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a run's ``predictions.csv`` back into columns.

    Parameters
    ----------
    run_dir
        Run folder holding ``predictions.csv``, or the CSV file itself.

    Returns
    -------
    dict of numpy.ndarray
        ``index``, ``score`` (float64), ``label``, ``true_label``, ``sensor_id`` (int64, -1 for
        unknown), ``kind`` (name strings), ``mag`` (float64, NaN for none). Columns other than
        ``score`` and ``label`` may be absent from the file and are then filled as unknown.

    Raises
    ------
    DataError
        If the file is missing, lacks ``score``/``label``, or holds unparsable values.
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / PREDICTIONS_FILE
    if not path.is_file():
        raise DataError(f"{path}: no such file (a finished run folder holds {PREDICTIONS_FILE})")
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        rows = list(reader)
    if not header:
        raise DataError(f"{path}: empty file")
    missing = [c for c in ("score", "label") if c not in header]
    if missing:
        raise DataError(f"{path}: no column {' or '.join(repr(c) for c in missing)} (header: {','.join(header)})")
    short = next((i for i, r in enumerate(rows) if len(r) != len(header)), None)
    if short is not None:
        raise DataError(f"{path}: line {short + 2} has {len(rows[short])} fields, the header {len(header)}")
    columns = dict(zip(header, zip(*rows))) if rows else {h: () for h in header}
    n = len(rows)
    out: dict[str, np.ndarray] = {}
    out["index"] = _parse(columns["index"], "index", np.int64, path) if "index" in columns else np.arange(n)
    out["score"] = _parse(columns["score"], "score", np.float64, path)
    out["label"] = _parse(columns["label"], "label", np.int64, path)
    for name in ("true_label", "sensor_id"):
        out[name] = _parse(columns[name], name, np.int64, path, blank="-1") if name in columns else np.full(n, -1)
    out["kind"] = np.asarray(columns["kind"], dtype=str) if "kind" in columns else np.full(n, "unknown")
    if "mag" in columns:
        out["mag"] = _parse(columns["mag"], "mag", np.float64, path, blank="nan")
    else:
        out["mag"] = np.full(n, np.nan)
    bad = ~np.isin(out["label"], (-1, 0, 1))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{path}: line {i + 2}: label {out['label'][i]} is not 1, 0 or -1")
    return out


def read_roc(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a run's ``roc.csv`` (or the file given) into ``fpr``, ``tpr``, ``threshold`` arrays."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / "roc.csv"
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    data = np.genfromtxt(path, delimiter=",", names=True, dtype=np.float64)
    return {name: np.atleast_1d(data[name]) for name in ("fpr", "tpr", "threshold")}


# ---------------------------------------------------------------------------- reports
def _write_breakdowns(out_dir: Path, score, labels, predictions, threshold, confidence, mag_edges, mag_width) -> None:
    """metrics_by_{sensor,mag,kind}.csv at one global threshold."""

    def save(name: str, first: dict, table: dict) -> None:
        first.update({k: v for k, v in table.items() if k != "group"})
        save_csv_table(out_dir / name, first, float_format="%.10g")

    def split(groups) -> dict:
        return M.breakdown(score, labels, groups, threshold=threshold, confidence=confidence)

    by_sensor = split(predictions["sensor_id"])
    save("metrics_by_sensor.csv", {"sensor_id": by_sensor["group"]}, by_sensor)
    bins, edges = M.mag_bins(predictions["mag"], mag_edges, mag_width)
    by_mag = split(bins)
    b = by_mag["group"]
    lo = np.where(b >= 0, edges[np.clip(b, 0, None)], np.nan)
    hi = np.where(b >= 0, edges[np.clip(b + 1, 1, None)], np.nan)
    save("metrics_by_mag.csv", {"mag_bin": b, "mag_lo": lo, "mag_hi": hi}, by_mag)
    by_kind = split(predictions["kind"])
    true_class = [true_class_of_kind(KIND_CODES[k]) if k in KIND_CODES else -1 for k in by_kind["group"]]
    save("metrics_by_kind.csv", {"kind": by_kind["group"], "true_class": np.array(true_class)}, by_kind)


def write_reports(
    out_dir: str | os.PathLike,
    predictions: Mapping[str, np.ndarray],
    title: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    bogus_detections_per_night: float = M.BOGUS_DETECTIONS_PER_NIGHT,
    label_column: str = "label",
    mag_edges: Sequence[float] | None = None,
    mag_width: float = 1.0,
) -> dict:
    """Write every output except ``predictions.csv`` from columns as :func:`read_predictions` gives.

    Parameters are those of :func:`write_evaluation`. Returns the metrics dict.
    """
    out_dir = Path(out_dir)
    if label_column not in ("label", "true_label"):
        raise ValueError(f"label_column must be 'label' or 'true_label'; got {label_column!r}")
    score = np.asarray(predictions["score"], dtype=np.float64)
    labels = np.asarray(predictions[label_column], dtype=np.int64)
    where = f"{out_dir / PREDICTIONS_FILE}"
    try:
        metrics = M.compute_metrics(score, labels, bogus_detections_per_night=bogus_detections_per_night,
                                    n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    except ValueError as exc:
        raise DataError(f"{where}: column {label_column!r}: {exc}") from None
    header = {"title": title or out_dir.resolve().name, "label_column": label_column, "n": int(score.size)}
    metrics = {**header, **metrics}
    night = metrics["fpr_at_tpr"][M.target_key(metrics["bogus_per_night_at_tpr"])]
    curves = {}
    fpr, tpr, thr = M.roc(score, labels, drop_intermediate=True)
    curves[f"{label_column.replace('_', ' ')}s: AUC {metrics['auc']:.4f}"] = {
        "fpr": fpr, "tpr": tpr, "operating_point": (night["fpr"], night["tpr"])}

    # Against the other label column as well, when it is known and says something different.
    other = "true_label" if label_column == "label" else "label"
    other_labels = np.asarray(predictions[other], dtype=np.int64)
    known = (other_labels >= 0) & (labels >= 0)
    if known.any() and (other_labels[known] != labels[known]).any():
        try:
            alt = M.compute_metrics(score, other_labels, bogus_detections_per_night=bogus_detections_per_night,
                                    n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
        except ValueError:
            alt = None
        if alt is not None:
            metrics[f"vs_{other}"] = alt
            a_night = alt["fpr_at_tpr"][M.target_key(alt["bogus_per_night_at_tpr"])]
            a_fpr, a_tpr, _ = M.roc(score, other_labels, drop_intermediate=True)
            curves[f"{other.replace('_', ' ')}s: AUC {alt['auc']:.4f}"] = {
                "fpr": a_fpr, "tpr": a_tpr, "operating_point": (a_night["fpr"], a_night["tpr"])}

    save_csv_table(out_dir / "roc.csv", {"fpr": fpr, "tpr": tpr, "threshold": thr}, float_format="%.12g")
    _write_breakdowns(out_dir, score, labels, predictions, night["threshold"], confidence, mag_edges, mag_width)
    plot_roc(curves, out_dir / "roc", title=metrics["title"])
    plot_scores(score, labels, out_dir / "scores", threshold=night["threshold"],
                title=f"{metrics['title']}: scores by {label_column.replace('_', ' ')}")
    # Last, so that a metrics.json on disk means the whole evaluation was written.
    metrics = to_jsonable(metrics)  # what metrics.json holds: non-finite numbers become null
    save_json(out_dir / "metrics.json", metrics)
    return metrics


def write_evaluation(
    out_dir: str | os.PathLike,
    predictions: Mapping,
    title: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    bogus_detections_per_night: float = M.BOGUS_DETECTIONS_PER_NIGHT,
    label_column: str = "label",
    mag_edges: Sequence[float] | None = None,
    mag_width: float = 1.0,
    kind_names: Sequence[str] | None = None,
) -> dict:
    """Write ``predictions.csv`` and every evaluation output of a run into ``out_dir``.

    Parameters
    ----------
    out_dir
        Output folder (created if needed), usually the run folder.
    predictions
        Per-sample columns, as :func:`realbogus.evaluation.scoring.score_dataset` returns:
        ``score`` (probability of real) and ``label`` required; ``index``, ``true_label``,
        ``sensor_id``, ``kind`` (codes or names), ``mag`` optional.
    title
        Title of the figures, stored in ``metrics.json``; default the folder's name.
    n_bootstrap
        Bootstrap resamples for the confidence intervals (0: none).
    seed
        Seed of the bootstrap.
    confidence
        Level of the confidence intervals.
    bogus_detections_per_night
        Bogus detections a night assumed for ``bogus_per_night``.
    label_column
        Labels the metrics are computed against: ``label`` (as given in the test file) or
        ``true_label`` (ground truth of simulated data). When the other column is known and
        differs somewhere, ``metrics.json`` also holds ``vs_<other column>``.
    mag_edges, mag_width
        Magnitude bins of ``metrics_by_mag.csv`` (default: every ``mag_width`` magnitudes).
    kind_names
        Names of integer kind codes (default: the registry).

    Returns
    -------
    dict
        The content of ``metrics.json``.

    Raises
    ------
    DataError
        If the labels lack a class (the ROC curve is undefined) or hold invalid values.
    """
    out_dir = Path(out_dir)
    try:
        write_predictions(out_dir / PREDICTIONS_FILE, predictions, kind_names)
    except ValueError as exc:
        raise DataError(f"{out_dir / PREDICTIONS_FILE}: {exc}") from None
    fault_point("outputs")
    return write_reports(
        out_dir, read_predictions(out_dir), title=title, n_bootstrap=n_bootstrap, seed=seed, confidence=confidence,
        bogus_detections_per_night=bogus_detections_per_night, label_column=label_column,
        mag_edges=mag_edges, mag_width=mag_width,
    )


def _ci(ci) -> str:
    return f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else ""


def _thr(value) -> str:
    return "none" if value is None or not np.isfinite(value) else f"{value:.6g}"


def format_summary(metrics: Mapping) -> str:
    """A few lines summarising ``metrics`` for the terminal."""
    night_key = M.target_key(metrics["bogus_per_night_at_tpr"])
    night = metrics["fpr_at_tpr"][night_key]
    lines = [
        f"{metrics.get('title', '')}: {metrics['n_real']:,} real, {metrics['n_bogus']:,} bogus",
        f"  AUC {metrics['auc']:.5f}{_ci(metrics['auc_ci'])}",
    ]
    for key, p in metrics["fpr_at_tpr"].items():
        lines.append(f"  FPR at TPR {key}: {p['fpr']:.3g}{_ci(p['ci'])} (score >= {_thr(p['threshold'])})")
    for key, p in metrics["tpr_at_fpr"].items():
        lines.append(f"  TPR at FPR {key}: {p['tpr']:.3g}{_ci(p['ci'])} (score >= {_thr(p['threshold'])})")
    lines.append(
        f"  bogus per night at TPR {night_key}: {metrics['bogus_per_night']:.4g}{_ci(metrics['bogus_per_night_ci'])}"
        f" (of {metrics['bogus_detections_per_night']:.3g} detections)"
    )
    return "\n".join(lines)
