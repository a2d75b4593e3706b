"""Stage 1: out-of-fold scores of every training sample, cached and resumable.

The training file is split into ``folds`` stratified folds (by given label). For each fold a
stage-1 network is trained on the other folds (with a small stratified validation split of
them for early stopping, like any run) and scores the held-out fold, so every sample gets
exactly one score from a model that never saw its label.

Cache layout, under ``label_cleaning.cache_dir`` (default ``experiments/label_errors/cache``)::

    <key>/stage1.json        what the key stands for: training file, labels digest, stage-1 config
    <key>/fold_<k>/          the fold's training folder (checkpoint/, history.csv, tensorboard/)
    <key>/fold_<k>/scores.csv  index,oof_score of the held-out fold: written when the fold is done
    <key>/oof_scores.csv     index,fold,given_label,oof_score of every sample: stage 1 is done

``<key>`` hashes the training file's identity (resolved path, size, modification time), the
given labels (so labels with injected noise get their own stage 1) and the stage-1 settings
(``model``, ``loss``, ``optimizer``, ``schedule``, ``trainer``, ``folds``, ``seed``; the trainer
keys that cannot change a trained model, :data:`realbogus.rundir.RESULT_NEUTRAL_KEYS`, excluded). Any run with the same three reuses the scores, whatever its stage-2 config;
an interrupted stage 1 resumes at the fold (and epoch) where it stopped. A file lock makes
concurrent runs that need the same stage 1 wait for one another instead of training it twice.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import os
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from realbogus.errors import ConfigError, DataError
from realbogus.io import save_csv_table, save_json

__all__ = ["STAGE1_KEYS", "stage1_settings", "stratified_folds", "cache_key", "out_of_fold_scores", "read_oof_scores"]

#: Keys of a ``label_cleaning`` config that define stage 1 (and so its cache key).
STAGE1_KEYS = ("model", "loss", "optimizer", "schedule", "trainer", "folds", "seed")
OOF_FILE = "oof_scores.csv"
_FLOAT = "%.17g"  # scores round-trip exactly: confident tails stay ordered


def stage1_settings(label_cleaning: DictConfig) -> dict:
    """The stage-1 part of a ``label_cleaning`` config, resolved, as plain Python."""
    missing = [k for k in STAGE1_KEYS if k not in label_cleaning]
    if missing:
        raise ConfigError(f"label_cleaning={label_cleaning.get('name')} lacks stage-1 key(s) {', '.join(missing)}")
    out = {k: OmegaConf.to_container(label_cleaning[k], resolve=True) if isinstance(label_cleaning[k], DictConfig)
           else label_cleaning[k] for k in STAGE1_KEYS}
    if int(out["folds"]) < 2:
        raise ConfigError(f"label_cleaning.folds must be at least 2; got {out['folds']}")
    return out


def stratified_folds(labels, folds: int, seed: int) -> np.ndarray:
    """Assign each sample a fold in ``0..folds-1``, each given label spread evenly over the folds.

    Raises
    ------
    ConfigError
        If a label value has fewer samples than folds.
    """
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    out = np.empty(labels.size, dtype=np.int64)
    offset = 0
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        if rows.size < folds:
            raise ConfigError(f"label {value} has {rows.size} training samples, fewer than label_cleaning.folds={folds}")
        rng.shuffle(rows)
        # Continue the round-robin where the previous class stopped so fold sizes differ by <= 1.
        out[rows] = (np.arange(rows.size) + offset) % folds
        offset += rows.size
    return out


def _file_identity(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _check_unchanged(path: Path, identity: dict) -> None:
    """Refuse to store scores when the training file was replaced while stage 1 ran."""
    if _file_identity(path) != identity:
        raise DataError(f"{path} was rewritten while stage 1 ran (regenerated?); run again to recompute "
                        "the out-of-fold scores for the new file")


def _labels_digest(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int8).tobytes()).hexdigest()[:16]


def cache_key(train_path, labels, settings: dict) -> tuple[str, dict]:
    """The cache key of a stage 1 and the description it hashes (see the module docstring)."""
    from realbogus.rundir import RESULT_NEUTRAL_KEYS

    settings = json.loads(json.dumps(settings))
    for key in RESULT_NEUTRAL_KEYS:
        group, name = key.split(".")
        settings[group].pop(name, None)
    described = {
        "train_file": _file_identity(Path(train_path)),
        "labels_sha256_16": _labels_digest(np.asarray(labels)),
        "n_samples": int(np.asarray(labels).size),
        "stage1": settings,
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
    return digest, described


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on ``path`` (created if needed); released when the process dies too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_columns(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    return {name: np.array([r[i] for r in body]) for i, name in enumerate(header)}


def read_oof_scores(path) -> dict[str, np.ndarray]:
    """Read an ``oof_scores.csv``: ``index``, ``fold``, ``given_label`` (int64) and ``oof_score`` (float64)."""
    cols = _read_columns(Path(path))
    out = {k: cols[k].astype(np.int64) for k in ("index", "fold", "given_label")}
    out["oof_score"] = cols["oof_score"].astype(np.float64)
    return out


def _fold_spec(settings: dict, fold: int, progress: str):
    """The :class:`realbogus.training.fit.FitSpec` of one fold."""
    from realbogus.training.fit import FitSpec

    cfg = OmegaConf.create({k: settings[k] for k in ("model", "loss", "optimizer", "schedule", "trainer")} |
                           {"seed": int(settings["seed"]) + fold})
    cfg.trainer.progress = progress
    return FitSpec.from_config(cfg)


def _run_fold(settings: dict, train_path: Path, labels: np.ndarray, folds: np.ndarray, fold: int,
              fold_dir: Path, progress: str, identity: dict) -> np.ndarray:
    """Train on every fold but ``fold``, score ``fold``; return its scores (also saved in ``fold_dir``)."""
    from realbogus.data.subset import split_train_validation
    from realbogus.evaluation.scoring import score_dataset
    from realbogus.training.fit import fit_network

    done = fold_dir / "scores.csv"
    if done.exists():
        return _read_columns(done)["oof_score"].astype(np.float64)
    spec = _fold_spec(settings, fold, progress)
    held_out = np.flatnonzero(folds == fold)
    train_part = np.flatnonzero(folds != fold)
    fit_pos, val_pos = split_train_validation(labels[train_part], float(spec.trainer.validation_fraction), spec.seed)
    fit_rows, val_rows = train_part[fit_pos], train_part[val_pos]
    print(f"label cleaning, stage 1: fold {fold + 1}/{int(settings['folds'])} "
          f"(training on {fit_rows.size} rows, scoring {held_out.size})", flush=True)
    wrapper = fit_network(spec, train_path, fit_rows, labels[fit_rows], val_rows, labels[val_rows], fold_dir)
    pred = score_dataset(wrapper.network, train_path, batch_size=int(spec.trainer.eval_batch_size),
                         rows=held_out, progress=progress != "none")
    _check_unchanged(train_path, identity)
    save_csv_table(done, {"index": pred["index"], "oof_score": pred["score"]}, float_format=_FLOAT)
    return pred["score"]


def out_of_fold_scores(label_cleaning: DictConfig, train_path, labels, progress: str = "none") -> dict:
    """Out-of-fold scores of every row of ``train_path``, from the cache when it holds them.

    Parameters
    ----------
    label_cleaning
        The ``label_cleaning`` config (stage-1 keys :data:`STAGE1_KEYS` and ``cache_dir``).
    train_path
        Training HDF5 file.
    labels
        Given label of every row (1 real, 0 bogus, -1 unlabelled); stage 1 trains on these.
    progress
        Progress display of the fold trainings and scorings, as ``trainer.progress`` (auto, bar,
        epoch, none); it overrides the stage-1 trainer's own setting.

    Returns
    -------
    dict
        ``index``, ``fold``, ``given_label``, ``oof_score`` (one entry per row, in row order)
        as in ``oof_scores.csv``, plus ``cache_dir`` (Path of this stage 1's cache folder) and
        ``from_cache`` (True when nothing had to be trained or scored).
    """
    train_path = Path(train_path)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    settings = stage1_settings(label_cleaning)
    key, described = cache_key(train_path, labels, settings)
    root = Path(str(label_cleaning.get("cache_dir") or "experiments/label_errors/cache"))
    key_dir = root / key
    with _locked(root / f"{key}.lock"):
        oof_path = key_dir / OOF_FILE
        from_cache = oof_path.exists()
        if not from_cache:
            save_json(key_dir / "stage1.json", described)
            k = int(settings["folds"])
            folds = stratified_folds(labels, k, int(settings["seed"]))
            scores = np.full(labels.size, np.nan)
            for fold in range(k):
                scores[folds == fold] = _run_fold(settings, train_path, labels, folds, fold, key_dir / f"fold_{fold}",
                                                 progress, described["train_file"])
            if np.isnan(scores).any():
                raise DataError(f"{key_dir}: out-of-fold scores missing for {int(np.isnan(scores).sum())} rows")
            save_csv_table(oof_path, {"index": np.arange(labels.size), "fold": folds, "given_label": labels,
                                      "oof_score": scores}, float_format=_FLOAT)
        out = read_oof_scores(oof_path)
    if out["index"].size != labels.size or not np.array_equal(out["given_label"], labels):
        raise DataError(f"{oof_path} does not match the training labels; delete {key_dir} to recompute it")
    out.update(cache_dir=key_dir, from_cache=from_cache)
    return out
