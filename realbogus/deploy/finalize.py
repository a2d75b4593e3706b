"""Finish a training run for deployment: calibration, reliability diagram, model card."""

from __future__ import annotations

import os
from pathlib import Path

from realbogus.errors import DataError

__all__ = ["finalize_run"]


def finalize_run(run_dir: str | os.PathLike, network=None) -> dict:
    """Calibrate a finished run and give its model a card.

    Run after the evaluation (it reads ``validation_predictions.csv``, ``predictions.csv``,
    ``metrics.json``, ``run_config.yaml`` and ``model.keras``). Writes, atomically:

    - ``calibration.json``: the temperature fitted on the validation predictions, with Brier
      score, NLL and ECE before and after on the validation and the test predictions;
    - ``reliability.png``: the reliability diagram of the test predictions, before and after;
    - ``model_card.json``, and the same card inside ``model.keras``, with the model version
      (:func:`realbogus.deploy.card.model_version`) of the weights and the card.

    Parameters
    ----------
    run_dir
        The run folder.
    network
        The trained network, to count its parameters (default: loaded from ``model.keras``).

    Returns
    -------
    dict
        The model card.
    """
    from realbogus.deploy.calibration import calibrate_predictions, save_reliability
    from realbogus.deploy.card import MODEL_FILE, VERSION_FIELD, build_card, model_version, write_card
    from realbogus.evaluation.report import read_predictions
    from realbogus.io import save_json

    run_dir = Path(run_dir)
    validation_path = run_dir / "validation_predictions.csv"
    if not validation_path.is_file():
        raise DataError(f"{validation_path}: no such file (needed to fit the calibration)")
    if not (run_dir / MODEL_FILE).is_file():
        raise DataError(f"{run_dir / MODEL_FILE}: no such file")
    validation = read_predictions(validation_path)
    test = read_predictions(run_dir)
    calibration = calibrate_predictions(validation, test)
    save_json(run_dir / "calibration.json", calibration)
    save_reliability(run_dir / "reliability.png", test["score"], test["label"], calibration["temperature"],
                     n_bins=calibration["n_bins"], title=f"{run_dir.resolve().name}: test split "
                     f"({calibration['test']['n_real']} real, {calibration['test']['n_bogus']} bogus)")
    if network is None:
        from realbogus.models import load_model

        network = load_model(run_dir / MODEL_FILE)
    card = build_card(run_dir, calibration, n_parameters=int(network.count_params()), predictions=test)
    card[VERSION_FIELD] = model_version(network, card)
    write_card(run_dir, card)
    return card
