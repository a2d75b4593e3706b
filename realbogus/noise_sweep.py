"""Label-noise robustness study: ``python -m realbogus.noise_sweep [scale=smoke|quick|paper] [overrides]``.

Trains every method of the grid (``methods``, each a ``conf/experiment/noise_<method>.yaml``) at
every injected label-noise rate (``rates``, multiples of the measured 0.6% / 1.0%) and seed,
through a Hydra multirun of the training command, then aggregates the finished runs::

    python -m realbogus.noise_sweep                         # scale=quick: the default grid
    python -m realbogus.noise_sweep scale=smoke             # a tiny grid, minutes
    python -m realbogus.noise_sweep scale=paper launcher=slurm launcher_overrides='["hydra.launcher.partition=gpu"]'
    python -m realbogus.noise_sweep aggregate_only=true     # tables and figure from the runs on disk
    python -m realbogus.noise_sweep dry_run=true            # print the training command and stop

Every cell is an ordinary training run in ``<out_dir>/runs/<run_name>/``; its folder follows
from its config, so rerunning the command launches only the cells not finished yet (a
finished cell that still falls in the launched grid is reported by the trainer without
retraining) and an interrupted cell resumes after its last epoch. Writes into ``out_dir``
(default ``experiments/noise_sweep``): ``results.csv`` (one row per cell), ``summary.csv``
and ``summary.md`` (mean and spread over seeds per method and rate), ``robustness.png`` /
``.pdf``, and the multirun's output under ``logs/``. Each finished cell is also copied,
compactly, into ``archive_dir`` (:mod:`realbogus.evaluation.run_archive`; committed at the quick
scale), and a cell whose folder is missing is restored from its copy instead of retrained.
"""

from __future__ import annotations

import datetime
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig

from realbogus.errors import ConfigError, report_errors

__all__ = ["Cell", "grid_cells", "pending_grid", "multirun_command", "run_logged", "aggregate", "noise_sweep", "main"]

REPO_CONF = Path(__file__).resolve().parents[1] / "conf"
LAUNCHERS = ("joblib", "submitit_local", "slurm", "basic")
#: Legend labels of the default methods.
METHOD_LABELS = {
    "simple_ce": "simple + CE",
    "complex_ce": "complex + CE",
    "complex_ce_ech_vat_keep": "complex + CE+ECH+VAT, labels kept",
    "complex_ce_ech_vat_unlabel": "complex + CE+ECH+VAT, suspects unlabelled (paper)",
}


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    method: str
    rate: object  # as written in the config (int or float): it appears in the run name
    seed: int
    run_dir: Path
    epochs: int


def _as_list(value, name: str) -> list:
    if isinstance(value, (ListConfig, list, tuple)):
        out = list(value)
    elif value is None:
        out = []
    else:
        out = [value]
    if name in ("methods", "rates", "seeds") and not out:
        raise ConfigError(f"{name} is empty: the grid has no cell")
    return out


def _cell_overrides(cfg: DictConfig, method: str, rate, seed) -> list[str]:
    return [*map(str, _as_list(cfg.train_overrides, "train_overrides")), *map(str, _as_list(cfg.overrides, "overrides")),
            f"experiment=noise_{method}", f"label_noise={cfg.noise}", f"label_noise.multiple={rate}",
            f"seed={seed}"]


