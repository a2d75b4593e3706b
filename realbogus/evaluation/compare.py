"""Training runs side by side: one row per run folder, finished or still training.

:func:`compare_runs` reads each folder through :class:`realbogus.rundir.RunDir` and
:func:`realbogus.reporting.learning_curve` (never by file name) and returns one row of
:data:`COLUMNS` per run:

``run``
    The folder's name (the path as given where two folders share a name).
``state``
    ``running``, ``interrupted``, ``failed`` or ``done`` (:meth:`RunDir.status`).
``epochs``, ``steps``
    Epochs finished (the last checkpoint) and optimizer steps done: epochs times the steps per
    epoch of :func:`realbogus.reporting.steps_per_epoch` (empty when that is unknown).
``precision``, ``wall_min``
    The arithmetic the run trained in; the wall time of its last session in minutes, as
    ``run_state.json`` records it when the run is done (empty before; a resumed run's earlier
    sessions are not in it).
``val_fpr_at_tpr_0.9_by_epoch``, ``val_loss_by_epoch``, ``val_fpr_at_tpr_0.9_best``
    The validation split's FPR at TPR 0.9 and loss after every epoch (space-separated, 4
    significant digits, from ``history.csv``) and the best FPR of them.
``test_auc``, ``test_fpr_at_tpr_0.9``, ``fpr_lo``, ``fpr_hi``
    From ``metrics.json``, for done runs only: the evaluation of a run that is training on (or
    was stopped after a resume) belongs to an earlier, shorter session.
``command``
    ``python -m realbogus.train <overrides> hydra.run.dir=<folder>``: the overrides Hydra recorded
    for the run's latest session (:meth:`RunDir.overrides`), without the display-only ones
    (:data:`realbogus.rundir.RESULT_NEUTRAL_KEYS`); empty when the folder has no record.

:func:`pass_rate_rows` gives, for a done run, the pass rate per bogus kind and per S/N bin at
TPR 0.9 (:func:`realbogus.evaluation.floor.pass_rates`, ground truth read from the run's data
file), on the validation split by default: recipes are chosen on validation, the test split is
for the final numbers. The command is ``python -m realbogus.compare`` (:mod:`realbogus.compare`).
"""

from __future__ import annotations

import csv
import math
import os
import shlex
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from realbogus.errors import DataError
from realbogus.rundir import RESULT_NEUTRAL_KEYS, RunDir

__all__ = ["COLUMNS", "PASS_RATE_COLUMNS", "SPLITS", "compare_runs", "run_row", "train_command",
           "pass_rate_rows", "save_rows", "markdown", "open_run"]

#: Columns of the table (the names of the recipe-probe table, experiments/figures/recipe_probes.csv).
COLUMNS = ("run", "state", "epochs", "steps", "precision", "wall_min", "val_fpr_at_tpr_0.9_by_epoch",
           "val_loss_by_epoch", "val_fpr_at_tpr_0.9_best", "test_auc", "test_fpr_at_tpr_0.9", "fpr_lo", "fpr_hi",
           "command")
#: Columns of the pass-rate table (long format: one row per run, table and group).
PASS_RATE_COLUMNS = ("run", "table", "group", "n_real", "n_bogus", "tpr", "fpr", "n_bogus_passed", "share")
#: Splits the pass rates can be computed on.
SPLITS = ("validation", "test")
#: The operating point of the table.
TPR = 0.9


