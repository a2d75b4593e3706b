"""Fit one network from a typed spec: the only training loop of the package.

A :class:`FitSpec` holds what decides a trained network (model, loss, optimizer, learning-rate
schedule, trainer settings, seed). :func:`fit_network` trains it on rows of a realbogus HDF5
file into a run folder and returns the network with its best weights. Every training goes
through it: a ``python -m realbogus.train`` run, a noise-sweep cell, and every fold of label
cleaning's stage 1 (:mod:`realbogus.label_errors.oof`), which is why this package knows nothing
about label handling.

Resume is exact: the data order, augmentation, VAT directions and dropout masks depend only on
(seed, epoch, step), the checkpoint (:mod:`realbogus.training.checkpoint`) holds the weights,
optimizer state and step counter, and a rerun restarts from the last committed epoch. A run
interrupted anywhere and rerun ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig, OmegaConf

from realbogus.errors import ConfigError
from realbogus.rundir import RunDir

__all__ = ["FitSpec", "fit_network", "build_trainable", "build_optimizer", "build_schedule", "steps_per_epoch"]


@dataclass(frozen=True)
class FitSpec:
    """Everything that decides a trained network. Each field is a composed config group."""

    model: DictConfig
    loss: DictConfig
    optimizer: DictConfig
    schedule: DictConfig
    trainer: DictConfig
    seed: int

    @classmethod
    def from_config(cls, cfg: DictConfig, seed: int | None = None) -> "FitSpec":
        """The spec of a config holding the groups ``model``, ``loss``, ``optimizer``, ``trainer``
        (``schedule`` optional: constant) and ``seed``."""
        schedule = cfg.get("schedule") or OmegaConf.create({"name": "constant", "warmup_steps": 0,
                                                            "final_fraction": 1.0})
        return cls(model=cfg.model, loss=cfg.loss, optimizer=cfg.optimizer, schedule=schedule,
                   trainer=cfg.trainer, seed=int(cfg.seed if seed is None else seed))


def build_trainable(spec: FitSpec):
    """Build the network and wrap it with the objective given by ``spec.loss``."""
    from realbogus.models import build_model
    from realbogus.training.model import RealBogusModel, objective_kwargs

    return RealBogusModel(build_model(spec.model), seed=spec.seed, **objective_kwargs(spec.loss))


def build_schedule(schedule: DictConfig, learning_rate: float, total_steps: int):
    """The learning rate: a float (``constant``) or a Keras schedule over ``total_steps`` steps.

    ``cosine``: linear warm-up from 0 over ``warmup_steps`` (at most ``max_warmup_fraction`` of
    ``total_steps``, so one setting serves runs of any length), then a cosine decay to
    ``final_fraction`` x the peak rate at the last planned step.
    """
    import keras

    name = str(schedule.get("name", "constant"))
    if name == "constant":
        return float(learning_rate)
    if name == "cosine":
        warmup = min(int(schedule.warmup_steps),
                     int(float(schedule.get("max_warmup_fraction", 1.0)) * total_steps))
        if warmup >= total_steps:
            raise ConfigError(f"schedule.warmup_steps={warmup} is not below the run's {total_steps} planned steps")
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else float(learning_rate),
            decay_steps=total_steps - warmup, alpha=float(schedule.final_fraction),
            warmup_target=float(learning_rate) if warmup else None, warmup_steps=warmup,
        )
    raise ConfigError(f"schedule.name={name!r} is not one of constant, cosine")


def build_optimizer(optimizer: DictConfig, schedule: DictConfig | None = None, total_steps: int = 1):
    """The Keras optimizer of ``optimizer`` (its ``_target_`` class), with the learning-rate schedule."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if "_target_" not in optimizer:
        raise ConfigError(f"optimizer {optimizer.get('name')!r} has no _target_ (the Keras optimizer class)")
    lr = build_schedule(schedule or OmegaConf.create({"name": "constant"}), float(optimizer.learning_rate),
                        int(total_steps))
    try:
        return instantiate(optimizer, learning_rate=lr)
    except InstantiationException as exc:
        raise ConfigError(f"optimizer: {str(exc).splitlines()[-1]}") from None


