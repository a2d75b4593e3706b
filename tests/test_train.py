"""End-to-end training on smoke data: every model x loss config, resume, reload, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

REPO = Path(__file__).resolve().parents[1]
MODELS = ["simple", "complex"]
LOSSES = ["ce", "ech", "ce_ech", "ce_vat", "ech_vat", "ce_ech_vat"]


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def tiny(cfg, data_dir: Path, steps: int = 2):
    """Shrink a composed config to a few steps on the shared smoke data."""
    with open_dict(cfg):
        cfg.data.dir = str(data_dir)
        cfg.trainer.epochs = 1
        cfg.trainer.steps_per_epoch = steps
        cfg.trainer.batch_size = 64
        cfg.trainer.n_bootstrap = 20
        cfg.trainer.progress = "none"
    return cfg


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("loss", LOSSES)
def test_every_model_and_loss_trains_one_epoch(smoke_dir, tmp_path, model, loss):
    from realbogus.train import train as run_training

    cfg = tiny(compose_train([f"model={model}", f"loss={loss}", "data=smoke"]), smoke_dir)
    metrics = run_training(cfg, tmp_path)
    for name in ("metrics.json", "model.keras", "predictions.csv", "roc.csv", "roc.png", "roc.pdf", "history.csv"):
        assert (tmp_path / name).exists(), name
    assert 0.0 <= metrics["auc"] <= 1.0
    history = (tmp_path / "history.csv").read_text().splitlines()
    header = history[0].split(",")
    for term in ("loss", "ce", "ech", "lds", "val_loss"):
        assert term in header
    row = dict(zip(header, history[1].split(",")))
    # a term with zero weight is not computed; a weighted one is
    assert (float(row["lds"]) > 0) == ("vat" in loss)
    assert (float(row["ech"]) > 0) == ("ech" in loss)


def test_saved_model_reloads_in_fresh_process(smoke_dir, tmp_path):
    from realbogus.data.format import open_dataset
    from realbogus.models import load_model
    from realbogus.train import train as run_training

    cfg = tiny(compose_train(["model=complex", "loss=ce", "data=smoke"]), smoke_dir)
    run_training(cfg, tmp_path)
    with open_dataset(smoke_dir / "test.h5") as ds:
        x = ds.images(slice(0, 16))
    np.save(tmp_path / "x.npy", x)
    here = load_model(tmp_path / "model.keras").predict(x, verbose=0)
    code = (
        "import numpy as np, sys; from realbogus.models import load_model; "
        f"m = load_model({str(tmp_path / 'model.keras')!r}); "
        f"np.save({str(tmp_path / 'y.npy')!r}, m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), here)


def test_interrupted_run_resumes_and_finished_run_is_not_retrained(smoke_dir, tmp_path):
    from realbogus.training.checkpoint import load_state
    from realbogus.train import train as run_training

    # a constant learning rate does not know the run's length, so more epochs extend the run
    # (under the default cosine schedule they are another experiment: test_runs.py)
    cfg = tiny(compose_train(["model=simple", "loss=ce", "data=smoke", "schedule=constant",
                              "trainer.precision=float32"]), smoke_dir)
    run_training(cfg, tmp_path)
    assert load_state(tmp_path / "checkpoint")["epoch"] == 1
    # Simulate an interruption after epoch 1 of a 2-epoch run: state says running.
    (tmp_path / "run_state.json").write_text(json.dumps({"status": "running"}))
    with open_dict(cfg):
        cfg.trainer.epochs = 2
    run_training(cfg, tmp_path)
    assert load_state(tmp_path / "checkpoint")["epoch"] == 2
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1"]  # epoch 0 not repeated
    mtime = (tmp_path / "model.keras").stat().st_mtime
    run_training(cfg, tmp_path)  # finished: nothing retrained or rewritten
    assert (tmp_path / "model.keras").stat().st_mtime == mtime
    with open_dict(cfg):  # the same experiment asked for in bfloat16 reuses the float32 run
        cfg.trainer.precision = "mixed_bfloat16"
    run_training(cfg, tmp_path)
    assert (tmp_path / "model.keras").stat().st_mtime == mtime
    assert "precision: float32" in (tmp_path / "run_config.yaml").read_text()


def test_run_saved_before_a_simulator_option_existed_is_reused(smoke_dir, tmp_path):
    """A run_config.yaml without simulator keys added later (at their defaults) still matches."""
    from realbogus.train import train as run_training

    cfg = tiny(compose_train(["model=simple", "loss=ce", "data=smoke"]), smoke_dir)
    run_training(cfg, tmp_path)
    saved = OmegaConf.load(tmp_path / "run_config.yaml")
    del saved.data.simulation.reals["star_fraction"]
    del saved.data.simulation.reals["star_contrast"]
    (tmp_path / "run_config.yaml").write_text(OmegaConf.to_yaml(saved))
    mtime = (tmp_path / "model.keras").stat().st_mtime
    run_training(cfg, tmp_path)  # finished and matching: not retrained
    assert (tmp_path / "model.keras").stat().st_mtime == mtime


def test_changed_config_in_same_run_folder_is_refused(smoke_dir, tmp_path):
    from realbogus.errors import ConfigError
    from realbogus.train import train as run_training

    cfg = tiny(compose_train(["model=simple", "loss=ce", "data=smoke"]), smoke_dir)
    run_training(cfg, tmp_path)
    with open_dict(cfg):
        cfg.optimizer.learning_rate = 0.5
    with pytest.raises(ConfigError, match="optimizer.learning_rate"):
        run_training(cfg, tmp_path)


def test_same_seed_same_result(smoke_dir, tmp_path):
    from realbogus.train import train as run_training

    results = []
    for name in ("a", "b"):
        cfg = tiny(compose_train(["model=simple", "loss=ce_ech_vat", "data=smoke"]), smoke_dir, steps=3)
        run_training(cfg, tmp_path / name)
        results.append((tmp_path / name / "predictions.csv").read_text())
    assert results[0] == results[1]


def test_cli_smoke_interface(smoke_dir, tmp_path):
    """The documented command writes the documented files."""
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "realbogus.train", "model=simple", "loss=ce", "data=smoke",
        f"data.dir={smoke_dir}", "trainer.epochs=1", "trainer.steps_per_epoch=2", "trainer.progress=none",
        f"hydra.run.dir={out}",
    ]
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
    for name in ("metrics.json", "model.keras", "predictions.csv", "roc.csv", "roc.png", "roc.pdf"):
        assert (out / name).exists(), name
    header = (out / "predictions.csv").read_text().splitlines()[0].split(",")
    for col in ("score", "label", "sensor_id", "kind", "mag"):
        assert col in header


def test_config_typo_is_one_line_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "realbogus.train", "trainer.epoch=1", f"hydra.run.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode != 0
    assert "trainer.epoch" in proc.stderr


def test_distribution_scaling_matches_single_device(tmp_path):
    """Under MirroredStrategy on two virtual CPUs a CE step equals the single-device step."""
    script = REPO / "tests" / "scripts" / "mirrored_step.py"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["step_size"] > 1e-4, result  # the step moved the weights
    assert result["max_abs_diff"] < 1e-3 * result["step_size"] + 1e-6, result
