"""Label treatments: what stage 2 trains on, given the suspected label errors.

``keep``
    Every row with its given label (the suspects are only reported).
``remove``
    The suspects are dropped from the training rows.
``unlabel``
    Every row; the suspects get label -1, so only the unsupervised (VAT / LDS) term sees them.
    This is the paper's method.
``relabel``
    Every row; the suspects' labels are flipped (bogus <-> real).
"""

from __future__ import annotations

import numpy as np

from realbogus.errors import ConfigError

__all__ = ["TREATMENTS", "apply_treatment"]

TREATMENTS: tuple[str, ...] = ("keep", "remove", "unlabel", "relabel")


def apply_treatment(name: str, labels, suspected) -> tuple[np.ndarray, np.ndarray]:
    """Rows and labels for stage 2.

    Parameters
    ----------
    name
        One of :data:`TREATMENTS`.
    labels
        Given labels of every row of the training file (1 real, 0 bogus, -1 unlabelled).
    suspected
        Boolean mask of suspected label errors, aligned with ``labels``.

    Returns
    -------
    rows, labels
        int64 row indices into the training file (sorted) and the int32 label of each of them.
    """
    if name not in TREATMENTS:
        raise ConfigError(f"label_treatment.name={name!r} is not one of {', '.join(TREATMENTS)}")
    labels = np.asarray(labels).reshape(-1).astype(np.int32)
    suspected = np.asarray(suspected, dtype=bool).reshape(-1)
    if suspected.shape != labels.shape:
        raise ValueError(f"{suspected.size} suspect flags for {labels.size} labels")
    # An unlabelled row carries no label to be wrong.
    suspected = suspected & (labels >= 0)
    rows = np.arange(labels.size, dtype=np.int64)
    out = labels.copy()
    if name == "remove":
        rows = rows[~suspected]
        out = out[~suspected]
    elif name == "unlabel":
        out[suspected] = -1
    elif name == "relabel":
        out[suspected] = 1 - out[suspected]
    return rows, out
