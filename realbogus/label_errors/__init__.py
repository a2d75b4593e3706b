"""Label-error handling: find suspected label errors out-of-fold, then treat them for training.

The paper's two-stage training. Stage 1 (:mod:`.oof`) scores every training sample with a
model trained on the other folds; a selection rule (:mod:`.selection`, config group
``label_cleaning``) turns the out-of-fold scores into a set of suspected label errors; a
treatment (:mod:`.treatment`, config group ``label_treatment``) decides what stage 2 (the
ordinary training run) sees: all labels, the suspects removed, unlabelled (the paper's
method) or flipped. :mod:`.report` writes the detection quality, the score-bin analysis and a
ranked audit into the run folder.

:func:`prepare_labels` is the one entry point; the training driver calls it.
"""

from __future__ import annotations

import os

import numpy as np
from omegaconf import DictConfig

from realbogus.errors import ConfigError
from realbogus.label_errors.selection import RULE_PARAMETERS, RULES, select
from realbogus.label_errors.treatment import TREATMENTS, apply_treatment

__all__ = ["prepare_labels", "rule_parameters", "RULES", "TREATMENTS"]


def rule_parameters(label_cleaning: DictConfig) -> dict:
    """The selected rule's parameters as set in the ``label_cleaning`` config."""
    return {k: label_cleaning[k] for k in RULE_PARAMETERS.get(label_cleaning.name, {}) if k in label_cleaning}


def prepare_labels(cfg: DictConfig, train_path: str | os.PathLike, run_dir: str | os.PathLike,
                   given_labels=None) -> tuple[np.ndarray, np.ndarray]:
    """Training rows and their labels for stage 2, after label cleaning and treatment.

    Parameters
    ----------
    cfg
        The composed training config (uses ``label_cleaning``, ``label_treatment`` and
        ``trainer.progress``).
    train_path
        Training HDF5 file.
    run_dir
        Run folder; receives the label-error reports when cleaning is on.
    given_labels
        Labels to start from, one per row of the file (default: the file's ``label`` column).
        A caller that alters the given labels (e.g. injected label noise) passes them here;
        stage 1 then trains on them and is cached under their own key.

    Returns
    -------
    rows, labels
        Sorted int64 row indices of the file and the int32 label of each (-1: unlabelled).
        With ``label_cleaning=none`` these are every row and its given label.
    """
    from realbogus.data.format import open_dataset
    from realbogus.label_errors.oof import out_of_fold_scores
    from realbogus.label_errors.report import write_label_error_reports

    if cfg.label_treatment.name not in TREATMENTS:
        raise ConfigError(f"label_treatment.name={cfg.label_treatment.name!r} is not one of {', '.join(TREATMENTS)}")
    if cfg.label_cleaning.name not in RULES:
        raise ConfigError(f"label_cleaning.name={cfg.label_cleaning.name!r} is not one of {', '.join(RULES)}")
    if given_labels is None:
        with open_dataset(train_path) as ds:
            given_labels = ds.column("label")
    given = np.asarray(given_labels).reshape(-1).astype(np.int32)
    cleaning = cfg.label_cleaning
    treatment = cfg.label_treatment.name
    if cleaning.name == "none":
        return apply_treatment(treatment, given, np.zeros(given.size, bool))
    oof = out_of_fold_scores(cleaning, train_path, given, progress=str(cfg.trainer.progress))
    params = rule_parameters(cleaning)
    suspected = select(cleaning.name, oof["oof_score"], given, params)
    rows, labels = apply_treatment(treatment, given, suspected)
    write_label_error_reports(run_dir, train_path, oof, given, suspected, cleaning.name, params, treatment)
    print(f"label cleaning ({cleaning.name}, {treatment}): {int(suspected.sum())} of {given.size} training "
          f"labels suspected; stage 2 trains on {rows.size} rows, {int((labels < 0).sum())} unlabelled")
    return rows, labels
