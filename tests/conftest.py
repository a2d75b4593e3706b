"""Shared test fixtures: tiny simulated datasets and paths to optional real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# trainer.precision=auto (the default) answers float32 without timing: results independent of the machine
os.environ.setdefault("REALBOGUS_AUTO_PRECISION", "float32")
# predict runtime=auto (the default) scores .onnx models with ONNX Runtime without timing it against OpenVINO
os.environ.setdefault("REALBOGUS_ONNX_RUNTIME", "onnxruntime")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ztf_npz() -> Path:
    """Path to the real ZTF alert triplets; skips the test when they are absent."""
    path = SHARED_DATA / "ztf_alerts_dev.npz"
    if not path.exists():
        pytest.skip("real ZTF triplets (../shared/data) not present")
    return path


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory) -> Path:
    """A folder holding freshly simulated smoke-scale ``train.h5`` and ``test.h5`` (one per module)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from realbogus.simulation import ensure_dataset

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["data=smoke"])
    out = tmp_path_factory.mktemp("smoke")
    with open_dict(cfg):
        cfg.data.dir = str(out)
    ensure_dataset(cfg.data)
    return out
