"""``python -m realbogus.reproduce``: data subsets, the run plan, the report's verdicts, and (slow)
the whole smoke-scale chain through figures and report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from realbogus.data.format import DatasetWriter
from realbogus.data.subset import select_training_rows, subset_size, sensor_test_rows
from realbogus.errors import ConfigError
from realbogus.reporting import verdict
from realbogus.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def sensor_file(tmp_path) -> Path:
    """A 600-row file: sensors 0..5 (100 rows each), labels 40% real."""
    rng = np.random.default_rng(0)
    n = 600
    path = tmp_path / "train.h5"
    with DatasetWriter(path) as w:
        w.append(images=rng.normal(size=(n, 29, 29, 3)).astype(np.float32),
                 label=(np.arange(n) % 5 < 2).astype(np.int8), sensor_id=np.repeat(np.arange(6), 100).astype(np.int16),
                 kind=np.zeros(n, np.int16), mag=np.full(n, np.nan, np.float32))
    return path


def _subset(**kw):
    base = {"sensors": None, "n_train": None, "test_sensors": False, "seed": 0}
    base.update(kw)
    return OmegaConf.create(base)


def test_subset_all_keeps_everything(sensor_file):
    rows, labels = np.arange(600), (np.arange(600) % 5 < 2).astype(np.int32)
    r, l = select_training_rows(_subset(), sensor_file, rows, labels)
    assert np.array_equal(r, rows) and np.array_equal(l, labels)


def test_subset_each_keeps_one_sensor(sensor_file):
    rows, labels = np.arange(600), (np.arange(600) % 5 < 2).astype(np.int32)
    r, l = select_training_rows(_subset(sensors=[2]), sensor_file, rows, labels)
    assert np.array_equal(r, np.arange(200, 300))
    assert np.array_equal(l, labels[200:300])


def test_subset_mix_is_one_sensor_worth_and_stratified(sensor_file):
    rows, labels = np.arange(600), (np.arange(600) % 5 < 2).astype(np.int32)
    labels[::50] = -1  # unlabelled rows are a stratum of their own
    r, l = select_training_rows(_subset(n_train="one_sensor", seed=3), sensor_file, rows, labels)
    assert r.size == 100  # 600 rows / 6 sensors
    assert len(np.unique(np.repeat(np.arange(6), 100)[r])) > 3  # drawn from many sensors
    for value in (-1, 0, 1):
        assert abs(np.mean(l == value) - np.mean(labels == value)) < 0.02
    assert np.array_equal(l, labels[r])
    again, _ = select_training_rows(_subset(n_train="one_sensor", seed=3), sensor_file, rows, labels)
    other, _ = select_training_rows(_subset(n_train="one_sensor", seed=4), sensor_file, rows, labels)
    assert np.array_equal(r, again) and not np.array_equal(r, other)


def test_subset_errors(sensor_file):
    rows, labels = np.arange(600), np.zeros(600, np.int32)
    with pytest.raises(ConfigError, match="selects no training rows"):
        select_training_rows(_subset(sensors=[77]), sensor_file, rows, labels)
    with pytest.raises(ConfigError, match="n_train"):
        subset_size("lots", 600, 6)
    with pytest.raises(ConfigError, match="empty"):
        select_training_rows(_subset(sensors=[]), sensor_file, rows, labels)


def test_subset_test_rows(sensor_file):
    assert sensor_test_rows(_subset(sensors=[1]), sensor_file) is None  # test_sensors off: every row
    assert np.array_equal(sensor_test_rows(_subset(sensors=[1, 4], test_sensors=True), sensor_file),
                          np.r_[np.arange(100, 200), np.arange(400, 500)])


def _row(fpr, lo, hi, auc=0.99, n_real=100):
    return {"fpr_at_tpr_0.9": fpr, "fpr_lo": lo, "fpr_hi": hi, "auc": auc, "n_real": n_real}


def test_verdicts():
    assert "**holds**" in verdict(_row(1e-3, 5e-4, 2e-3), _row(1e-2, 8e-3, 1.2e-2), "x")
    assert "leans the paper's way" in verdict(_row(1e-3, 5e-4, 9e-3), _row(2e-3, 1e-3, 4e-3), "x")
    assert "does not hold" in verdict(_row(3e-3, 1e-3, 4e-3), _row(2e-3, 1e-3, 4e-3), "x")
    assert "not measured" in verdict(None, _row(2e-3, 1e-3, 4e-3), "x")


def test_failed_claim_names_an_unfinished_training(tmp_path):
    """A claim that fails while the claimed method's run was still improving says so; else it doesn't."""
    def run(name, epochs, best):
        d = tmp_path / name
        d.mkdir()
        (d / "run_state.json").write_text(json.dumps({"epochs_trained": epochs, "best_epoch": best}))
        return str(d)

    base = {**_row(2e-3, 1e-3, 4e-3), "run_dirs": run("simple", 4, 3)}
    rising = {**_row(3e-3, 1e-3, 4e-3), "run_dirs": run("complex", 2, 2)}
    done = {**_row(3e-3, 1e-3, 4e-3), "run_dirs": run("converged", 9, 5)}
    text = verdict(rising, base, "x")
    assert "does not hold" in text and "after 2 epochs" in text and "other trained 4 epochs" in text
    assert "undertrained" not in verdict(done, base, "x")


def test_robustness_verdict_uses_the_rise_and_its_seed_error(monkeypatch):
    import realbogus.label_noise.robustness as rob
    from realbogus.reporting import _section_robustness

    monkeypatch.setattr(rob, "summary_markdown", lambda *a, **k: "")  # only the verdict lines matter here

    def cells(method, fprs, std):
        return [{"method": method, "noise_mode": "boundary", "noise_rate": r, "n_seeds": 2,
                 "fpr_at_tpr_0.9_mean": f, "fpr_at_tpr_0.9_std": std} for r, f in zip((0, 20), fprs)]

    def text(paper, other, std):
        out: list[str] = []
        summary = cells("complex_ce_ech_vat_unlabel", paper, std) + cells("simple_ce", other, std)
        _section_robustness({"robustness": summary}, out, "fig")
        return next(line for line in out if "simple_ce" in line)

    # Same relative growth (2x), but a larger absolute rise for the paper's method: not robustness.
    assert "does not hold" in text((0.05, 0.10), (0.02, 0.04), 0.001)
    assert "**holds**" in text((0.05, 0.06), (0.02, 0.08), 0.001)
    assert "leans the paper's way" in text((0.05, 0.06), (0.02, 0.04), 0.02)


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="reproduce", overrides=overrides)


def test_plan_expands_each_and_shares_identical_runs(tmp_path):
    from realbogus.reproduce import _unique, plan_runs

    cfg = _compose(["scale=smoke", f"runs_dir={tmp_path}"])
    runs = plan_runs(cfg)
    each = [r for r in runs if r.label == "complex, each"]
    assert [r.sensor for r in each] == list(cfg.reproduce.each_sensors)
    assert len({r.run_dir for r in each}) == len(each)
    # complex + CE on all data is in figure 2 and figure 3b: one run serves both, at each of its seeds
    for seed in cfg.reproduce.seeds:
        ce_all = [r for r in runs if r.label in ("complex, all", "CE") and r.seed == seed]
        assert len(ce_all) == 2 and ce_all[0].run_dir == ce_all[1].run_dir
    n_seeds = len(cfg.reproduce.seeds)
    # also CE+ECH+VAT (losses) == keep (label handling)
    assert len(_unique(runs)) == len(runs) - n_seeds - 1
    assert all(r.run_dir.parent == tmp_path for r in runs)


def test_plan_rejects_unknown_figure(tmp_path):
    from realbogus.reproduce import plan_runs

    with pytest.raises(ConfigError, match="figures"):
        plan_runs(_compose(["scale=smoke", "figures=[gallery,roc]"]))


@pytest.mark.slow
def test_reproduce_smoke_end_to_end(tmp_path):
    """Every figure file and report section from the smoke scale; a rerun trains nothing."""
    out = tmp_path / "out"
    args = [sys.executable, "-m", "realbogus.reproduce", "scale=smoke", f"runs_dir={out}/runs",
            f"figures_dir={out}/figures", f"report={out}/REPORT.md", f"sweep_dir={out}/sweep"]
    env = {**os.environ, "REALBOGUS_DATA_DIR": str(tmp_path / "data")}
    first = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    figures = out / "figures"
    for name in ("stamp_gallery", "fig2_models_data", "fig3a_label_handling", "fig3b_losses", "fig4_label_errors",
                 "fig5_robustness", "fig6_summary", "fig7_pass_rates", "fig8_learning_curves"):
        for ext in ("png", "pdf"):
            assert (figures / f"{name}.{ext}").stat().st_size > 1000, name
    for name in ("fig2_models_data", "fig3a_label_handling", "fig3b_losses", "fig4_label_errors", "fig5_robustness",
                 "fig6_summary", "fig7_pass_rates", "fig8_learning_curves"):
        assert (figures / f"{name}.csv").is_file()
    report = (out / "REPORT.md").read_text()
    for section in ("The floor of the simulated data", "Network and training data", "Label handling",
                    "Loss combinations", "Label errors against", "Robustness to label errors", "Headline table",
                    "Where the false positives come from", "Did the runs reach their plateau?", "Runs"):
        assert f"## {section}" in report
    assert "Not drawn yet" not in report and "Not computed" not in report
    rows = (figures / "fig2_models_data.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 + 2  # the six methods and the two floors
    summary = (figures / "fig6_summary.csv").read_text()
    assert "floor (oracle)" in summary and "authors' training" in summary and "ran it" in summary
    second = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "0 to train" in second.stdout
    assert "nothing to train" in second.stdout  # the sweep's cells are all done too


# --------------------------------------------------------------------------------------------
# the plateau rule, on synthetic histories


def test_plateau_still_improving_on_a_falling_curve():
    from realbogus.reporting import plateau

    steps = np.arange(1, 11) * 100
    falling = 1.0 + np.exp(-steps / 400.0)  # smooth, still falling at the end
    assert plateau(steps, falling)["verdict"] == "still improving"
    two = plateau([500, 1000], [0.5, 0.4])  # two epochs, noise unknown: any new best counts
    assert two["verdict"] == "still improving" and two["noise"] == 0.0


def test_plateau_reached_on_flat_or_noisy_tails():
    from realbogus.reporting import plateau

    rng = np.random.default_rng(0)
    steps = np.arange(1, 21) * 50
    converged = 1.0 + np.exp(-steps / 100.0)  # flat long before the last 20% of steps
    assert plateau(steps, converged)["verdict"] == "reached its plateau"
    # a flat curve whose last value is lowest by less than its scatter: noise, not progress
    noisy = 0.3 + 0.01 * rng.standard_normal(20)
    noisy[-1] = noisy[:-1].min() - 0.002
    result = plateau(steps, noisy)
    assert result["gain"] > 0 and result["noise"] > result["gain"]
    assert result["verdict"] == "reached its plateau"
    # the same curve with a clear drop at the end is still improving
    noisy[-1] = noisy[:-1].min() - 0.1
    assert plateau(steps, noisy)["verdict"] == "still improving"
    # best value early, worse since (overfitting, early stopping): reached its plateau
    assert plateau(steps, np.r_[np.linspace(1, 0.2, 5), np.linspace(0.25, 0.4, 15)])["verdict"] == "reached its plateau"


def test_plateau_one_epoch_and_missing_values():
    from realbogus.reporting import plateau

    assert plateau([100], [0.3])["verdict"] == "too short to tell"
    assert plateau([], [])["verdict"] == "too short to tell"
    # NaNs (an epoch without a value) are dropped, not compared
    assert plateau([1, 2, 3, 4, 5], [0.5, np.nan, 0.4, 0.3, np.nan])["verdict"] == "still improving"


# --------------------------------------------------------------------------------------------
# floor, pass rates, learning curves and seeds from hand-made run folders


def _fake_run(run, truth: dict, quality: float, seed: int, history: dict) -> None:
    """A finished run folder (config, state, checkpoint state, history, predictions) for ``run``."""
    from realbogus.evaluation.report import write_predictions
    from realbogus.io import save_json
    from realbogus.noise_sweep import compose_train
    from realbogus.rundir import RunDir

    rundir = RunDir(run.run_dir)
    rundir.path.mkdir(parents=True, exist_ok=True)
    rundir.write_config(compose_train(list(run.overrides)))
    epochs = len(history["val_loss"])
    rundir.write_state("done", epochs_trained=epochs, best_epoch=epochs, wall_seconds_last_session=1.0)
    save_json(rundir.checkpoint_dir / "state.json", {"epoch": epochs, "best_epoch": epochs, "stopped": False})
    rundir.metrics_path.write_text("{}")
    cols = {"epoch": np.arange(epochs), **history}
    lines = [",".join(cols)] + [",".join(str(cols[k][i]) for k in cols) for i in range(epochs)]
    (rundir / RunDir.HISTORY).write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(seed + int(quality * 100))
    y = truth["true_label"]
    logit = quality * (2 * y - 1) + rng.standard_normal(y.size)
    write_predictions(rundir.predictions_path, {"score": 1 / (1 + np.exp(-logit)), "label": y, "true_label": y,
                                                "index": np.arange(y.size), "kind": truth["kind"],
                                                "sensor_id": np.zeros(y.size, np.int64)})


@pytest.fixture
def fake_reproduction(tmp_path, monkeypatch, smoke_dir):
    """A smoke-scale reproduce config whose summary runs are hand-made folders on the smoke data."""
    from realbogus.evaluation.floor import read_truth
    from realbogus.reproduce import plan_runs

    data_root = tmp_path / "data"
    data_root.mkdir()
    (data_root / "smoke").symlink_to(smoke_dir, target_is_directory=True)
    monkeypatch.setenv("REALBOGUS_DATA_DIR", str(data_root))
    out = tmp_path / "out"
    cfg = _compose(["scale=smoke", f"runs_dir={out}/runs", f"figures_dir={out}/figures", f"report={out}/REPORT.md",
                    f"sweep_dir={out}/sweep", "figures=[summary,pass_rates,learning_curves]", "n_bootstrap=50"])
    runs = plan_runs(cfg)
    truth = read_truth(smoke_dir / "test.h5")
    quality = {"simple + CE (the previous classifier)": 1.2, "complex + CE": 1.3,
               "complex + CE+ECH+VAT, suspects unlabelled (paper)": 1.5,
               "simple + CE (authors' training: Adadelta 1e-3, batch 64)": 0.6}
    done = set()
    for row, (figure, label) in cfg.summary.items():
        for run in (r for r in runs if r.figure == figure and r.label == label):
            if run.run_dir in done:
                continue
            done.add(run.run_dir)
            history = {"val_loss": [0.6, 0.5, 0.45, 0.44]}
            if row != cfg.as_run:  # the training engineer's new column, missing from one run
                history["val_fpr_at_tpr_0.9"] = [0.2, 0.1, 0.08, 0.05]
            _fake_run(run, truth, quality.get(row, 1.0), run.seed, history)
    return cfg, runs, out


def test_floor_rows_pass_rates_and_learning_curves_from_run_folders(fake_reproduction, smoke_dir):
    import csv

    from realbogus.evaluation.floor import oracle_floor
    from realbogus.reporting import write_report
    from realbogus.reproduce import draw_figures

    cfg, runs, out = fake_reproduction
    res = draw_figures(cfg, runs)
    figures = out / "figures"
    with open(figures / "fig6_summary.csv", newline="") as fh:
        summary = {r["method"]: r for r in csv.DictReader(fh)}
    # one row per summary entry, plus the two floors
    assert set(summary) == set(cfg.summary) | {"floor (oracle)", "floor (oracle, S/N only)"}
    expected = oracle_floor(smoke_dir / "train.h5", smoke_dir / "test.h5", confusable_reals="all", n_bootstrap=0)
    assert float(summary["floor (oracle, S/N only)"]["fpr_at_tpr_0.9"]) == pytest.approx(expected["fpr"], rel=1e-5)
    assert summary["floor (oracle)"]["n_runs"] == "0"
    # seeded rows: two runs, the mean of the seeds' values, an interval that covers both seeds
    paper = summary[cfg.method]
    per_seed = [float(v) for v in paper["fpr_at_tpr_0.9_per_seed"].split()]
    assert paper["n_runs"] == "2" and paper["n_seeds"] == "2" and len(per_seed) == 2
    assert float(paper["fpr_at_tpr_0.9"]) == pytest.approx(np.mean(per_seed), rel=1e-4)
    assert float(paper["fpr_lo"]) <= min(per_seed) and float(paper["fpr_hi"]) >= max(per_seed)
    assert summary[cfg.as_run]["n_runs"] == "1"
    # pass rates: every method and both oracles, per kind and per S/N bin, consistent with the FPR
    with open(figures / "fig7_pass_rates.csv", newline="") as fh:
        rates = list(csv.DictReader(fh))
    assert {r["method"] for r in rates} == set(cfg.summary) | {"floor (oracle)", "floor (oracle, S/N only)"}
    for method in (cfg.method, "floor (oracle, S/N only)"):
        kinds = [r for r in rates if r["method"] == method and r["table"] == "kind"]
        snr = [r for r in rates if r["method"] == method and r["table"] == "snr"]
        assert len(kinds) > 3 and len(snr) > 3
        n_bogus = sum(int(r["n_bogus"]) for r in kinds)
        passed = sum(int(r["n_bogus_passed"]) for r in kinds)
        assert n_bogus == sum(int(r["n_bogus"]) for r in snr) == int(summary[method]["n_bogus"])
        assert passed / n_bogus == pytest.approx(res["pass_rates"][method]["fpr"])
        if passed:
            assert sum(float(r["share_of_false_positives"]) for r in kinds) == pytest.approx(1.0, abs=1e-4)
    assert (figures / "fig7_pass_rates.png").stat().st_size > 1000
    # learning curves: steps from trainer.steps_per_epoch (4 at smoke scale); a missing column tolerated
    with open(figures / "fig8_learning_curves.csv", newline="") as fh:
        curves = list(csv.DictReader(fh))
    assert {int(float(r["step"])) for r in curves} == {4, 8, 12, 16}
    as_run = [r for r in curves if r["method"] == cfg.as_run]
    assert as_run and all(r["val_fpr_at_tpr_0.9"] == "" for r in as_run)
    assert (figures / "fig8_learning_curves.png").stat().st_size > 1000
    # the report's new sections, computed from these numbers
    report = write_report(cfg, res, wall_seconds=0.0).read_text()
    for text in ("## The floor of the simulated data", "| floor (oracle) |", "## Where the false positives come from",
                 "## Did the runs reach their plateau?", "still improving", "not logged",
                 "of the paper's 125x on a log scale", "an upper bound", "as the authors' scripts ran it"):
        assert text in report, text


def test_report_puts_the_camera_side_by_side_table_in_when_it_exists(tmp_path):
    from omegaconf import OmegaConf

    from realbogus.reporting import _section_ztf_cameras

    cfg = OmegaConf.create({"figures_dir": str(tmp_path / "figures")})
    out: list[str] = []
    _section_ztf_cameras(cfg, out, "figures")
    assert out == []  # not run: no section
    (tmp_path / "figures" / "ztf_side_by_side").mkdir(parents=True)
    (tmp_path / "figures" / "ztf_side_by_side" / "comparison.csv").write_text(
        "label,model,auc,auc_lo,auc_hi,reals_scored_real,bogus_scored_bogus\n"
        "ztf_simple,runs/ztf-simple,0.79266988,0.701,0.877,0.7752809,0.66666667\n")
    _section_ztf_cameras(cfg, out, "figures")
    assert "| ztf_simple | `runs/ztf-simple` | 0.793 (0.701–0.877) | 0.78 | 0.67 |" in out


def test_schedule_name_read_from_the_run_config(tmp_path):
    from realbogus.reporting import _schedule_name
    from realbogus.rundir import RunDir

    run = tmp_path / "run"
    run.mkdir()
    assert _schedule_name(run) is None  # no config yet
    RunDir(run).config_path.write_text("schedule:\n  name: cosine\n  warmup_steps: 300\n")
    assert _schedule_name(run) == "cosine"


def test_floor_row_left_out_without_ground_truth(tmp_path, monkeypatch):
    """No simulated data on disk: no floor rows, and the reproduction still draws the rest."""
    from realbogus.reproduce import _floors

    monkeypatch.setenv("REALBOGUS_DATA_DIR", str(tmp_path / "nothing"))
    assert _floors(_compose(["scale=smoke"])) is None


def test_aggregate_seeds_mean_and_interval():
    from realbogus.reproduce import aggregate_seeds

    def row(fpr, lo, hi, seed):
        return {"method": "m", "n_runs": 1, "n_real": 10, "n_bogus": 100, "auc": 0.99, "auc_lo": 0.98, "auc_hi": 1.0,
                "fpr_at_tpr_0.9": fpr, "fpr_lo": lo, "fpr_hi": hi, "bogus_per_night": fpr * 1e6,
                "bogus_per_night_lo": lo * 1e6, "bogus_per_night_hi": hi * 1e6, "tpr_at_fpr_0.001": 0.5,
                "run_dirs": f"r{seed}", "_roc": (np.array([0, 0.5, 1.0]), np.array([0, 0.9, 1.0])), "_pred": {},
                "_seed": seed}

    one = aggregate_seeds([row(0.01, 0.008, 0.012, 0)])
    assert one["n_seeds"] == 1 and one["fpr_lo"] == 0.008
    both = aggregate_seeds([row(0.01, 0.009, 0.011, 0), row(0.03, 0.028, 0.033, 1)])
    assert both["fpr_at_tpr_0.9"] == pytest.approx(0.02) and both["n_runs"] == 2 and both["seeds"] == "0 1"
    assert both["fpr_lo"] == pytest.approx(0.01) and both["fpr_hi"] == pytest.approx(0.03)  # the seeds' range
    close = aggregate_seeds([row(0.010, 0.005, 0.02, 0), row(0.011, 0.006, 0.021, 1)])
    assert close["fpr_lo"] == pytest.approx(0.0055) and close["fpr_hi"] == pytest.approx(0.0205)  # mean interval


def test_dry_run_lists_the_new_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "realbogus.reproduce", "scale=smoke", "dry_run=true",
                           f"runs_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert any("experiment=paper_baseline" in line and "simple-ce_as_run-s0" in line for line in lines)
    assert any("loss=ce_ech_vat_as_run" in line for line in lines)
    seed1 = [line for line in lines if line.split("hydra.run.dir=")[-1].split()[0].endswith("-s1")]
    assert len(seed1) == 3 and all("seed=1" in line for line in seed1)
    assert {"smoke-simple-ce-s1", "smoke-complex-ce-s1"} <= {line.split("/")[-1].split()[0] for line in seed1}


def test_floor_of_the_each_sensors_rows_and_its_roc_marker(tmp_path, monkeypatch, smoke_dir):
    """The network x data comparison's floor is that of its sensors' test rows, drawn beside its curves."""
    from realbogus.data.format import open_dataset
    from realbogus.reproduce import _floor_row, _floors, _roc_figure

    data_root = tmp_path / "data"
    data_root.mkdir()
    (data_root / "smoke").symlink_to(smoke_dir, target_is_directory=True)
    monkeypatch.setenv("REALBOGUS_DATA_DIR", str(data_root))
    cfg = _compose(["scale=smoke", "n_bootstrap=20"])
    sensors = [int(s) for s in cfg.reproduce.each_sensors]
    whole, some = _floors(cfg), _floors(cfg, sensors)
    with open_dataset(smoke_dir / "test.h5") as ds:
        keep = np.isin(ds.column("sensor_id"), sensors)
        n_real = int(np.sum(ds.column("true_label")[keep] == 1))
    assert some["floor (oracle)"]["n_test_real"] == n_real < whole["floor (oracle)"]["n_test_real"]
    rows = [{"method": "m", "_roc": (np.array([0.0, 0.01, 1.0]), np.array([0.0, 0.95, 1.0]))},
            *(_floor_row(name, f) for name, f in some.items())]
    png = _roc_figure(rows, tmp_path / "roc.png", "t", some)[0]
    assert png.stat().st_size > 1000


def test_budget_note_follows_the_plateau_rule_where_the_history_exists(tmp_path):
    """A last-epoch best inside the curve's noise is a plateau: no 'undertrained' note."""
    from realbogus.rundir import RunDir

    def run(name, losses):
        d = RunDir(tmp_path / name)
        d.path.mkdir()
        d.write_state("done", epochs_trained=len(losses), best_epoch=len(losses))
        lines = ["epoch,val_loss"] + [f"{i},{v}" for i, v in enumerate(losses)]
        (d / RunDir.HISTORY).write_text("\n".join(lines) + "\n")
        return str(d.path)

    base = {**_row(2e-3, 1e-3, 4e-3), "run_dirs": run("simple", [0.5, 0.4, 0.35, 0.34])}
    noisy = [0.30, 0.32, 0.29, 0.31, 0.30, 0.32, 0.29, 0.31, 0.30, 0.2895]
    flat = {**_row(3e-3, 1e-3, 4e-3), "run_dirs": run("flat", noisy)}
    falling = {**_row(3e-3, 1e-3, 4e-3), "run_dirs": run("falling", [0.6, 0.5, 0.42, 0.36, 0.31, 0.27, 0.24, 0.2])}
    assert "undertrained" not in verdict(flat, base, "x")
    assert "undertrained" in verdict(falling, base, "x")


