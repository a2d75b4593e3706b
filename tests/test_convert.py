"""The HDF5 format (round trip, corrupt files, atomic writes) and the converter into it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from realbogus.data.convert import convert
from realbogus.data.format import DatasetWriter, open_dataset, read_dataset, write_dataset
from realbogus.data.kinds import KIND_NAMES
from realbogus.errors import ConfigError, DataError
from test_loaders import make_stamps, write_fits_examples, write_zenodo

REPO = Path(__file__).resolve().parents[1]


def core_columns(n: int) -> dict[str, np.ndarray]:
    return {
        "label": (np.arange(n) % 2).astype(np.int8),
        "sensor_id": (np.arange(n) % 84).astype(np.int16),
        "kind": np.full(n, 14, np.int16),
        "mag": np.linspace(15, 19, n).astype(np.float32),
    }


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------- format
def test_format_round_trip(tmp_path):
    x = make_stamps(40)
    cols = core_columns(40)
    cols["true_label"] = cols["label"].copy()
    cols["candid"] = np.arange(40, dtype=np.int64) * 7
    cols["objectId"] = np.array([f"obj{i}" for i in range(40)])
    path = write_dataset(tmp_path / "d.h5", x, cols, attrs={"seed": 3, "split": "test", "config": "a: 1\n"},
                         chunk_rows=16)
    with open_dataset(path) as ds:
        assert len(ds) == 40 and ds.kind_names == list(KIND_NAMES)
        np.testing.assert_array_equal(ds.images([5, 1, 5, 39]), x[[5, 1, 5, 39]])
        blocks = list(ds.iter_blocks(block_rows=16))
        assert [len(i) for i, _ in blocks] == [16, 16, 8]
    back = read_dataset(path)
    np.testing.assert_array_equal(back["images"], x)
    for name, col in cols.items():
        np.testing.assert_array_equal(back[name], col)
    assert back["attrs"]["seed"] == 3 and back["attrs"]["split"] == "test" and back["attrs"]["n_rows"] == 40
    assert os.stat(path).st_mode & 0o044, "written files must be readable by others, not private"


def test_truncated_or_foreign_hdf5_is_a_data_error(tmp_path):
    import h5py

    path = write_dataset(tmp_path / "d.h5", make_stamps(10), core_columns(10))
    raw = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.h5").write_bytes(os.urandom(4096))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with h5py.File(tmp_path / "short.h5", "w") as f:  # a column shorter than images
        for name, col in core_columns(10).items():
            f[name] = col[:9]
        f["images"] = make_stamps(10)
        f.attrs["format_version"] = "1.0"
    for name, fragment in [("cut.h5", "truncated"), ("junk.h5", "not a readable HDF5 file"),
                           ("other.h5", "no 'images' dataset"), ("short.h5", "has shape (9,)"),
                           ("absent.h5", "no such file")]:
        with pytest.raises(DataError, match=re.escape(fragment)):
            open_dataset(tmp_path / name)


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "d.h5"
    with pytest.raises(RuntimeError):
        with DatasetWriter(path) as w:
            w.append(make_stamps(5), **core_columns(5))
            raise RuntimeError("crash while writing")
    assert not path.exists() and leftovers(tmp_path) == []
    with pytest.raises(ValueError):  # a missing column is a programming error; still no file
        with DatasetWriter(path) as w:
            w.append(make_stamps(5), label=np.zeros(5))
    assert not path.exists() and leftovers(tmp_path) == []
    write_dataset(path, make_stamps(5), core_columns(5))
    with pytest.raises(DataError, match="already exists"):
        DatasetWriter(path)
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- converter
def test_convert_zenodo_directory_round_trip(tmp_path):
    truth = write_zenodo(tmp_path / "z", {0: 6, 83: 9}, how="flat")
    summary = convert(tmp_path / "z", tmp_path / "train.h5", block_rows=4)
    assert summary == {"path": str(tmp_path / "train.h5"), "n_rows": 15, "real": 10, "bogus": 5, "unlabelled": 0}
    d = read_dataset(tmp_path / "train.h5")
    np.testing.assert_array_equal(d["images"], np.concatenate([truth[0], truth[83]]))
    np.testing.assert_array_equal(d["sensor_id"], [0] * 6 + [83] * 9)
    assert d["label"].dtype == np.int8 and d["kind"].dtype == np.int16 and "sample_index" in d
    assert d["attrs"]["split"] == "train" and d["attrs"]["source_layout"] == "zenodo"
    assert yaml.safe_load(d["attrs"]["config"])["layout"] == "auto"


def test_convert_test_pair_npz_and_fits(tmp_path):
    pair = tmp_path / "testset"
    pair.mkdir()
    np.save(pair / "real_transient_201217.npy", make_stamps(2, 1))
    np.save(pair / "bogus_transient_201221.npy", make_stamps(3, 2))
    convert(pair, tmp_path / "test.h5")
    d = read_dataset(tmp_path / "test.h5")
    assert list(d["label"]) == [1, 1, 0, 0, 0] and d["attrs"]["split"] == "test"

    x = make_stamps(5)
    x[3, 2, 2, 0] = np.nan
    np.savez(tmp_path / "c.npz", images=x, objectId=np.array(list("abcde")), candid=np.arange(5))
    with pytest.raises(DataError, match="c.npz: row 3"):
        convert(tmp_path / "c.npz", tmp_path / "c.h5")
    assert not (tmp_path / "c.h5").exists() and leftovers(tmp_path) == []
    convert(tmp_path / "c.npz", tmp_path / "c.h5", nan_policy="fill")
    d = read_dataset(tmp_path / "c.h5")
    assert list(d["objectId"]) == list("abcde") and list(d["n_masked"]) == [0, 0, 0, 1, 0]
    assert (d["label"] == -1).all() and np.isnan(d["mag"]).all() and np.isfinite(d["images"]).all()

    write_fits_examples(tmp_path / "f", make_stamps(4))
    convert(tmp_path / "f", tmp_path / "f.h5")
    assert list(read_dataset(tmp_path / "f.h5", fields=["name"])["name"]) == ["c0", "c1", "c2", "c3"]


def test_convert_refuses_existing_output_and_keeps_it_on_failure(tmp_path):
    np.save(tmp_path / "good.npy", make_stamps(6))
    out = convert(tmp_path / "good.npy", tmp_path / "o.h5")["path"]
    with pytest.raises(DataError, match="already exists"):
        convert(tmp_path / "good.npy", out)
    bad = make_stamps(9)
    bad[7, 0, 0, 0] = np.inf  # in the second block: the first block is already written
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(DataError, match="bad.npy: row 7"):
        convert(tmp_path / "bad.npy", out, overwrite=True, block_rows=4)
    assert len(open_dataset(out)) == 6 and leftovers(tmp_path) == []
    convert(tmp_path / "good.npy", out, overwrite=True)
    with pytest.raises(ConfigError, match=".h5 or .hdf5"):
        convert(tmp_path / "good.npy", tmp_path / "o.csv")


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "realbogus.data.convert", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_converts_and_reports_errors_in_one_line(tmp_path):
    write_zenodo(tmp_path / "z", {1: 5})
    np.save(tmp_path / "ch4.npy", np.zeros((2, 29, 29, 4), np.float32))
    ok = run_cli(tmp_path, "input=z", "output=out/train.h5")
    assert ok.returncode == 0, ok.stderr
    assert "5 stamps (3 real, 2 bogus, 0 unlabelled)" in ok.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ch4.npy", "out", "z"]  # no Hydra litter
    assert yaml.safe_load(open_dataset(tmp_path / "out" / "train.h5").attrs["config"])["input"] == "z"
    for args, fragment in [
        (("input=missing", "output=a.h5"), "missing: no such file"),
        (("input=ch4.npy", "output=a.h5"), "4 channels"),
        (("input=z", "output=out/train.h5"), "already exists"),
        (("output=a.h5",), "input=PATH is required"),
    ]:
        res = run_cli(tmp_path, *args)
        assert res.returncode == 2, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], (args, res.stderr)
    assert not (tmp_path / "a.h5").exists() and leftovers(tmp_path) == [] and leftovers(tmp_path / "out") == []
