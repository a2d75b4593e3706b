"""Temperature scaling of the real/bogus score, its reliability diagram and Brier score.

The network's score is ``p = sigmoid(m)`` with the logit margin ``m = logit_real - logit_bogus``.
Temperature scaling (Guo et al. 2017) replaces it by ``sigmoid(m / T)`` with one constant ``T``
fitted by minimising the negative log-likelihood on held-out labelled predictions: ``T > 1``
softens an over-confident network, ``T < 1`` sharpens an under-confident one. The ranking of
the samples, hence the ROC curve and every threshold's rates, does not change.

Margins are recovered from stored float64 scores as ``log(p / (1 - p))``. A score of exactly 0
or 1 (a margin beyond float64's reach, about +-37 near 1) is taken at :data:`MARGIN_LIMIT`.

The calibrated probability refers to the class mix of the data the temperature was fitted on
(the training file's validation split); at a survey's real:bogus ratio of about 1:1000 the
probability that a candidate is real is far lower, whatever the calibration.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from realbogus.errors import DataError

__all__ = [
    "MARGIN_LIMIT",
    "margins_from_scores",
    "apply_temperature",
    "fit_temperature",
    "nll",
    "brier_score",
    "expected_calibration_error",
    "reliability_bins",
    "reliability_figure",
    "calibration_summary",
    "calibrate_predictions",
    "save_reliability",
]

#: Largest margin magnitude used (float64 scores saturate at about 37 on the real side).
MARGIN_LIMIT = 40.0
#: Range searched for the temperature.
TEMPERATURE_BOUNDS = (1e-2, 1e2)


def margins_from_scores(scores) -> np.ndarray:
    """Logit margins ``log(p / (1 - p))`` of probabilities, float64, clipped to +-MARGIN_LIMIT."""
    from scipy.special import logit

    p = np.asarray(scores, dtype=np.float64)
    with np.errstate(divide="ignore"):
        m = logit(p)
    return np.clip(m, -MARGIN_LIMIT, MARGIN_LIMIT)


def apply_temperature(scores, temperature: float) -> np.ndarray:
    """Calibrated probabilities ``sigmoid(m / T)`` of scores (float64)."""
    from scipy.special import expit

    return expit(margins_from_scores(scores) / float(temperature))


def _labelled(scores, labels, source: str) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise DataError(f"{source}: {scores.size} scores but {labels.size} labels")
    keep = labels >= 0
    scores, labels = scores[keep], labels[keep].astype(np.int64)
    if not np.isfinite(scores).all():
        raise DataError(f"{source}: scores hold NaN or inf")
    if (labels == 1).sum() == 0 or (labels == 0).sum() == 0:
        raise DataError(
            f"{source}: calibration needs labelled reals and bogus; got {(labels == 1).sum()} real, "
            f"{(labels == 0).sum()} bogus"
        )
    return scores, labels


def _nll_of_margins(m: np.ndarray, y: np.ndarray, temperature: float) -> float:
    # -log p(y) = softplus(-s m / T) with s = +1 for real, -1 for bogus
    return float(np.mean(np.logaddexp(0.0, -np.where(y == 1, 1.0, -1.0) * m / temperature)))


def nll(probabilities, labels) -> float:
    """Mean negative log-likelihood (nats) of binary labels under probabilities of real."""
    p, y = _labelled(probabilities, labels, "nll")
    return _nll_of_margins(margins_from_scores(p), y, 1.0)


def brier_score(probabilities, labels) -> float:
    """Mean squared difference between the probability of real and the 0/1 label."""
    p, y = _labelled(probabilities, labels, "brier_score")
    return float(np.mean((p - y) ** 2))


def reliability_bins(probabilities, labels, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Equal-width probability bins: mean predicted probability, observed fraction real, counts.

    Returns
    -------
    dict of numpy.ndarray
        ``edges`` (n_bins + 1), and per bin ``mean_probability``, ``fraction_real`` (NaN for an
        empty bin) and ``count``.
    """
    p, y = _labelled(probabilities, labels, "reliability_bins")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, weights=p, minlength=n_bins) / count
        frac = np.bincount(which, weights=y, minlength=n_bins) / count
    return {"edges": edges, "mean_probability": mean_p, "fraction_real": frac, "count": count}


def expected_calibration_error(probabilities, labels, n_bins: int = 10) -> float:
    """Count-weighted mean |fraction real - mean probability| over equal-width bins."""
    b = reliability_bins(probabilities, labels, n_bins)
    filled = b["count"] > 0
    gap = np.abs(b["fraction_real"][filled] - b["mean_probability"][filled])
    return float(np.sum(gap * b["count"][filled]) / b["count"].sum())


