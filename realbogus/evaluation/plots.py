"""Evaluation figures: ROC curves on a log FPR axis and score histograms per class.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state, no GUI
backend) and saved atomically, so they are safe in training runs and scripts alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from realbogus.io import atomic_path

__all__ = ["roc_figure", "score_figure", "save_figure", "plot_roc", "plot_scores", "pass_rate_figure",
           "plot_pass_rates"]

_REAL_COLOUR = "tab:blue"
_BOGUS_COLOUR = "tab:red"


def _curve_arrays(curve) -> tuple[np.ndarray, np.ndarray, tuple[float, float] | None]:
    if isinstance(curve, Mapping):
        point = curve.get("operating_point")
        return np.asarray(curve["fpr"], float), np.asarray(curve["tpr"], float), point
    fpr, tpr = curve[:2]
    return np.asarray(fpr, float), np.asarray(tpr, float), None


def roc_figure(
    curves: Mapping[str, object],
    title: str | None = None,
    mark_tpr: float | None = 0.9,
    fpr_min: float | None = None,
):
    """ROC curves with FPR on a log axis.

    Parameters
    ----------
    curves
        Legend label -> curve. A curve is ``(fpr, tpr)`` or a mapping with ``"fpr"``, ``"tpr"``
        and optionally ``"operating_point": (fpr, tpr)`` (the point to mark; by default the
        first point of the curve with TPR >= ``mark_tpr``).
    title
        Axes title.
    mark_tpr
        TPR of the operating point marked on each curve (None: no marks).
    fpr_min
        Left edge of the FPR axis; default a little below the smallest non-zero FPR.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    smallest = []
    for curve in curves.values():
        fpr, _, _ = _curve_arrays(curve)
        if (fpr > 0).any():
            smallest.append(fpr[fpr > 0].min())
    if fpr_min is None:
        fpr_min = min(10 ** np.floor(np.log10(min(smallest))), 1e-2) if smallest else 1e-5
    for i, (name, curve) in enumerate(curves.items()):
        fpr, tpr, point = _curve_arrays(curve)
        colour = f"C{i}"
        if mark_tpr is not None and point is None and (tpr >= mark_tpr).any():
            j = int(np.argmax(tpr >= mark_tpr))
            point = (fpr[j], tpr[j])
        if mark_tpr is None:
            point = None
        label = name if point is None else f"{name}; FPR {point[0]:.2g} at TPR {mark_tpr:g}"
        # FPR 0 has no place on a log axis: draw it at the left edge.
        ax.plot(np.maximum(fpr, fpr_min), tpr, color=colour, lw=1.4, label=label)
        if point is not None:
            ax.plot(max(point[0], fpr_min), point[1], "o", color=colour, ms=5, mfc="white", mew=1.4)
    if mark_tpr is not None:
        ax.axhline(mark_tpr, color="0.6", lw=0.8, ls=":", zorder=0)
    ax.set_xscale("log")
    ax.set_xlim(fpr_min, 1.0)
    ax.set_ylim(0.0, 1.005)
    ax.set_xlabel("false positive rate (bogus called real)")
    ax.set_ylabel("true positive rate (real kept)")
    ax.grid(True, which="major", lw=0.5, alpha=0.5)
    ax.grid(True, which="minor", lw=0.3, alpha=0.25)
    if title:
        ax.set_title(title, fontsize=10)
    if curves:
        ax.legend(loc="lower right", fontsize=8)
    return fig


