"""Train a real/bogus classifier: ``python -m realbogus.train [overrides]``.

Examples::

    python -m realbogus.train model=complex loss=ce_ech_vat      # headline run, quick data
    python -m realbogus.train model=simple loss=ce data=smoke trainer.epochs=1 hydra.run.dir=DIR
    python -m realbogus.train --help                             # config groups and options

Writes into the run folder (``experiments/train/<run_name>/`` unless ``hydra.run.dir`` is set):
the composed config, ``model.keras``, ``history.csv``, TensorBoard logs, ``predictions.csv``,
``metrics.json`` and the ROC curve (CSV, PNG, PDF). Rerunning the same command resumes.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from realbogus.errors import report_errors


@report_errors
def train(cfg: DictConfig) -> dict:
    """Train and evaluate one configuration; return its test metrics."""
    from realbogus.training.driver import run_training

    run_dir = HydraConfig.get().runtime.output_dir
    metrics = run_training(cfg, run_dir)
    print(
        f"{run_dir}: AUC {metrics['auc']:.5f}, FPR at TPR 0.9 "
        f"{metrics['fpr_at_tpr']['0.9']['fpr']:.2e}, bogus per night {metrics['bogus_per_night']:.0f}"
    )
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    metrics = train(cfg)
    return float(metrics["auc"])


if __name__ == "__main__":
    main()