def fit_temperature(scores, labels, source: str = "calibration set") -> float:
    """The temperature minimising the NLL of labelled scores (labels -1 ignored).

    The NLL is a convex function of ``1 / T``, so the bounded one-dimensional search over
    ``log T`` in :data:`TEMPERATURE_BOUNDS` finds its minimum.

    Raises
    ------
    DataError
        A class is missing or a score is not finite.
    """
    from scipy.optimize import minimize_scalar

    p, y = _labelled(scores, labels, source)
    m = margins_from_scores(p)
    lo, hi = np.log(TEMPERATURE_BOUNDS)
    res = minimize_scalar(lambda log_t: _nll_of_margins(m, y, np.exp(log_t)), bounds=(lo, hi),
                          method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def _summary(p: np.ndarray, y: np.ndarray, n_bins: int) -> dict:
    return {
        "brier": brier_score(p, y),
        "nll": nll(p, y),
        "ece": expected_calibration_error(p, y, n_bins),
    }


def calibration_summary(scores, labels, temperature: float, n_bins: int = 10, source: str = "") -> dict:
    """Brier score, NLL and ECE of the scores before and after temperature scaling."""
    p, y = _labelled(scores, labels, source or "calibration_summary")
    return {
        "n_real": int((y == 1).sum()),
        "n_bogus": int((y == 0).sum()),
        "before": _summary(p, y, n_bins),
        "after": _summary(apply_temperature(p, temperature), y, n_bins),
    }


def reliability_figure(scores, labels, temperature: float, n_bins: int = 10, title: str | None = None):
    """Reliability diagram (observed fraction real against predicted probability), before and
    after temperature scaling, with the counts per bin below on a log axis.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    p, y = _labelled(scores, labels, "reliability_figure")
    curves = {
        "network score": (p, "tab:red"),
        f"calibrated (T = {temperature:.3g})": (apply_temperature(p, temperature), "tab:blue"),
    }
    fig = Figure(figsize=(5.0, 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1.2))
    top.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    width = 1.0 / n_bins
    for k, (name, (prob, colour)) in enumerate(curves.items()):
        b = reliability_bins(prob, y, n_bins)
        filled = b["count"] > 0
        brier = brier_score(prob, y)
        top.plot(b["mean_probability"][filled], b["fraction_real"][filled], "o-", color=colour, ms=4,
                 label=f"{name}: Brier {brier:.4f}")
        centres = b["edges"][:-1] + width * (0.25 + 0.5 * k)
        bottom.bar(centres, b["count"], width=width / 2, color=colour, alpha=0.8)
    top.set_ylabel("observed fraction real")
    top.set_xlim(0, 1)
    top.set_ylim(-0.02, 1.02)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(title or "reliability", fontsize=10)
    bottom.set_yscale("log")
    bottom.set_xlabel("predicted probability of real")
    bottom.set_ylabel("stamps per bin")
    return fig


def save_reliability(path: str | os.PathLike, scores, labels, temperature: float, n_bins: int = 10,
                     title: str | None = None) -> Path:
    """Draw :func:`reliability_figure` and save it (atomically) as PNG."""
    from realbogus.io import atomic_path

    fig = reliability_figure(scores, labels, temperature, n_bins, title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    return Path(path)


def calibrate_predictions(validation: Mapping, test: Mapping | None = None, n_bins: int = 10) -> dict:
    """Fit the temperature on validation predictions and summarise it on both sets.

    Parameters
    ----------
    validation, test
        Columns ``score`` and ``label`` (as :func:`realbogus.evaluation.report.read_predictions`
        gives them); ``test`` is optional.

    Returns
    -------
    dict
        ``temperature``, ``validation`` and (if given) ``test`` summaries from
        :func:`calibration_summary`, ``n_bins``.
    """
    temperature = fit_temperature(validation["score"], validation["label"], "validation predictions")
    out = {
        "temperature": temperature,
        "method": "temperature scaling of the logit margin, NLL fitted on the validation split",
        "n_bins": int(n_bins),
        "validation": calibration_summary(validation["score"], validation["label"], temperature, n_bins,
                                          "validation predictions"),
    }
    if test is not None:
        out["test"] = calibration_summary(test["score"], test["label"], temperature, n_bins, "test predictions")
    return out
