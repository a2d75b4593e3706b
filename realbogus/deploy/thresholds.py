"""Operating points: the score threshold a survey applies, and the rates to expect at it.

A sample is a candidate when ``score >= threshold`` (the convention of
:mod:`realbogus.evaluation.metrics`). The threshold is given directly, or derived from a
labelled reference set - a run's test predictions, whose clean labels and realistic class mix
play the part of the paper's validation set - in one of two ways:

``target_tpr``
    the highest threshold that keeps at least this fraction of the reference reals;
``bogus_per_night`` (with ``detections_per_night``, default 10^6)
    the lowest threshold whose expected number of bogus candidates a night,
    ``FPR x detections_per_night``, stays within the budget, i.e. the largest TPR affordable.

The reference set is either the scores and labels themselves (exact) or a ROC curve as stored
in a model card (see :func:`curve_points`). A curve with its straight-segment points dropped
has the exact shape of the full curve, so the FPR it gives at a TPR target, and the TPR it
gives within an FPR budget, are the exact ones; only the threshold may sit at a neighbouring
score with the same rates. A threshold given directly is placed on such a curve at the nearest
kept point at or above it, which can underestimate its rates slightly (``exact`` is then False).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np

from realbogus.errors import ConfigError, DataError
from realbogus.evaluation import metrics as M

__all__ = [
    "DEFAULT_DETECTIONS_PER_NIGHT",
    "CARD_TPR_TARGETS",
    "OperatingPoint",
    "check_request",
    "roc_points",
    "curve_points",
    "operating_point",
    "operating_point_from_curve",
    "card_thresholds",
    "from_card_curve",
]

#: Detections a night assumed for a candidates budget (the paper's order of magnitude).
DEFAULT_DETECTIONS_PER_NIGHT: float = 1e6
#: TPR levels whose thresholds a model card lists.
CARD_TPR_TARGETS: tuple[float, ...] = (0.9, 0.95, 0.99)
#: One-sided confidence level of the upper limits on the FPR.
UPPER_LIMIT_LEVEL = 0.95


@dataclass
class OperatingPoint:
    """A threshold and the rates expected at it on the reference set.

    Attributes
    ----------
    mode : str
        ``threshold``, ``target_tpr`` or ``bogus_per_night``: how the threshold was chosen.
    requested : float
        The value given for that mode.
    threshold : float
        Call a sample a candidate when ``score >= threshold``.
    expected_tpr, expected_fpr : float
        Fraction of the reference reals / bogus at or above the threshold.
    fpr_upper : float
        One-sided 95% upper limit of the FPR (Clopper-Pearson), which matters when few or no
        reference bogus pass the threshold.
    detections_per_night : float
        Detections a night behind the two figures below.
    expected_bogus_per_night, bogus_per_night_upper : float
        ``expected_fpr`` and ``fpr_upper`` times ``detections_per_night``.
    n_real, n_bogus : int
        Size of the reference set.
    reference : str
        Where the rates come from (a predictions file or a model card).
    exact : bool
        Whether the rates are exact for this threshold (False for a threshold placed on a
        thinned curve).
    notes : list of str
        Caveats, e.g. a budget finer than the reference set can resolve.
    """

    mode: str
    requested: float
    threshold: float
    expected_tpr: float
    expected_fpr: float
    fpr_upper: float
    detections_per_night: float
    expected_bogus_per_night: float
    bogus_per_night_upper: float
    n_real: int
    n_bogus: int
    reference: str
    exact: bool = True
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def check_request(
    threshold: float | None = None,
    target_tpr: float | None = None,
    bogus_per_night: float | None = None,
    detections_per_night: float = DEFAULT_DETECTIONS_PER_NIGHT,
) -> tuple[str, float] | None:
    """Validate an operating-point request; return ``(mode, value)`` or None if none was made.

    Raises
    ------
    ConfigError
        More than one way of choosing was given, or a value is out of range.
    """
    given = {k: v for k, v in (("threshold", threshold), ("target_tpr", target_tpr),
                               ("bogus_per_night", bogus_per_night)) if v is not None}
    if len(given) > 1:
        raise ConfigError(f"give at most one of threshold=, target_tpr=, bogus_per_night= (got {', '.join(given)})")
    try:
        detections = float(detections_per_night)
        values = {k: float(v) for k, v in given.items()}
    except (TypeError, ValueError):
        raise ConfigError(
            f"operating point values must be numbers (got {dict(given, detections_per_night=detections_per_night)})"
        ) from None
    if not (np.isfinite(detections) and detections > 0):
        raise ConfigError(f"detections_per_night={detections_per_night!r} must be a positive number")
    if not values:
        return None
    mode, value = next(iter(values.items()))
    if mode == "threshold" and not 0.0 <= value <= 1.0:
        raise ConfigError(f"threshold={value:g} must lie in [0, 1] (scores are probabilities of real)")
    if mode == "target_tpr" and not 0.0 < value <= 1.0:
        raise ConfigError(f"target_tpr={value:g} must lie in (0, 1]")
    if mode == "bogus_per_night" and not (np.isfinite(value) and value >= 0.0):
        raise ConfigError(f"bogus_per_night={value:g} must be a non-negative number")
    return mode, value


def roc_points(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """The full ROC curve ``(fpr, tpr, threshold, n_real, n_bogus)`` of labelled scores.

    Raises
    ------
    DataError
        If a class is missing or the inputs are invalid.
    """
    labels = np.asarray(labels).reshape(-1)
    try:
        fpr, tpr, thr = M.roc(scores, labels)
    except ValueError as exc:
        raise DataError(f"reference set: {exc}") from None
    return fpr, tpr, thr, int((labels == 1).sum()), int((labels == 0).sum())


def curve_points(scores, labels, max_points: int = 4000) -> dict:
    """A ROC curve small enough for a model card, as JSON-ready lists.

    Straight-segment points are dropped (the shape stays exact). A curve still longer than
    ``max_points`` keeps every point up to FPR 1e-2 - the range where surveys operate - and an
    even subsample of the rest; every kept point lies on the curve.

    Returns
    -------
    dict
        ``fpr``, ``tpr``, ``threshold`` (lists, thresholds decreasing from the highest score),
        ``n_real``, ``n_bogus``, ``thinned`` (whether points beyond the straight segments were
        dropped).
    """
    labels = np.asarray(labels).reshape(-1)
    try:
        fpr, tpr, thr = M.roc(scores, labels, drop_intermediate=True)
    except ValueError as exc:
        raise DataError(f"reference set: {exc}") from None
    # roc_curve's first threshold is inf ("nothing is real"); store the highest score instead
    thr = thr.copy()
    thr[0] = np.nextafter(thr[1], np.inf) if thr.size > 1 else 1.0
    thinned = fpr.size > max_points
    if thinned:
        head = np.flatnonzero(fpr <= 1e-2)
        rest = np.flatnonzero(fpr > 1e-2)
        room = max(max_points - head.size, 2)
        pick = rest[np.unique(np.linspace(0, rest.size - 1, min(room, rest.size)).round().astype(int))]
        keep = np.union1d(head, pick)
        fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
    return {
        "fpr": fpr.tolist(),
        "tpr": tpr.tolist(),
        "threshold": thr.tolist(),
        "n_real": int((labels == 1).sum()),
        "n_bogus": int((labels == 0).sum()),
        "thinned": bool(thinned),
    }


def _fpr_upper(fpr: float, n_bogus: int) -> float:
    """One-sided upper limit of a binomial rate observed as ``fpr`` of ``n_bogus`` trials."""
    from scipy.stats import beta

    k = int(round(fpr * n_bogus))
    if k >= n_bogus:
        return 1.0
    return float(beta.ppf(UPPER_LIMIT_LEVEL, k + 1, n_bogus - k))


def _finite_threshold(thr: np.ndarray, i: int) -> float:
    """``thr[i]``, with the 'nothing is real' threshold inf replaced by just above the top score."""
    value = float(thr[i])
    if np.isinf(value):
        above = thr[np.isfinite(thr)]
        value = float(np.nextafter(above.max(), np.inf)) if above.size else 1.0
    return value


def operating_point_from_curve(
    fpr,
    tpr,
    thr,
    n_real: int,
    n_bogus: int,
    mode: str,
    value: float,
    detections_per_night: float = DEFAULT_DETECTIONS_PER_NIGHT,
    reference: str = "",
    full_curve: bool = True,
) -> OperatingPoint:
    """Choose an operating point on a ROC curve (thresholds decreasing).

    Parameters
    ----------
    fpr, tpr, thr
        The curve, as :func:`roc_points` or a model card's ``roc`` give it.
    n_real, n_bogus
        Size of the reference set behind the curve.
    mode, value
        As returned by :func:`check_request`.
    detections_per_night
        Detections a night for the budget and the expected counts.
    reference
        Description of the reference set, copied into the result.
    full_curve
        Whether the curve holds every threshold (then a threshold given directly gets exact
        rates).
    """
    fpr = np.asarray(fpr, np.float64)
    tpr = np.asarray(tpr, np.float64)
    thr = np.asarray(thr, np.float64)
    detections = float(detections_per_night)
    notes: list[str] = []
    exact = True
    if mode == "target_tpr":
        i = int(np.argmax(tpr >= value)) if (tpr >= value).any() else tpr.size - 1
        threshold = _finite_threshold(thr, i)
    elif mode == "bogus_per_night":
        allowed = value / detections
        i = int(np.searchsorted(fpr, allowed, side="right")) - 1
        i = max(i, 0)
        threshold = _finite_threshold(thr, i)
        resolution = detections / max(n_bogus, 1)
        if value < resolution:
            notes.append(
                f"budget {value:g} a night is below what {n_bogus} reference bogus resolve "
                f"({resolution:.3g} a night per bogus); the threshold passes no reference bogus, "
                "and bogus_per_night_upper is the meaningful figure"
            )
    elif mode == "threshold":
        # rates only change at curve thresholds: the lowest curve threshold >= value holds them
        at_or_above = np.flatnonzero(thr >= value)
        i = int(at_or_above[-1]) if at_or_above.size else 0
        threshold = float(value)
        exact = bool(full_curve) or bool(thr[i] == value)
        if not exact:
            notes.append("rates read from the model card's ROC curve at the nearest kept point at or above "
                         "the threshold (a lower bound); give a run folder for exact rates")
    else:
        raise ConfigError(f"unknown operating-point mode {mode!r}")
    f, t = float(fpr[i]), float(tpr[i])
    upper = _fpr_upper(f, n_bogus)
    return OperatingPoint(
        mode=mode, requested=float(value), threshold=threshold, expected_tpr=t, expected_fpr=f,
        fpr_upper=upper, detections_per_night=detections, expected_bogus_per_night=f * detections,
        bogus_per_night_upper=upper * detections, n_real=int(n_real), n_bogus=int(n_bogus),
        reference=reference, exact=exact, notes=notes,
    )


def operating_point(
    scores,
    labels,
    threshold: float | None = None,
    target_tpr: float | None = None,
    bogus_per_night: float | None = None,
    detections_per_night: float = DEFAULT_DETECTIONS_PER_NIGHT,
    reference: str = "",
) -> OperatingPoint | None:
    """Choose an operating point from labelled reference scores (exact).

    Parameters
    ----------
    scores, labels
        Reference scores (probability of real) and labels (1 real, 0 bogus, -1 ignored).
    threshold, target_tpr, bogus_per_night
        At most one: the way of choosing (see the module docstring).
    detections_per_night
        Detections a night for the budget and the expected counts.
    reference
        Description of the reference set, copied into the result.

    Returns
    -------
    OperatingPoint or None
        None when no way of choosing was given.

    Raises
    ------
    ConfigError
        An invalid request.
    DataError
        The reference set lacks a class.
    """
    request = check_request(threshold, target_tpr, bogus_per_night, detections_per_night)
    if request is None:
        return None
    fpr, tpr, thr, n_real, n_bogus = roc_points(scores, labels)
    return operating_point_from_curve(fpr, tpr, thr, n_real, n_bogus, *request,
                                      detections_per_night=detections_per_night, reference=reference)


def card_thresholds(scores, labels, detections_per_night: float = DEFAULT_DETECTIONS_PER_NIGHT,
                    targets=CARD_TPR_TARGETS) -> dict[str, dict]:
    """Operating points at the card's TPR targets, keyed like ``metrics.json`` (``"0.9"``)."""
    fpr, tpr, thr, n_real, n_bogus = roc_points(scores, labels)
    out = {}
    for t in targets:
        p = operating_point_from_curve(fpr, tpr, thr, n_real, n_bogus, "target_tpr", float(t),
                                       detections_per_night=detections_per_night)
        out[M.target_key(t)] = {
            "threshold": p.threshold, "tpr": p.expected_tpr, "fpr": p.expected_fpr, "fpr_upper": p.fpr_upper,
            "bogus_per_night": p.expected_bogus_per_night,
        }
    return out


def from_card_curve(curve: Mapping, mode: str, value: float, detections_per_night: float,
                    reference: str) -> OperatingPoint:
    """:func:`operating_point_from_curve` on a model card's ``roc`` entry."""
    try:
        fpr, tpr, thr = (np.asarray(curve[k], np.float64) for k in ("fpr", "tpr", "threshold"))
        n_real, n_bogus = int(curve["n_real"]), int(curve["n_bogus"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{reference}: the model card's ROC curve is incomplete") from None
    return operating_point_from_curve(fpr, tpr, thr, n_real, n_bogus, mode, value,
                                      detections_per_night=detections_per_night, reference=reference,
                                      full_curve=False)
