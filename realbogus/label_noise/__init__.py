"""Label-noise injection for robustness studies (config group ``label_noise``).

The training driver calls :func:`inject_label_noise` between reading the training file and
label cleaning: it returns the noisy labels that every later stage (stage 1 of label cleaning
included) treats as the given labels. The file itself is never changed, so ``true_label``
keeps the truth and label-error detection is still scored against it.

Modes (``label_noise.mode``):

``none``
    No injection (the default; nothing is written).
``uniform``
    The requested share of each class's labels is flipped from the other class at random.
``boundary``
    As many flips, drawn so that the injected errors follow the per-score-bin error profile of
    the paper's analysis (:mod:`.injection`). The scores are stage-1 out-of-fold scores of the
    training file with its given labels (``label_noise.stage1``, cached and shared with label
    cleaning's stage 1 when the settings agree).

Rates: ``rates`` (absolute, ``{bogus: r0, real: r1}``) or, when it is null,
``multiple`` x ``base_rates`` (the measured 0.6% / 1.0%). With ``multiple`` 0 nothing is
flipped, but the record is still written.

Written into the run folder (atomically):

``label_noise.json``
    mode, seed, rates requested and obtained, counts, the weight source and profile
    (``boundary``), the label-error rates before and after injection (with ground truth).
``label_noise.csv``
    one row per flipped sample: ``index,given_label,noisy_label`` (+ ``true_label`` with
    ground truth, + ``oof_score`` for ``boundary``), in row order.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from realbogus.errors import ConfigError
from realbogus.io import save_csv_table, save_json
from realbogus.label_noise.injection import (
    CLASS_NAMES,
    PROFILE_EDGES,
    boundary_weights,
    error_profile,
    inject,
    label_error_rates,
)

__all__ = ["MODES", "requested_rates", "inject_label_noise", "NOISE_JSON", "NOISE_CSV"]

MODES = ("none", "uniform", "boundary")
NOISE_JSON = "label_noise.json"
NOISE_CSV = "label_noise.csv"


def requested_rates(noise: DictConfig) -> dict[str, float]:
    """Per-class injection rates of a ``label_noise`` config: ``rates``, or ``multiple`` x ``base_rates``."""
    if noise.get("rates") is not None:
        if noise.get("tag") is not None and OmegaConf.to_container(noise, resolve=False).get("tag") == "x${.multiple}":
            raise ConfigError("label_noise.rates is set: also set label_noise.tag (e.g. tag=b0.05_r0.02) so that "
                              "the run name tells these absolute rates apart from multiples")
        rates = {name: float(noise.rates.get(name, 0.0)) for name in CLASS_NAMES}
    else:
        multiple = float(noise.multiple)
        if multiple < 0:
            raise ConfigError(f"label_noise.multiple must be non-negative; got {multiple}")
        rates = {name: multiple * float(noise.base_rates[name]) for name in CLASS_NAMES}
    return rates


def _read_labels(train_path) -> tuple[np.ndarray, np.ndarray | None]:
    from realbogus.data.format import open_dataset

    with open_dataset(train_path) as ds:
        given = ds.column("label").astype(np.int64)
        truth = ds.column("true_label").astype(np.int64) if "true_label" in ds.fields else None
    if truth is not None and not (truth >= 0).all():
        truth = None
    return given, truth


def inject_label_noise(cfg: DictConfig, train_path: str | os.PathLike, run_dir: str | os.PathLike) -> np.ndarray | None:
    """Noisy training labels per ``cfg.label_noise``, recorded in ``run_dir``; None for mode ``none``.

    Parameters
    ----------
    cfg
        The composed training config (uses ``label_noise`` and ``trainer.progress``).
    train_path
        Training HDF5 file (read only).
    run_dir
        Run folder; receives ``label_noise.json`` and ``label_noise.csv``.
    """
    noise = cfg.get("label_noise")
    if noise is None or noise.mode == "none":
        return None
    if noise.mode not in MODES:
        raise ConfigError(f"label_noise.mode={noise.mode!r} is not one of {', '.join(MODES)}")
    rates = requested_rates(noise)
    given, truth = _read_labels(train_path)
    keep = bool(noise.keep_existing_errors)
    record: dict = {"mode": noise.mode, "seed": int(noise.seed), "multiple": noise.get("multiple"),
                    "requested_rates": rates, "keep_existing_errors": keep, "ground_truth": truth is not None}

    scores = None
    weight_fn = None
    if noise.mode == "boundary" and any(r > 0 for r in rates.values()):
        from realbogus.label_errors.oof import out_of_fold_scores

        oof = out_of_fold_scores(noise.stage1, train_path, given, progress=str(cfg.trainer.progress))
        scores = oof["oof_score"]
        edges = np.linspace(0.0, 1.0, int(noise.bins) + 1) if noise.get("bins") else PROFILE_EDGES
        sources = {}

        def weight_fn(target, rows):
            w, sources[CLASS_NAMES[target]] = boundary_weights(
                scores, given, target, rows, truth, source=str(noise.profile), edges=edges,
                smoothing=float(noise.smoothing))
            return w

        record["stage1"] = {"cache_dir": str(oof["cache_dir"]), "folds": int(noise.stage1.folds)}
        record["weight_source"] = sources
        if truth is not None:
            profile = error_profile(scores, given, truth, edges, float(noise.smoothing))
            record["profile"] = {"edges": profile["edges"], **{
                name: {"ratio": profile[name]["ratio"], "n_labels": profile[name]["n_labels"],
                       "n_errors": profile[name]["n_errors"]} for name in CLASS_NAMES}}

    noisy, flipped = inject(given, rates, int(noise.seed), truth, keep, weight_fn)
    n_given = {name: int(np.count_nonzero(given == c)) for c, name in enumerate(CLASS_NAMES)}
    record.update(
        n_given=n_given,
        n_injected={name: int(rows.size) for name, rows in flipped.items()},
        injected_rates={name: flipped[name].size / n_given[name] if n_given[name] else None for name in CLASS_NAMES},
        flipped_file=NOISE_CSV,
    )
    if truth is not None:
        record["label_error_rates"] = {"before": label_error_rates(given, truth), "after": label_error_rates(noisy, truth)}

    rows = np.sort(np.concatenate([flipped[name] for name in CLASS_NAMES]))
    cols = {"index": rows, "given_label": given[rows], "noisy_label": noisy[rows]}
    if truth is not None:
        cols["true_label"] = truth[rows]
    if scores is not None:
        cols["oof_score"] = np.asarray(scores, float)[rows]
    run_dir = Path(run_dir)
    save_csv_table(run_dir / NOISE_CSV, cols, float_format="%.10g")
    save_json(run_dir / NOISE_JSON, record)
    after = record.get("label_error_rates", {}).get("after")
    print(f"label noise ({noise.mode}): {record['n_injected']['bogus']} bogus and {record['n_injected']['real']} "
          f"real label errors injected" + (f"; label-error rate now {100 * after['bogus']:.2f}% of bogus, "
                                           f"{100 * after['real']:.2f}% of real labels" if after else ""))
    return noisy
