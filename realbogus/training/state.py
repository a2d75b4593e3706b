"""The training state saved with each checkpoint, readable without Keras.

``checkpoint/state.json`` is the commit point of :class:`realbogus.training.checkpoint.RunCheckpoint`
(which writes it); :func:`load_state` reads it. It lives apart from the callback so that commands
that only read run folders (``python -m realbogus.compare``, the report) need not import TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["STATE_FILE", "FRESH", "load_state"]

#: The state's file name inside a run's checkpoint folder.
STATE_FILE = "state.json"
#: The state of a run that has not finished an epoch.
FRESH = {"epoch": 0, "best": None, "best_epoch": None, "wait": 0, "stopped": False,
         "last_file": None, "best_file": None, "precision": None}


def load_state(checkpoint_dir: str | Path) -> dict:
    """Return the saved training state, or a fresh one when there is none."""
    path = Path(checkpoint_dir) / STATE_FILE
    try:
        with open(path) as fh:
            state = json.load(fh)
    except FileNotFoundError:
        return dict(FRESH)
    # Checkpoints from before the per-epoch file names used fixed names.
    if state.get("epoch", 0) > 0:
        state.setdefault("last_file", "last.weights.h5")
        state.setdefault("best_file", "best.weights.h5" if state.get("best_epoch") else None)
    return {**FRESH, **state}
