"""Label-error reports of a run folder: detection quality, the score-bin analysis, the audit.

Files written (all atomically) when label cleaning is on::

    label_errors.csv             index,given_label,oof_score,suspected[,true_label] per training sample
    label_error_report.json      per selection rule: n_suspected, precision, recall, f1, estimated
                                 per-class error rates; the generated rates from true_label
    label_error_analysis.csv     per out-of-fold score bin: counts per given label, misclassified
                                 fraction, true label-error ratio (the numbers of the figure)
    label_error_analysis.png     score histograms per given label; misclassified fraction per bin;
                                 true label-error ratio per bin
    label_audit.csv              suspected errors of the selected rule, most confident first:
                                 rank,index,given_label,oof_score,sensor_id,kind,mag[,true_label]
    label_audit.png              (new, ref, diff) stamps of the top of the audit, z-scaled

"Generated" rates and precision/recall need the simulator's ``true_label``; without it they
are null (JSON) or left out (CSV, figure).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from realbogus.io import atomic_path, save_csv_table, save_json
from realbogus.label_errors.selection import RULE_PARAMETERS, RULES, confident_joint, select

__all__ = [
    "CLASS_NAMES",
    "detection_quality",
    "rule_report",
    "error_rates",
    "analysis_table",
    "analysis_figure",
    "audit_order",
    "audit_figure",
    "write_label_error_reports",
]

CLASS_NAMES = ("bogus", "real")
#: Edges of the out-of-fold score bins of the analysis (the decision threshold 0.5 is an edge).
ANALYSIS_EDGES = np.linspace(0.0, 1.0, 21)
AUDIT_TOP = 48


def _ratio(num, den) -> float:
    return float(num) / float(den) if den else float("nan")


def _has_truth(true_label) -> bool:
    return true_label is not None and np.asarray(true_label).size > 0 and bool((np.asarray(true_label) >= 0).all())


def detection_quality(suspected, given, true_label) -> dict:
    """Precision, recall and F1 of ``suspected`` as a detector of ``given != true_label``.

    Only labelled samples count. Precision is NaN when nothing is suspected, recall when no
    label is wrong.
    """
    suspected = np.asarray(suspected, bool)
    given = np.asarray(given)
    labelled = given >= 0
    errors = labelled & (given != np.asarray(true_label))
    tp = int(np.count_nonzero(suspected & errors))
    n_sus = int(np.count_nonzero(suspected & labelled))
    n_err = int(np.count_nonzero(errors))
    precision, recall = _ratio(tp, n_sus), _ratio(tp, n_err)
    f1 = 2 * precision * recall / (precision + recall) if tp else (0.0 if n_sus and n_err else float("nan"))
    return {"precision": precision, "recall": recall, "f1": f1, "n_suspected": n_sus,
            "n_true_errors": n_err, "n_true_errors_found": tp}


def error_rates(flagged, given) -> dict:
    """Fraction of each given class that is ``flagged``: ``{"bogus": ..., "real": ...}``."""
    flagged = np.asarray(flagged, bool)
    given = np.asarray(given)
    return {name: _ratio(np.count_nonzero(flagged & (given == c)), np.count_nonzero(given == c))
            for c, name in enumerate(CLASS_NAMES)}


def rule_report(rule: str, params: Mapping, scores, given, true_label=None) -> dict:
    """What one selection rule finds on the out-of-fold scores, and how well (with ground truth)."""
    suspected = select(rule, scores, given, params)
    given = np.asarray(given)
    out = {
        "params": {**RULE_PARAMETERS[rule], **{k: float(v) for k, v in params.items()}},
        "n_suspected": int(np.count_nonzero(suspected)),
        "n_suspected_by_class": {name: int(np.count_nonzero(suspected & (given == c)))
                                 for c, name in enumerate(CLASS_NAMES)},
        # The share of each given class the rule calls wrong: its estimate of the class's error rate.
        "estimated_error_rates": error_rates(suspected, given),
        "precision": None, "recall": None, "f1": None,
    }
    if rule == "confident_learning":
        joint = confident_joint(scores, given)
        out["confident_thresholds"] = dict(zip(CLASS_NAMES, joint["thresholds"]))
        out["confident_joint"] = joint["counts"]
        out["confident_joint_error_rates"] = dict(zip(CLASS_NAMES, joint["error_rates"]))
    if _has_truth(true_label):
        out.update(detection_quality(suspected, given, true_label))
        out["by_class"] = {
            name: {k: v for k, v in detection_quality(suspected & (given == c), np.where(given == c, given, -1),
                                                      true_label).items() if k in ("precision", "recall", "n_suspected")}
            for c, name in enumerate(CLASS_NAMES)
        }
    return out


def analysis_table(scores, given, true_label=None, threshold: float = 0.5, edges=ANALYSIS_EDGES) -> dict[str, np.ndarray]:
    """The paper's label-error analysis per out-of-fold score bin.

    Columns: ``bin_lo``, ``bin_hi``, ``n_given_bogus``, ``n_given_real``, ``n_misclassified``
    (given label differs from the prediction at ``threshold``), ``misclassified_fraction``
    and, with ground truth, ``n_true_errors`` (all samples of the bin whose given label is
    wrong), ``n_true_errors_misclassified``, ``true_error_ratio`` (true errors among the
    misclassified: the share a human vetting the bin's misclassified samples would confirm)
    and ``true_error_fraction`` (true errors among all samples of the bin).
    """
    scores = np.asarray(scores, float)
    given = np.asarray(given)
    edges = np.asarray(edges, float)
    which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, edges.size - 2)
    labelled = given >= 0
    mis = labelled & ((scores >= threshold) != (given == 1))
    nb = edges.size - 1

    def count(mask):
        return np.bincount(which[mask], minlength=nb)

    n_all = count(labelled)
    n_mis = count(mis)
    out = {"bin_lo": edges[:-1], "bin_hi": edges[1:], "n_given_bogus": count(given == 0),
           "n_given_real": count(given == 1), "n_misclassified": n_mis,
           "misclassified_fraction": np.array([_ratio(a, b) for a, b in zip(n_mis, n_all)])}
    if _has_truth(true_label):
        wrong = labelled & (given != np.asarray(true_label))
        n_err, n_err_mis = count(wrong), count(wrong & mis)
        out.update(n_true_errors=n_err, n_true_errors_misclassified=n_err_mis,
                   true_error_ratio=np.array([_ratio(a, b) for a, b in zip(n_err_mis, n_mis)]),
                   true_error_fraction=np.array([_ratio(a, b) for a, b in zip(n_err, n_all)]))
    return out


def analysis_figure(table: Mapping, scores, given, title: str | None = None):
    """Three panels over the out-of-fold score: histograms, misclassified fraction, true error ratio."""
    from matplotlib.figure import Figure

    scores = np.asarray(scores, float)
    given = np.asarray(given)
    edges = np.append(table["bin_lo"], table["bin_hi"][-1])
    centres = 0.5 * (table["bin_lo"] + table["bin_hi"])
    truth = "true_error_ratio" in table
    fig = Figure(figsize=(6.0, 8.0 if truth else 5.6), layout="constrained")
    axes = fig.subplots(3 if truth else 2, 1, sharex=True)
    ax = axes[0]
    for c, colour in ((0, "tab:red"), (1, "tab:blue")):
        ax.hist(scores[given == c], bins=edges, histtype="step", color=colour, lw=1.5,
                label=f"given {CLASS_NAMES[c]} ({np.count_nonzero(given == c)})")
    ax.set_yscale("log")
    ax.set_ylabel("samples")
    ax.legend(fontsize=8, loc="upper center")
    if title:
        ax.set_title(title, fontsize=10)

    def points(ax, y, n, label, colour):
        y = np.asarray(y, float)
        ok = np.isfinite(y) & (y > 0)
        ax.plot(centres[ok], y[ok], "o-", color=colour, ms=4, label=label)
        for x, v, k in zip(centres[ok], y[ok], np.asarray(n)[ok]):
            ax.annotate(str(int(k)), (x, v), textcoords="offset points", xytext=(0, 4), fontsize=6, ha="center")

    ax = axes[1]
    points(ax, table["misclassified_fraction"], table["n_misclassified"], "given label != prediction at 0.5", "k")
    ax.set_yscale("log")
    ax.set_ylabel("misclassified fraction")
    ax.legend(fontsize=8, loc="best")
    if truth:
        ax = axes[2]
        points(ax, table["true_error_ratio"], table["n_true_errors_misclassified"],
               "true label errors / misclassified", "tab:green")
        points(ax, table["true_error_fraction"], table["n_true_errors"], "true label errors / all", "tab:grey")
        ax.set_yscale("log")
        ax.set_ylabel("true label-error ratio")
        ax.legend(fontsize=8, loc="best")
    axes[-1].set_xlabel("out-of-fold score (probability of real)")
    axes[-1].set_xlim(0, 1)
    return fig


def audit_order(scores, given, suspected) -> np.ndarray:
    """Indices of the suspects, the most confidently contradicted label first."""
    scores = np.asarray(scores, float)
    given = np.asarray(given)
    rows = np.flatnonzero(np.asarray(suspected, bool) & (given >= 0))
    # Distance of the score from the given label: 1 for a "bogus" scored 1.0 or a "real" scored 0.0.
    disagreement = np.abs(scores[rows] - given[rows])
    return rows[np.lexsort((rows, -disagreement))]


def audit_figure(images: np.ndarray, captions, title: str | None = None, per_row: int = 4):
    """Gallery of (new, ref, diff) triplets with one caption each."""
    from matplotlib.figure import Figure

    from realbogus.plots.stamps import plot_triplets

    n = len(captions)
    if n == 0:
        fig = Figure(figsize=(4, 1))
        fig.text(0.5, 0.5, "no suspected label errors", ha="center", va="center")
        return fig
    per_row = min(per_row, n)
    n_rows = -(-n // per_row)
    height = n_rows * 0.9 * 1.2 + 0.5
    fig = Figure(figsize=(3 * per_row * 0.9, height))
    plot_triplets(images, labels=list(captions), per_row=per_row, fig=fig)
    if title:
        # Room above the first row's captions for the title.
        fig.subplots_adjust(top=1 - 0.5 / height)
        fig.suptitle(title, fontsize=8, y=1 - 0.08 / height, va="top")
    return fig


def _save_png(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150)


def write_label_error_reports(
    run_dir: str | os.PathLike,
    train_path: str | os.PathLike,
    oof: Mapping,
    given,
    suspected,
    rule: str,
    params: Mapping,
    treatment: str,
    audit_top: int = AUDIT_TOP,
) -> dict:
    """Write every label-error output of a run (see the module docstring); return the JSON content.

    Parameters
    ----------
    run_dir
        Run folder.
    train_path
        Training HDF5 file (for sensor, kind, magnitude, ground truth and the audit stamps).
    oof
        Out-of-fold scores as returned by :func:`realbogus.label_errors.oof.out_of_fold_scores`.
    given
        Given label of every training row (the labels stage 1 saw).
    suspected
        Suspect mask of the selected rule.
    rule, params
        The selected rule and its parameters (the other rules are reported with their defaults).
    treatment
        The label treatment applied for stage 2.
    audit_top
        Number of suspects shown in ``label_audit.png``.
    """
    from sklearn.metrics import roc_auc_score

    from realbogus.data.format import open_dataset

    run_dir = Path(run_dir)
    given = np.asarray(given).astype(np.int64)
    scores = np.asarray(oof["oof_score"], float)
    suspected = np.asarray(suspected, bool)
    with open_dataset(train_path) as ds:
        meta = {name: ds.column(name) for name in ("sensor_id", "kind", "mag") if name in ds.fields}
        true_label = ds.column("true_label").astype(np.int64) if "true_label" in ds.fields else None
        kind_names = np.asarray(ds.kind_names)
        order = audit_order(scores, given, suspected)
        top = order[:audit_top]
        images = ds.images(np.sort(top))[np.argsort(np.argsort(top))] if top.size else np.empty((0, 29, 29, 3))
    truth = _has_truth(true_label)

    cols = {"index": np.arange(given.size), "given_label": given, "oof_score": scores,
            "suspected": suspected.astype(np.int8)}
    if truth:
        cols["true_label"] = true_label
    save_csv_table(run_dir / "label_errors.csv", cols, float_format="%.10g")

    table = analysis_table(scores, given, true_label if truth else None)
    save_csv_table(run_dir / "label_error_analysis.csv", table, float_format="%.6g")
    _save_png(analysis_figure(table, scores, given, title=f"training set, out-of-fold scores ({int(np.max(oof['fold'])) + 1} folds)"),
              run_dir / "label_error_analysis.png")

    audit = {"rank": np.arange(1, order.size + 1), "index": order, "given_label": given[order],
             "oof_score": scores[order]}
    if "sensor_id" in meta:
        audit["sensor_id"] = meta["sensor_id"][order]
    if "kind" in meta:
        audit["kind"] = kind_names[meta["kind"][order]] if order.size else np.empty(0, str)
    if "mag" in meta:
        audit["mag"] = meta["mag"][order]
    if truth:
        audit["true_label"] = true_label[order]
    save_csv_table(run_dir / "label_audit.csv", audit, float_format="%.10g")
    captions = [f"#{i} {CLASS_NAMES[given[i]]} {scores[i]:.3f}" for i in top]
    _save_png(audit_figure(images, captions, title=f"suspected label errors ({rule}): given label, out-of-fold score"),
              run_dir / "label_audit.png")

    labelled = given >= 0
    report = {
        "selected_rule": rule,
        "treatment": treatment,
        "n_samples": int(given.size),
        "given_counts": {name: int(np.count_nonzero(given == c)) for c, name in enumerate(CLASS_NAMES)}
        | {"unlabelled": int(np.count_nonzero(~labelled))},
        "oof": {
            "cache_dir": str(oof["cache_dir"]),
            "folds": int(np.asarray(oof["fold"]).max() + 1),
            "auc_given_labels": float(roc_auc_score(given[labelled], scores[labelled]))
            if len(set(given[labelled])) == 2 else None,
            "auc_true_labels": float(roc_auc_score(true_label, scores)) if truth and len(set(true_label)) == 2 else None,
        },
        "generated_error_rates": error_rates(labelled & (given != true_label), given) if truth else None,
        "n_true_errors": int(np.count_nonzero(labelled & (given != true_label))) if truth else None,
        "rules": {},
    }
    for name in RULES:
        if name == "none":
            continue
        report["rules"][name] = rule_report(name, params if name == rule else {}, scores, given,
                                            true_label if truth else None)
    save_json(run_dir / "label_error_report.json", report)
    return report