@pytest.mark.slow
def test_reproduce_killed_while_a_run_trains_reruns_to_the_uninterrupted_bytes(tmp_path):
    """SIGKILL of the reproduction while one of its runs trains: the run stops with it (it does
    not go on alone, holding its folder), and the rerun finishes every run with the bytes an
    uninterrupted reproduction writes."""
    import signal
    import time

    from realbogus.rundir import RunDir

    def args(out):
        return [sys.executable, "-m", "realbogus.reproduce", "scale=smoke", "figures=[losses]", "progress=none",
                f"runs_dir={out}/runs", f"figures_dir={out}/figures", f"report={out}/REPORT.md",
                f"sweep_dir={out}/sweep"]

    env = {**os.environ, "REALBOGUS_DATA_DIR": str(tmp_path / "data")}
    env.pop("REALBOGUS_FAULT", None)
    whole = subprocess.run(args(tmp_path / "whole"), cwd=REPO, env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]
    runs = sorted(p for p in (tmp_path / "whole" / "runs").iterdir() if (p / "predictions.csv").exists())
    assert len(runs) >= 4

    killed = tmp_path / "killed"
    proc = subprocess.Popen(args(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = killed / "runs" / runs[1].name
    deadline = time.time() + 600
    while not (second / "run_state.json").exists():  # the second run has taken its folder
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    holder = RunDir(second).holder()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for _ in range(200):  # the run dies with its parent
        if RunDir(second).holder() is None:
            break
        time.sleep(0.1)
    assert holder and RunDir(second).holder() is None
    assert not RunDir(second).is_done()

    again = subprocess.run(args(killed), cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for run in runs:
        for name in ("predictions.csv", "history.csv"):
            assert (killed / "runs" / run.name / name).read_bytes() == (run / name).read_bytes(), (run.name, name)


# --------------------------------------------------------------------------------------------
# compact copies of finished runs (run_archive): a fresh clone redraws the same figures


def test_archived_runs_restore_and_redraw_the_same_numbers(fake_reproduction, tmp_path):
    import shutil

    from realbogus.evaluation.run_archive import archive_size, manifest
    from realbogus.reproduce import _unique, archive_finished, draw_figures, restore_archived

    cfg, runs, out = fake_reproduction
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.archive_dir = str(tmp_path / "archive")
    draw_figures(cfg, runs)
    before = {n: (out / "figures" / n).read_text() for n in ("fig6_summary.csv", "fig7_pass_rates.csv",
                                                             "fig8_learning_curves.csv")}
    originals = {r.run_dir: RunDir(r.run_dir).predictions_path.read_bytes() for r in _unique(runs)
                 if RunDir(r.run_dir).is_done(r.epochs)}
    written = archive_finished(cfg, runs)
    assert len(written) == len(originals) > 3
    assert archive_finished(cfg, runs) == []  # up to date: nothing rewritten
    assert sum(map(archive_size, written)) < 0.5 * sum(map(len, originals.values()))  # under half the CSVs alone
    # a fresh clone: the run folders are gone, the archives are there
    shutil.rmtree(out / "runs")
    restored = restore_archived(cfg, runs)
    assert {r.run_dir for r in restored} == set(originals)
    for run_dir, data in originals.items():
        assert RunDir(run_dir).predictions_path.read_bytes() == data  # byte for byte
        assert RunDir(run_dir).state()["restored_from"]
    assert restore_archived(cfg, runs) == []  # folders hold runs now: nothing overwritten
    shutil.rmtree(out / "figures")
    draw_figures(cfg, runs)
    for name, text in before.items():
        assert (out / "figures" / name).read_text() == text, name
    assert manifest(written[0])["format"] == 1


def test_an_archive_of_another_config_is_not_restored(fake_reproduction, tmp_path, capsys):
    import shutil

    from omegaconf import open_dict

    from realbogus.reproduce import _unique, archive_finished, restore_archived

    cfg, runs, out = fake_reproduction
    with open_dict(cfg):
        cfg.archive_dir = str(tmp_path / "archive")
    archive_finished(cfg, runs)
    victim = next(r for r in _unique(runs) if RunDir(r.run_dir).is_done(r.epochs))
    path = tmp_path / "archive" / victim.run_dir.name / "run_config.yaml"
    path.write_text(path.read_text().replace("seed: ", "seed: 9", 1))
    shutil.rmtree(out / "runs")
    restored = restore_archived(cfg, runs)
    assert victim.run_dir not in {r.run_dir for r in restored} and not victim.run_dir.exists()
    assert "archived with another config" in capsys.readouterr().out


def test_a_damaged_archive_is_refused_by_name(tmp_path, smoke_dir):
    from realbogus.errors import DataError
    from realbogus.evaluation.report import write_predictions
    from realbogus.evaluation.run_archive import archive_run, restore_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.yaml").write_text("seed: 0\n")
    (run / "run_state.json").write_text('{"status": "done"}')
    rng = np.random.default_rng(0)
    write_predictions(run / "predictions.csv", {"score": rng.random(50), "label": rng.integers(0, 2, 50),
                                                "mag": rng.normal(18, 1, 50), "kind": np.zeros(50, int)})
    arc = archive_run(run, tmp_path / "arc")
    (arc / "run_config.yaml").write_text("seed: 1\n")
    with pytest.raises(DataError, match="run_config.yaml does not restore"):
        restore_run(arc, tmp_path / "back")
    assert not (tmp_path / "back").exists()
    with pytest.raises(DataError, match="not a run archive"):
        restore_run(tmp_path, tmp_path / "back")
    with pytest.raises(DataError, match="already holds a run"):
        restore_run(arc, run)
    (arc / "run_config.yaml").write_text("seed: 0\n")
    (arc / "predictions.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="predictions.npz: unreadable"):
        restore_run(arc, tmp_path / "back")
    assert not (tmp_path / "back").exists()
