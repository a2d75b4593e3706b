"""Every comparison of the paper on our data: ``python -m realbogus.reproduce [scale=smoke|quick|paper]``.

``make reproduce-figures SCALE=quick`` runs this. Three steps, each resumable:

1. **runs**: every training run behind a figure (``runs`` in ``conf/reproduce.yaml``; each an
   ``experiment=`` config plus the scale's overrides) that has not finished yet, one after the
   other, each an ordinary ``python -m realbogus.train`` in ``<runs_dir>/<run_name>`` with its
   log in ``<runs_dir>/logs/``. Finished runs are reused; an interrupted one resumes. At
   ``scale=quick`` the runs live in ``experiments/train``, so the headline run and the
   ``experiment=labels_*`` runs a user has already done count. Each finished run is also
   copied, compactly, into ``archive_dir`` (predictions, curves, config; no weights:
   :mod:`realbogus.evaluation.run_archive`); a planned run whose folder is missing is restored
   from its copy instead of retrained, so the committed copies of ``scale=quick`` redraw the
   report on a fresh clone (``draw_only=true``) and let the runs be finished on another machine.
2. **sweep**: the label-noise robustness study (``python -m realbogus.noise_sweep`` at the same
   scale), which skips its finished cells.
3. **draw**: the figures (PNG and PDF) and their numbers (CSV) into ``figures_dir``, all from the
   runs' saved predictions, and the report (``report``, Markdown) with the paper's numbers
   beside ours.

Figures: ``stamp_gallery`` (1), ``fig2_models_data`` (simple/complex x all/mix/each),
``fig3a_label_handling`` (keep/remove/unlabel), ``fig3b_losses`` (CE, CE+ECH, CE+VAT,
CE+ECH+VAT), ``fig4_label_errors`` (the out-of-fold label-error analysis), ``fig5_robustness``
(the noise sweep), ``fig6_summary`` (AUC, FPR at TPR 0.9 and bogus per night per method),
``fig7_pass_rates`` (each method's pass rate per bogus kind and per S/N bin at TPR 0.9),
``fig8_learning_curves`` (validation loss and FPR at TPR 0.9 against the step) and ``ztf_check``
(the paper's method on real ZTF alerts, where they exist).

Beside every comparison: the oracle floor of the simulated data
(:func:`realbogus.evaluation.floor.oracle_floor`, hosts knowable and S/N only) as table rows
and as a marker in every ROC figure; the summary rows named in ``seeded`` at every seed of
``reproduce.seeds`` (mean and spread, :func:`aggregate_seeds`); the authors' simple baseline as
they trained it (``experiment=paper_baseline``) and their objective as their scripts ran it
(``loss=ce_ech_vat_as_run``).
"""

from __future__ import annotations

import csv
import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from realbogus.errors import ConfigError, DataError, report_errors
from realbogus.noise_sweep import compose_train, run_logged
from realbogus.rundir import RunDir

__all__ = ["Run", "FIGURES", "FLOOR_ROWS", "plan_runs", "run_all", "draw_figures", "aggregate_seeds", "reproduce",
           "main"]

FIGURES = ("gallery", "models_data", "label_handling", "losses", "label_errors", "robustness", "summary", "ztf",
           "pass_rates", "learning_curves")
#: Rows of the oracle floor in the tables, by ``confusable_reals`` of
#: :func:`realbogus.evaluation.floor.oracle_floor`: hosts knowable (a lower bound) and S/N only (an estimate).
FLOOR_ROWS = {"floor (oracle)": "hostless", "floor (oracle, S/N only)": "all"}


@dataclass(frozen=True)
class Run:
    """One training run behind a figure."""

    figure: str
    label: str  # legend label in the figure
    overrides: tuple[str, ...]
    run_dir: Path
    epochs: int
    sensor: int | None = None  # the sensor of a per-sensor ("each") run
    seed: int = 0


# --------------------------------------------------------------------------------------------
# planning


def _needed_figures(cfg: DictConfig) -> set[str]:
    """Figures whose runs are needed: those asked for, and those the summary, the label-error
    analysis and the real-data check draw on."""
    asked = set(cfg.figures)
    unknown = asked - set(FIGURES)
    if unknown:
        raise ConfigError(f"figures: {sorted(unknown)} not among {', '.join(FIGURES)}")
    need = asked & set(cfg.runs)
    if asked & {"summary", "pass_rates", "learning_curves"}:  # the last two draw the summary's runs
        need |= {str(fig) for fig, _ in cfg.summary.values()}
    if asked & {"label_errors", "ztf"}:
        need.add(str(cfg.summary[cfg.method][0]))
    return need


