"""Shared test fixtures: tiny simulated datasets and paths to optional real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

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
