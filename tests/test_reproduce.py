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
    # complex + CE on all data is in figure 2 and figure 3b: one run serves both
    ce_all = [r for r in runs if r.label in ("complex, all", "CE")]
    assert len(ce_all) == 2 and ce_all[0].run_dir == ce_all[1].run_dir
    assert len(_unique(runs)) == len(runs) - 2  # also CE+ECH+VAT (losses) == keep (label handling)
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
                 "fig5_robustness", "fig6_summary"):
        for ext in ("png", "pdf"):
            assert (figures / f"{name}.{ext}").stat().st_size > 1000, name
    for name in ("fig2_models_data", "fig3a_label_handling", "fig3b_losses", "fig4_label_errors", "fig5_robustness",
                 "fig6_summary"):
        assert (figures / f"{name}.csv").is_file()
    report = (out / "REPORT.md").read_text()
    for section in ("Network and training data", "Label handling", "Loss combinations", "Label errors against",
                    "Robustness to label errors", "Headline table", "Runs"):
        assert f"## {section}" in report
    assert "Not drawn yet" not in report
    rows = (figures / "fig2_models_data.csv").read_text().splitlines()
    assert len(rows) == 1 + 6
    second = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "0 to train" in second.stdout
    assert "nothing to train" in second.stdout  # the sweep's cells are all done too
