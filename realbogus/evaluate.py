"""Evaluate a finished training run again: ``python -m realbogus.evaluate run_dir=DIR [overrides]``.

Examples::

    # recompute metrics.json, the per-group tables and the figures from DIR/predictions.csv
    python -m realbogus.evaluate run_dir=experiments/train/quick-complex-ce_ech_vat-s0
    # score DIR/model.keras on another realbogus HDF5 file; outputs go to DIR/eval_<stem>/
    python -m realbogus.evaluate run_dir=DIR data.path=data/custom/test.h5
    python -m realbogus.evaluate run_dir=DIR n_bootstrap=1000 label=true_label out_dir=OTHER

Nothing is retrained. Settings left unset (bootstrap size, seed, confidence, labels, nights) are
taken from the run's ``metrics.json``, so recomputing a run reproduces its numbers exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import hydra
from omegaconf import DictConfig, OmegaConf

from realbogus.errors import ConfigError, DataError, report_errors
from realbogus.rundir import RunDir

__all__ = ["evaluate_run", "evaluate", "main"]

#: Defaults of the settings a run records in its metrics.json.
_DEFAULTS = {"n_bootstrap": 1000, "seed": 0, "confidence": 0.95, "bogus_detections_per_night": 1e6, "label": "label"}


def _recorded(run_dir: Path) -> dict:
    """The evaluation settings stored in ``run_dir/metrics.json`` (empty if there is none)."""
    path = RunDir(run_dir).metrics_path
    if not path.is_file():
        return {}
    try:
        with open(path) as fh:
            m = json.load(fh)
    except (OSError, ValueError):
        return {}
    boot = m.get("bootstrap") or {}
    found = {
        "title": m.get("title"),
        "label": m.get("label_column"),
        "n_bootstrap": boot.get("n_resamples"),
        "seed": boot.get("seed"),
        "confidence": boot.get("confidence"),
        "bogus_detections_per_night": m.get("bogus_detections_per_night"),
    }
    return {k: v for k, v in found.items() if v is not None}


def _load_run_model(path: Path):
    from realbogus.models import load_model

    return load_model(path)


def evaluate_run(
    run_dir: str | os.PathLike,
    data_path: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    title: str | None = None,
    label: str | None = None,
    batch_size: int = 1024,
    n_bootstrap: int | None = None,
    seed: int | None = None,
    confidence: float | None = None,
    bogus_detections_per_night: float | None = None,
    mag_width: float = 1.0,
    progress: bool = True,
    load_model: Callable | None = None,
) -> tuple[Path, dict]:
    """Recompute a run's outputs from its predictions, or score its model on another file.

    Parameters
    ----------
    run_dir
        Run folder holding ``predictions.csv`` (and ``model.keras`` when ``data_path`` is given).
    data_path
        realbogus HDF5 file to score with ``run_dir/model.keras``; None reuses ``predictions.csv``.
    out_dir
        Output folder; default ``run_dir``, or ``run_dir/eval_<stem of data_path>``.
    title, label, n_bootstrap, seed, confidence, bogus_detections_per_night
        Evaluation settings (see :func:`realbogus.evaluation.report.write_evaluation`); None
        takes the value recorded in ``run_dir/metrics.json``, else the default.
    batch_size
        Stamps per inference batch.
    mag_width
        Width of the magnitude bins.
    progress
        Show a progress bar while scoring.
    load_model
        Function loading a ``.keras`` file; default :func:`realbogus.models.load_model`.

    Returns
    -------
    (pathlib.Path, dict)
        The output folder and the metrics written to its ``metrics.json``.

    Raises
    ------
    DataError
        If ``run_dir``, its ``predictions.csv`` or ``model.keras``, or ``data_path`` is missing
        or unusable.
    """
    from realbogus.evaluation.report import PREDICTIONS_FILE, read_predictions, write_evaluation, write_reports

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run folder")
    recorded = _recorded(run_dir)
    settings = {
        "label": label, "n_bootstrap": n_bootstrap, "seed": seed, "confidence": confidence,
        "bogus_detections_per_night": bogus_detections_per_night,
    }
    settings = {k: (v if v is not None else recorded.get(k, _DEFAULTS[k])) for k, v in settings.items()}
    if settings["label"] not in ("label", "true_label"):
        raise ConfigError(f"label={settings['label']!r} is not one of label, true_label")
    kwargs = dict(
        n_bootstrap=int(settings["n_bootstrap"]), seed=int(settings["seed"]), confidence=float(settings["confidence"]),
        bogus_detections_per_night=float(settings["bogus_detections_per_night"]), label_column=settings["label"],
        mag_width=float(mag_width),
    )
    if not 0.0 < kwargs["confidence"] < 1.0:
        raise ConfigError(f"confidence={kwargs['confidence']} must lie in (0, 1)")
    if kwargs["n_bootstrap"] < 0:
        raise ConfigError(f"n_bootstrap={kwargs['n_bootstrap']} must be >= 0")
    run_title = recorded.get("title", run_dir.resolve().name)

    if data_path is None:
        predictions = read_predictions(run_dir)
        out = Path(out_dir) if out_dir is not None else run_dir
        if out.resolve() != run_dir.resolve():
            from realbogus.evaluation.report import write_predictions

            write_predictions(out / PREDICTIONS_FILE, predictions)
        metrics = write_reports(out, predictions, title=title or run_title, **kwargs)
        return out, metrics

    data_path = Path(data_path)
    if not data_path.is_file():
        raise DataError(f"{data_path}: no such file (data.path must name a realbogus HDF5 file)")
    model_path = RunDir(run_dir).model_path
    if not model_path.is_file():
        raise DataError(f"{model_path}: no such file (needed to score {data_path})")
    from realbogus.evaluation.scoring import score_dataset

    model = (load_model or _load_run_model)(model_path)
    predictions = score_dataset(model, data_path, batch_size=int(batch_size), progress=progress)
    out = Path(out_dir) if out_dir is not None else run_dir / f"eval_{data_path.stem}"
    metrics = write_evaluation(out, predictions, title=title or f"{run_title} on {data_path.stem}", **kwargs)
    return out, metrics


@report_errors
def evaluate(cfg: DictConfig) -> dict:
    """Run :func:`evaluate_run` from the composed config and print a summary."""
    from realbogus.evaluation.report import format_summary

    if OmegaConf.is_missing(cfg, "run_dir") or cfg.run_dir in (None, ""):
        raise ConfigError("run_dir is required: python -m realbogus.evaluate run_dir=DIR [data.path=FILE.h5]")
    data_path = OmegaConf.select(cfg, "data.path", default=None)
    out, metrics = evaluate_run(
        cfg.run_dir, data_path=data_path, out_dir=cfg.out_dir, title=cfg.title, label=cfg.label,
        batch_size=cfg.batch_size, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed, confidence=cfg.confidence,
        bogus_detections_per_night=cfg.bogus_detections_per_night, mag_width=cfg.mag_width,
        progress=bool(cfg.progress),
    )
    print(format_summary(metrics))
    print(f"wrote {out}")
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    metrics = evaluate(cfg)
    return float(metrics["auc"])


if __name__ == "__main__":
    main()
