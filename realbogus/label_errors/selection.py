"""Selection rules: which training samples are suspected label errors, from out-of-fold scores.

Every rule maps the out-of-fold score (probability of real) and the given label of each
training sample to a boolean mask of suspects. Unlabelled samples (label -1) are never
suspected. The rules:

``none``
    Nothing is suspected.
``predicted_neq_given``
    The paper's rule: the out-of-fold classifier disagrees with the given label at the
    decision threshold (default 0.5): given bogus with score >= threshold, or given real
    with score < threshold.
``score_threshold``
    Only confident disagreements: given bogus with score >= ``t_hi``, given real with
    score <= ``t_lo``.
``confident_learning``
    Confident learning (Northcutt, Jiang & Chuang 2021, "Confident Learning: Estimating
    Uncertainty in Dataset Labels"): the threshold of each class is the mean predicted
    probability of that class over the samples given that class; a sample counts as
    confidently belonging to class ``j`` when its probability of ``j`` reaches ``j``'s
    threshold (the most probable class when several do). Suspects are the off-diagonal
    entries of the resulting "confident joint" whose most probable class also differs
    from the given label (the variant the ``cleanlab`` library calls
    ``filter_by="confident_learning"``). The row-normalised joint also estimates the
    per-class error rates (:func:`confident_joint`).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from realbogus.errors import ConfigError

__all__ = [
    "RULES",
    "RULE_PARAMETERS",
    "select",
    "predicted_neq_given",
    "score_threshold",
    "confident_learning",
    "confident_thresholds",
    "confident_joint",
]

#: Default parameters of each rule (the ``conf/label_cleaning/<rule>.yaml`` files repeat them).
RULE_PARAMETERS: dict[str, dict[str, float]] = {
    "none": {},
    "predicted_neq_given": {"threshold": 0.5},
    "score_threshold": {"t_hi": 0.9, "t_lo": 0.1},
    "confident_learning": {},
}
RULES: tuple[str, ...] = tuple(RULE_PARAMETERS)

# Ties between two classes' probabilities count for the given label (a 0.5/0.5 sample is not
# suspected); the tolerance absorbs the rounding of float32 logits.
_TIE = 1e-6


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores for {labels.size} labels")
    if not np.isin(labels, (-1, 0, 1)).all():
        raise ValueError("labels must be 1 (real), 0 (bogus) or -1 (unlabelled)")
    if scores.size and (np.nanmin(scores) < 0 or np.nanmax(scores) > 1 or np.isnan(scores).any()):
        raise ValueError("scores must be probabilities in [0, 1]")
    return scores, labels


def predicted_neq_given(scores, labels, threshold: float = 0.5) -> np.ndarray:
    """Suspect samples whose out-of-fold prediction at ``threshold`` differs from the given label."""
    scores, labels = _check(scores, labels)
    return ((labels == 0) & (scores >= threshold)) | ((labels == 1) & (scores < threshold))


def score_threshold(scores, labels, t_hi: float = 0.9, t_lo: float = 0.1) -> np.ndarray:
    """Suspect given-bogus samples scoring >= ``t_hi`` and given-real samples scoring <= ``t_lo``."""
    if not 0.0 <= t_lo < t_hi <= 1.0:
        raise ConfigError(f"score_threshold needs 0 <= t_lo < t_hi <= 1; got t_lo={t_lo}, t_hi={t_hi}")
    scores, labels = _check(scores, labels)
    return ((labels == 0) & (scores >= t_hi)) | ((labels == 1) & (scores <= t_lo))


def _class_probabilities(scores: np.ndarray) -> np.ndarray:
    """(N, 2) probabilities of [bogus, real] from the probability of real."""
    return np.stack([1.0 - scores, scores], axis=1)


def confident_thresholds(scores, labels) -> np.ndarray:
    """Per-class thresholds ``[t_bogus, t_real]``: mean probability of each class over its own samples.

    A class without labelled samples gets threshold 1 (nothing is confidently of that class
    unless certain).
    """
    scores, labels = _check(scores, labels)
    probs = _class_probabilities(scores)
    out = np.ones(2)
    for j in (0, 1):
        own = labels == j
        if own.any():
            out[j] = probs[own, j].mean()
    return out


def _confident_class(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The class each sample confidently belongs to, -1 when no class reaches its threshold."""
    reached = probs >= thresholds - _TIE
    guess = np.where(reached.sum(axis=1) > 1, probs.argmax(axis=1), reached.argmax(axis=1))
    return np.where(reached.any(axis=1), guess, -1)


def confident_joint(scores, labels) -> dict[str, np.ndarray]:
    """The confident joint of given and (confidently) predicted labels, and what it estimates.

    Returns
    -------
    dict
        ``thresholds`` (2,) per-class thresholds; ``counts`` (2, 2) integer counts, row = given
        label, column = confident class (samples confident of no class are left out);
        ``error_rates`` (2,) estimated fraction of each given class that truly belongs to the
        other one: the off-diagonal count over its row's total (the row calibration of
        confident learning, which rescales each row to the class size, leaves this ratio as it
        is). A row with no confident sample gives NaN.
    """
    scores, labels = _check(scores, labels)
    probs = _class_probabilities(scores)
    thresholds = confident_thresholds(scores, labels)
    guess = _confident_class(probs, thresholds)
    counts = np.zeros((2, 2), dtype=np.int64)
    for i in (0, 1):
        for j in (0, 1):
            counts[i, j] = np.count_nonzero((labels == i) & (guess == j))
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = counts[[0, 1], [1, 0]] / counts.sum(axis=1)
    return {"thresholds": thresholds, "counts": counts, "error_rates": rates}


def confident_learning(scores, labels) -> np.ndarray:
    """Suspect the off-diagonal samples of the confident joint that the classifier also calls otherwise."""
    scores, labels = _check(scores, labels)
    probs = _class_probabilities(scores)
    guess = _confident_class(probs, confident_thresholds(scores, labels))
    labelled = labels >= 0
    off_diagonal = labelled & (guess >= 0) & (guess != labels)
    # The given label's probability, nudged by the tie tolerance, must lose to the other class's.
    own = np.where(labelled, probs[np.arange(labels.size), np.clip(labels, 0, 1)], 1.0)
    return off_diagonal & (own + _TIE < 1.0 - own)


def select(rule: str, scores, labels, params: Mapping | None = None) -> np.ndarray:
    """Apply the rule named ``rule`` with ``params`` (missing ones take their defaults).

    Returns
    -------
    numpy.ndarray
        Boolean mask of suspected label errors, aligned with ``scores``.
    """
    if rule not in RULE_PARAMETERS:
        raise ConfigError(f"label_cleaning.name={rule!r} is not one of {', '.join(RULES)}")
    given = dict(params or {})
    unknown = set(given) - set(RULE_PARAMETERS[rule])
    if unknown:
        raise ConfigError(f"label_cleaning rule {rule!r} has no parameter(s) {', '.join(sorted(unknown))}")
    kwargs = {**RULE_PARAMETERS[rule], **{k: float(v) for k, v in given.items()}}
    if rule == "none":
        scores, labels = _check(scores, labels)
        return np.zeros(labels.size, dtype=bool)
    return {"predicted_neq_given": predicted_neq_given, "score_threshold": score_threshold,
            "confident_learning": confident_learning}[rule](scores, labels, **kwargs)
