"""Score a realbogus HDF5 file with a trained model, streaming the stamps block by block."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from realbogus.data.format import open_dataset
from realbogus.errors import DataError

__all__ = ["score_dataset", "scores_from_logits"]


def scores_from_logits(logits) -> np.ndarray:
    """Probability of real, ``softmax(logits)[:, 1]``, computed in float64.

    It equals the logistic function of ``logit_real - logit_bogus``; float64 keeps confident
    scores distinct up to a margin of about 36 (float32 rounds every margin above about 17 to
    exactly 1.0, which would tie the very samples that decide the low-FPR end of the ROC curve).
    """
    from scipy.special import expit

    logits = np.asarray(logits, dtype=np.float64)
    return expit(logits[:, 1] - logits[:, 0])


def _predict_fn(model, batch_size: int):
    """A function mapping a float32 (n <= batch_size) block to (n, 2) logits as numpy.

    Short blocks are padded to ``batch_size`` (with copies of their last stamp) so the traced
    graph is built once.
    """

    def predict(x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if n < batch_size:
            x = np.concatenate([x, np.repeat(x[-1:], batch_size - n, axis=0)])
        out = model.predict_on_batch(x)
        if isinstance(out, dict) or isinstance(out, (list, tuple)):
            raise DataError(f"model returns {type(out).__name__}; expected one (N, 2) tensor of logits")
        out = np.asarray(out)
        if out.ndim != 2 or out.shape[1] != 2:
            raise DataError(f"model returns shape {out.shape}; expected (N, 2) logits [bogus, real]")
        return out[:n]

    return predict


def score_dataset(
    model,
    h5_path: str | os.PathLike,
    batch_size: int = 1024,
    rows: Sequence[int] | np.ndarray | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Run ``model`` over the stamps of a realbogus HDF5 file.

    Parameters
    ----------
    model
        A Keras model mapping float32 (N, 29, 29, 3) stamps to (N, 2) logits [bogus, real].
    h5_path
        realbogus HDF5 file (see :mod:`realbogus.data.format`).
    batch_size
        Stamps per inference call (and per HDF5 read).
    rows
        Row indices to score (any order, returned sorted); default: every row.
    progress
        Show a progress bar (on stderr).

    Returns
    -------
    dict of numpy.ndarray
        ``index`` (row in the file), ``score`` (float64 probability of real), ``label``,
        ``true_label`` (-1 where the file has none), ``sensor_id``, ``kind`` (name strings from
        the file's ``kind_names``) and ``mag``; ready for
        :func:`realbogus.evaluation.report.write_evaluation`.

    Raises
    ------
    DataError
        If the file is missing or invalid, a row index is out of range, or the model's output
        is not (N, 2).
    """
    from realbogus.progress import progress_bar

    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    with open_dataset(h5_path) as ds:
        if rows is None:
            index = np.arange(len(ds), dtype=np.int64)
        else:
            index = np.unique(np.asarray(rows, dtype=np.int64))
            if index.size and (index[0] < 0 or index[-1] >= len(ds)):
                raise DataError(f"{ds.path}: row indices must lie in [0, {len(ds)}); got {index[0]}..{index[-1]}")
        fields = ds.fields
        kind_names = np.asarray(ds.kind_names)
        cols = {}
        for name in ("label", "true_label", "sensor_id", "kind", "mag"):
            if name in fields:
                cols[name] = ds.column(name)[index]
        if "true_label" not in cols:
            cols["true_label"] = np.full(index.size, -1, np.int8)
        kind = cols["kind"].astype(np.int64)
        if kind.size and (kind.min() < 0 or kind.max() >= kind_names.size):
            raise DataError(f"{ds.path}: kind codes outside the file's kind_names ({kind_names.size} names)")
        logits = np.empty((index.size, 2), np.float64)
        predict = _predict_fn(model, min(batch_size, max(index.size, 1)))
        done = 0
        with progress_bar(total=index.size, unit="stamp", desc=f"scoring {ds.path.name}", disable=not progress,
                  dynamic_ncols=True, leave=False) as bar:
            blocks = ds.iter_blocks(batch_size, rows=None if rows is None else index)
            for idx, stamps in blocks:
                logits[done:done + idx.size] = predict(np.asarray(stamps, np.float32))
                done += idx.size
                bar.update(idx.size)
    if not np.isfinite(logits).all():
        bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
        raise DataError(f"{h5_path}: model gives NaN/inf logits for {bad.size} stamp(s) (first at row {index[bad[0]]})")
    return {
        "index": index,
        "score": scores_from_logits(logits),
        "label": cols["label"].astype(np.int8),
        "true_label": cols["true_label"].astype(np.int8),
        "sensor_id": cols["sensor_id"].astype(np.int16),
        "kind": kind_names[kind] if kind.size else np.empty(0, dtype=str),
        "mag": cols["mag"].astype(np.float32),
    }
