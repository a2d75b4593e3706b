"""ROC metrics of a real/bogus classifier, their bootstrap intervals, and per-group breakdowns.

Conventions
-----------
* ``scores`` are probabilities of *real* (higher = more real); a sample is called real when
  ``score >= threshold``.
* ``labels`` are 1 (real), 0 (bogus) or -1 (unlabelled); unlabelled samples are left out.
* TPR is the fraction of reals called real, FPR the fraction of bogus called real.
* ``fpr_at_tpr(t)`` is the operating point with the highest threshold whose TPR is at least
  ``t`` (hence the smallest FPR among all points reaching that TPR).
* ``tpr_at_fpr(f)`` is the operating point with the lowest threshold whose FPR is at most ``f``
  (hence the largest TPR among all points within that FPR).

Thresholds are score values taken from the data (``sklearn.metrics.roc_curve`` with
``drop_intermediate=False``); ``inf`` means "call nothing real".

The bootstrap resamples reals and bogus separately (the class counts stay fixed, as they are
by construction of a test set) and evaluates every resample at once from cumulative counts
over the sorted scores, so 200 resamples of 200,000 scores take a few seconds.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

__all__ = [
    "TPR_TARGETS",
    "FPR_TARGETS",
    "BOGUS_DETECTIONS_PER_NIGHT",
    "OperatingPoint",
    "roc",
    "auc",
    "fpr_at_tpr",
    "tpr_at_fpr",
    "rates_at_threshold",
    "bootstrap",
    "compute_metrics",
    "breakdown",
    "mag_bins",
    "target_key",
]

#: TPR levels at which the FPR is reported.
TPR_TARGETS: tuple[float, ...] = (0.9, 0.95, 0.99)
#: FPR levels at which the TPR is reported.
FPR_TARGETS: tuple[float, ...] = (1e-3, 1e-4)
#: Bogus detections a night in the survey (the paper's order of magnitude).
BOGUS_DETECTIONS_PER_NIGHT: float = 1e6


class OperatingPoint(NamedTuple):
    """One point of the ROC curve: the rates obtained with ``score >= threshold``."""

    fpr: float
    tpr: float
    threshold: float


def target_key(value: float) -> str:
    """The JSON key of a TPR/FPR target: ``0.9 -> "0.9"``, ``1e-4 -> "0.0001"``."""
    return f"{float(value):g}"


# ---------------------------------------------------------------------------- input checks
def _split_classes(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validate inputs; return (real scores, bogus scores) as float64, unlabelled removed."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores ({scores.size}) and labels ({labels.size}) differ in length")
    if labels.size and not np.isin(labels, (-1, 0, 1)).all():
        bad = np.unique(labels[~np.isin(labels, (-1, 0, 1))])[:5]
        raise ValueError(f"labels must be 1 (real), 0 (bogus) or -1 (unlabelled); found {bad.tolist()}")
    keep = labels >= 0
    if not np.isfinite(scores[keep]).all():
        n_bad = int((~np.isfinite(scores[keep])).sum())
        raise ValueError(f"{n_bad} labelled score(s) are NaN or infinite")
    real = scores[keep & (labels == 1)]
    bogus = scores[keep & (labels == 0)]
    if real.size == 0 or bogus.size == 0:
        raise ValueError(
            f"ROC metrics need both real (label 1) and bogus (label 0) samples; got {real.size} real, "
            f"{bogus.size} bogus, {int((labels == -1).sum())} unlabelled"
        )
    return real, bogus


def _check_rate(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} target must lie in (0, 1]; got {value}")
    return value


def _min_count(target: float, n: int) -> int:
    """Smallest k with k / n >= target (evaluated in floating point, as roc_curve's rates are)."""
    k = max(0, min(n, math.ceil(target * n)))
    while k > 0 and (k - 1) / n >= target:
        k -= 1
    while k < n and k / n < target:
        k += 1
    return k


def _max_count(target: float, n: int) -> int:
    """Largest m with m / n <= target (floating point, as above)."""
    m = max(0, min(n, math.floor(target * n)))
    while m < n and (m + 1) / n <= target:
        m += 1
    while m > 0 and m / n > target:
        m -= 1
    return m


# ---------------------------------------------------------------------------- point estimates
def roc(scores, labels, drop_intermediate: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)``, thresholds decreasing from ``inf``.

    Parameters
    ----------
    scores, labels
        Probabilities of real and labels (1, 0, -1; -1 excluded).
    drop_intermediate
        Drop points lying on straight segments (the curve keeps its exact shape; use it for
        plots and ``roc.csv``; the metrics use every point).

    Raises
    ------
    ValueError
        If a class is missing, a label is invalid or a labelled score is not finite.
    """
    from sklearn.metrics import roc_curve

    real, bogus = _split_classes(scores, labels)
    y = np.concatenate([np.ones(real.size, np.int8), np.zeros(bogus.size, np.int8)])
    s = np.concatenate([real, bogus])
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=drop_intermediate)
    return fpr, tpr, thr


def auc(scores, labels) -> float:
    """Area under the ROC curve (ties count one half), labels -1 excluded."""
    from sklearn.metrics import roc_auc_score

    real, bogus = _split_classes(scores, labels)
    y = np.concatenate([np.ones(real.size, np.int8), np.zeros(bogus.size, np.int8)])
    return float(roc_auc_score(y, np.concatenate([real, bogus])))


def _fpr_at_tpr_on_curve(fpr, tpr, thr, target: float) -> OperatingPoint:
    i = int(np.argmax(tpr >= target))  # tpr is non-decreasing and ends at 1
    return OperatingPoint(float(fpr[i]), float(tpr[i]), float(thr[i]))


def _tpr_at_fpr_on_curve(fpr, tpr, thr, target: float) -> OperatingPoint:
    i = int(np.searchsorted(fpr, target, side="right")) - 1  # fpr[0] == 0, so i >= 0
    return OperatingPoint(float(fpr[i]), float(tpr[i]), float(thr[i]))


def fpr_at_tpr(scores, labels, tpr: float = 0.9) -> OperatingPoint:
    """The operating point with the highest threshold whose TPR is at least ``tpr``.

    Returns
    -------
    OperatingPoint
        ``(fpr, tpr, threshold)``; ``tpr`` is the TPR actually reached (>= the target).
    """
    target = _check_rate(tpr, "TPR")
    return _fpr_at_tpr_on_curve(*roc(scores, labels), target)


def tpr_at_fpr(scores, labels, fpr: float = 1e-3) -> OperatingPoint:
    """The operating point with the lowest threshold whose FPR is at most ``fpr``.

    Returns
    -------
    OperatingPoint
        ``(fpr, tpr, threshold)``; ``fpr`` is the FPR actually reached (<= the target).
        The threshold is ``inf`` when even the top-scored bogus would exceed the budget.
    """
    target = _check_rate(fpr, "FPR")
    return _tpr_at_fpr_on_curve(*roc(scores, labels), target)


def rates_at_threshold(scores, labels, threshold: float) -> OperatingPoint:
    """TPR and FPR obtained by calling real every sample with ``score >= threshold``."""
    real, bogus = _split_classes(scores, labels)
    return OperatingPoint(float(np.mean(bogus >= threshold)), float(np.mean(real >= threshold)), float(threshold))


# ---------------------------------------------------------------------------- bootstrap
def _resample_counts(rng: np.random.Generator, n: int, n_rows: int) -> np.ndarray:
    """(n_rows, n) counts of how often each of n items is drawn in n draws with replacement."""
    draws = rng.integers(0, n, size=(n_rows, n), dtype=np.int64)
    draws += (np.arange(n_rows, dtype=np.int64) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=n_rows * n).reshape(n_rows, n)


def _cumulative(counts: np.ndarray) -> np.ndarray:
    """Cumulative counts with a leading zero column: ``C[:, j]`` = draws among the j lowest."""
    out = np.zeros((counts.shape[0], counts.shape[1] + 1), dtype=np.int64)
    np.cumsum(counts, axis=1, out=out[:, 1:])
    return out


def _rowwise_searchsorted_right(cum: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row b, ``searchsorted(cum[b], values[b], side="right")`` for non-decreasing rows."""
    n_rows, width = cum.shape
    # Offsetting row b by b * (top + 1) makes the flattened array non-decreasing overall.
    step = int(cum[:, -1].max()) + 1
    offsets = np.arange(n_rows, dtype=np.int64) * step
    flat = (cum + offsets[:, None]).ravel()
    pos = np.searchsorted(flat, values + offsets, side="right")
    return pos - np.arange(n_rows, dtype=np.int64) * width


def _rates_from_counts(
    wr: np.ndarray,
    wb: np.ndarray,
    prep: dict,
    tpr_targets: Sequence[float],
    fpr_targets: Sequence[float],
) -> dict[str, np.ndarray]:
    """Evaluate weighted samples: row b gives real i weight ``wr[b, i]``, bogus j ``wb[b, j]``.

    Reals and bogus are in ascending score order. Weights are integer counts summing to the
    class sizes in every row (bootstrap resamples; all ones reproduces the point estimates).
    """
    r, b = prep["real"], prep["bogus"]
    n_r, n_b = r.size, b.size
    cr, cb = _cumulative(wr), _cumulative(wb)
    rows = np.arange(wr.shape[0])
    out: dict[str, np.ndarray] = {}
    # AUC = P(real > bogus) + P(tie) / 2 = sum_i w_i (#bogus below r_i + #bogus <= r_i) / (2 n_r n_b)
    below = cb[:, prep["b_lt_r"]]
    below_or_tie = cb[:, prep["b_le_r"]]
    out["auc"] = np.einsum("ij,ij->i", wr, below + below_or_tie, dtype=np.float64) / (2.0 * n_r * n_b)
    for t in tpr_targets:
        k = _min_count(t, n_r)
        # the k-th largest resampled real score sits at ascending rank n_r - k
        p = _rowwise_searchsorted_right(cr, np.full(len(rows), n_r - k)) - 1
        p = np.clip(p, 0, n_r - 1)
        out[f"fpr@{t}"] = (n_b - cb[rows, prep["b_lt_r"][p]]) / n_b
    for f in fpr_targets:
        m = _max_count(f, n_b)
        if m >= n_b:
            out[f"tpr@{f}"] = np.ones(len(rows))
            continue
        # the (m+1)-th largest resampled bogus score v must stay below the threshold
        q = _rowwise_searchsorted_right(cb, np.full(len(rows), n_b - m - 1)) - 1
        q = np.clip(q, 0, n_b - 1)
        out[f"tpr@{f}"] = (n_r - cr[rows, prep["r_le_b"][q]]) / n_r
    return out


def _prepare(real: np.ndarray, bogus: np.ndarray) -> dict:
    r = np.sort(real)
    b = np.sort(bogus)
    return {
        "real": r,
        "bogus": b,
        "b_lt_r": np.searchsorted(b, r, side="left"),   # bogus strictly below each real
        "b_le_r": np.searchsorted(b, r, side="right"),  # bogus at or below each real
        "r_le_b": np.searchsorted(r, b, side="right"),  # reals at or below each bogus
    }


def bootstrap(
    scores,
    labels,
    n_resamples: int = 1000,
    seed: int = 0,
    tpr_targets: Sequence[float] = TPR_TARGETS,
    fpr_targets: Sequence[float] = FPR_TARGETS,
    max_cells: int = 8_000_000,
) -> dict[str, np.ndarray]:
    """Bootstrap distributions of AUC, FPR at each TPR target and TPR at each FPR target.

    Reals and bogus are resampled separately with replacement, each to its own size.

    Parameters
    ----------
    scores, labels
        Probabilities of real and labels (1, 0, -1; -1 excluded).
    n_resamples
        Number of resamples.
    seed
        Seed of the resampling; equal inputs and seed give equal outputs, whatever ``max_cells``.
    tpr_targets, fpr_targets
        Rates at which to evaluate FPR and TPR.
    max_cells
        Resamples are processed in chunks of about this many (resample, sample) cells, which
        bounds the memory (about 50 bytes a cell).

    Returns
    -------
    dict
        ``"auc"``, ``"fpr@<t>"`` for each TPR target and ``"tpr@<f>"`` for each FPR target,
        each an array of ``n_resamples`` values.
    """
    real, bogus = _split_classes(scores, labels)
    tpr_targets = [_check_rate(t, "TPR") for t in tpr_targets]
    fpr_targets = [_check_rate(f, "FPR") for f in fpr_targets]
    prep = _prepare(real, bogus)
    # One stream per class, so the draws do not depend on the chunking.
    rng_real, rng_bogus = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    chunk = max(1, int(max_cells) // (real.size + bogus.size))
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, int(n_resamples), chunk):
        n_rows = min(chunk, int(n_resamples) - start)
        wr = _resample_counts(rng_real, real.size, n_rows)
        wb = _resample_counts(rng_bogus, bogus.size, n_rows)
        parts.append(_rates_from_counts(wr, wb, prep, tpr_targets, fpr_targets))
    keys = ["auc"] + [f"fpr@{t}" for t in tpr_targets] + [f"tpr@{f}" for f in fpr_targets]
    return {k: np.concatenate([p[k] for p in parts]) if parts else np.empty(0) for k in keys}


def _interval(values: np.ndarray, confidence: float) -> list[float] | None:
    if values.size == 0:
        return None
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]


