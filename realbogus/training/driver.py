"""Run one training experiment from a composed config: data, model, fit, evaluation.

The run folder receives (see README, "Run folders"): ``run_config.yaml``, ``model.keras``,
``history.csv``, ``tensorboard/``, ``checkpoint/`` and the evaluation outputs written by
:func:`realbogus.evaluation.report.write_evaluation` (``predictions.csv``, ``metrics.json``, ROC
files, breakdown tables). ``run_state.json`` says whether the run is ``running`` or ``done``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from realbogus.errors import ConfigError
from realbogus.io import atomic_path, atomic_write, save_json

__all__ = ["run_training", "fit_network", "build_optimizer", "build_trainable", "split_train_validation"]

#: Config keys a rerun may change: they do not alter which experiment a run folder holds
#: (trainer.epochs extends a run; trainer.precision changes the arithmetic, not the experiment,
#: so a finished float32 run is reused by a bfloat16 request; run_config.yaml records the one used).
_RESUME_NEUTRAL = ("trainer.resume", "trainer.progress", "trainer.eval_batch_size", "trainer.epochs",
                   "trainer.n_bootstrap", "trainer.precision")


def build_optimizer(cfg: DictConfig):
    """Create the Keras optimizer named by ``cfg.name`` (sgd, adam, adadelta)."""
    import keras

    opts = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "name"}
    classes = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam, "adadelta": keras.optimizers.Adadelta}
    if cfg.name not in classes:
        raise ConfigError(f"optimizer.name={cfg.name!r} is not one of {sorted(classes)}")
    return classes[cfg.name](**opts)


def build_trainable(cfg: DictConfig):
    """Build the network and wrap it with the objective given by ``cfg.loss``."""
    from realbogus.models import build_model
    from realbogus.training.model import RealBogusModel

    loss = cfg.loss
    network = build_model(cfg.model)
    return RealBogusModel(
        network,
        lambda_ce=loss.lambda_ce,
        lambda_ech=loss.lambda_ech,
        lambda_lds=loss.lambda_lds,
        margin=loss.margin,
        vat_xi=loss.vat.xi,
        vat_eps=loss.vat.eps,
        vat_power_iterations=loss.vat.power_iterations,
        seed=cfg.seed,
    )


def split_train_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into training and validation, stratified by the given label."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        rng.shuffle(rows)
        n_val = int(round(fraction * rows.size))
        val.append(rows[:n_val])
        train.append(rows[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _strategy(name: str):
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise ConfigError(f"trainer.strategy={name!r} is not one of default, mirrored")


def _verbose(progress: str) -> int:
    if progress == "auto":
        return 1 if sys.stdout.isatty() else 2
    return {"bar": 1, "epoch": 2, "none": 0}[progress]


def _check_resumable(run_dir: Path, cfg: DictConfig) -> dict | None:
    """Return the saved state of a previous run in ``run_dir`` with the same config, if any."""
    state_path = run_dir / "run_state.json"
    if not state_path.exists():
        return None
    with open(state_path) as fh:
        state = json.load(fh)
    old = OmegaConf.to_container(OmegaConf.load(run_dir / "run_config.yaml"), resolve=True)
    # Runs from before label-noise injection existed trained on the labels as given.
    old.setdefault("label_noise", {"mode": "none", "run_tag": ""})
    # ... and from before data subsets existed, on every row.
    old.setdefault("data_subset", {"name": "all", "sensors": None, "n_train": None, "test_sensors": False,
                                   "seed": 0, "run_tag": ""})
    # ... and from before simulator options added later, with those options at their defaults.
    if isinstance((old.get("data") or {}).get("simulation"), dict):
        from realbogus.simulation.generator import fill_added_keys

        fill_added_keys(old["data"]["simulation"])
    diffs = _config_diff(old, OmegaConf.to_container(cfg, resolve=True))
    diffs = [d for d in diffs if not d.startswith(_RESUME_NEUTRAL)]
    if diffs:
        raise ConfigError(
            f"{run_dir} holds a run with a different config ({', '.join(diffs[:5])}); "
            "choose another run_name=... or pass trainer.resume=false to start it over"
        )
    return state


def _config_diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _config_diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def fit_network(cfg: DictConfig, train_path, fit_rows, fit_labels, val_rows, val_labels, work_dir) -> "keras.Model":
    """Train ``cfg``'s model on rows of ``train_path`` and return it with its best weights.

    Resumable: ``work_dir/checkpoint`` keeps the last and best weights and the early-stopping
    state, and a call with an existing checkpoint continues after its last finished epoch.
    ``history.csv`` and ``tensorboard/`` also go to ``work_dir``. Label arrays may hold -1
    (unlabelled samples: only the VAT term sees them).
    """
    import keras

    from realbogus.data.pipeline import make_dataset
    from realbogus.training.callbacks import RunCheckpoint, load_state

    work_dir = Path(work_dir)
    tr = cfg.trainer
    batch = int(tr.batch_size)
    seed = int(cfg.seed)
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(tr.precision)
    train_ds = make_dataset(train_path, rows=fit_rows, labels=fit_labels, batch_size=batch,
                            shuffle=True, seed=seed, repeat=tr.steps_per_epoch is not None)
    val_ds = make_dataset(train_path, rows=val_rows, labels=val_labels, batch_size=max(batch, 1024))

    ckpt_dir = work_dir / "checkpoint"
    state = load_state(ckpt_dir)
    with _strategy(tr.strategy).scope():
        model = build_trainable(cfg)
        model.compile(optimizer=build_optimizer(cfg.optimizer))
        model(np.zeros((1, 29, 29, 3), np.float32))
        model.optimizer.build(model.trainable_variables)
    if state["epoch"] > 0:
        model.load_weights(ckpt_dir / "last.weights.h5")
        print(f"resuming {work_dir} after epoch {state['epoch']}")

    epochs = int(tr.epochs)
    if state["epoch"] < epochs and not state["stopped"]:
        callbacks = [
            RunCheckpoint(ckpt_dir, monitor=tr.monitor, mode=tr.monitor_mode, patience=tr.patience, state=state),
            keras.callbacks.CSVLogger(str(work_dir / "history.csv"), append=state["epoch"] > 0),
            keras.callbacks.TensorBoard(log_dir=str(work_dir / "tensorboard"), profile_batch=0),
        ]
        model.fit(
            train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=state["epoch"],
            steps_per_epoch=tr.steps_per_epoch, callbacks=callbacks, verbose=_verbose(tr.progress),
            shuffle=False,  # the pipeline shuffles (seeded, per epoch)
        )
    if load_state(ckpt_dir)["best_epoch"] is not None:
        model.load_weights(ckpt_dir / "best.weights.h5")
    keras.mixed_precision.set_global_policy("float32")
    return model


def run_training(cfg: DictConfig, run_dir: str | os.PathLike) -> dict:
    """Train and evaluate the model described by ``cfg``, writing everything into ``run_dir``.

    Returns the test-set metrics (the content of ``metrics.json``).
    """
    import shutil

    import keras
    import tensorflow as tf

    from realbogus.evaluation.report import write_evaluation, write_predictions
    from realbogus.evaluation.scoring import score_dataset
    from realbogus.data.subset import select_training_rows, sensor_test_rows
    from realbogus.label_errors import prepare_labels
    from realbogus.label_noise import inject_label_noise
    from realbogus.simulation import ensure_dataset
    from realbogus.training.callbacks import load_state

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tr = cfg.trainer
    if tr.precision not in ("float32", "mixed_bfloat16"):
        raise ConfigError(f"trainer.precision={tr.precision!r} is not one of float32, mixed_bfloat16")

    previous = _check_resumable(run_dir, cfg) if tr.resume else None
    if previous and previous.get("status") == "done" and (run_dir / "metrics.json").exists():
        saved = load_state(run_dir / "checkpoint")
        if saved["stopped"] or saved["epoch"] >= int(tr.epochs):
            print(f"run already complete: {run_dir} (pass trainer.resume=false to train again)")
            with open(run_dir / "metrics.json") as fh:
                return json.load(fh)
    if not previous:
        for stale in ("checkpoint", "history.csv", "tensorboard", "metrics.json"):
            p = run_dir / stale
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    with atomic_write(run_dir / "run_config.yaml") as fh:
        fh.write(OmegaConf.to_yaml(cfg, resolve=True))
    save_json(run_dir / "run_state.json", {"status": "running"})

    # --- data: a stratified validation split of the training file drives early stopping
    train_path, test_path = ensure_dataset(cfg.data)
    # Injected label noise (robustness studies) replaces the given labels; None keeps the file's.
    given = inject_label_noise(cfg, train_path, run_dir)
    # Labels after label cleaning and treatment (stage 1 of the paper's two-stage training):
    # every row with its given label unless cleaning is on; then split the rows kept.
    rows, labels = prepare_labels(cfg, train_path, run_dir, given_labels=given)
    # The paper's "each" / "mix" comparisons train on part of the file (data_subset; all by default).
    subset = cfg.get("data_subset") or {}
    rows, labels = select_training_rows(subset, train_path, rows, labels)
    fit_pos, val_pos = split_train_validation(labels, float(tr.validation_fraction), int(cfg.seed))
    fit_rows, val_rows = rows[fit_pos], rows[val_pos]

    model = fit_network(cfg, train_path, fit_rows, labels[fit_pos], val_rows, labels[val_pos], run_dir)
    state = load_state(run_dir / "checkpoint")

    # --- the network alone is saved: it reloads without the training wrapper
    with atomic_path(run_dir / "model.keras") as tmp:
        model.network.save(tmp)

    # --- held-out validation scores (for calibration and operating points), then the test split
    progress = tr.progress != "none"
    val_pred = score_dataset(model.network, train_path, batch_size=int(tr.eval_batch_size), rows=val_rows, progress=progress)
    write_predictions(run_dir / "validation_predictions.csv", val_pred)
    predictions = score_dataset(model.network, test_path, batch_size=int(tr.eval_batch_size),
                                rows=sensor_test_rows(subset, test_path), progress=progress)
    title = f"{cfg.model.name} + {cfg.loss.name} ({cfg.data.name})"
    metrics = write_evaluation(run_dir, predictions, title=title, n_bootstrap=int(tr.n_bootstrap), seed=int(cfg.seed))
    # Deployment extras: temperature calibration, reliability diagram, model card (also inside model.keras).
    from realbogus.deploy.finalize import finalize_run

    finalize_run(run_dir, network=model.network)
    save_json(run_dir / "run_state.json", {
        "status": "done",
        "epochs_trained": state["epoch"],
        "best_epoch": state["best_epoch"],
        "wall_seconds_last_session": round(time.time() - t0, 1),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    })
    return metrics