def steps_per_epoch(trainer: DictConfig, n_samples: int) -> int:
    """Training steps in one epoch: ``trainer.steps_per_epoch``, or one pass over the samples."""
    from realbogus.data.pipeline import count_batches

    return int(trainer.steps_per_epoch or count_batches(n_samples, int(trainer.batch_size)))


def _strategy(name: str):
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise ConfigError(f"trainer.strategy={name!r} is not one of default, mirrored")


def fit_network(spec: FitSpec, train_path: str | os.PathLike, fit_rows: np.ndarray, fit_labels: np.ndarray,
                val_rows: np.ndarray, val_labels: np.ndarray, run_dir: str | os.PathLike | RunDir):
    """Train ``spec``'s model on rows of ``train_path`` and return it with its best weights.

    Resumable and exact: ``run_dir/checkpoint`` holds the last committed epoch and the
    early-stopping state; a call with a checkpoint continues after its last epoch, in the
    precision that the run started with. ``history.csv`` and ``tensorboard/`` also go into
    ``run_dir``. Label arrays may hold -1 (unlabelled samples: only the VAT term sees them).
    The caller holds the folder's lock.
    """
    import keras

    from realbogus.data.pipeline import make_dataset
    from realbogus.training.callbacks import ValidationOperatingPoint, progress_callbacks
    from realbogus.training.checkpoint import RunCheckpoint, best_weights, last_weights, load_state
    from realbogus.training.precision import precision_policy, resolve_precision

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    tr = spec.trainer
    batch, seed, epochs = int(tr.batch_size), spec.seed, int(tr.epochs)
    steps = steps_per_epoch(tr, len(fit_rows))
    state = load_state(run.checkpoint_dir)
    precision = state.get("precision") or resolve_precision(str(tr.precision), spec)
    state["precision"] = precision
    with precision_policy(precision):
        keras.utils.set_random_seed(seed)
        train_ds = make_dataset(train_path, rows=fit_rows, labels=fit_labels, batch_size=batch, shuffle=True,
                                seed=seed, repeat=True, start_step=state["epoch"] * steps,
                                augment=bool(tr.get("augment", False)))
        val_ds = make_dataset(train_path, rows=val_rows, labels=val_labels, batch_size=max(batch, 1024))
        with _strategy(str(tr.strategy)).scope():
            model = build_trainable(spec)
            model.compile(optimizer=build_optimizer(spec.optimizer, spec.schedule, epochs * steps))
            model(np.zeros((1, 29, 29, 3), np.float32))
            model.optimizer.build(model.trainable_variables)
        if state["epoch"] > 0:
            model.load_weights(last_weights(run.checkpoint_dir))
            print(f"resuming {run.path} after epoch {state['epoch']} ({precision})", flush=True)
        if state["epoch"] < epochs and not state["stopped"]:
            progress, verbose = progress_callbacks(str(tr.progress), epochs, steps, batch,
                                                   float(tr.get("progress_seconds", 60)))
            callbacks = [
                ValidationOperatingPoint(val_ds, val_labels),  # first: the callbacks below record its value
                RunCheckpoint(run.checkpoint_dir, monitor=tr.monitor, mode=tr.monitor_mode, patience=tr.patience,
                              state=state),
                keras.callbacks.CSVLogger(str(run / RunDir.HISTORY), append=state["epoch"] > 0),
                keras.callbacks.TensorBoard(log_dir=str(run / RunDir.TENSORBOARD), profile_batch=0),
                *progress,
            ]
            model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=state["epoch"],
                      steps_per_epoch=steps, callbacks=callbacks, verbose=verbose,
                      shuffle=False)  # the pipeline shuffles, by (seed, epoch)
        best = best_weights(run.checkpoint_dir)
        if best is not None:
            model.load_weights(best)
    return model
