"""Tables and figure of a label-noise robustness study, from its finished run folders.

One row per cell (method x noise rate x seed) is read from its run folder (through
:class:`realbogus.rundir.RunDir`: state, metrics), ``label_noise.json`` and, when label cleaning is on,
``label_error_report.json`` / ``label_errors.csv``; :func:`summarise` takes the mean and the
spread over seeds of each method and rate; :func:`robustness_figure` draws FPR at TPR 0.9 and
AUC against the training label-error rate.

The ``label_error_rate`` of a cell is the share of wrong training labels after injection,
measured with the ground truth (so it includes the errors the data already had); without
ground truth it is the injected share alone.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from realbogus.io import atomic_write, read_json, save_csv_table
from realbogus.rundir import RunDir

__all__ = [
    "RESULT_COLUMNS",
    "SUMMARY_METRICS",
    "read_cell",
    "summarise",
    "write_results",
    "write_summary",
    "summary_markdown",
    "write_markdown",
    "robustness_figure",
]

#: Columns of results.csv, in order.
RESULT_COLUMNS = (
    "method", "noise_mode", "noise_rate", "seed", "status", "auc", "fpr_at_tpr_0.9", "bogus_per_night",
    "label_error_rate", "label_error_rate_bogus", "label_error_rate_real", "injected_rate_bogus",
    "injected_rate_real", "n_injected", "detection_rule", "detection_precision", "detection_recall",
    "n_suspected", "injected_recall", "epochs_trained", "wall_seconds", "run_dir",
)
#: Per-cell quantities summarised over seeds (mean, std, min, max).
SUMMARY_METRICS = ("auc", "fpr_at_tpr_0.9", "bogus_per_night", "label_error_rate", "detection_precision",
                   "detection_recall", "injected_recall")
_NAN = float("nan")


def _num(value) -> float:
    return _NAN if value is None else float(value)


def _suspected_rows(run_dir: Path) -> np.ndarray | None:
    path = run_dir / "label_errors.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return np.array([int(r["index"]) for r in reader if r["suspected"] == "1"], np.int64)


def _flipped_rows(run_dir: Path) -> np.ndarray | None:
    path = run_dir / "label_noise.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        return np.array([int(r["index"]) for r in csv.DictReader(fh)], np.int64)


def read_cell(run_dir: str | os.PathLike, method: str, noise_mode: str, noise_rate, seed: int,
              epochs: int | None = None) -> dict:
    """The results.csv row of one cell (metrics empty unless its run is done)."""
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    row = dict.fromkeys(RESULT_COLUMNS, _NAN)
    row.update(method=method, noise_mode=noise_mode, noise_rate=noise_rate, seed=int(seed), run_dir=str(run_dir),
               detection_rule="", status=run.status(epochs))
    if row["status"] != "done":
        return row
    metrics = read_json(run.metrics_path) or {}
    row["auc"] = _num(metrics.get("auc"))
    row["fpr_at_tpr_0.9"] = _num((metrics.get("fpr_at_tpr") or {}).get("0.9", {}).get("fpr"))
    row["bogus_per_night"] = _num(metrics.get("bogus_per_night"))
    state = run.state() or {}
    row["epochs_trained"] = _num(state.get("epochs_trained"))
    row["wall_seconds"] = _num(state.get("wall_seconds_last_session"))

    noise = read_json(run_dir / "label_noise.json")
    if noise:
        injected = noise.get("injected_rates") or {}
        row["injected_rate_bogus"] = _num(injected.get("bogus"))
        row["injected_rate_real"] = _num(injected.get("real"))
        counts = noise.get("n_injected") or {}
        row["n_injected"] = sum(int(v) for v in counts.values())
        after = (noise.get("label_error_rates") or {}).get("after")
        if after:
            row["label_error_rate"] = _num(after.get("all"))
            row["label_error_rate_bogus"] = _num(after.get("bogus"))
            row["label_error_rate_real"] = _num(after.get("real"))
        else:
            n = sum(int(v) for v in (noise.get("n_given") or {}).values())
            row["label_error_rate"] = row["n_injected"] / n if n else _NAN
    else:
        row["n_injected"] = 0

    report = read_json(run_dir / "label_error_report.json")
    if report:
        rule = report.get("selected_rule", "")
        entry = (report.get("rules") or {}).get(rule, {})
        row["detection_rule"] = rule
        row["detection_precision"] = _num(entry.get("precision"))
        row["detection_recall"] = _num(entry.get("recall"))
        row["n_suspected"] = _num(entry.get("n_suspected"))
        flipped, suspected = _flipped_rows(run_dir), _suspected_rows(run_dir)
        if flipped is not None and suspected is not None and flipped.size:
            row["injected_recall"] = float(np.isin(flipped, suspected).mean())
    return row


def _spread(values: Sequence[float]) -> dict:
    v = np.asarray([x for x in values if not math.isnan(x)], float)
    if not v.size:
        return {"mean": _NAN, "std": _NAN, "min": _NAN, "max": _NAN}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


def summarise(rows: Iterable[Mapping]) -> list[dict]:
    """Mean, standard deviation (over seeds, ddof 1), min and max per method and noise rate.

    Only cells whose run is done count; methods keep their order of first appearance, rates
    are sorted.
    """
    groups: dict[tuple, list[Mapping]] = {}
    for row in rows:
        if row["status"] == "done":
            groups.setdefault((row["method"], row["noise_mode"], row["noise_rate"]), []).append(row)
    order = {m: i for i, m in enumerate(dict.fromkeys(k[0] for k in groups))}
    out = []
    for key in sorted(groups, key=lambda k: (order[k[0]], k[1], float(k[2]))):
        cells = groups[key]
        entry = {"method": key[0], "noise_mode": key[1], "noise_rate": key[2], "n_seeds": len(cells),
                 "seeds": " ".join(str(c["seed"]) for c in sorted(cells, key=lambda c: c["seed"]))}
        for metric in SUMMARY_METRICS:
            for stat, value in _spread([float(c[metric]) for c in cells]).items():
                entry[f"{metric}_{stat}"] = value
        out.append(entry)
    return out


def write_results(path: str | os.PathLike, rows: Sequence[Mapping]) -> Path:
    """results.csv: one row per cell, columns :data:`RESULT_COLUMNS` (atomic)."""
    return save_csv_table(path, {c: [r[c] for r in rows] for c in RESULT_COLUMNS}, float_format="%.6g")


def write_summary(path: str | os.PathLike, summary: Sequence[Mapping]) -> Path:
    """summary.csv: one row per method and rate (atomic)."""
    if not summary:
        columns = ["method", "noise_mode", "noise_rate", "n_seeds", "seeds"] + [
            f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "std", "min", "max")]
        return save_csv_table(path, {c: [] for c in columns})
    return save_csv_table(path, {c: [r[c] for r in summary] for c in summary[0]}, float_format="%.6g")


def _pm(entry: Mapping, metric: str, fmt: str, scale: float = 1.0, unit: str = "") -> str:
    mean = entry[f"{metric}_mean"]
    if math.isnan(mean):
        return ""
    text = format(mean * scale, fmt)
    if entry["n_seeds"] > 1:
        text += " ± " + format(entry[f"{metric}_std"] * scale, fmt)
    return text + unit


def summary_markdown(summary: Sequence[Mapping], title: str = "Label-noise robustness", notes: Sequence[str] = ()) -> str:
    """The summary as a Markdown table: mean ± standard deviation over seeds."""
    lines = [f"# {title}", ""]
    lines += [*notes, ""] if notes else []
    lines += [
        "| method | noise | label errors | AUC | FPR at TPR 0.9 | bogus per night | detection precision "
        "| detection recall | injected errors found | seeds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in summary:
        lines.append(
            f"| {e['method']} | {e['noise_mode']} x{e['noise_rate']} | {_pm(e, 'label_error_rate', '.2f', 100, '%')} "
            f"| {_pm(e, 'auc', '.4f')} | {_pm(e, 'fpr_at_tpr_0.9', '.2e')} | {_pm(e, 'bogus_per_night', ',.0f')} "
            f"| {_pm(e, 'detection_precision', '.3f')} | {_pm(e, 'detection_recall', '.3f')} "
            f"| {_pm(e, 'injected_recall', '.3f')} | {e['n_seeds']} |"
        )
    return "\n".join(lines) + "\n"


def write_markdown(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path) as fh:
        fh.write(text)
    return Path(path)


def robustness_figure(summary: Sequence[Mapping], labels: Mapping[str, str] | None = None, fpr_floor: float | None = None,
                      title: str | None = None):
    """FPR at TPR 0.9 (log) and AUC against the training label-error rate, one line per method.

    Points are means over seeds, error bars span the smallest to the largest seed value. The
    x axis is logarithmic when every rate is positive (symmetric-log otherwise); lines are
    nudged sideways a little so that error bars do not hide one another. An FPR of 0 is drawn
    at ``fpr_floor`` (default: a third of the smallest positive FPR).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    labels = dict(labels or {})
    methods = list(dict.fromkeys(e["method"] for e in summary))
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax_fpr, ax_auc = fig.subplots(1, 2)
    x_all = np.array([e["label_error_rate_mean"] for e in summary], float) * 100
    positive_fpr = [e["fpr_at_tpr_0.9_min"] for e in summary if e["fpr_at_tpr_0.9_min"] > 0]
    if fpr_floor is None:
        fpr_floor = min(positive_fpr) / 3 if positive_fpr else 1e-5
    log_x = bool(x_all.size) and bool(np.all(x_all[np.isfinite(x_all)] > 0))
    for i, method in enumerate(methods):
        entries = sorted((e for e in summary if e["method"] == method), key=lambda e: e["label_error_rate_mean"])
        x = np.array([e["label_error_rate_mean"] for e in entries], float) * 100
        if log_x:
            x = x * 1.03 ** (i - (len(methods) - 1) / 2)
        for ax, metric, floor in ((ax_fpr, "fpr_at_tpr_0.9", fpr_floor), (ax_auc, "auc", None)):
            mean = np.array([e[f"{metric}_mean"] for e in entries], float)
            lo = np.array([e[f"{metric}_min"] for e in entries], float)
            hi = np.array([e[f"{metric}_max"] for e in entries], float)
            if floor is not None:
                mean, lo, hi = (np.maximum(a, floor) for a in (mean, lo, hi))
            ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], color=f"C{i}", marker="o", ms=4, capsize=3, lw=1.4,
                        label=labels.get(method, method))
    # One tick per noise level, at its mean label-error rate, naming the injected multiple.
    levels: dict = {}
    for e in summary:
        levels.setdefault(e["noise_rate"], []).append(e["label_error_rate_mean"] * 100)
    ticks = {rate: float(np.nanmean(v)) for rate, v in levels.items() if np.isfinite(v).any()}
    for ax in (ax_fpr, ax_auc):
        if log_x:
            ax.set_xscale("log")
        elif x_all.size:
            positive = x_all[x_all > 0]
            ax.set_xscale("symlog", linthresh=float(positive.min()) if positive.size else 1.0)
        ax.set_xticks(list(ticks.values()), [f"{x:.2g}%\n(x{rate})" for rate, x in ticks.items()])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("training label-error rate (injected multiple of the measured rates)", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    ax_fpr.set_yscale("log")
    ax_fpr.set_ylabel("FPR at TPR 0.9 (test set)")
    ax_auc.set_ylabel("AUC (test set)")
    ax_auc.legend(fontsize=8, loc="lower left")
    fig.suptitle(title or "Robustness to label errors (mean over seeds; bars: min to max)", fontsize=11)
    return fig
