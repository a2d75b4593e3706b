"""Progress display of training: a bar on a terminal, short periodic lines in logs.

A training epoch of the headline run takes many minutes. On a terminal Keras' progress bar
shows it; written to a file, the bar's carriage returns fill the log, so ``progress=lines``
(the choice of ``auto`` when the output is not a terminal) prints one short line every
``progress_seconds`` (steps done, samples per second, running loss, time left in the epoch)
and Keras' one-line summary at the end of each epoch.
"""

from __future__ import annotations

import os
import sys
import time

import keras
import numpy as np

__all__ = ["ProgressLines", "FaultPoints", "ValidationOperatingPoint", "progress_callbacks"]

PROGRESS = ("auto", "bar", "epoch", "lines", "none")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class ProgressLines(keras.callbacks.Callback):
    """Print ``epoch e/E: step s/S (p%), r samples/s, loss l, epoch ends in t`` every ``every`` seconds."""

    def __init__(self, epochs: int, steps: int, batch_size: int, every: float = 60.0, stream=None):
        super().__init__()
        self.epochs, self.steps, self.batch_size, self.every = int(epochs), int(steps), int(batch_size), float(every)
        self.stream = stream

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.t0 = self.last = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        done = batch + 1
        rate = done * self.batch_size / max(now - self.t0, 1e-9)
        left = (self.steps - done) * self.batch_size / max(rate, 1e-9)
        loss = (logs or {}).get("loss")
        loss_text = f", loss {float(loss):.4f}" if loss is not None else ""
        print(f"epoch {self.epoch + 1}/{self.epochs}: step {done}/{self.steps} ({100 * done / self.steps:.0f}%), "
              f"{rate:.0f} samples/s{loss_text}, epoch ends in {_duration(left)}",
              file=self.stream or sys.stdout, flush=True)


class ValidationOperatingPoint(keras.callbacks.Callback):
    """Log ``val_fpr_at_tpr_0.9``: the validation split's FPR at TPR 0.9 after every epoch.

    The operating point the paper's headline compares, computed exactly from the network's
    scores of the validation stamps (Keras' threshold-binned metrics cannot resolve FPRs of
    1e-3 among scores crowded near 0 and 1), so the learning curves show the quantity that
    matters. Must come before the callbacks that record the logs (CSV logger, checkpoint).
    """

    KEY = "val_fpr_at_tpr_0.9"

    def __init__(self, val_ds, val_labels, tpr: float = 0.9):
        super().__init__()
        self.val_ds = val_ds
        self.labels = np.asarray(val_labels)
        self.tpr = float(tpr)

    def on_epoch_end(self, epoch, logs=None):
        from realbogus.evaluation.metrics import fpr_at_tpr

        if logs is None:
            return
        known = self.labels >= 0
        if not (known.any() and (self.labels[known] == 1).any() and (self.labels[known] == 0).any()):
            return
        logits = np.concatenate([np.asarray(self.model.network(x, training=False), np.float32)
                                 for x, _ in self.val_ds])
        score = logits[:, 1] - logits[:, 0]  # the ranking of the softmax score, without its saturation
        logs[self.KEY] = float(fpr_at_tpr(score[known], self.labels[known], self.tpr).fpr)


class FaultPoints(keras.callbacks.Callback):
    """Pass :func:`realbogus.faults.fault_point` ``batch`` after every step (crash tests)."""

    def on_train_batch_end(self, batch, logs=None):
        from realbogus.faults import fault_point

        fault_point("batch")


def progress_callbacks(progress: str, epochs: int, steps: int, batch_size: int, every: float = 60.0):
    """The callbacks and Keras ``verbose`` value for a ``trainer.progress`` setting."""
    if progress not in PROGRESS:
        raise ValueError(f"progress={progress!r} is not one of {', '.join(PROGRESS)}")
    if progress == "auto":
        progress = "bar" if sys.stdout.isatty() else "lines"
    from realbogus.faults import ENV

    extra = [FaultPoints()] if os.environ.get(ENV) else []
    if progress == "lines":
        return [ProgressLines(epochs, steps, batch_size, every), *extra], 2
    return extra, {"bar": 1, "epoch": 2, "none": 0}[progress]