def _seeds(cfg: DictConfig) -> list[int]:
    """Seeds of the rows in ``seeded``: ``reproduce.seeds``, always with ``seed`` (the other rows' seed) first."""
    extra = [int(s) for s in (cfg.reproduce.get("seeds") or [])]
    return [int(cfg.seed), *sorted(set(extra) - {int(cfg.seed)})]


def _plan_entry(cfg: DictConfig, figure: str, label: str, overrides, seed: int) -> list[Run]:
    """The runs of one legend entry at one seed (one per sensor for "each")."""
    scale = cfg.reproduce
    base = [*map(str, scale.train_overrides), f"seed={seed}"]
    small = [*map(str, scale.small_data_overrides)]
    sensors = [int(s) for s in scale.each_sensors]
    overrides = [*map(str, overrides)]
    subset = next((o.split("=", 1)[1] for o in overrides if o.startswith("data_subset=")), "all")
    variants = [(None, [])]
    if subset == "each":
        if not sensors:
            raise ConfigError("reproduce.each_sensors is empty: the 'each' runs need sensors")
        variants = [(s, [f"data_subset.sensors=[{s}]"]) for s in sensors]
    out = []
    for sensor, extra in variants:
        full = [*base, *(small if subset != "all" else []), *overrides, *extra]
        train_cfg = compose_train(full)
        out.append(Run(figure, label, tuple(full), Path(cfg.runs_dir) / str(train_cfg.run_name),
                       int(train_cfg.trainer.epochs), sensor, seed))
    return out


def plan_runs(cfg: DictConfig) -> list[Run]:
    """Every run of the needed figures, with the folder its training config leads to.

    A run that two figures share (the same config) appears once per figure with the same
    ``run_dir``, and is trained once. The runs of the summary rows named in ``seeded`` are
    planned at every seed of ``reproduce.seeds``, and so is any entry of another figure that is
    the same run (complex + CE is both "complex, all" and "CE"); every other run at ``seed``.
    """
    need = _needed_figures(cfg)
    first = {}
    for figure, entries in cfg.runs.items():
        if figure in need:
            for label, overrides in entries.items():
                first[(str(figure), str(label))] = (overrides, _plan_entry(cfg, str(figure), str(label), overrides,
                                                                           int(cfg.seed)))
    seeded_dirs = {r.run_dir for row in (cfg.get("seeded") or []) if row in cfg.summary
                   for r in first.get(tuple(map(str, cfg.summary[row])), (None, []))[1]}
    out = []
    for (figure, label), (overrides, runs) in first.items():
        out += runs
        if any(r.run_dir in seeded_dirs for r in runs):
            for seed in _seeds(cfg)[1:]:
                out += _plan_entry(cfg, figure, label, overrides, seed)
    return out


def _unique(runs: list[Run]) -> list[Run]:
    seen: dict[Path, Run] = {}
    for run in runs:
        seen.setdefault(run.run_dir, run)
    return list(seen.values())


# --------------------------------------------------------------------------------------------
# running


def train_command(run: Run, progress: str) -> list[str]:
    """The training command of ``run`` (the one a user would type, plus its folder)."""
    return [sys.executable, "-m", "realbogus.train", *run.overrides, f"hydra.run.dir={run.run_dir}",
            f"trainer.progress={progress}"]


def _archive_dir(cfg: DictConfig) -> Path | None:
    path = cfg.get("archive_dir")
    return Path(str(path)) if path else None


def restore_archived(cfg: DictConfig, runs: list[Run]) -> list[Run]:
    """Restore, from ``archive_dir``, each planned run whose folder holds no run; return them.

    An archive is used only if its run is finished for the planned number of epochs and its
    config is the one the run would train (the resume rule of :mod:`realbogus.rundir`);
    otherwise the run is trained, and the reason printed.
    """
    from realbogus.evaluation.run_archive import restore_planned

    root = _archive_dir(cfg)
    if root is None:
        return []
    restored = []
    for run in _unique(runs):
        outcome = restore_planned(root, run.run_dir, run.epochs, lambda run=run: compose_train(list(run.overrides)))
        if outcome == "restored":
            restored.append(run)
        elif outcome:
            print(outcome)
    if restored:
        print(f"restored {len(restored)} finished run(s) from {root} (predictions and curves; no weights)")
    return restored


def archive_finished(cfg: DictConfig, runs: list[Run]) -> list[Path]:
    """Archive every finished run whose archive is missing or older than its predictions."""
    from realbogus.evaluation.run_archive import archive_if_changed

    root = _archive_dir(cfg)
    if root is None:
        return []
    written = [p for p in (archive_if_changed(root, r.run_dir, r.epochs) for r in _unique(runs)) if p is not None]
    if written:
        print(f"archived {len(written)} finished run(s) in {root}")
    return written


