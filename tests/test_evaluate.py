"""Evaluation outputs of a run folder, the evaluate command, and scoring an HDF5 file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from realbogus.data.format import write_dataset
from realbogus.data.kinds import KIND_CODES
from realbogus.errors import DataError
from realbogus.evaluation.report import read_predictions, read_roc, write_evaluation

RUN_FILES = ["predictions.csv", "metrics.json", "metrics_by_sensor.csv", "metrics_by_mag.csv",
             "metrics_by_kind.csv", "roc.csv", "roc.png", "roc.pdf", "scores.png"]
CENTRE = (14, 14, 2)  # centre pixel of the difference stamp


def fake_predictions(n_real=300, n_bogus=3000, seed=0):
    rng = np.random.default_rng(seed)
    n = n_real + n_bogus
    label = np.r_[np.ones(n_real, np.int8), np.zeros(n_bogus, np.int8)]
    true_label = label.copy()
    true_label[n_real + rng.choice(n_bogus, 20, replace=False)] = 1  # hidden reals among the bogus
    logit = np.where(label == 1, rng.normal(4, 1.5, n), rng.normal(0, 1.5, n))
    return {
        "index": np.arange(n),
        "score": (1 / (1 + np.exp(-logit))).astype(np.float32),
        "label": label,
        "true_label": true_label,
        "sensor_id": rng.integers(0, 84, n).astype(np.int16),
        "kind": np.where(label == 1, KIND_CODES["sn_in_host"], rng.integers(9, 25, n)).astype(np.int16),
        "mag": np.where(label == 1, rng.uniform(14, 19, n), np.nan).astype(np.float32),
    }


def run_cli(*args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "realbogus.evaluate", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as training leaves it (evaluation outputs only)."""
    out = tmp_path_factory.mktemp("run")
    write_evaluation(out, fake_predictions(), title="toy run", n_bootstrap=50, seed=3)
    return out


def test_write_evaluation_writes_every_file(run_dir):
    for name in RUN_FILES:
        assert (run_dir / name).stat().st_size > 0, name
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no temporary files left
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["title"] == "toy run" and (m["n_real"], m["n_bogus"]) == (300, 3000)
    assert set(m["fpr_at_tpr"]) == {"0.9", "0.95", "0.99"} and set(m["tpr_at_fpr"]) == {"0.001", "0.0001"}
    for p in m["fpr_at_tpr"].values():
        assert set(p) == {"fpr", "ci", "threshold", "tpr"} and p["ci"][0] <= p["fpr"] <= p["ci"][1]
    assert m["bogus_per_night"] == pytest.approx(m["fpr_at_tpr"]["0.9"]["fpr"] * 1e6)
    assert m["bootstrap"]["n_resamples"] == 50 and m["bootstrap"]["seed"] == 3
    assert m["vs_true_label"]["n_real"] == 320  # hidden reals counted against the truth
    roc = read_roc(run_dir)
    assert roc["fpr"][0] == 0 and roc["tpr"][-1] == 1 and np.isinf(roc["threshold"][0])
    header = (run_dir / "metrics_by_sensor.csv").read_text().splitlines()[0]
    assert header.startswith("sensor_id,n_real,n_bogus,n_real_passed,tpr,")


def test_predictions_round_trip(run_dir):
    p = fake_predictions()
    back = read_predictions(run_dir)
    assert list(back) == ["index", "score", "label", "true_label", "sensor_id", "kind", "mag"]
    np.testing.assert_array_equal(back["score"], p["score"].astype(np.float64))  # exact
    for name in ("index", "label", "true_label", "sensor_id"):
        np.testing.assert_array_equal(back[name], p[name])
    assert back["kind"][0] == "sn_in_host" and back["kind"][-1] in KIND_CODES
    np.testing.assert_allclose(back["mag"], p["mag"], rtol=1e-6)
    assert np.isnan(back["mag"][p["label"] == 0]).all()


def test_minimal_columns_and_one_class(tmp_path):
    m = write_evaluation(tmp_path / "a", {"score": [0.9, 0.2, 0.7], "label": [1, 0, -1]}, n_bootstrap=0)
    assert m["auc"] == 1.0 and m["auc_ci"] is None and m["n_unlabelled"] == 1
    back = read_predictions(tmp_path / "a")
    assert back["kind"].tolist() == ["unknown"] * 3 and (back["sensor_id"] == -1).all()
    with pytest.raises(DataError, match="both real"):
        write_evaluation(tmp_path / "b", {"score": [0.9, 0.2], "label": [1, 1]})


def test_cli_recomputes_identical_outputs(run_dir, tmp_path):
    before = (run_dir / "metrics.json").read_text()
    inode = (run_dir / "metrics.json").stat().st_ino
    by_mag = (run_dir / "metrics_by_mag.csv").read_text()
    for name in ("metrics_by_mag.csv", "roc.png", "roc.csv"):
        (run_dir / name).unlink()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    res = run_cli(f"run_dir={run_dir}", cwd=cwd)
    assert res.returncode == 0, res.stderr
    assert "AUC" in res.stdout
    assert (run_dir / "metrics.json").stat().st_ino != inode  # rewritten ...
    assert (run_dir / "metrics.json").read_text() == before  # ... with identical numbers and settings
    assert (run_dir / "metrics_by_mag.csv").read_text() == by_mag
    assert (run_dir / "roc.png").exists() and (run_dir / "roc.csv").exists()
    assert list(cwd.iterdir()) == []  # no Hydra output folders or log files