def score_figure(scores, labels, threshold: float | None = None, title: str | None = None, bins: int = 50):
    """Histograms of the score per class (log counts), on the score and on its logit.

    The logit panel spreads out the two ends of the score range, where the operating points of
    a good classifier lie.

    Parameters
    ----------
    scores, labels
        Probabilities of real and labels (1, 0; -1 excluded).
    threshold
        Score threshold drawn as a vertical line (e.g. the one reaching TPR 0.9).
    title
        Figure title.
    bins
        Number of bins per panel.
    """
    from matplotlib.figure import Figure

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    classes = [("real", scores[labels == 1], _REAL_COLOUR), ("bogus", scores[labels == 0], _BOGUS_COLOUR)]
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    ax_p, ax_l = fig.subplots(1, 2)
    with np.errstate(divide="ignore"):
        logit = lambda s: np.log(s) - np.log1p(-s)  # noqa: E731
        finite = np.concatenate([logit(s) for _, s, _ in classes])
    finite = finite[np.isfinite(finite)]
    span = (finite.min(), finite.max()) if finite.size else (-10.0, 10.0)
    span = (min(span[0], -1.0), max(span[1], 1.0))
    for name, s, colour in classes:
        if s.size == 0:
            continue
        ax_p.hist(s, bins=np.linspace(0, 1, bins + 1), histtype="step", color=colour, lw=1.3,
                  label=f"{name} ({s.size:,})")
        with np.errstate(divide="ignore"):
            ls = np.clip(logit(s), *span)
        ax_l.hist(ls, bins=np.linspace(*span, bins + 1), histtype="step", color=colour, lw=1.3)
    for ax, xlabel in ((ax_p, "score (probability of real)"), (ax_l, "logit of score")):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("samples")
        ax.grid(True, lw=0.4, alpha=0.4)
    if threshold is not None and np.isfinite(threshold):
        ax_p.axvline(threshold, color="0.3", ls="--", lw=0.9, label=f"threshold {threshold:.4g}")
        if 0.0 < threshold < 1.0:
            ax_l.axvline(np.clip(np.log(threshold) - np.log1p(-threshold), *span), color="0.3", ls="--", lw=0.9)
    ax_p.legend(fontsize=8, loc="lower center")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def save_figure(fig, path: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``path`` with each suffix in ``formats``, atomically; return the paths."""
    path = Path(path)
    out = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
        out.append(target)
    return out


def plot_roc(curves: Mapping[str, object], path: str | os.PathLike, title: str | None = None,
             mark_tpr: float | None = 0.9, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Draw :func:`roc_figure` and save it as ``path`` (.png and .pdf by default)."""
    return save_figure(roc_figure(curves, title=title, mark_tpr=mark_tpr), path, formats)


def plot_scores(scores, labels, path: str | os.PathLike, threshold: float | None = None,
                title: str | None = None, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Draw :func:`score_figure` and save it as ``path`` (.png by default)."""
    return save_figure(score_figure(scores, labels, threshold=threshold, title=title), path, formats)


def pass_rate_figure(results: Mapping[str, Mapping], title: str | None = None, min_rate: float = 1e-5):
    """Where each method's false positives come from, at its own threshold for one TPR.

    Parameters
    ----------
    results : mapping of str to dict
        Method name -> the output of :func:`realbogus.evaluation.floor.pass_rates` (``by_kind``
        and ``by_snr`` tables; an ``oracle`` entry is drawn like any method).
    title : str, optional
        Figure title.
    min_rate : float
        Rates of zero are drawn at this value on the log axes.

    Returns
    -------
    matplotlib.figure.Figure
        Left: pass rate of each bogus kind (the fraction of that kind called real), per method.
        Right: pass rate of the bogus (solid) and of the reals (dashed) per S/N bin.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    by_kind, by_snr = fig.subplots(1, 2, width_ratios=[1.6, 1])
    names = list(results)
    kinds = sorted({str(g) for r in results.values() for g, nb in zip(r["by_kind"]["group"], r["by_kind"]["n_bogus"])
                    if nb > 0})
    width = 0.8 / max(len(names), 1)
    for m, name in enumerate(names):
        table = results[name]["by_kind"]
        rate = {str(g): f for g, f, nb in zip(table["group"], table["fpr"], table["n_bogus"]) if nb > 0}
        values = np.array([rate.get(k, np.nan) for k in kinds], float)
        x = np.arange(len(kinds)) + (m - (len(names) - 1) / 2) * width
        label = f"{name} (FPR {results[name]['fpr']:.2g})"
        by_kind.bar(x, np.where(values > 0, values, min_rate), width=width, label=label)
    by_kind.set_yscale("log")
    by_kind.set_xticks(np.arange(len(kinds)), kinds, rotation=60, ha="right", fontsize=7)
    by_kind.set_ylabel(f"bogus called real (per kind; 0 drawn at {min_rate:g})")
    by_kind.legend(fontsize=7)
    for m, name in enumerate(names):
        table = results[name]["by_snr"]
        x = np.arange(len(table["group"]))
        colour = f"C{m}"
        by_snr.plot(x, np.where(table["fpr"] > 0, table["fpr"], min_rate), "o-", color=colour, label=f"{name} bogus")
        by_snr.plot(x, np.where(table["tpr"] > 0, table["tpr"], min_rate), "s--", color=colour, alpha=0.6,
                    label=f"{name} reals")
        by_snr.set_xticks(x, [str(g) for g in table["group"]], rotation=45, fontsize=7)
    by_snr.set_yscale("log")
    by_snr.set_xlabel("difference-image S/N")
    by_snr.set_ylabel(f"called real (0 drawn at {min_rate:g}; no point: no sample)")
    by_snr.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_pass_rates(results: Mapping[str, Mapping], path: str | os.PathLike, title: str | None = None,
                    formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Draw :func:`pass_rate_figure` and save it as ``path`` (.png and .pdf by default)."""
    return save_figure(pass_rate_figure(results, title=title), path, formats)