def run_all(cfg: DictConfig, runs: list[Run]) -> list[Run]:
    """Train every unfinished run, one after the other (archiving each as it finishes); return
    those that failed."""
    from realbogus.rundir import RunDir

    todo = [r for r in _unique(runs) if not RunDir(r.run_dir).is_done(r.epochs)]
    n_all = len(_unique(runs))
    print(f"{n_all - len(todo)} of {n_all} runs finished already; {len(todo)} to train")
    failed = []
    logs = Path(cfg.runs_dir) / "logs"
    # a line per run, not a bar: each run takes minutes, and the output is usually a log file
    for k, run in enumerate(todo, 1):
        print(f"run {k}/{len(todo)}: {run.run_dir.name} (log {logs / (run.run_dir.name + '.log')})", flush=True)
        t0 = time.time()
        code = run_logged(train_command(run, str(cfg.progress)), logs / f"{run.run_dir.name}.log", echo=False)
        status = "done" if code == 0 else f"FAILED (exit {code}; log {logs / (run.run_dir.name + '.log')})"
        print(f"{run.run_dir.name}: {status} in {time.time() - t0:.0f} s", flush=True)
        if code:
            failed.append(run)
        else:
            archive_finished(cfg, [run])
    return failed


def run_sweep(cfg: DictConfig, aggregate_only: bool = False) -> int:
    """The noise sweep of this scale (its own command, which skips finished cells)."""
    cmd = [sys.executable, "-m", "realbogus.noise_sweep", f"scale={cfg.scale_name}", f"out_dir={cfg.sweep_dir}",
           *map(str, cfg.reproduce.sweep_overrides)]
    if aggregate_only:
        cmd.append("aggregate_only=true")
    print("$ " + shlex.join(cmd[1:]))
    return run_logged(cmd, Path(cfg.runs_dir) / "logs" / "noise_sweep.log", echo=True)


# --------------------------------------------------------------------------------------------
# drawing


def _finished(run: Run) -> bool:
    from realbogus.rundir import RunDir

    return RunDir(run.run_dir).is_done(run.epochs)


@functools.lru_cache(maxsize=64)
def _read_predictions(path: Path, mtime_ns: int) -> dict[str, np.ndarray]:
    """A run's predictions.csv, read once per version of the file (several figures share runs)."""
    from realbogus.evaluation.report import read_predictions

    return read_predictions(path)


