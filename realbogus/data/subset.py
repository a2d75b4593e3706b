"""Training on part of the training file: the paper's "all", "mix" and "each" comparisons.

``data_subset`` (``conf/data_subset/``) picks the rows a run trains on after label handling:
the rows of some sensors (``sensors``), then a label-stratified random sample of them
(``n_train``: a row count, or ``one_sensor`` for the file's rows divided by its sensor count).
With ``test_sensors: true`` the run is also scored on those sensors' test rows only, as a
per-sensor model would be used.
"""
from __future__ import annotations

import os

import numpy as np

from realbogus.errors import ConfigError

__all__ = ["select_training_rows", "sensor_test_rows", "subset_size", "split_train_validation"]


def _sensor_column(path: str | os.PathLike) -> np.ndarray:
    from realbogus.data.format import open_dataset

    with open_dataset(path) as ds:
        return np.asarray(ds.column("sensor_id"))


def _sensors(subset) -> list[int] | None:
    sensors = subset.get("sensors")
    if sensors is None:
        return None
    sensors = [int(s) for s in sensors]
    if not sensors:
        raise ConfigError("data_subset.sensors is empty; give sensor ids or null for all")
    return sensors


def subset_size(n_train, n_rows: int, n_sensors: int) -> int | None:
    """Rows to keep: ``n_train`` as an int, ``one_sensor`` as ``n_rows / n_sensors`` rounded."""
    if n_train is None:
        return None
    if n_train == "one_sensor":
        return max(1, int(round(n_rows / max(n_sensors, 1))))
    try:
        n = int(n_train)
    except (TypeError, ValueError):
        raise ConfigError(f"data_subset.n_train={n_train!r} is not a row count, one_sensor or null") from None
    if n < 1:
        raise ConfigError(f"data_subset.n_train={n_train!r} must be positive")
    return n


def select_training_rows(subset, train_path, rows: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Restrict ``rows`` (row indices of ``train_path``) and their ``labels`` to ``subset``.

    Unlabelled rows (-1) count as a class of their own in the stratified sample, so a sample
    keeps the label mix of what it is drawn from. Returns sorted rows and their labels.
    """
    rows = np.asarray(rows, np.int64)
    labels = np.asarray(labels)
    sensors = _sensors(subset)
    if sensors is None and subset.get("n_train") is None:
        return rows, labels
    sensor_id = _sensor_column(train_path)
    if sensors is not None:
        keep = np.isin(sensor_id[rows], sensors)
        if not keep.any():
            raise ConfigError(f"data_subset.sensors={sensors} selects no training rows of {train_path}")
        rows, labels = rows[keep], labels[keep]
    n = subset_size(subset.get("n_train"), int(sensor_id.size), int(np.unique(sensor_id).size))
    if n is not None and n < rows.size:
        rng = np.random.default_rng(int(subset.get("seed", 0)))
        picked = []
        for value in np.unique(labels):
            members = np.flatnonzero(labels == value)
            k = int(round(n * members.size / rows.size))
            picked.append(rng.choice(members, size=min(k, members.size), replace=False))
        pos = np.sort(np.concatenate(picked))
        rows, labels = rows[pos], labels[pos]
    return rows, labels


def sensor_test_rows(subset, test_path) -> np.ndarray | None:
    """Test rows to score: those of ``subset.sensors`` when ``test_sensors`` is on, else None (all)."""
    if not subset.get("test_sensors", False):
        return None
    sensors = _sensors(subset)
    if sensors is None:
        return None
    rows = np.flatnonzero(np.isin(_sensor_column(test_path), sensors))
    if rows.size == 0:
        raise ConfigError(f"data_subset.sensors={sensors} selects no test rows of {test_path}")
    return rows


def split_train_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..len(labels)-1`` into training and validation, stratified by label.

    Each label value (including -1, unlabelled) keeps ``round(fraction x its count)`` samples
    for validation, drawn with ``seed``. Returns the sorted training and validation positions.

    Raises
    ------
    ConfigError
        If the validation or the training part would be empty.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        rng.shuffle(rows)
        n_val = int(round(fraction * rows.size))
        val.append(rows[:n_val])
        train.append(rows[n_val:])
    train, val = np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
    if val.size == 0 or train.size == 0:
        raise ConfigError(f"trainer.validation_fraction={fraction} of {len(labels)} training rows leaves "
                          f"{train.size} to train on and {val.size} to validate on; both must be non-empty")
    return train, val
