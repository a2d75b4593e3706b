"""Every comparison of the paper on our data: ``python -m realbogus.reproduce [scale=smoke|quick|paper]``.

``make reproduce-figures SCALE=quick`` runs this. Three steps, each resumable:

1. **runs**: every training run behind a figure (``runs`` in ``conf/reproduce.yaml``; each an
   ``experiment=`` config plus the scale's overrides) that has not finished yet, one after the
   other, each an ordinary ``python -m realbogus.train`` in ``<runs_dir>/<run_name>`` with its
   log in ``<runs_dir>/logs/``. Finished runs are reused; an interrupted one resumes. At
   ``scale=quick`` the runs live in ``experiments/train``, so the headline run and the
   ``experiment=labels_*`` runs a user has already done count.
2. **sweep**: the label-noise robustness study (``python -m realbogus.noise_sweep`` at the same
   scale), which skips its finished cells.
3. **draw**: the figures (PNG and PDF) and their numbers (CSV) into ``figures_dir``, all from the
   runs' saved predictions, and the report (``report``, Markdown) with the paper's numbers
   beside ours.

Figures: ``stamp_gallery`` (1), ``fig2_models_data`` (simple/complex x all/mix/each),
``fig3a_label_handling`` (keep/remove/unlabel), ``fig3b_losses`` (CE, CE+ECH, CE+VAT,
CE+ECH+VAT), ``fig4_label_errors`` (the out-of-fold label-error analysis), ``fig5_robustness``
(the noise sweep), ``fig6_summary`` (AUC, FPR at TPR 0.9 and bogus per night per method) and
``ztf_check`` (the paper's method on real ZTF alerts, where they exist).
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

__all__ = ["Run", "FIGURES", "plan_runs", "run_all", "draw_figures", "reproduce", "main"]

FIGURES = ("gallery", "models_data", "label_handling", "losses", "label_errors", "robustness", "summary", "ztf")
@dataclass(frozen=True)
class Run:
    """One training run behind a figure."""

    figure: str
    label: str  # legend label in the figure
    overrides: tuple[str, ...]
    run_dir: Path
    epochs: int
    sensor: int | None = None  # the sensor of a per-sensor ("each") run


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
    if "summary" in asked:
        need |= {str(fig) for fig, _ in cfg.summary.values()}
    if asked & {"label_errors", "ztf"}:
        need.add(str(cfg.summary[cfg.method][0]))
    return need


def plan_runs(cfg: DictConfig) -> list[Run]:
    """Every run of the needed figures, with the folder its training config leads to.

    A run that two figures share (the same config) appears once per figure with the same
    ``run_dir``, and is trained once.
    """
    scale = cfg.reproduce
    base = [*map(str, scale.train_overrides), f"seed={cfg.seed}"]
    small = [*map(str, scale.small_data_overrides)]
    sensors = [int(s) for s in scale.each_sensors]
    runs_dir = Path(cfg.runs_dir)
    need = _needed_figures(cfg)
    out = []
    for figure, entries in cfg.runs.items():
        if figure not in need:
            continue
        for label, overrides in entries.items():
            overrides = [*map(str, overrides)]
            subset = next((o.split("=", 1)[1] for o in overrides if o.startswith("data_subset=")), "all")
            variants = [(None, [])]
            if subset == "each":
                if not sensors:
                    raise ConfigError("reproduce.each_sensors is empty: the 'each' runs need sensors")
                variants = [(s, [f"data_subset.sensors=[{s}]"]) for s in sensors]
            for sensor, extra in variants:
                full = [*base, *(small if subset != "all" else []), *overrides, *extra]
                train_cfg = compose_train(full)
                out.append(Run(str(figure), str(label), tuple(full), runs_dir / str(train_cfg.run_name),
                               int(train_cfg.trainer.epochs), sensor))
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


def run_all(cfg: DictConfig, runs: list[Run]) -> list[Run]:
    """Train every unfinished run, one after the other; return those that failed."""
    from tqdm.auto import tqdm

    from realbogus.rundir import RunDir

    todo = [r for r in _unique(runs) if not RunDir(r.run_dir).is_done(r.epochs)]
    n_all = len(_unique(runs))
    print(f"{n_all - len(todo)} of {n_all} runs finished already; {len(todo)} to train")
    failed = []
    logs = Path(cfg.runs_dir) / "logs"
    bar = tqdm(todo, desc="runs", unit="run", disable=not todo)
    for run in bar:
        bar.set_postfix_str(run.run_dir.name)
        t0 = time.time()
        code = run_logged(train_command(run, str(cfg.progress)), logs / f"{run.run_dir.name}.log", echo=False)
        status = "done" if code == 0 else f"FAILED (exit {code}; log {logs / (run.run_dir.name + '.log')})"
        tqdm.write(f"{run.run_dir.name}: {status} in {time.time() - t0:.0f} s")
        if code:
            failed.append(run)
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


def comparison(cfg: DictConfig, runs: list[Run], entries: list[tuple[str, str, str]],
               sensors: list[int] | None = None) -> list[dict]:
    """Metrics rows (with ROC curves) of ``entries`` (row label, figure, legend label of its runs)
    whose runs have finished; the others are left out with a note."""
    rows = []
    for row_label, figure, label in entries:
        members = [r for r in runs if r.figure == figure and r.label == label]
        pred = _predictions(members, sensors)
        if pred is None:
            print(f"{figure}: '{label}' has no finished run yet; left out")
            continue
        rows.append(_metrics_row(row_label, pred, members, int(cfg.n_bootstrap), int(cfg.seed)))
    return rows


def _roc_figure(rows: list[dict], path: Path, title: str) -> list[Path]:
    from realbogus.evaluation.plots import roc_figure, save_figure

    return save_figure(roc_figure({r["method"]: r["_roc"] for r in rows}, title=title), path)


def _summary_figure(rows: list[dict], path: Path) -> list[Path]:
    """Bogus per night at TPR 0.9 per method, with its bootstrap interval, log scale."""
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
    ax.set_xlim(float(np.min(lo)) / 1.5, float(np.max(hi)) * 2.0)
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
    try:
        from realbogus.evaluation.realdata import check_ztf
    except ImportError:
        return None
    return check_ztf(run.run_dir, ztf, out / "ztf_check")


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
        if rows:
            _save_table(out / f"{names[figure]}.csv", rows)
            _roc_figure(rows, out / f"{names[figure]}.png", titles[figure])
        res[figure] = rows
    if "label_errors" in asked:
        res["label_errors"] = _label_error_figure(cfg, runs, out)
    if "robustness" in asked:
        res["robustness"] = _robustness_figure(cfg, out)
    if "summary" in asked:
        rows = comparison(cfg, runs, [(str(label), str(fig), str(entry)) for label, (fig, entry) in cfg.summary.items()])
        base = next((r for r in rows if r["method"] == cfg.baseline), None)
        for r in rows:
            r["reduction_vs_baseline"] = (base["bogus_per_night"] / r["bogus_per_night"]
                                          if base and r["bogus_per_night"] > 0 else float("nan"))
        if rows:
            _save_table(out / "fig6_summary.csv", rows)
            _summary_figure(rows, out / "fig6_summary.png")
        res["summary"] = rows
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