def compose_train(overrides: list[str]) -> DictConfig:
    """The training config of one cell (inside a Hydra app or not)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="train", overrides=overrides)
    with initialize_config_dir(config_dir=str(REPO_CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _check(cfg: DictConfig) -> None:
    if cfg.noise not in ("boundary", "uniform"):
        raise ConfigError(f"noise={cfg.noise!r} is not one of boundary, uniform")
    if cfg.launcher not in LAUNCHERS:
        raise ConfigError(f"launcher={cfg.launcher!r} is not one of {', '.join(LAUNCHERS)}")
    for method in _as_list(cfg.methods, "methods"):
        if not (REPO_CONF / "experiment" / f"noise_{method}.yaml").is_file():
            raise ConfigError(f"method {method!r} has no conf/experiment/noise_{method}.yaml")
    for rate in _as_list(cfg.rates, "rates"):
        if not isinstance(rate, (int, float)) or rate < 0:
            raise ConfigError(f"rates must be non-negative numbers; got {rate!r}")
    if len(set(map(str, cfg.rates))) != len(cfg.rates) or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError("rates and seeds must not repeat a value")


def grid_cells(cfg: DictConfig) -> list[Cell]:
    """Every cell of the sweep with the run folder its training config leads to.

    The training config is composed once per method; the other cells of the method differ
    only in ``label_noise.multiple`` and ``seed``, which are set on it (as the command line
    of the multirun sets them) before its run name is read.
    """
    _check(cfg)
    runs = Path(cfg.out_dir) / "runs"
    rates, seeds = _as_list(cfg.rates, "rates"), _as_list(cfg.seeds, "seeds")
    cells = []
    for method in _as_list(cfg.methods, "methods"):
        train_cfg = compose_train(_cell_overrides(cfg, method, rates[0], seeds[0]))
        for rate in rates:
            for seed in seeds:
                train_cfg.label_noise.multiple = rate
                train_cfg.seed = seed
                cells.append(Cell(method, rate, int(seed), runs / train_cfg.run_name, int(train_cfg.trainer.epochs)))
    names = [c.run_dir.name for c in cells]
    if len(set(names)) != len(names):
        raise ConfigError("two cells of the grid map to the same run folder; do two methods share a run name?")
    return cells


def pending_grid(cells: list[Cell], done: set[Path]) -> tuple[list, list, list] | None:
    """Methods, rates and seeds spanning every unfinished cell (None when all are done).

    The multirun is a product of the three lists, so it may include finished cells, which
    the trainer reports without retraining.
    """
    todo = [c for c in cells if c.run_dir not in done]
    if not todo:
        return None
    keep = lambda values: list(dict.fromkeys(values))  # noqa: E731 - first-appearance order
    return keep(c.method for c in todo), keep(c.rate for c in todo), keep(c.seed for c in todo)


def _n_jobs(cfg: DictConfig) -> int:
    if cfg.n_jobs != "auto":
        return max(1, int(cfg.n_jobs))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(cfg.threads_per_job or 1)))


def multirun_command(cfg: DictConfig, methods: list, rates: list, seeds: list) -> list[str]:
    """The ``python -m realbogus.train -m ...`` command of a grid."""
    cmd = [sys.executable, "-m", "realbogus.train", "-m", f"hydra/launcher={cfg.launcher}",
           f"hydra.sweep.dir={Path(cfg.out_dir).resolve() / 'runs'}"]
    if cfg.launcher == "joblib":
        cmd.append(f"hydra.launcher.n_jobs={_n_jobs(cfg)}")
    elif cfg.launcher in ("submitit_local", "slurm") and cfg.threads_per_job:
        cmd.append(f"hydra.launcher.cpus_per_task={int(cfg.threads_per_job)}")
    cmd += [str(o) for o in _as_list(cfg.launcher_overrides, "launcher_overrides")]
    if cfg.threads_per_job:
        n = int(cfg.threads_per_job)
        # Each run's own TensorFlow thread pools: parallel runs must not oversubscribe the cores.
        cmd += [f"++hydra.job.env_set.{var}={n}" for var in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS")]
        cmd.append("++hydra.job.env_set.TF_NUM_INTEROP_THREADS=1")
    cmd += [*map(str, _as_list(cfg.train_overrides, "train_overrides")), *map(str, _as_list(cfg.overrides, "overrides")),
            f"trainer.progress={cfg.progress}",
            "experiment=" + ",".join(f"noise_{m}" for m in methods),
            f"label_noise={cfg.noise}",
            "label_noise.multiple=" + ",".join(str(r) for r in rates),
            "seed=" + ",".join(str(s) for s in seeds)]
    return cmd


def _die_with_parent() -> None:
    """In a child process (Linux): receive SIGTERM when the parent dies, however it dies.

    Without it a training run started by a killed sweep or reproduction would go on alone,
    holding its run folder's lock against the rerun.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_logged(cmd: list[str], log_path: Path, echo: bool = True) -> int:
    """Run ``cmd``, appending its output (stdout and stderr) to ``log_path`` and, with ``echo``,
    to this process's stdout; return its exit status. The child dies with this process."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if echo:
                sys.stdout.write(line)
        return proc.wait()


def _launch(cmd: list[str], log_dir: Path) -> int:
    """Run the multirun, echoing its output and keeping a copy in ``log_dir``."""
    log_path = log_dir / f"multirun_{datetime.datetime.now():%Y%m%d-%H%M%S}.log"
    print(f"launching ({log_path}):\n  {shlex.join(cmd)}", flush=True)
    return run_logged(cmd, log_path)


def aggregate(cfg: DictConfig, cells: list[Cell]) -> dict:
    """Write results.csv, summary.csv, summary.md and robustness.png/pdf; return their content."""
    from realbogus.evaluation.plots import save_figure
    from realbogus.label_noise.robustness import (
        read_cell,
        robustness_figure,
        summarise,
        summary_markdown,
        write_markdown,
        write_results,
        write_summary,
    )

    out = Path(cfg.out_dir)
    rows = [read_cell(c.run_dir, c.method, str(cfg.noise), c.rate, c.seed, c.epochs) for c in cells]
    summary = summarise(rows)
    write_results(out / "results.csv", rows)
    write_summary(out / "summary.csv", summary)
    n_done = sum(r["status"] == "done" for r in rows)
    notes = [f"Scale `{cfg.scale_name}`, injection `{cfg.noise}`; {n_done} of {len(rows)} cells done. "
             "Values: mean ± standard deviation over seeds. Label errors: share of wrong training labels after "
             "injection (ground truth), including those the data already had. Detection: the selected rule's "
             "precision and recall against all wrong labels; injected errors found: share of the injected flips "
             "it suspects."]
    write_markdown(out / "summary.md", summary_markdown(summary, notes=notes))
    if summary:
        labels = {m: METHOD_LABELS.get(m, m) for m in cfg.methods}
        save_figure(robustness_figure(summary, labels=labels), out / "robustness.png")
    missing = [r for r in rows if r["status"] != "done"]
    print(f"{out}: {n_done} of {len(rows)} cells done" + (f"; not finished: {len(missing)} "
          "(rerun the command to train them)" if missing else ""))
    return {"rows": rows, "summary": summary}


def _restore_cells(cfg: DictConfig, cells: list[Cell], archive: Path) -> int:
    """Restore the cells whose folders are missing from their compact copies in ``archive``."""
    from realbogus.evaluation.run_archive import restore_planned

    n = 0
    for c in cells:
        outcome = restore_planned(archive, c.run_dir, c.epochs,
                                  lambda c=c: compose_train(_cell_overrides(cfg, c.method, c.rate, c.seed)))
        if outcome == "restored":
            n += 1
        elif outcome:
            print(outcome)
    if n:
        print(f"restored {n} finished cell(s) from {archive} (predictions and metrics; no weights)")
    return n


@report_errors
def noise_sweep(cfg: DictConfig) -> dict:
    """Run (unless ``aggregate_only``) and aggregate the sweep; return the aggregated content."""
    from realbogus.rundir import RunDir
    from realbogus.simulation import ensure_dataset

    cells = grid_cells(cfg)
    archive = Path(str(cfg.archive_dir)) if cfg.get("archive_dir") else None
    if archive is not None:
        _restore_cells(cfg, cells, archive)
    returncode = 0
    if not cfg.aggregate_only:
        done = {c.run_dir for c in cells if RunDir(c.run_dir).is_done(c.epochs)}
        grid = pending_grid(cells, done)
        if grid is None:
            print(f"all {len(cells)} cells are done; nothing to train")
        else:
            cmd = multirun_command(cfg, *grid)
            if cfg.dry_run:
                print(shlex.join(cmd))
                return {}
            print(f"{len(cells) - len(done)} of {len(cells)} cells to train")
            # Simulate the data once here, not in parallel runs racing to write the same file.
            ensure_dataset(compose_train(_cell_overrides(cfg, cells[0].method, cells[0].rate, cells[0].seed)).data)
            returncode = _launch(cmd, Path(cfg.out_dir) / "logs")
    if archive is not None:
        from realbogus.evaluation.run_archive import archive_if_changed

        written = [p for p in (archive_if_changed(archive, c.run_dir, c.epochs) for c in cells) if p is not None]
        if written:
            print(f"archived {len(written)} finished cell(s) in {archive}")
    result = aggregate(cfg, cells)
    if returncode:
        print(f"error: the multirun exited with status {returncode}; finished cells are kept, "
              "rerun the command to resume", file=sys.stderr)
        sys.exit(1)
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="noise_sweep")
def main(cfg: DictConfig) -> None:
    noise_sweep(cfg)


if __name__ == "__main__":
    main()
