"""Train and evaluate a real/bogus classifier: ``python -m realbogus.train [overrides]``.

Examples::

    python -m realbogus.train model=complex loss=ce_ech_vat      # the headline run, quick data
    python -m realbogus.train model=simple loss=ce data=smoke trainer.epochs=1 hydra.run.dir=DIR
    python -m realbogus.train --help                             # what it does, groups and options

:func:`train` is the pipeline the command runs, stage by stage: check the config; take the run
folder (:class:`realbogus.rundir.RunDir`: its lock, and whether it resumes); the data
(simulated if missing); injected label noise; label cleaning (stage 1) and treatment; the data
subset; the fit (:func:`realbogus.training.fit.fit_network`); scoring of the validation and
test splits; the evaluation outputs; the model card. Rerunning the same command resumes an
interrupted run exactly and reports a finished one without retraining. Ctrl-C or SIGTERM stop
it with one line and the state ``interrupted``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import hydra
from omegaconf import DictConfig

from realbogus.errors import check_output_overrides, report_errors
from realbogus.faults import fault_point

__all__ = ["train", "main"]


def train(cfg: DictConfig, run_dir: str | os.PathLike) -> dict:
    """Train and evaluate the model described by ``cfg`` in ``run_dir``; return its test metrics.

    Raises
    ------
    ConfigError
        A bad config value (before anything is read or trained), or ``run_dir`` holds another
        experiment's run.
    RunLockedError
        Another process works in ``run_dir``.
    """
    from realbogus.rundir import RunDir
    from realbogus.schema import check_train_config

    cfg = check_train_config(cfg)
    run = RunDir(run_dir)
    with run.locked(), run.logging_to_file(), _recording_failures(run):
        decision = run.resume_decision(cfg, resume=bool(cfg.trainer.resume))
        if decision == "done":
            print(f"run already complete: {run.path} (pass trainer.resume=false to train again)")
            with open(run.metrics_path) as fh:
                return json.load(fh)
        if decision == "fresh":
            run.clear_training_outputs()
        run.write_config(cfg)
        run.write_state("running", pid=os.getpid())
        fault_point("start")
        return _pipeline(cfg, run)


def _pipeline(cfg: DictConfig, run) -> dict:
    import keras
    import tensorflow as tf

    from realbogus.data.subset import select_training_rows, sensor_test_rows, split_train_validation
    from realbogus.deploy.finalize import finalize_run
    from realbogus.evaluation.report import write_evaluation, write_predictions
    from realbogus.evaluation.scoring import score_dataset
    from realbogus.io import atomic_path
    from realbogus.label_errors import prepare_labels
    from realbogus.label_noise import inject_label_noise
    from realbogus.simulation import ensure_dataset
    from realbogus.training.fit import FitSpec, fit_network, steps_per_epoch

    t0 = time.time()
    tr, seed = cfg.trainer, int(cfg.seed)
    # data -> injected label noise -> label cleaning and treatment -> subset -> validation split
    train_path, test_path = ensure_dataset(cfg.data)
    given = inject_label_noise(cfg, train_path, run.path)
    rows, labels = prepare_labels(cfg, train_path, run.path, given_labels=given)
    subset = cfg.get("data_subset") or {}
    rows, labels = select_training_rows(subset, train_path, rows, labels)
    fit_pos, val_pos = split_train_validation(labels, float(tr.validation_fraction), seed)
    fit_rows, val_rows = rows[fit_pos], rows[val_pos]
    # the steps per epoch are known now: recorded while the run trains, so that a table of runs in
    # progress (python -m realbogus.compare) can count their steps
    run.write_state("running", pid=os.getpid(), steps_per_epoch=steps_per_epoch(tr, fit_rows.size))
    # fit
    model = fit_network(FitSpec.from_config(cfg), train_path, fit_rows, labels[fit_pos], val_rows,
                        labels[val_pos], run)
    ckpt = run.checkpoint_state()
    with atomic_path(run.model_path) as tmp:  # the network alone: it reloads without the training wrapper
        model.network.save(tmp)
    # evaluate: validation scores (calibration, operating points), then the test split
    # a bar on a terminal; in a log the bar's redraws are noise
    progress = str(tr.progress) == "bar" or (str(tr.progress) == "auto" and sys.stderr.isatty())
    val_pred = score_dataset(model.network, train_path, batch_size=int(tr.eval_batch_size), rows=val_rows,
                             progress=progress)
    write_predictions(run / run.VALIDATION_PREDICTIONS, val_pred)
    fault_point("scoring")
    predictions = score_dataset(model.network, test_path, batch_size=int(tr.eval_batch_size),
                                rows=sensor_test_rows(subset, test_path), progress=progress)
    title = f"{cfg.model.name} + {cfg.loss.name} ({cfg.data.name})"
    metrics = write_evaluation(run.path, predictions, title=title, n_bootstrap=int(tr.n_bootstrap), seed=seed)
    # finalise: temperature calibration, reliability diagram, model card
    fault_point("finalize")
    finalize_run(run.path, network=model.network)
    run.write_state("done", epochs_trained=ckpt["epoch"], best_epoch=ckpt["best_epoch"],
                    steps_per_epoch=steps_per_epoch(tr, fit_rows.size), precision=ckpt.get("precision"),
                    wall_seconds_last_session=round(time.time() - t0, 1),
                    tensorflow=tf.__version__, keras=keras.__version__)
    return metrics


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt."""


def _on_sigterm(signum, frame):
    raise _Terminated()


class _recording_failures:
    """Record in the run's state why it stopped: ``interrupted`` or ``failed`` (with the reason)."""

    def __init__(self, run):
        self.run = run

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None:
            return False
        epochs = self.run.checkpoint_state()["epoch"]
        if isinstance(exc, KeyboardInterrupt):
            how = "SIGTERM" if isinstance(exc, _Terminated) else "Ctrl-C"
            self.run.write_state("interrupted", reason=f"{how} after epoch {epochs}")
        else:
            self.run.write_state("failed", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                                                   f" (after epoch {epochs})")
        return False


@report_errors
def _command(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig

    from realbogus.rundir import RunDir

    run_dir = HydraConfig.get().runtime.output_dir
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        metrics = train(cfg, run_dir)
    except KeyboardInterrupt as exc:
        epochs = RunDir(run_dir).checkpoint_state()["epoch"]
        print(f"\ninterrupted after epoch {epochs}; rerun the same command to resume", file=sys.stderr)
        sys.exit(143 if isinstance(exc, _Terminated) else 130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"{run_dir}: AUC {metrics['auc']:.5f}, FPR at TPR 0.9 "
          f"{metrics['fpr_at_tpr']['0.9']['fpr']:.2e}, bogus per night {metrics['bogus_per_night']:.0f}")
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return float(_command(cfg)["auc"])


if __name__ == "__main__":
    check_output_overrides()
    main()
