"""A screening cascade: a cheap model scores everything, the expensive one only what passes.

The simple network costs about a twentieth of the complex one, and most of a night's
detections are obvious bogus. ``predict model=COMPLEX screen=SIMPLE screen_tpr=0.999`` scores
every stamp with the screen; stamps whose screen score is at least the screen threshold go on
to the complex model, the others are *screened out* and never reach it.

Screened-out rows get ``score = c * s / t``, where ``s`` is their screen score, ``t`` the screen
threshold and ``c = min(SCREEN_CEILING, threshold)`` (``threshold`` the operating threshold of
the complex model when one was asked for): a score in ``[0, c)``, so below 1e-6 and below the
operating threshold - never a candidate - and in the screen's order among themselves. It is not
guaranteed to be below every passed row's complex score (the complex model may score a passed
stamp lower still); ROC curves of the cascade rank screened rows by this value.

The screen threshold is given directly (``screen_threshold=``) or chosen on the screen model's
*validation* predictions (its run folder's ``validation_predictions.csv``), never on a test
split: with ``screen_tpr=q`` it is the highest threshold that keeps at least a fraction ``q`` of
the validation reals.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from realbogus.errors import DataError

__all__ = ["SCREEN_CEILING", "VALIDATION_FILE", "screen_threshold_from_validation", "screened_scores", "Cascade"]

#: Upper bound of the scores given to screened-out rows.
SCREEN_CEILING = 1e-6
VALIDATION_FILE = "validation_predictions.csv"


def screen_threshold_from_validation(run_dir: str | Path, tpr: float) -> dict:
    """The highest screen threshold keeping at least ``tpr`` of the validation reals.

    Parameters
    ----------
    run_dir
        The screen model's run folder (holding ``validation_predictions.csv``).
    tpr
        Fraction of the validation reals to keep, in (0, 1].

    Returns
    -------
    dict
        ``threshold``, ``reference`` (the file), ``n_real``, ``n_bogus``, ``n_real_kept`` and
        ``tpr`` / ``fpr`` on the validation set at that threshold.

    Raises
    ------
    DataError
        No such file, or it holds no real.
    """
    from realbogus.evaluation.report import read_predictions

    path = Path(run_dir) / VALIDATION_FILE
    if not path.is_file():
        raise DataError(f"{path}: no such file; screen_tpr= chooses the screen threshold on the screen run's "
                        "validation predictions (give screen=RUN_FOLDER, or screen_threshold=)")
    pred = read_predictions(path)
    score, label = np.asarray(pred["score"], np.float64), np.asarray(pred["label"])
    real = np.sort(score[label == 1])[::-1]
    bogus = score[label == 0]
    if real.size == 0:
        raise DataError(f"{path}: holds no real (label 1); cannot choose a screen threshold")
    k = max(1, math.ceil(tpr * real.size - 1e-9))  # reals that must pass
    threshold = float(real[k - 1])
    kept = int((real >= threshold).sum())
    return {"threshold": threshold, "reference": f"{path} (validation split)", "n_real": int(real.size),
            "n_bogus": int(bogus.size), "n_real_kept": kept, "tpr": kept / real.size,
            "fpr": float((bogus >= threshold).mean()) if bogus.size else None}


def screened_scores(screen_scores: np.ndarray, threshold: float, ceiling: float) -> np.ndarray:
    """``ceiling * s / threshold``: the score of screened-out rows (``s < threshold``), in [0, ceiling)."""
    return float(ceiling) * np.asarray(screen_scores, np.float64) / float(threshold)


class Cascade:
    """Stream blocks through a screen and, for the stamps passing it, a second scorer.

    Stamps passing the screen are collected across blocks and scored ``flush_rows`` at a time,
    so the second scorer sees full batches however few stamps of a block pass.

    Parameters
    ----------
    screen, scorer
        Objects with ``logits(stamps) -> (n, 2)`` (:class:`~realbogus.deploy.inference.Scorer`,
        :class:`~realbogus.deploy.inference.OnnxScorer`).
    threshold
        Screen score (probability of real) at or above which a stamp passes.
    n
        Total number of stamps.
    flush_rows
        Passing stamps collected before the second scorer is called.

    Attributes
    ----------
    screen_logits : numpy.ndarray
        float32 (n, 2), every row.
    logits : numpy.ndarray
        float32 (n, 2), the second scorer's logits of the passing rows; NaN elsewhere.
    passed : numpy.ndarray
        bool (n,), whether the row passed the screen.
    """

    def __init__(self, screen, scorer, threshold: float, n: int, flush_rows: int = 2048):
        self.screen, self.scorer, self.threshold = screen, scorer, float(threshold)
        self.screen_logits = np.empty((n, 2), np.float32)
        self.logits = np.full((n, 2), np.nan, np.float32)
        self.passed = np.zeros(n, bool)
        self.flush_rows = max(1, int(flush_rows))
        self._stamps: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._pending = 0

    def feed(self, images: np.ndarray, start: int) -> None:
        """Screen the block ``images`` (rows ``start`` ...); queue those passing."""
        from scipy.special import expit

        k = len(images)
        sl = self.screen.logits(images)
        self.screen_logits[start:start + k] = sl
        keep = expit(sl[:, 1].astype(np.float64) - sl[:, 0]) >= self.threshold
        self.passed[start:start + k] = keep
        if keep.any():
            self._stamps.append(np.asarray(images)[keep])
            self._rows.append(start + np.flatnonzero(keep))
            self._pending += int(keep.sum())
        if self._pending >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Score the queued stamps with the second scorer."""
        if not self._pending:
            return
        stamps, rows = np.concatenate(self._stamps), np.concatenate(self._rows)
        self._stamps, self._rows, self._pending = [], [], 0
        self.logits[rows] = self.scorer.logits(stamps)
