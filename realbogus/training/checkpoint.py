"""Epoch checkpoints with early stopping, committed atomically so that a resumed run is exact.

:class:`RunCheckpoint` keeps, in a run's ``checkpoint/`` folder:

- ``epoch_<k>.weights.h5``: network and optimizer state after epoch ``k`` (the optimizer's step
  counter is what every random stream of training is drawn from);
- ``best_<k>.weights.h5``: the network at the best monitored value so far (epoch ``k``);
- ``state.json``: ``epoch`` (epochs finished), ``best``, ``best_epoch``, ``wait``, ``stopped``,
  ``last_file`` / ``best_file`` (the weight files that belong to this state) and ``precision``
  (the one the run started with; a resumed run keeps it).

The weight files of an epoch are written first, under names no earlier state uses, and
``state.json`` is then replaced atomically: it is the commit point. A process killed at any
moment leaves a ``state.json`` whose files are complete and belong to it, so a rerun restarts from
exactly the state an uninterrupted run had after that epoch. Files no state names are removed.
:func:`load_state` reads the state back (from :mod:`realbogus.training.state`, which needs no Keras).
"""

from __future__ import annotations

import math
from pathlib import Path

import keras

from realbogus.faults import fault_point
from realbogus.io import atomic_path, save_json
from realbogus.training.state import STATE_FILE, load_state

__all__ = ["RunCheckpoint", "load_state", "last_weights", "best_weights"]

def last_weights(checkpoint_dir: str | Path) -> Path | None:
    """The weight file of the last finished epoch, or None before the first."""
    name = load_state(checkpoint_dir)["last_file"]
    return Path(checkpoint_dir) / name if name else None


def best_weights(checkpoint_dir: str | Path) -> Path | None:
    """The weight file of the best epoch so far, or None."""
    name = load_state(checkpoint_dir)["best_file"]
    return Path(checkpoint_dir) / name if name else None


class RunCheckpoint(keras.callbacks.Callback):
    """Save the state after every epoch and stop early after ``patience`` epochs without improvement.

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

    def __init__(self, checkpoint_dir, monitor: str = "val_loss", mode: str = "min", patience: int = 10,
                 state: dict | None = None):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"monitor_mode must be 'min' or 'max', got {mode!r}")
        self.dir = Path(checkpoint_dir)
        self.monitor = monitor
        self.mode = mode
        self.patience = int(patience)
        self.state = dict(state or load_state(self.dir))

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
        state = dict(self.state)
        done = epoch + 1
        if math.isfinite(value) and self._improved(value):
            state.update(best=value, best_epoch=done, wait=0, best_file=f"best_{done:04d}.weights.h5")
            with atomic_path(self.dir / state["best_file"]) as tmp:
                self.model.save_weights(tmp)
        else:
            state["wait"] += 1
        state.update(epoch=done, last_file=f"epoch_{done:04d}.weights.h5")
        with atomic_path(self.dir / state["last_file"]) as tmp:
            self.model.save_weights(tmp)
        if state["wait"] >= self.patience:
            state["stopped"] = True
            self.model.stop_training = True
        fault_point("checkpoint")
        save_json(self.dir / STATE_FILE, state)  # the commit point
        self.state = state
        keep = {STATE_FILE, state["last_file"], state["best_file"]}
        for f in self.dir.iterdir():
            if f.name not in keep and f.name.endswith(".weights.h5"):
                f.unlink(missing_ok=True)