# ---------------------------------------------------------------------------- summary
def compute_metrics(
    scores,
    labels,
    tpr_targets: Sequence[float] = TPR_TARGETS,
    fpr_targets: Sequence[float] = FPR_TARGETS,
    bogus_detections_per_night: float = BOGUS_DETECTIONS_PER_NIGHT,
    night_tpr: float = 0.9,
    score_thresholds: Sequence[float] = (0.5,),
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """All summary metrics of one set of scores, as a JSON-ready dict.

    Parameters
    ----------
    scores, labels
        Probabilities of real and labels (1 real, 0 bogus, -1 unlabelled and excluded).
    tpr_targets
        TPRs at which the FPR is reported (``fpr_at_tpr``).
    fpr_targets
        FPRs at which the TPR is reported (``tpr_at_fpr``).
    bogus_detections_per_night
        Bogus detections a night; ``bogus_per_night`` = FPR at ``night_tpr`` times this.
    night_tpr
        TPR of the operating point used for ``bogus_per_night`` (added to ``tpr_targets``).
    score_thresholds
        Fixed score thresholds at which TPR and FPR are also reported (``at_score``).
    n_bootstrap
        Bootstrap resamples for the intervals; 0 gives ``None`` intervals.
    confidence
        Level of the percentile intervals.
    seed
        Seed of the bootstrap.

    Returns
    -------
    dict
        Keys ``n_real``, ``n_bogus``, ``n_unlabelled``, ``auc``, ``auc_ci``, ``fpr_at_tpr``,
        ``tpr_at_fpr``, ``at_score``, ``bogus_per_night``, ``bogus_per_night_ci``,
        ``bogus_per_night_at_tpr``, ``bogus_detections_per_night``, ``bootstrap``. Rate families
        are keyed by :func:`target_key` (``"0.9"``), each entry holding the reported rate, its
        ``ci``, the ``threshold`` and the other rate reached there.

    Raises
    ------
    ValueError
        If a class is missing or the inputs are invalid.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")
    labels_arr = np.asarray(labels).reshape(-1)
    tpr_targets = sorted({_check_rate(t, "TPR") for t in (*tpr_targets, night_tpr)})
    fpr_targets = sorted({_check_rate(f, "FPR") for f in fpr_targets}, reverse=True)
    fpr, tpr, thr = roc(scores, labels_arr)
    real, bogus = _split_classes(scores, labels_arr)
    boot = bootstrap(scores, labels_arr, n_bootstrap, seed, tpr_targets, fpr_targets) if n_bootstrap > 0 else {}

    def ci(key: str, scale: float = 1.0) -> list[float] | None:
        return _interval(boot[key] * scale, confidence) if boot else None

    out: dict = {
        "n_real": int(real.size),
        "n_bogus": int(bogus.size),
        "n_unlabelled": int((labels_arr == -1).sum()),
        "auc": auc(scores, labels_arr),
        "auc_ci": ci("auc"),
        "fpr_at_tpr": {},
        "tpr_at_fpr": {},
        "at_score": {},
    }
    for t in tpr_targets:
        p = _fpr_at_tpr_on_curve(fpr, tpr, thr, t)
        out["fpr_at_tpr"][target_key(t)] = {"fpr": p.fpr, "ci": ci(f"fpr@{t}"), "threshold": p.threshold, "tpr": p.tpr}
    for f in fpr_targets:
        p = _tpr_at_fpr_on_curve(fpr, tpr, thr, f)
        out["tpr_at_fpr"][target_key(f)] = {"tpr": p.tpr, "ci": ci(f"tpr@{f}"), "threshold": p.threshold, "fpr": p.fpr}
    for s in score_thresholds:
        out["at_score"][target_key(s)] = {"tpr": float(np.mean(real >= s)), "fpr": float(np.mean(bogus >= s))}
    night = out["fpr_at_tpr"][target_key(night_tpr)]
    out["bogus_per_night"] = night["fpr"] * float(bogus_detections_per_night)
    out["bogus_per_night_ci"] = ci(f"fpr@{_check_rate(night_tpr, 'TPR')}", float(bogus_detections_per_night))
    out["bogus_per_night_at_tpr"] = float(night_tpr)
    out["bogus_detections_per_night"] = float(bogus_detections_per_night)
    out["bootstrap"] = {
        "n_resamples": int(n_bootstrap),
        "confidence": float(confidence),
        "seed": int(seed),
        "method": "percentile; reals and bogus resampled separately",
    }
    return out


# ---------------------------------------------------------------------------- breakdowns
def _binomial_interval(k: np.ndarray, n: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson interval of k successes in n trials (NaN where n == 0)."""
    from scipy.stats import beta

    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        hi = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    empty = n == 0
    return np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)


