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
           "plot_pass_rates", "add_floor_points", "learning_curve_figure", "pass_rate_heatmap"]

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


def add_floor_points(fig, points: Mapping[str, Mapping], tpr: float = 0.9):
    """Mark floors' operating points (FPR at ``tpr``, with their intervals) on a :func:`roc_figure`.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        A figure made by :func:`roc_figure` (its first axes are the ROC axes).
    points : mapping of str to mapping
        Legend label -> ``{"fpr": ..., "fpr_ci": [lo, hi]}`` (the interval optional), e.g. the
        output of :func:`realbogus.evaluation.floor.oracle_floor`.
    tpr : float
        TPR of the operating points.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig``. An FPR of 0 has no place on the log axis: it is drawn at the axis' left edge as
        a left-pointing triangle (the floor lies somewhere below); the axis is widened to show a
        positive FPR left of it.
    """
    ax = fig.axes[0]
    left, right = ax.get_xlim()
    positive = [float(v) for p in points.values() for v in [p["fpr"], *(p.get("fpr_ci") or [])] if float(v) > 0]
    if positive and min(positive) < left:
        left = 10 ** np.floor(np.log10(min(positive)))
        ax.set_xlim(left, right)
    markers = ("D", "s", "^", "v")
    for i, (name, p) in enumerate(points.items()):
        fpr = float(p["fpr"])
        lo, hi = (p.get("fpr_ci") or [fpr, fpr])[:2]
        x = max(fpr, left)
        ci = f" ({float(lo):.2g}-{float(hi):.2g})" if p.get("fpr_ci") else ""
        ax.errorbar([x], [tpr], xerr=[[x - max(float(lo), left)], [max(float(hi), left) - x]],
                    fmt="<" if fpr <= 0 else markers[i % len(markers)], color="k", ms=6, mfc="0.85",
                    capsize=3, lw=1, zorder=5, label=f"{name}; FPR {fpr:.2g}{ci} at TPR {tpr:g}")
    ax.legend(loc="lower right", fontsize=7)
    return fig


def learning_curve_figure(curves: Mapping[str, Mapping], title: str | None = None):
    """Validation loss and validation FPR at TPR 0.9 against the training step, per run.

    Parameters
    ----------
    curves : mapping of str to mapping
        Legend label -> ``{"step": [...], "val_loss": [...], "val_fpr": [...] or None}`` (one
        value per epoch). Runs without ``val_fpr`` appear in the loss panel only; without any,
        the figure has the loss panel alone.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    with_fpr = [n for n, c in curves.items() if c.get("val_fpr") is not None]
    fig = Figure(figsize=(12 if with_fpr else 6.5, 4.6), layout="constrained")
    axes = fig.subplots(1, 2 if with_fpr else 1, squeeze=False)[0]
    for i, (name, c) in enumerate(curves.items()):
        style = dict(color=f"C{i % 10}", ls=("-", "--", ":", "-.")[i // 10 % 4], marker="o", ms=3, lw=1.2)
        axes[0].plot(np.asarray(c["step"], float), np.asarray(c["val_loss"], float), label=name, **style)
        if with_fpr and c.get("val_fpr") is not None:
            fpr = np.asarray(c["val_fpr"], float)
            axes[1].plot(np.asarray(c["step"], float), np.where(fpr > 0, fpr, np.nan), label=name, **style)
    axes[0].set_ylabel("validation loss")
    if with_fpr:
        axes[1].set_yscale("log")
        axes[1].set_ylabel("validation FPR at TPR 0.9 (0 not drawn)")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(True, lw=0.4, alpha=0.4)
    axes[0].legend(fontsize=6)  # every run has a loss curve; not every one an FPR curve
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def pass_rate_heatmap(results: Mapping[str, Mapping], title: str | None = None, min_rate: float = 1e-5):
    """Pass rates of many methods at once: one row per method, one column per group.

    :func:`pass_rate_figure` draws a bar per method and group, which stays readable for a few
    methods; a table of several runs and oracles reads better as a grid of colours.

    Parameters
    ----------
    results : mapping of str to dict
        Method name -> the output of :func:`realbogus.evaluation.floor.pass_rates`.
    title : str, optional
        Figure title.
    min_rate : float
        Lower end of the log colour scale (rates of 0 are drawn in its colour and written "0").

    Returns
    -------
    matplotlib.figure.Figure
        Left: bogus called real per kind. Middle: bogus called real per S/N bin. Right: reals
        called real per S/N bin. Empty cells: no sample of that class in the group.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    names = list(results)
    kinds = sorted({str(g) for r in results.values() for g, nb in zip(r["by_kind"]["group"], r["by_kind"]["n_bogus"])
                    if nb > 0})
    bins = [str(g) for g in next(iter(results.values()))["by_snr"]["group"]] if names else []

    def grid(table_name, rate, count, columns):
        out = np.full((len(names), len(columns)), np.nan)
        for i, name in enumerate(names):
            t = results[name][table_name]
            for g, v, n in zip(t["group"], t[rate], t[count]):
                if n > 0 and str(g) in columns:
                    out[i, columns.index(str(g))] = v
        return out

    panels = [("bogus called real, per kind", grid("by_kind", "fpr", "n_bogus", kinds), kinds),
              ("bogus called real, per S/N", grid("by_snr", "fpr", "n_bogus", bins), bins),
              ("reals called real, per S/N", grid("by_snr", "tpr", "n_real", bins), bins)]
    fig = Figure(figsize=(4.0 + 0.42 * (len(kinds) + 2 * len(bins)), 1.6 + 0.38 * len(names)), layout="constrained")
    axes = fig.subplots(1, 3, width_ratios=[max(len(kinds), 1), max(len(bins), 1), max(len(bins), 1)], sharey=True)
    norm = LogNorm(vmin=min_rate, vmax=1.0)
    image = None
    for ax, (label, values, columns) in zip(axes, panels):
        shown = np.ma.masked_invalid(np.where(values > 0, np.maximum(values, min_rate),
                                              np.where(values == 0, min_rate, np.nan)))
        image = ax.imshow(shown, norm=norm, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                text = "0" if v == 0 else (f"{v:.0e}" if v < 0.01 else f"{v:.2f}")
                ax.text(j, i, text, ha="center", va="center", fontsize=5.5, color="w" if v < 0.1 else "k")
        ax.set_xticks(np.arange(len(columns)), columns, rotation=60, ha="right", fontsize=7)
        ax.set_title(label, fontsize=9)
    axes[0].set_yticks(np.arange(len(names)), names, fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="fraction called real")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
