"""Which training labels to flip: per-class counts, candidate weights, seeded weighted draws.

Conventions (the paper's): a label error of class ``c`` is a sample *labelled* ``c`` whose true
class is the other one. The measured rates are 0.6% for bogus (bogus labels on real objects:
hidden reals) and 1.0% for real (real labels on bogus detections: failed injections).

Rates are per class: ``rates["bogus"] = r`` injects ``round(r * n_bogus)`` errors of class
bogus, where ``n_bogus`` is the number of bogus labels before injection; each is made by
relabelling a real-labelled sample as bogus (and ``rates["real"]`` the other way round). So
the injected errors make up the requested fraction of each class's labels.

Candidates for an error of class ``c`` are the samples labelled ``1 - c``; when the ground
truth is known and ``keep_existing_errors`` is set, only those whose label is right, so
that every flip adds an error and none repairs one.

The draw is a weighted sample without replacement (Efraimidis & Spirakis 2006): candidate
``i`` with weight ``w_i > 0`` gets the key ``log(u_i) / w_i`` with ``u_i`` uniform on (0, 1],
and the ``k`` largest keys are flipped. One ``u`` per training row comes from the seed, so

- the same seed gives the same flips;
- at a fixed seed and mode the flips of a lower rate are a subset of those of a higher rate
  (the noise levels of a sweep are nested, which makes their comparison less noisy);
- ``uniform`` (every weight 1) is a plain random subset of the candidates.

Weights of the ``boundary`` mode (:func:`boundary_weights`) make the injected errors follow the
per-score-bin error profile: a candidate whose out-of-fold score lies in bin ``b`` has, as an
error of class ``c``, the weight ``rho_c(b)``, the share of class-``c`` labels in bin ``b``
that are wrong (the ratio of the paper's analysis). Label errors sit where the classifier
contradicts the label, so this mostly picks samples that look like the class they are *not*
relabelled to: real-looking reals become bogus-labelled errors, bogus-looking bogus become
real-labelled errors, as the measured errors are.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from realbogus.errors import ConfigError

__all__ = [
    "CLASS_NAMES",
    "PROFILE_EDGES",
    "flip_counts",
    "candidates",
    "error_profile",
    "profile_weights",
    "model_weights",
    "boundary_weights",
    "draw_flips",
    "inject",
    "label_error_rates",
]

CLASS_NAMES = ("bogus", "real")
#: Out-of-fold score bins of the error profile: those of the label-error analysis.
PROFILE_EDGES = np.linspace(0.0, 1.0, 21)
# Smallest weight relative to the largest: a weight of 0 would make log(u) / w undefined.
_MIN_WEIGHT = 1e-12


def _labels(values, name: str) -> np.ndarray:
    out = np.asarray(values).reshape(-1).astype(np.int64)
    if not np.isin(out, (-1, 0, 1)).all():
        raise ValueError(f"{name} must be 1 (real), 0 (bogus) or -1 (unlabelled)")
    return out


def _has_truth(true_label) -> bool:
    return true_label is not None and np.asarray(true_label).size > 0 and bool((np.asarray(true_label) >= 0).all())


def flip_counts(given, rates: Mapping[str, float]) -> dict[str, int]:
    """Number of label errors to inject per class: ``round(rate * number of labels of the class)``."""
    given = _labels(given, "given labels")
    out = {}
    for c, name in enumerate(CLASS_NAMES):
        rate = float(rates.get(name, 0.0))
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"label_noise rate of {name} must be in [0, 1); got {rate}")
        out[name] = int(round(rate * np.count_nonzero(given == c)))
    return out


def candidates(given, target: int, true_label=None, keep_existing_errors: bool = True) -> np.ndarray:
    """Rows that may be relabelled ``target``: labelled the other class (and truly so, if known)."""
    given = _labels(given, "given labels")
    mask = given == 1 - target
    if keep_existing_errors and _has_truth(true_label):
        mask &= _labels(true_label, "true labels") == 1 - target
    return np.flatnonzero(mask)


def _bin_of(scores, edges) -> np.ndarray:
    return np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, len(edges) - 2)


def error_profile(scores, given, true_label, edges=PROFILE_EDGES, smoothing: float = 1.0) -> dict:
    """The per-score-bin label-error ratio of each class, measured with the ground truth.

    ``rho_c(b) = (e_c(b) + s * r_c) / (n_c(b) + s)``: ``n_c(b)`` labels of class ``c`` in bin
    ``b``, ``e_c(b)`` of them wrong, ``r_c`` the class's overall error rate and ``s`` the
    ``smoothing`` pseudo-count, which pulls sparsely filled bins toward ``r_c`` (and gives
    bins without any label of the class the rate ``r_c``).

    Returns
    -------
    dict
        ``edges``; per class name ``{"ratio", "n_labels", "n_errors", "rate"}`` (arrays per bin
        and the overall rate). A class without any wrong label has ``rate`` 0 and no ratio (None).
    """
    scores = np.asarray(scores, float).reshape(-1)
    given = _labels(given, "given labels")
    true_label = _labels(true_label, "true labels")
    edges = np.asarray(edges, float)
    if smoothing < 0:
        raise ConfigError(f"label_noise.smoothing must be non-negative; got {smoothing}")
    bins = _bin_of(scores, edges)
    out: dict = {"edges": edges, "smoothing": float(smoothing)}
    for c, name in enumerate(CLASS_NAMES):
        of_class = given == c
        n = np.bincount(bins[of_class], minlength=len(edges) - 1)
        e = np.bincount(bins[of_class & (true_label != c)], minlength=len(edges) - 1)
        rate = float(e.sum() / n.sum()) if n.sum() else 0.0
        ratio = None
        if rate > 0:
            den = n + smoothing
            ratio = np.where(den > 0, (e + smoothing * rate) / np.where(den > 0, den, 1), rate)
        out[name] = {"ratio": ratio, "n_labels": n, "n_errors": e, "rate": rate}
    return out


def profile_weights(scores, rows, target: int, profile: Mapping) -> np.ndarray:
    """Weights of candidates ``rows`` for errors of class ``target``: the profile ratio of their bin."""
    ratio = profile[CLASS_NAMES[target]]["ratio"]
    bins = _bin_of(np.asarray(scores, float)[rows], np.asarray(profile["edges"], float))
    return np.asarray(ratio, float)[bins]


def model_weights(scores, rows, target: int) -> np.ndarray:
    """Weights without ground truth: the out-of-fold probability of the class other than ``target``.

    A calibrated classifier's estimate of how likely a ``target`` label on the sample would be
    wrong: the score (probability of real) for bogus errors, one minus it for real errors.
    """
    s = np.asarray(scores, float)[rows]
    return s if target == 0 else 1.0 - s


def boundary_weights(scores, given, target: int, rows, true_label=None, source: str = "auto",
                     edges=PROFILE_EDGES, smoothing: float = 1.0) -> tuple[np.ndarray, str]:
    """Weights of the ``boundary`` mode for candidates ``rows`` and where they come from.

    ``source``: ``truth`` (the measured error profile, :func:`error_profile`; needs
    ``true_label`` and at least one wrong label of the class), ``model``
    (:func:`model_weights`), or ``auto`` (``truth`` when possible, else ``model``).
    Returns the weights and the source used.
    """
    if source not in ("auto", "truth", "model"):
        raise ConfigError(f"label_noise.profile={source!r} is not one of auto, truth, model")
    if source != "model" and _has_truth(true_label):
        profile = error_profile(scores, given, true_label, edges, smoothing)
        if profile[CLASS_NAMES[target]]["ratio"] is not None:
            return profile_weights(scores, rows, target, profile), "truth"
    if source == "truth":
        raise ConfigError("label_noise.profile=truth needs a training file with true_label and label errors "
                          f"of class {CLASS_NAMES[target]}; use profile=model or auto")
    return model_weights(scores, rows, target), "model"


def draw_flips(u, weights, k: int) -> np.ndarray:
    """Positions of the ``k`` candidates drawn: the largest keys ``log(u) / w`` (ties: larger ``u``)."""
    u = np.asarray(u, float)
    w = np.asarray(weights, float)
    if k > u.size:
        raise ValueError(f"cannot draw {k} of {u.size} candidates")
    if k == 0:
        return np.empty(0, np.int64)
    if (w < 0).any() or not np.isfinite(w).all():
        raise ValueError("weights must be finite and non-negative")
    top = w.max()
    w = np.maximum(w, _MIN_WEIGHT * top) if top > 0 else np.ones_like(w)
    keys = np.log(u) / w
    order = np.lexsort((-u, -keys))  # last key is primary: descending keys, then descending u
    return np.sort(order[:k])


def inject(given, rates: Mapping[str, float], seed: int, true_label=None, keep_existing_errors: bool = True,
           weight_fn=None) -> tuple[np.ndarray, dict]:
    """Flip labels so that each class gains the requested share of label errors.

    Parameters
    ----------
    given
        Given label of every training row (1 real, 0 bogus, -1 unlabelled: never touched).
    rates
        ``{"bogus": r0, "real": r1}``: injected errors as a fraction of each class's labels.
    seed
        Seeds the draw (see the module docstring).
    true_label
        Ground truth, or None. Only used to choose candidates (``keep_existing_errors``) and
        by ``weight_fn``; never changed.
    keep_existing_errors
        Never flip a sample whose label is already wrong (needs ``true_label``).
    weight_fn
        ``weight_fn(target, rows) -> weights`` for the candidates ``rows`` of errors of class
        ``target``; None for uniform weights.

    Returns
    -------
    noisy, flipped
        The noisy labels (int64) and, per class name, the sorted rows relabelled to that class.
    """
    given = _labels(given, "given labels")
    counts = flip_counts(given, rates)
    u = 1.0 - np.random.default_rng(int(seed)).random(given.size)  # in (0, 1]
    noisy = given.copy()
    flipped = {}
    for target, name in enumerate(CLASS_NAMES):
        rows = candidates(given, target, true_label, keep_existing_errors)
        k = counts[name]
        if k > rows.size:
            which = "correctly " if _has_truth(true_label) and keep_existing_errors else ""
            raise ConfigError(f"label_noise: {k} {name} label errors requested but only {rows.size} candidates "
                              f"(samples {which}labelled {CLASS_NAMES[1 - target]})")
        weights = np.ones(rows.size) if weight_fn is None else np.asarray(weight_fn(target, rows), float)
        chosen = rows[draw_flips(u[rows], weights, k)]
        noisy[chosen] = target
        flipped[name] = chosen
    return noisy, flipped


def label_error_rates(labels, true_label) -> dict[str, float]:
    """Share of wrong labels per class (``bogus``, ``real``) and over all labelled samples (``all``)."""
    labels = _labels(labels, "labels")
    true_label = _labels(true_label, "true labels")
    wrong = (labels >= 0) & (labels != true_label)
    out = {}
    for c, name in enumerate(CLASS_NAMES):
        n = np.count_nonzero(labels == c)
        out[name] = float(np.count_nonzero(wrong & (labels == c)) / n) if n else float("nan")
    n = np.count_nonzero(labels >= 0)
    out["all"] = float(np.count_nonzero(wrong) / n) if n else float("nan")
    return out