def test_recompute_into_another_folder(run_dir, tmp_path):
    from realbogus.evaluate import evaluate_run

    out, metrics = evaluate_run(run_dir, out_dir=tmp_path / "copy")
    for name in RUN_FILES:
        assert (out / name).exists(), name
    assert (out / "metrics.json").read_text() == (run_dir / "metrics.json").read_text()
    assert (out / "predictions.csv").read_text() == (run_dir / "predictions.csv").read_text()
    # settings given explicitly override the recorded ones
    _, other = evaluate_run(run_dir, out_dir=tmp_path / "other", n_bootstrap=0, label="true_label")
    assert other["auc_ci"] is None and other["label_column"] == "true_label" and "vs_label" in other


@pytest.mark.parametrize("case", ["missing_dir", "no_predictions", "no_model", "no_run_dir"])
def test_cli_errors_are_one_line(case, run_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    h5 = tmp_path / "x.h5"
    h5.write_bytes(b"")
    args = {
        "missing_dir": [f"run_dir={tmp_path / 'nope'}"],
        "no_predictions": [f"run_dir={empty}"],
        "no_model": [f"run_dir={run_dir}", f"data.path={h5}"],
        "no_run_dir": [],
    }[case]
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr


# ---------------------------------------------------------------------------- scoring
def toy_dataset(path, n=70, seed=0, with_true_label=False):
    """Noise stamps; reals carry a bright centre pixel in the difference stamp."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 1, (n, 29, 29, 3)).astype(np.float32)
    label = (np.arange(n) % 3 == 0).astype(np.int8)
    images[label == 1, CENTRE[0], CENTRE[1], CENTRE[2]] += 4
    columns = {"label": label, "sensor_id": (np.arange(n) % 5).astype(np.int16),
               "kind": np.where(label == 1, KIND_CODES["sn_hostless"], KIND_CODES["cosmic_ray"]).astype(np.int16),
               "mag": np.where(label == 1, 17.0, np.nan).astype(np.float32)}
    if with_true_label:
        columns["true_label"] = label
    write_dataset(path, images, columns)
    return images, label


def toy_model():
    """Flatten + Dense whose real logit is the centre pixel of the difference stamp."""
    import keras

    model = keras.Sequential([keras.Input((29, 29, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    kernel = np.zeros((29 * 29 * 3, 2), np.float32)
    kernel[np.ravel_multi_index(CENTRE, (29, 29, 3)), 1] = 1.0
    model.layers[-1].set_weights([kernel, np.zeros(2, np.float32)])
    return model


def load_keras(path):
    try:
        from realbogus.models import load_model
    except ImportError:  # the models package is not there yet: plain Keras loads the toy model
        import keras

        load_model = keras.models.load_model
    return load_model(path)


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    """A run folder holding the toy model, and a toy HDF5 file to score."""
    root = tmp_path_factory.mktemp("scoring")
    images, label = toy_dataset(root / "toy.h5")
    run = root / "run"
    run.mkdir()
    toy_model().save(run / "model.keras")
    return run, root / "toy.h5", images, label


def test_score_dataset(scored_run):
    from realbogus.evaluation.scoring import score_dataset

    run, h5, images, label = scored_run
    model = load_keras(run / "model.keras")
    expected = 1 / (1 + np.exp(-images[:, CENTRE[0], CENTRE[1], CENTRE[2]].astype(np.float64)))
    out = score_dataset(model, h5, batch_size=32, progress=False)  # 70 rows: a short last batch
    np.testing.assert_allclose(out["score"], expected, rtol=1e-6)
    np.testing.assert_array_equal(out["index"], np.arange(70))
    np.testing.assert_array_equal(out["label"], label)
    assert (out["true_label"] == -1).all()  # the file has no ground truth column
    assert out["kind"][0] == "sn_hostless" and out["kind"][1] == "cosmic_ray"
    sub = score_dataset(model, h5, batch_size=16, rows=[50, 3, 7], progress=False)
    np.testing.assert_array_equal(sub["index"], [3, 7, 50])
    np.testing.assert_allclose(sub["score"], expected[[3, 7, 50]], rtol=1e-6)
    with pytest.raises(DataError, match="row indices"):
        score_dataset(model, h5, rows=[70], progress=False)


def test_evaluate_run_on_other_data(scored_run):
    from realbogus.evaluate import evaluate_run

    run, h5, _, label = scored_run
    out, metrics = evaluate_run(run, data_path=h5, n_bootstrap=20, progress=False, load_model=load_keras)
    assert out == run / "eval_toy"
    for name in RUN_FILES:
        assert (out / name).exists(), name
    assert metrics["n_real"] == int(label.sum()) and metrics["auc"] > 0.9
    assert metrics["title"] == f"{run.name} on toy"


def test_cli_scores_model_on_other_data(scored_run, tmp_path):
    pytest.importorskip("realbogus.models", reason="realbogus.models.load_model not available yet")
    run, h5, _, _ = scored_run
    res = run_cli(f"run_dir={run}", f"data.path={h5}", f"out_dir={tmp_path / 'ev'}", "n_bootstrap=10",
                  "progress=false", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["bootstrap"]["n_resamples"] == 10 and m["n_bogus"] == 46
