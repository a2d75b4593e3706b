"""Callbacks that make a training run resumable: checkpoints, early stopping and their state.

:class:`RunCheckpoint` keeps, in ``<run_dir>/checkpoint/``:

- ``last.weights.h5``: model, optimizer and VAT-noise state after the latest finished epoch;
- ``best.weights.h5``: the weights at the best monitored value so far;
- ``state.json``: ``epoch`` (epochs finished), ``best``, ``best_epoch``, ``wait``, ``stopped``.

Every file is written under a temporary name and renamed, so an interruption at any moment
leaves the previous consistent state. A rerun reads ``state.json``, reloads ``last.weights.h5``
and continues from the next epoch with the early-stopping counter where it was.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras

from realbogus.io import atomic_path, save_json

__all__ = ["RunCheckpoint", "load_state"]


def load_state(checkpoint_dir: str | Path) -> dict:
    """Return the saved training state, or a fresh one when there is none."""
    path = Path(checkpoint_dir) / "state.json"
    if path.exists():
        with open(path) as fh:
            return json.load(fh)
    return {"epoch": 0, "best": None, "best_epoch": None, "wait": 0, "stopped": False}


class RunCheckpoint(keras.callbacks.Callback):
    """Save the last and best weights each epoch and stop early after ``patience`` bad epochs.

    Parameters
    ----------
    checkpoint_dir
        Folder for the weights and ``state.json``.
    monitor
        Name of the logged quantity to watch (e.g. ``val_loss``).
    mode
        ``min`` or ``max``.
    patience
        Number of epochs without improvement after which training stops.
    state
        State to continue from (see :func:`load_state`).
    """

    def __init__(self, checkpoint_dir, monitor: str = "val_loss", mode: str = "min", patience: int = 10, state: dict | None = None):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"monitor_mode must be 'min' or 'max', got {mode!r}")
        self.dir = Path(checkpoint_dir)
        self.monitor = monitor
        self.mode = mode
        self.patience = int(patience)
        self.state = dict(state or load_state(self.dir))

    @property
    def last_path(self) -> Path:
        return self.dir / "last.weights.h5"

    @property
    def best_path(self) -> Path:
        return self.dir / "best.weights.h5"

    def _improved(self, value: float) -> bool:
        best = self.state["best"]
        if best is None:
            return True
        return value < best if self.mode == "min" else value > best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(f"monitored quantity {self.monitor!r} not logged; available: {sorted(logs)}")
        value = float(logs[self.monitor])
        self.dir.mkdir(parents=True, exist_ok=True)
        if math.isfinite(value) and self._improved(value):
            self.state.update(best=value, best_epoch=epoch + 1, wait=0)
            with atomic_path(self.best_path) as tmp:
                self.model.save_weights(tmp)
        else:
            self.state["wait"] += 1
        with atomic_path(self.last_path) as tmp:
            self.model.save_weights(tmp)
        self.state["epoch"] = epoch + 1
        if self.state["wait"] >= self.patience:
            self.state["stopped"] = True
            self.model.stop_training = True
        save_json(self.dir / "state.json", self.state)