def open_run(path: str | os.PathLike) -> RunDir:
    """The run folder at ``path``.

    Raises
    ------
    DataError
        ``path`` is not a folder, or holds neither a run state nor a run config.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such run folder")
    run = RunDir(path)
    if run.state() is None and not run.config_path.is_file():
        raise DataError(f"{path}: not a run folder (no {RunDir.STATE} or {RunDir.CONFIG})")
    return run


def train_command(run: RunDir) -> str:
    """``python -m realbogus.train <overrides> hydra.run.dir=<folder>``, or "" without recorded overrides."""
    overrides = run.overrides()
    if overrides is None:
        return ""
    kept = [o for o in overrides
            if not o.partition("=")[0].lstrip("+~").startswith(RESULT_NEUTRAL_KEYS + ("hydra.",))]
    return " ".join(["python -m realbogus.train", *map(shlex.quote, [*kept, f"hydra.run.dir={run.path}"])])


def _series(values) -> str:
    return "" if values is None else " ".join(f"{v:.4g}" for v in values)


def _best(values) -> float | None:
    if values is None or not np.isfinite(values).any():
        return None
    return float(np.nanmin(values))


def run_row(run: RunDir, name: str | None = None) -> dict:
    """One row of :data:`COLUMNS` for a run folder (see the module docstring)."""
    from realbogus.evaluation.metrics import target_key
    from realbogus.io import read_json
    from realbogus.reporting import learning_curve, steps_per_epoch

    state = run.state() or {}
    status = run.status()
    ckpt = run.checkpoint_state()
    epochs = int(ckpt.get("epoch") or 0)
    spe, _ = steps_per_epoch(run.path)
    trainer = (run.saved_config() or {}).get("trainer") or {}
    wall = state.get("wall_seconds_last_session") if status == "done" else None
    curve = learning_curve(run.path) or {}
    row = {
        "run": name or run.path.name, "state": status, "epochs": epochs,
        "steps": None if spe is None else epochs * spe,
        "precision": state.get("precision") or ckpt.get("precision") or trainer.get("precision"),
        "wall_min": None if wall is None else round(float(wall) / 60.0, 1),
        "val_fpr_at_tpr_0.9_by_epoch": _series(curve.get("val_fpr")),
        "val_loss_by_epoch": _series(curve.get("val_loss")),
        "val_fpr_at_tpr_0.9_best": _best(curve.get("val_fpr")),
        "test_auc": None, "test_fpr_at_tpr_0.9": None, "fpr_lo": None, "fpr_hi": None,
        "command": train_command(run),
    }
    metrics = read_json(run.metrics_path) if status == "done" else None
    if metrics:
        point = (metrics.get("fpr_at_tpr") or {}).get(target_key(TPR)) or {}
        lo, hi = point.get("ci") or (None, None)
        row.update({"test_auc": metrics.get("auc"), "test_fpr_at_tpr_0.9": point.get("fpr"), "fpr_lo": lo,
                    "fpr_hi": hi})
    return row


def _names(runs: Sequence[RunDir]) -> list[str]:
    """Folder names, or the paths as given where two folders share a name."""
    names = [r.path.name for r in runs]
    return [str(r.path) if names.count(n) > 1 else n for r, n in zip(runs, names)]


def compare_runs(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """One row of :data:`COLUMNS` per run folder, in the order given (every folder checked first)."""
    runs = [open_run(p) for p in paths]
    return [run_row(run, name) for run, name in zip(runs, _names(runs))]


def pass_rate_rows(run: RunDir, name: str, split: str = "validation", tpr: float = TPR) -> list[dict]:
    """Rows of :data:`PASS_RATE_COLUMNS`: a done run's pass rates per kind and per S/N bin.

    The threshold is the run's score reaching ``tpr`` on the split's true labels; the truth (kind,
    S/N, true label) comes from the run's data file (``train.h5`` for the validation split, whose
    predictions index its rows; ``test.h5`` for the test split).

    Raises
    ------
    DataError
        The run is not done, or its data file or predictions are missing or lack the truth.
    """
    from realbogus.evaluation.floor import method_pass_rates
    from realbogus.evaluation.report import read_predictions
    from realbogus.simulation import dataset_paths

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if run.status() != "done":
        raise DataError(f"{run.path}: not done, no final {split} predictions yet")
    saved = run.saved_config()
    if saved is None:
        raise DataError(f"{run.path}: no {RunDir.CONFIG} (the run's data file is named there)")
    train_path, test_path = dataset_paths(saved["data"])
    if split == "validation":
        predictions, data = read_predictions(run / RunDir.VALIDATION_PREDICTIONS), train_path
    else:
        predictions, data = read_predictions(run.path), test_path
    result = method_pass_rates(predictions, data, tpr=tpr)
    rows = []
    for table in ("kind", "snr"):
        t = result[f"by_{table}"]
        for i in range(len(t["group"])):
            rows.append({"run": name, "table": table, "group": str(t["group"][i]),
                         **{c: t[c][i] for c in PASS_RATE_COLUMNS[3:]}})
    return rows


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def save_rows(path: str | os.PathLike, rows: Sequence[Mapping], columns: Sequence[str]) -> Path:
    """Write ``rows`` as a quoted CSV of ``columns``, atomically (floats in full, missing values empty)."""
    from realbogus.io import atomic_write

    with atomic_write(path, newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_cell(r.get(c)) for c in columns] for r in rows)
    return Path(path)


def markdown(rows: Sequence[Mapping]) -> str:
    """A short Markdown table of :func:`compare_runs`' rows."""

    def num(v, fmt):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    lines = ["| run | state | epochs | steps | wall (min) | val FPR@0.9 best | val FPR@0.9 last "
             "| test AUC | test FPR@0.9 (95% CI) |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        last = [float(v) for v in r["val_fpr_at_tpr_0.9_by_epoch"].split()[-1:]] or [None]
        ci = "" if r["fpr_lo"] is None else f" ({num(r['fpr_lo'], '{:.2e}')}-{num(r['fpr_hi'], '{:.2e}')})"
        lines.append(f"| {r['run']} | {r['state']} | {r['epochs']} | {num(r['steps'], '{:,}')} | "
                     f"{num(r['wall_min'], '{:.1f}')} | {num(r['val_fpr_at_tpr_0.9_best'], '{:.3g}')} | {num(last[0], '{:.3g}')} | "
                     f"{num(r['test_auc'], '{:.5f}')} | {num(r['test_fpr_at_tpr_0.9'], '{:.2e}')}{ci} |")
    return "\n".join(lines) + "\n"