def _predictions(runs: list[Run], sensors: list[int] | None) -> dict[str, np.ndarray] | None:
    """Test predictions of a legend entry: per-sensor runs concatenated; others cut to ``sensors``."""
    if not runs or not all(_finished(r) for r in runs):
        return None
    parts = []
    for run in runs:
        csv_path = RunDir(run.run_dir).predictions_path
        p = _read_predictions(csv_path, csv_path.stat().st_mtime_ns)
        if run.sensor is not None:
            keep = p["sensor_id"] == run.sensor
        elif sensors is not None:
            keep = np.isin(p["sensor_id"], sensors)
        else:
            keep = np.ones(p["score"].size, bool)
        parts.append({k: np.asarray(v)[keep] for k, v in p.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _metrics_row(label: str, pred: dict, runs: list[Run], n_bootstrap: int, seed: int) -> dict:
    from realbogus.evaluation.metrics import compute_metrics, roc

    m = compute_metrics(pred["score"], pred["label"], n_bootstrap=n_bootstrap, seed=seed)
    fpr, tpr, _ = roc(pred["score"], pred["label"])
    f9 = m["fpr_at_tpr"]["0.9"]
    ci = lambda v, i: (v[i] if v else float("nan"))  # noqa: E731
    return {
        "method": label, "n_runs": len(runs), "n_real": m["n_real"], "n_bogus": m["n_bogus"],
        "auc": m["auc"], "auc_lo": ci(m["auc_ci"], 0), "auc_hi": ci(m["auc_ci"], 1),
        "fpr_at_tpr_0.9": f9["fpr"], "fpr_lo": ci(f9["ci"], 0), "fpr_hi": ci(f9["ci"], 1),
        "bogus_per_night": m["bogus_per_night"], "bogus_per_night_lo": ci(m["bogus_per_night_ci"], 0),
        "bogus_per_night_hi": ci(m["bogus_per_night_ci"], 1),
        "tpr_at_fpr_0.001": m["tpr_at_fpr"]["0.001"]["tpr"] if "0.001" in m["tpr_at_fpr"] else float("nan"),
        "run_dirs": " ".join(str(r.run_dir) for r in runs),
        "_roc": (fpr, tpr),
        "_pred": pred,
    }


def _save_table(path: Path, rows: list[dict]) -> None:
    from realbogus.io import atomic_write

    if not rows:
        return
    keys = [k for k in rows[0] if not k.startswith("_")]
    with atomic_write(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(keys)
        for r in rows:
            w.writerow([f"{r[k]:.6g}" if isinstance(r[k], float) else r[k] for k in keys])


def _mean_roc(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """ROC of several seeds: at each TPR the mean of their FPRs (each the first point reaching it),
    so the curve passes through the table's mean FPR at TPR 0.9."""
    if len(curves) == 1:
        return curves[0]
    grid = np.union1d(np.linspace(0.0, 1.0, 2001), [0.9])
    fprs = []
    for fpr, tpr in curves:
        j = np.minimum(np.searchsorted(np.asarray(tpr), grid, side="left"), len(tpr) - 1)
        fprs.append(np.asarray(fpr)[j])
    return np.mean(fprs, axis=0), grid


def aggregate_seeds(rows: list[dict]) -> dict:
    """One table row from the rows of the same method at several seeds.

    The value of each metric is the mean over the seeds. Its interval spans both the mean of the
    seeds' 95% bootstrap intervals (the test set is the same for every seed, so their test-set
    errors move together and the interval of the mean is about the mean of the intervals) and
    the range of the seeds' own values: the wider of the test-set and the seed-to-seed
    uncertainty. ``n_seeds``, ``seeds`` and the per-seed FPRs at TPR 0.9 are kept; a single row is
    returned as it is (with ``n_seeds`` 1).
    """
    if len(rows) == 1:
        return {**rows[0], "n_seeds": 1, "seeds": str(rows[0].get("_seed", "")),
                "fpr_at_tpr_0.9_per_seed": f"{rows[0]['fpr_at_tpr_0.9']:.6g}"}
    out = dict(rows[0])
    for key, lo, hi in (("auc", "auc_lo", "auc_hi"), ("fpr_at_tpr_0.9", "fpr_lo", "fpr_hi"),
                        ("bogus_per_night", "bogus_per_night_lo", "bogus_per_night_hi")):
        values = np.array([r[key] for r in rows], float)
        out[key] = float(np.mean(values))
        out[lo] = float(min(np.mean([r[lo] for r in rows]), values.min()))
        out[hi] = float(max(np.mean([r[hi] for r in rows]), values.max()))
    out["tpr_at_fpr_0.001"] = float(np.mean([r["tpr_at_fpr_0.001"] for r in rows]))
    out["n_runs"] = sum(int(r["n_runs"]) for r in rows)
    out["run_dirs"] = " ".join(r["run_dirs"] for r in rows)
    out["n_seeds"] = len(rows)
    out["seeds"] = " ".join(str(r.get("_seed", "")) for r in rows)
    out["fpr_at_tpr_0.9_per_seed"] = " ".join(f"{r['fpr_at_tpr_0.9']:.6g}" for r in rows)
    out["_roc"] = _mean_roc([r["_roc"] for r in rows])
    out["_pred"] = rows[0]["_pred"]  # the first seed's predictions (pass rates)
    out["_seed_rows"] = rows
    return out


def _save_columns(path: Path, cols: dict[str, list]) -> None:
    """Equal-length columns as a quoted CSV (method names hold commas)."""
    from realbogus.io import atomic_write

    with atomic_write(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(list(cols))
        for values in zip(*cols.values()):
            w.writerow(["" if isinstance(v, (float, np.floating)) and np.isnan(v)
                        else f"{v:.6g}" if isinstance(v, (float, np.floating)) else v for v in values])


def comparison(cfg: DictConfig, runs: list[Run], entries: list[tuple[str, str, str]],
               sensors: list[int] | None = None) -> list[dict]:
    """Metrics rows (with ROC curves) of ``entries`` (row label, figure, legend label of its runs)
    whose runs have finished, one row per entry over its seeds (:func:`aggregate_seeds`); the
    others are left out with a note, as are the seeds not finished yet."""
    rows = []
    for row_label, figure, label in entries:
        members = [r for r in runs if r.figure == figure and r.label == label]
        per_seed = []
        for seed in sorted({r.seed for r in members}, key=lambda v: (v != int(cfg.seed), v)):
            of_seed = [r for r in members if r.seed == seed]
            pred = _predictions(of_seed, sensors)
            if pred is None:
                print(f"{figure}: '{label}' has no finished run at seed {seed} yet; left out")
                continue
            per_seed.append({**_metrics_row(row_label, pred, of_seed, int(cfg.n_bootstrap), int(cfg.seed)),
                             "_seed": seed})
        if per_seed:
            rows.append(aggregate_seeds(per_seed))
    return rows


def _test_rows(test_path: Path, sensors: list[int]) -> np.ndarray:
    """Rows of ``test_path`` from ``sensors`` (the stamps the "each" comparison is scored on)."""
    from realbogus.data.format import open_dataset

    with open_dataset(test_path) as ds:
        return np.flatnonzero(np.isin(ds.column("sensor_id"), sensors))


def _floors(cfg: DictConfig, sensors: list[int] | None = None) -> dict[str, dict] | None:
    """The oracle floor of this scale's data (:data:`FLOOR_ROWS`, both variants), on the test rows
    of ``sensors`` or on the whole test split; None when the data are not simulated (no truth)."""
    from realbogus.errors import RealbogusError
    from realbogus.evaluation.floor import oracle_floor
    from realbogus.simulation import dataset_paths

    train, test = dataset_paths(compose_train([*map(str, cfg.reproduce.train_overrides)]).data)
    if not (train.is_file() and test.is_file()):
        print(f"floor: {train.parent} holds no train.h5 and test.h5; left out")
        return None
    try:
        rows = _test_rows(test, sensors) if sensors is not None else None
        return {name: {**oracle_floor(train, test, confusable_reals=reals, n_bootstrap=int(cfg.n_bootstrap),
                                      seed=int(cfg.seed), test_rows=rows), "train_path": str(train),
                       "test_path": str(test)}
                for name, reals in FLOOR_ROWS.items()}
    except (RealbogusError, ValueError) as exc:  # real data without ground truth, or no confusable kinds
        print(f"floor: {exc}; left out")
        return None


def _floor_row(name: str, floor: dict) -> dict:
    """A table row of a floor, with the columns of :func:`_metrics_row` (no runs)."""
    nan = float("nan")
    lo, hi = floor.get("fpr_ci") or (nan, nan)
    alo, ahi = floor.get("auc_ci") or (nan, nan)
    return {"method": name, "n_runs": 0, "n_real": floor["n_test_real"], "n_bogus": floor["n_test_bogus"],
            "auc": floor["auc"], "auc_lo": alo, "auc_hi": ahi, "fpr_at_tpr_0.9": floor["fpr"], "fpr_lo": lo,
            "fpr_hi": hi, "bogus_per_night": floor["fpr"] * 1e6, "bogus_per_night_lo": lo * 1e6,
            "bogus_per_night_hi": hi * 1e6, "tpr_at_fpr_0.001": nan, "run_dirs": "", "n_seeds": 0, "seeds": "",
            "fpr_at_tpr_0.9_per_seed": "", "_floor": floor}


def _roc_figure(rows: list[dict], path: Path, title: str, floors: dict | None = None) -> list[Path]:
    from realbogus.evaluation.plots import add_floor_points, roc_figure, save_figure

    def name(r):
        return r["method"] + (f" (mean of {r['n_seeds']} seeds)" if r.get("n_seeds", 1) > 1 else "")

    fig = roc_figure({name(r): r["_roc"] for r in rows if "_floor" not in r}, title=title)
    if floors:
        add_floor_points(fig, floors)
    return save_figure(fig, path)


def _summary_figure(rows: list[dict], path: Path, floors: list[dict] | None = None) -> list[Path]:
    """Bogus per night at TPR 0.9 per method, with its bootstrap interval, log scale; floors
    (rows of :func:`_floor_row`) as vertical lines where they are above 0."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    from realbogus.evaluation.plots import save_figure

    fig = Figure(figsize=(7.5, 0.55 * len(rows) + 1.3), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    val = np.array([r["bogus_per_night"] for r in rows], float)
    lo = np.array([r["bogus_per_night_lo"] for r in rows], float)
    hi = np.array([r["bogus_per_night_hi"] for r in rows], float)
    floor = max(np.nanmin(np.where(val > 0, val, np.nan)) / 3, 1.0) if (val > 0).any() else 1.0
    val, lo, hi = (np.maximum(np.nan_to_num(a, nan=floor), floor) for a in (val, lo, hi))
    ax.barh(y, val, color=[f"C{i}" for i in range(len(rows))], alpha=0.8)
    ax.errorbar(val, y, xerr=[val - lo, hi - val], fmt="none", ecolor="k", capsize=3, lw=1)
    for yi, v, h in zip(y, val, hi):
        ax.text(h * 1.1, yi, f"{v:,.0f}", va="center", fontsize=8)  # beyond the interval's end
    ax.set_yticks(y, [r["method"] for r in rows], fontsize=8)
    ax.set_xscale("log")
    left = float(np.min(lo)) / 1.5
    for i, f in enumerate(floors or []):
        if f["bogus_per_night"] > 0:
            left = min(left, f["bogus_per_night"] / 1.5)
            ax.axvline(f["bogus_per_night"], color="k", ls=("--", ":")[i % 2], lw=1,
                       label=f"{f['method']}: {f['bogus_per_night']:,.0f}")
        else:
            ax.plot([], [], " ", label=f"{f['method']}: 0 (no bogus need pass)")
    if floors:
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlim(left, float(np.max(hi)) * 2.0)
    ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels collide
    ax.set_xlabel("bogus candidates a night kept at TPR 0.9\n(of 10^6 bogus detections; bars: 95% interval)")
    ax.set_title("Candidates a night for a human to vet", fontsize=10)
    return save_figure(fig, path)


def _label_error_figure(cfg: DictConfig, runs: list[Run], out: Path) -> dict | None:
    from realbogus.evaluation.plots import save_figure
    from realbogus.io import save_csv_table
    from realbogus.label_errors.report import analysis_figure, analysis_table

    figure, label = cfg.summary[cfg.method]
    run = next((r for r in runs if r.figure == figure and r.label == label), None)
    if run is None or not (run.run_dir / "label_errors.csv").is_file():
        print("label_errors: the paper's method has no label_errors.csv yet; left out")
        return None
    with open(run.run_dir / "label_errors.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    scores = np.array([float(r["oof_score"]) for r in rows])
    given = np.array([int(r["given_label"]) for r in rows])
    truth = np.array([int(r["true_label"]) for r in rows]) if rows and "true_label" in rows[0] else None
    table = analysis_table(scores, given, truth)
    save_csv_table(out / "fig4_label_errors.csv", table, float_format="%.6g")
    save_figure(analysis_figure(table, scores, given, title="Label errors against the out-of-fold score"),
                out / "fig4_label_errors.png")
    with open(run.run_dir / "label_error_report.json") as fh:
        report = json.load(fh)
    return {"table": table, "report": report, "run_dir": run.run_dir}


def _read_summary_csv(path: Path) -> list[dict]:
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            entry = {}
            for k, v in row.items():
                if k in ("method", "noise_mode", "seeds"):
                    entry[k] = v
                else:
                    try:
                        number = float(v) if v != "" else float("nan")
                    except ValueError:
                        entry[k] = v
                        continue
                    # counts and noise multiples read back as the integers they were written as
                    entry[k] = int(number) if number.is_integer() and k in ("n_seeds", "noise_rate") else number
            out.append(entry)
    return out


def _robustness_figure(cfg: DictConfig, out: Path) -> list[dict] | None:
    from realbogus.evaluation.plots import save_figure
    from realbogus.label_noise.robustness import robustness_figure
    from realbogus.noise_sweep import METHOD_LABELS

    path = Path(cfg.sweep_dir) / "summary.csv"
    if not path.is_file():
        print(f"robustness: {path} does not exist (run python -m realbogus.noise_sweep scale={cfg.scale_name}); left out")
        return None
    summary = _read_summary_csv(path)
    if not summary:
        return None
    shutil.copyfile(path, out / "fig5_robustness.csv")
    save_figure(robustness_figure(summary, labels=METHOD_LABELS), out / "fig5_robustness.png")
    return summary


def _ztf_check(cfg: DictConfig, runs: list[Run], out: Path) -> dict | None:
    figure, label = cfg.summary[cfg.method]
    run = next((r for r in runs if r.figure == figure and r.label == label), None)
    ztf = Path(str(cfg.ztf))
    if not ztf.is_file():
        print(f"ztf: {ztf} does not exist; real-data check left out")
        return None
    if run is None or not _finished(run):
        print("ztf: the paper's method has no finished run yet; left out")
        return None
    if not RunDir(run.run_dir).model_path.is_file():
        print(f"ztf: {run.run_dir} has no model (restored from its archive); real-data check left out")
        return None
    try:
        from realbogus.evaluation.realdata import check_ztf
    except ImportError:
        return None
    return check_ztf(run.run_dir, ztf, out / "ztf_check")


def _pass_rates(cfg: DictConfig, rows: list[dict], floors: dict | None, out: Path) -> dict | None:
    """Figure 7: each summary method's (and the oracles') pass rate per bogus kind and per S/N bin at
    TPR 0.9, from the first seed's predictions; numbers in ``fig7_pass_rates.csv``."""
    from realbogus.errors import RealbogusError
    from realbogus.evaluation.floor import method_pass_rates, oracle_pass_rates
    from realbogus.evaluation.plots import pass_rate_heatmap, save_figure

    if not floors:
        print("pass_rates: no simulated ground truth (see floor); left out")
        return None
    some = next(iter(floors.values()))
    train, test = some["train_path"], some["test_path"]
    tables = {}
    try:
        for r in rows:
            if "_floor" not in r and "index" in r["_pred"]:
                tables[r["method"]] = method_pass_rates(r["_pred"], test)
        for name, reals in FLOOR_ROWS.items():
            tables[name] = oracle_pass_rates(train, test, confusable_reals=reals)
    except (RealbogusError, ValueError) as exc:
        print(f"pass_rates: {exc}; left out")
        return None
    cols: dict[str, list] = {k: [] for k in ("method", "table", "group", "n_bogus", "n_bogus_passed", "bogus_pass_rate",
                                             "bogus_pass_rate_lo", "bogus_pass_rate_hi", "share_of_false_positives",
                                             "n_real", "n_real_passed", "real_pass_rate", "threshold")}
    for name, t in tables.items():
        for which in ("by_kind", "by_snr"):
            b = t[which]
            for i in range(len(b["group"])):
                for key, value in (("method", name), ("table", which[3:]), ("group", str(b["group"][i])),
                                   ("n_bogus", b["n_bogus"][i]), ("n_bogus_passed", b["n_bogus_passed"][i]),
                                   ("bogus_pass_rate", b["fpr"][i]), ("bogus_pass_rate_lo", b["fpr_lo"][i]),
                                   ("bogus_pass_rate_hi", b["fpr_hi"][i]), ("share_of_false_positives", b["share"][i]),
                                   ("n_real", b["n_real"][i]), ("n_real_passed", b["n_real_passed"][i]),
                                   ("real_pass_rate", b["tpr"][i]), ("threshold", t["threshold"])):
                    cols[key].append(value)
    _save_columns(out / "fig7_pass_rates.csv", cols)
    save_figure(pass_rate_heatmap(tables, title="Called real at each method's threshold for TPR 0.9 "
                                  f"(seed {cfg.seed}; test split)"), out / "fig7_pass_rates")
    return tables


def _learning_curves(cfg: DictConfig, runs: list[Run], out: Path) -> list[dict] | None:
    """Figure 8: validation loss and validation FPR at TPR 0.9 against the step, for the runs of
    the summary rows (every seed); numbers in ``fig8_learning_curves.csv``."""
    from realbogus.evaluation.plots import learning_curve_figure, save_figure
    from realbogus.reporting import learning_curve

    entries, seen = [], set()
    for row, (figure, label) in cfg.summary.items():
        members = [r for r in runs if r.figure == str(figure) and r.label == str(label) and r.sensor is None]
        n_seeds = len({r.seed for r in members})
        for r in members:
            if r.run_dir in seen or not _finished(r):
                continue
            curve = learning_curve(r.run_dir)
            if curve is None:
                continue
            seen.add(r.run_dir)
            name = str(row) + (f" (seed {r.seed})" if n_seeds > 1 else "")
            entries.append({"method": str(row), "name": name, "seed": r.seed, "run_dir": r.run_dir, **curve})
    if not entries:
        print("learning_curves: no finished run with a history.csv; left out")
        return None
    cols: dict[str, list] = {k: [] for k in ("method", "seed", "run", "epoch", "step", "val_loss",
                                             "val_fpr_at_tpr_0.9")}
    for e in entries:
        for i in range(len(e["epoch"])):
            for key, value in (("method", e["method"]), ("seed", e["seed"]), ("run", e["run_dir"].name),
                               ("epoch", e["epoch"][i]), ("step", e["step"][i]), ("val_loss", e["val_loss"][i]),
                               ("val_fpr_at_tpr_0.9", e["val_fpr"][i] if e["val_fpr"] is not None else float("nan"))):
                cols[key].append(value)
    _save_columns(out / "fig8_learning_curves.csv", cols)
    fig = learning_curve_figure({e["name"]: {"step": e["step"], "val_loss": e["val_loss"], "val_fpr": e["val_fpr"]}
                                 for e in entries}, title="Validation curves of the summary's runs")
    save_figure(fig, out / "fig8_learning_curves.png")
    return entries


def draw_figures(cfg: DictConfig, runs: list[Run]) -> dict:
    """Every figure asked for, from what is on disk; returns the numbers the report needs."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(cfg.figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    asked = set(cfg.figures)
    res: dict = {"run_dirs": [r.run_dir for r in _unique(runs)]}
    if "gallery" in asked:
        from realbogus.plots.gallery import make_gallery

        data = compose_train([*map(str, cfg.reproduce.train_overrides)]).data
        ztf = Path(str(cfg.ztf))
        for fmt in ("png", "pdf"):
            make_gallery(out / f"stamp_gallery.{fmt}", Path(data.dir), ztf if ztf.is_file() else None, fmt=fmt)
        res["gallery"] = True
    sensors = [int(s) for s in cfg.reproduce.each_sensors]
    # the floor of the simulated data, once per reproduction (and once for the "each" sensors' rows)
    res["floor"] = _floors(cfg) if asked & {"label_handling", "losses", "summary", "pass_rates"} else None
    titles = {
        "models_data": f"Network x training data (test rows of sensors {', '.join(map(str, sensors))})",
        "label_handling": "Label handling, complex + CE+ECH+VAT",
        "losses": "Loss combinations, complex network, labels kept",
    }
    names = {"models_data": "fig2_models_data", "label_handling": "fig3a_label_handling", "losses": "fig3b_losses"}
    for figure in ("models_data", "label_handling", "losses"):
        if figure not in asked:
            continue
        entries = [(str(label), figure, str(label)) for label in cfg.runs[figure]]
        rows = comparison(cfg, runs, entries, sensors if figure == "models_data" else None)
        floors = _floors(cfg, sensors) if figure == "models_data" else res["floor"]
        if figure == "models_data":
            res["floor_each_sensors"] = floors
        if rows:
            rows += [_floor_row(name, f) for name, f in (floors or {}).items()]
            _save_table(out / f"{names[figure]}.csv", rows)
            _roc_figure(rows, out / f"{names[figure]}.png", titles[figure], floors)
        res[figure] = rows
    if "label_errors" in asked:
        res["label_errors"] = _label_error_figure(cfg, runs, out)
    if "robustness" in asked:
        res["robustness"] = _robustness_figure(cfg, out)
    summary_rows = None
    if asked & {"summary", "pass_rates"}:
        summary_rows = comparison(cfg, runs, [(str(label), str(fig), str(entry))
                                              for label, (fig, entry) in cfg.summary.items()])
    if "summary" in asked:
        rows = list(summary_rows)
        floor_rows = [_floor_row(name, f) for name, f in (res["floor"] or {}).items()]
        base = next((r for r in rows if r["method"] == cfg.baseline), None)
        for r in rows + floor_rows:
            r["reduction_vs_baseline"] = (base["bogus_per_night"] / r["bogus_per_night"]
                                          if base and r["bogus_per_night"] > 0 else float("nan"))
        if rows:
            _save_table(out / "fig6_summary.csv", rows + floor_rows)
            _summary_figure(rows, out / "fig6_summary.png", floor_rows)
        res["summary"] = rows + floor_rows if rows else rows
    if "pass_rates" in asked:
        res["pass_rates"] = _pass_rates(cfg, summary_rows or [], res["floor"], out)
    if "learning_curves" in asked:
        res["learning_curves"] = _learning_curves(cfg, runs, out)
    if "ztf" in asked:
        res["ztf"] = _ztf_check(cfg, runs, out)
    return res


# --------------------------------------------------------------------------------------------
# the command


def _check(cfg: DictConfig) -> None:
    for figure in cfg.runs:
        if figure not in FIGURES:
            raise ConfigError(f"runs.{figure}: not a figure ({', '.join(FIGURES)})")
    for label, pair in cfg.summary.items():
        if len(pair) != 2 or pair[0] not in cfg.runs or pair[1] not in cfg.runs[pair[0]]:
            raise ConfigError(f"summary.{label}: {list(pair)} is not [figure, legend label] of a run in runs")
    if cfg.baseline not in cfg.summary or cfg.method not in cfg.summary:
        raise ConfigError("baseline and method must name rows of summary")
    for key in ("authors_baseline", "as_run"):
        if cfg.get(key) and cfg[key] not in cfg.summary:
            raise ConfigError(f"{key}: {cfg[key]!r} is not a row of summary")
    for row in cfg.get("seeded") or []:
        if row not in cfg.summary:
            raise ConfigError(f"seeded: {row!r} is not a row of summary")


@report_errors
def reproduce(cfg: DictConfig) -> dict:
    """Run what is missing (unless ``draw_only``), then draw the figures and write the report."""
    from realbogus.reporting import write_report

    _check(cfg)
    t0 = time.time()
    runs = plan_runs(cfg)
    if cfg.dry_run:
        for run in _unique(runs):
            print(shlex.join(train_command(run, str(cfg.progress))[1:]))
        return {}
    failed: list[Run] = []
    sweep_code = 0
    restore_archived(cfg, runs)
    archive_finished(cfg, runs)
    if not cfg.draw_only:
        failed = run_all(cfg, runs)
        if "robustness" in cfg.figures:
            sweep_code = run_sweep(cfg)
    results = draw_figures(cfg, runs)
    if set(cfg.figures) >= set(FIGURES):
        write_report(cfg, results, wall_seconds=time.time() - t0)
        print(f"figures in {cfg.figures_dir}; report {cfg.report} ({time.time() - t0:.0f} s)")
    else:  # a report of some figures would drop the others' sections
        print(f"figures in {cfg.figures_dir}; {cfg.report} left as it was (only some figures drawn; "
              f"{time.time() - t0:.0f} s)")
    if failed or sweep_code:
        names = ", ".join(r.run_dir.name for r in failed) or "the noise sweep"
        raise DataError(f"not every run finished ({names}); see {Path(cfg.runs_dir) / 'logs'} and rerun to resume")
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="reproduce")
def main(cfg: DictConfig) -> None:
    reproduce(cfg)


if __name__ == "__main__":
    main()
