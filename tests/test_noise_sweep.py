"""The label-noise sweep: grid and command, aggregation, and a two-cell sweep through the launcher.

The end-to-end tests run ``python -m realbogus.noise_sweep`` on the smoke data with two cells
(simple + CE at no and at 5x boundary noise; a two-fold, one-epoch stage 1; two training steps)
through the joblib launcher, then check that a rerun trains nothing and that an interrupted
cell is resumed.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from realbogus.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]


def compose_sweep(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="noise_sweep", overrides=overrides)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------- grid and command
@pytest.mark.parametrize("scale", ["smoke", "quick", "paper"])
def test_every_scale_composes_to_distinct_run_folders(scale):
    from realbogus.noise_sweep import _cell_overrides, compose_train, grid_cells

    cfg = compose_sweep([f"scale={scale}"])
    cells = grid_cells(cfg)
    assert len(cells) == len(cfg.methods) * len(cfg.rates) * len(cfg.seeds)
    assert len({c.run_dir for c in cells}) == len(cells)
    assert all(c.run_dir.parent == Path(cfg.out_dir) / "runs" for c in cells)
    assert {c.method for c in cells} == {"simple_ce", "complex_ce", "complex_ce_ech_vat_keep", "complex_ce_ech_vat_unlabel"}
    names = [c.run_dir.name for c in cells if c.rate == max(cfg.rates) and c.seed == cfg.seeds[0]]
    assert all(f"-boundary_x{max(cfg.rates)}-" in n for n in names)
    # the run folder is the one the training command composes for the cell
    last = cells[-1]
    direct = compose_train(_cell_overrides(cfg, last.method, last.rate, last.seed))
    assert last.run_dir.name == direct.run_name and last.epochs == direct.trainer.epochs


def test_pending_grid_spans_only_unfinished_cells():
    from realbogus.noise_sweep import Cell, pending_grid

    cells = [Cell(m, r, s, Path(f"{m}-{r}-{s}"), 1) for m in ("a", "b") for r in (0, 5) for s in (0, 1)]
    assert pending_grid(cells, {c.run_dir for c in cells}) is None
    done = {c.run_dir for c in cells if c.seed == 0}  # a new seed was added
    assert pending_grid(cells, done) == (["a", "b"], [0, 5], [1])
    done = {c.run_dir for c in cells if not (c.method == "b" and c.rate == 5 and c.seed == 0)}
    assert pending_grid(cells, done) == (["b"], [5], [0])


def test_multirun_command_per_launcher():
    from realbogus.noise_sweep import multirun_command

    cfg = compose_sweep(["scale=smoke", "n_jobs=2", "threads_per_job=1"])
    cmd = multirun_command(cfg, ["simple_ce", "complex_ce"], [0, 5], [0, 1])
    assert cmd[1:5] == ["-m", "realbogus.train", "-m", "hydra/launcher=joblib"]
    for part in ("hydra.launcher.n_jobs=2", "++hydra.job.env_set.TF_NUM_INTRAOP_THREADS=1",
                 "experiment=noise_simple_ce,noise_complex_ce", "label_noise=boundary",
                 "label_noise.multiple=0,5", "seed=0,1", "data=smoke"):
        assert part in cmd, part
    slurm = multirun_command(compose_sweep(["scale=paper", "launcher=slurm",
                                            'launcher_overrides=["hydra.launcher.partition=gpu"]']), ["complex_ce"], [1], [0])
    assert "hydra/launcher=slurm" in slurm and "hydra.launcher.partition=gpu" in slurm
    assert any(p.startswith("hydra.launcher.cpus_per_task=") for p in slurm)
    assert not any(p.startswith("hydra.launcher.n_jobs") for p in slurm)


def test_slurm_launcher_config_composes():
    """The documented SLURM config extends submitit's and is found by the training command."""
    proc = subprocess.run([sys.executable, "-m", "realbogus.train", "hydra/launcher=slurm", "--cfg", "hydra",
                           "--package", "hydra.launcher"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SlurmLauncher" in proc.stdout and "max_num_timeout: 3" in proc.stdout


def test_bad_grid_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "realbogus.noise_sweep", "scale=smoke", "methods=[nonsense]",
                           f"out_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: method 'nonsense'")


# ----------------------------------------------------------------------------- aggregation
def fake_run(run_dir: Path, auc: float, fpr: float, error_rate: float, cleaning: bool = False) -> None:
    """A finished run folder with the files the aggregation reads."""
    run_dir.mkdir(parents=True)
    (run_dir / "run_state.json").write_text(json.dumps({"status": "done", "epochs_trained": 1,
                                                        "wall_seconds_last_session": 12.5}))
    (run_dir / "checkpoint").mkdir()
    (run_dir / "checkpoint" / "state.json").write_text(json.dumps({"epoch": 1, "stopped": False}))
    (run_dir / "metrics.json").write_text(json.dumps({"auc": auc, "fpr_at_tpr": {"0.9": {"fpr": fpr}},
                                                      "bogus_per_night": fpr * 1e6}))
    (run_dir / "label_noise.json").write_text(json.dumps({
        "injected_rates": {"bogus": 0.03, "real": 0.05}, "n_injected": {"bogus": 3, "real": 2},
        "n_given": {"bogus": 62, "real": 38},
        "label_error_rates": {"after": {"bogus": error_rate, "real": error_rate, "all": error_rate}}}))
    (run_dir / "label_noise.csv").write_text("index,given_label,noisy_label\n1,1,0\n2,1,0\n3,0,1\n4,0,1\n")
    if cleaning:
        (run_dir / "label_error_report.json").write_text(json.dumps({
            "selected_rule": "predicted_neq_given",
            "rules": {"predicted_neq_given": {"precision": 0.5, "recall": 0.8, "n_suspected": 8}}}))
        (run_dir / "label_errors.csv").write_text(
            "index,given_label,oof_score,suspected\n" + "".join(f"{i},0,0.5,{int(i in (1, 2, 7))}\n" for i in range(10)))


def test_aggregate_only_reads_existing_run_folders(tmp_path):
    from realbogus.noise_sweep import grid_cells, noise_sweep

    cfg = compose_sweep(["scale=smoke", f"out_dir={tmp_path}", "methods=[simple_ce,complex_ce_ech_vat_unlabel]",
                         "seeds=[0,1]", "aggregate_only=true"])
    cells = grid_cells(cfg)
    values = {}
    for i, cell in enumerate(cells):
        if cell.method == "simple_ce" and cell.rate == 5 and cell.seed == 1:
            continue  # one cell not run yet
        values[cell.run_dir] = (0.99 - 0.01 * cell.rate - 0.001 * cell.seed, 1e-3 * (1 + cell.rate + cell.seed))
        fake_run(cell.run_dir, *values[cell.run_dir], error_rate=0.008 * (1 + cell.rate),
                 cleaning=cell.method.endswith("unlabel"))
    result = noise_sweep(cfg)

    rows = read_csv(tmp_path / "results.csv")
    assert len(rows) == len(cells) == 8
    for col in ("method", "noise_rate", "seed", "auc", "fpr_at_tpr_0.9", "bogus_per_night", "detection_precision",
                "detection_recall", "run_dir"):
        assert col in rows[0], col
    missing = [r for r in rows if r["status"] != "done"]
    assert len(missing) == 1 and missing[0]["auc"] == ""
    unlabel = [r for r in rows if r["method"] == "complex_ce_ech_vat_unlabel"]
    assert all(float(r["detection_precision"]) == 0.5 and float(r["detection_recall"]) == 0.8 for r in unlabel)
    assert all(float(r["injected_recall"]) == 0.5 for r in unlabel)  # rows 1, 2 of the flipped 1-4 suspected
    assert all(r["detection_precision"] == "" for r in rows if r["method"] == "simple_ce")

    summary = {(r["method"], r["noise_rate"]): r for r in read_csv(tmp_path / "summary.csv")}
    entry = summary[("complex_ce_ech_vat_unlabel", "5")]
    assert int(entry["n_seeds"]) == 2
    assert float(entry["auc_mean"]) == pytest.approx(0.9395)
    assert float(entry["auc_std"]) == pytest.approx(np.std([0.94, 0.939], ddof=1), rel=1e-4)
    assert float(entry["fpr_at_tpr_0.9_max"]) == pytest.approx(7e-3)
    assert int(summary[("simple_ce", "5")]["n_seeds"]) == 1
    assert result["summary"] and len(result["summary"]) == 4
    md = (tmp_path / "summary.md").read_text()
    assert "| complex_ce_ech_vat_unlabel | boundary x5 |" in md and "7 of 8 cells done" in md
    for name in ("robustness.png", "robustness.pdf"):
        assert (tmp_path / name).stat().st_size > 1000


# ---------------------------------------------------------------- two cells, end to end
@pytest.fixture(scope="module")
def sweep(smoke_dir, tmp_path_factory):
    """A finished two-cell sweep: its command, output folder and the first run's output."""
    out = tmp_path_factory.mktemp("sweep")
    cache = tmp_path_factory.mktemp("cache")
    overrides = [f"data.dir={smoke_dir}", f"label_noise.stage1.cache_dir={cache}", "label_noise.stage1.folds=2",
                 "label_noise.stage1.trainer.epochs=1", "trainer.steps_per_epoch=2", "trainer.n_bootstrap=10"]
    cmd = [sys.executable, "-m", "realbogus.noise_sweep", "scale=smoke", "methods=[simple_ce]", "rates=[0,5]",
           "seeds=[0]", f"out_dir={out}", "n_jobs=2", "progress=none",
           "overrides=[" + ",".join(f"'{o}'" for o in overrides) + "]"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return cmd, out, proc.stdout


def test_two_cell_sweep_runs_through_joblib_and_writes_tables_and_figure(sweep):
    _, out, stdout = sweep
    assert "hydra/launcher=joblib" in stdout and "Joblib.Parallel(n_jobs=2" in stdout
    rows = read_csv(out / "results.csv")
    assert [(r["method"], r["noise_rate"], r["seed"], r["status"]) for r in rows] == [
        ("simple_ce", "0", "0", "done"), ("simple_ce", "5", "0", "done")]
    for r in rows:
        assert 0 <= float(r["auc"]) <= 1 and 0 <= float(r["fpr_at_tpr_0.9"]) <= 1
        record = json.loads((Path(r["run_dir"]) / "label_noise.json").read_text())
        assert record["mode"] == "boundary"
    clean, noisy = (json.loads((Path(r["run_dir"]) / "label_noise.json").read_text()) for r in rows)
    assert sum(clean["n_injected"].values()) == 0 and sum(noisy["n_injected"].values()) > 0
    assert float(rows[1]["label_error_rate"]) > float(rows[0]["label_error_rate"]) > 0
    assert len(read_csv(out / "summary.csv")) == 2
    assert "| simple_ce | boundary x5 |" in (out / "summary.md").read_text()
    for name in ("robustness.png", "robustness.pdf"):
        assert (out / name).stat().st_size > 1000
    assert (out / "runs" / "multirun.yaml").exists() and list((out / "logs").glob("multirun_*.log"))


def test_rerun_trains_nothing_and_an_interrupted_cell_resumes(sweep):
    cmd, out, _ = sweep
    runs = [Path(r["run_dir"]) for r in read_csv(out / "results.csv")]
    stamps = {p: (p / "model.keras").stat().st_mtime_ns for p in runs}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "nothing to train" in proc.stdout and "launching" not in proc.stdout
    assert {p: (p / "model.keras").stat().st_mtime_ns for p in runs} == stamps

    # An interruption after training but before evaluation: only that cell is launched again,
    # and the trainer resumes it (its single epoch is not repeated).
    interrupted = runs[1]
    (interrupted / "run_state.json").write_text(json.dumps({"status": "running"}))
    (interrupted / "metrics.json").unlink()
    history = (interrupted / "history.csv").read_text()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 of 2 cells to train" in proc.stdout
    assert "label_noise.multiple=5" in proc.stdout and "label_noise.multiple=0," not in proc.stdout
    assert json.loads((interrupted / "run_state.json").read_text())["status"] == "done"
    assert (interrupted / "history.csv").read_text() == history
    assert (runs[0] / "model.keras").stat().st_mtime_ns == stamps[runs[0]]
    assert all(r["status"] == "done" for r in read_csv(out / "results.csv"))


def test_a_cell_killed_while_scoring_resumes_to_the_uninterrupted_bytes(sweep, tmp_path):
    """A sweep whose cell process dies (SIGKILL: a node lost, an OOM kill) and is rerun gives the
    same cell results as the sweep that ran through."""
    cmd, out, _ = sweep
    other = tmp_path / "sweep"
    cmd = [c if not c.startswith("out_dir=") else f"out_dir={other}" for c in cmd]
    cmd = [c if not c.startswith("rates=") else "rates=[0]" for c in cmd]
    env = dict(os.environ, REALBOGUS_FAULT="scoring")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode != 0
    (cell,) = [Path(r["run_dir"]) for r in read_csv(out / "results.csv") if r["noise_rate"] == "0"]
    killed = other / "runs" / cell.name
    assert RunDir(killed).status() == "interrupted" and not (killed / "predictions.csv").exists()
    env.pop("REALBOGUS_FAULT")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert RunDir(killed).is_done()
    for name in ("predictions.csv", "history.csv", "metrics.json"):
        assert (killed / name).read_bytes() == (cell / name).read_bytes(), name


@pytest.mark.slow
def test_two_cell_sweep_through_submitit_local(smoke_dir, tmp_path):
    """The submitit launcher (here its local executor, as on SLURM but on this machine)."""
    overrides = [f"data.dir={smoke_dir}", "trainer.steps_per_epoch=2", "trainer.n_bootstrap=10"]
    cmd = [sys.executable, "-m", "realbogus.noise_sweep", "scale=smoke", "methods=[simple_ce]", "noise=uniform",
           "rates=[0,5]", "seeds=[0]", f"out_dir={tmp_path}", "launcher=submitit_local", "progress=none",
           'launcher_overrides=["hydra.launcher.timeout_min=20"]',
           "overrides=[" + ",".join(f"'{o}'" for o in overrides) + "]"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = read_csv(tmp_path / "results.csv")
    assert [r["status"] for r in rows] == ["done", "done"]
    assert list((tmp_path / "runs" / ".submitit").iterdir())
    assert (tmp_path / "robustness.png").exists()


def test_a_fresh_clone_restores_the_cells_from_their_archive(sweep, tmp_path):
    """The compact copies written beside the sweep stand for its cells on a machine without
    the run folders: nothing is trained and the tables come out the same."""
    import shutil

    cmd, out, _ = sweep
    assert sorted(p.name for p in (out / "archive").iterdir()) == sorted(
        Path(r["run_dir"]).name for r in read_csv(out / "results.csv"))
    other = tmp_path / "clone"
    other.mkdir()
    shutil.copytree(out / "archive", other / "archive")
    cmd = [c if not c.startswith("out_dir=") else f"out_dir={other}" for c in cmd]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "restored 2 finished cell(s)" in proc.stdout and "nothing to train" in proc.stdout
    keep = ("method", "noise_rate", "seed", "status", "auc", "fpr_at_tpr_0.9", "label_error_rate")
    assert [{k: r[k] for k in keep} for r in read_csv(other / "results.csv")] == [
        {k: r[k] for k in keep} for r in read_csv(out / "results.csv")]
    assert not (other / "runs" / Path(read_csv(out / "results.csv")[0]["run_dir"]).name / "model.keras").exists()