def breakdown(
    scores,
    labels,
    groups,
    threshold: float | None = None,
    target_tpr: float = 0.9,
    confidence: float = 0.95,
) -> dict[str, np.ndarray]:
    """Per-group counts and rates at one global threshold (per sensor, magnitude bin, kind...).

    Parameters
    ----------
    scores, labels
        Probabilities of real and labels (1, 0, -1; -1 excluded).
    groups
        Group of each sample (any sortable 1-D values); rows come out in ``numpy.unique`` order.
    threshold
        Score threshold; default: the global threshold reaching ``target_tpr`` over all samples.
    target_tpr
        TPR defining the default threshold.
    confidence
        Level of the exact (Clopper-Pearson) binomial intervals on TPR and FPR.

    Returns
    -------
    dict of numpy.ndarray
        Columns ``group, n_real, n_bogus, n_real_passed, tpr, tpr_lo, tpr_hi, n_bogus_passed,
        fpr, fpr_lo, fpr_hi, auc, threshold``; rates are NaN where the class is absent from a
        group, ``auc`` where either class is.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    groups = np.asarray(groups).reshape(-1)
    if groups.shape != scores.shape:
        raise ValueError(f"groups ({groups.size}) and scores ({scores.size}) differ in length")
    if threshold is None:
        threshold = fpr_at_tpr(scores, labels, target_tpr).threshold
    else:
        _split_classes(scores, labels)
    keep = labels >= 0
    scores, labels, groups = scores[keep], labels[keep], groups[keep]
    names, inverse = np.unique(groups, return_inverse=True)
    g = len(names)
    is_real = labels == 1
    passed = scores >= threshold
    n_real = np.bincount(inverse, weights=is_real, minlength=g).astype(np.int64)
    n_bogus = np.bincount(inverse, weights=~is_real, minlength=g).astype(np.int64)
    n_real_passed = np.bincount(inverse, weights=is_real & passed, minlength=g).astype(np.int64)
    n_bogus_passed = np.bincount(inverse, weights=~is_real & passed, minlength=g).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.where(n_real > 0, n_real_passed / np.maximum(n_real, 1), np.nan)
        fpr = np.where(n_bogus > 0, n_bogus_passed / np.maximum(n_bogus, 1), np.nan)
    tpr_lo, tpr_hi = _binomial_interval(n_real_passed, n_real, confidence)
    fpr_lo, fpr_hi = _binomial_interval(n_bogus_passed, n_bogus, confidence)
    aucs = np.full(g, np.nan)
    for i in np.flatnonzero((n_real > 0) & (n_bogus > 0)):
        sel = inverse == i
        aucs[i] = auc(scores[sel], labels[sel])
    return {
        "group": names,
        "n_real": n_real,
        "n_bogus": n_bogus,
        "n_real_passed": n_real_passed,
        "tpr": tpr,
        "tpr_lo": tpr_lo,
        "tpr_hi": tpr_hi,
        "n_bogus_passed": n_bogus_passed,
        "fpr": fpr,
        "fpr_lo": fpr_lo,
        "fpr_hi": fpr_hi,
        "auc": aucs,
        "threshold": np.full(g, float(threshold)),
    }


def mag_bins(mag, edges: Sequence[float] | None = None, width: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude bin index of each sample, for :func:`breakdown`.

    Parameters
    ----------
    mag
        Magnitudes; NaN (no source, e.g. most bogus) goes to bin -1.
    edges
        Increasing bin edges; values outside go to the first or last bin. Default: edges every
        ``width`` magnitudes covering the finite values.
    width
        Bin width of the default edges.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Integer bin index per sample (-1 for NaN) and the edges (``len(edges) - 1`` bins).
    """
    mag = np.asarray(mag, dtype=np.float64).reshape(-1)
    finite = np.isfinite(mag)
    if edges is None:
        if finite.any():
            lo = math.floor(mag[finite].min() / width) * width
            hi = math.ceil(mag[finite].max() / width) * width
            hi = max(hi, lo + width)
            edges = np.arange(lo, hi + width / 2, width)
        else:
            edges = np.array([0.0, width])
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"magnitude bin edges must be at least two increasing values; got {edges.tolist()}")
    index = np.clip(np.searchsorted(edges, mag, side="right") - 1, 0, edges.size - 2)
    return np.where(finite, index, -1), edges

