"""The real-data check: scoring ZTF alerts and comparing with ZTF's drb (realbogus.evaluation.realdata)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from realbogus.errors import ConfigError, DataError
from realbogus.evaluation.realdata import (CHECK_FILE, FIGURE_FILE, SCORES_FILE, WORST_FILE, check_ztf, fading,
                                           load_alerts, orient_triplets, summarise, template_peak_snr)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
OUTPUTS = (SCORES_FILE, CHECK_FILE, FIGURE_FILE, "ztf_check.pdf", WORST_FILE, "ztf_worst.pdf")


def read_csv(path: Path) -> dict[str, list[str]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return {name: [r[i] for r in rows[1:]] for i, name in enumerate(rows[0])}


def synthetic_alerts(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """An alert archive like the ZTF file: count-like stamps, drb with NaN and values on the cuts."""
    rng = np.random.default_rng(seed)
    n = 60
    images = rng.normal(150.0, 10.0, (n, 29, 29, 3)).astype(np.float32)
    yy, xx = np.mgrid[:29, :29]
    blob = np.exp(-((yy - 14) ** 2 + (xx - 14) ** 2) / 3.0).astype(np.float32)
    images[::2, ..., 0] += rng.uniform(50, 500, (n + 1) // 2)[:, None, None] * blob
    images[::2, ..., 2] += images[::2, ..., 0] - 150.0
    images[5, :4, :, 1] = 0.0  # a masked strip, set to 0 as in the ZTF file
    drb = np.r_[rng.uniform(0.9, 1.0, 20), rng.uniform(0.0, 0.1, 15), rng.uniform(0.1, 0.9, 10),
                np.full(10, np.nan), [0.9, 0.1, 0.0, 1.0, 0.95]].astype(np.float32)
    ssdistnr = np.full(n, -999.0, np.float32)
    ssdistnr[[1, 3, 40, 50]] = [0.0, 2.5, 1.0, 6.0]  # 6 arcsec: not an asteroid
    nan_count = np.zeros((n, 3), np.int16)
    nan_count[5, 1] = 4 * 29
    cols = {
        "images": images,
        "candid": np.arange(n, dtype=np.int64) + 10**17,
        "objectId": np.array([f"ZTF24aa{i:05d}" for i in range(n)]),
        "drb": drb,
        "rb": rng.uniform(0, 1, n).astype(np.float32),
        "isdiffpos": np.where(np.arange(n) % 3 == 0, "f", "t"),
        "magpsf": rng.uniform(16, 20.5, n).astype(np.float32),
        "ssdistnr": ssdistnr,
        "nan_count": nan_count,
        "channel_order": np.array(["science", "template", "difference"]),
    }
    np.savez(path, **cols)
    return cols


@pytest.fixture(scope="module")
def network():
    """An untrained simple network (the check needs scores, not good ones)."""
    import keras
    from hydra import compose, initialize_config_dir

    from realbogus.models import build_model

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["model=simple", "loss=ce", "data=smoke"])
    keras.utils.set_random_seed(2)
    return build_model(cfg.model)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, network) -> Path:
    """A folder holding the network as model.keras, like a run folder."""
    out = tmp_path_factory.mktemp("run")
    network.save(out / "model.keras")
    return out


def test_synthetic_alerts_match_independent_numbers(tmp_path, network):
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from realbogus.evaluation.scoring import scores_from_logits

    cols = synthetic_alerts(tmp_path / "alerts.npz")
    summary = check_ztf(network, tmp_path / "alerts.npz", tmp_path / "out", n_bootstrap=200, n_worst=4)
    for name in OUTPUTS:
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary files left
    assert json.loads((tmp_path / "out" / CHECK_FILE).read_text()) == json.loads(json.dumps(summary))

    table = read_csv(tmp_path / "out" / SCORES_FILE)
    scores = np.asarray(table["score"], float)
    f = cols["isdiffpos"] == "f"
    oriented = cols["images"].copy()
    oriented[f] = oriented[f][..., [1, 0, 2]]
    reference = scores_from_logits(network.predict(oriented, verbose=0))
    np.testing.assert_allclose(scores, reference, rtol=1e-5, atol=1e-7)
    as_stored = scores_from_logits(network.predict(cols["images"], verbose=0))
    np.testing.assert_allclose(np.asarray(table["score_unoriented"], float), as_stored, rtol=1e-5, atol=1e-7)
    assert table["swapped"] == [str(int(v)) for v in f]
    assert summary["orientation"]["orient"] and summary["orientation"]["n_swapped"] == int(f.sum()) == 20
    assert table["candid"] == [str(c) for c in cols["candid"]]
    assert table["objectId"] == list(cols["objectId"]) and table["isdiffpos"] == list(cols["isdiffpos"])

    drb = cols["drb"]
    real, bogus = drb >= 0.9, drb < 0.1  # NaN is neither
    assert real.sum() == 23 and bogus.sum() == 16  # the values on the cuts: 0.9 is real, 0.1 is not bogus
    assert (summary["n_alerts"], summary["n_with_drb"], summary["n_without_drb"]) == (60, 50, 10)
    assert (summary["n_probably_real"], summary["n_probably_bogus"]) == (23, 16)
    assert summary["n_between"] == 50 - 23 - 16
    y = np.r_[np.ones(real.sum()), np.zeros(bogus.sum())]
    assert summary["auc"] == pytest.approx(roc_auc_score(y, np.r_[scores[real], scores[bogus]]), abs=1e-12)
    lo, hi = summary["auc_ci"]
    assert 0.0 <= lo <= hi <= 1.0
    has = np.isfinite(drb)
    assert summary["spearman"]["n"] == 50
    assert summary["spearman"]["rho"] == pytest.approx(spearmanr(scores[has], drb[has]).statistic, abs=1e-9)
    assert summary["reals_scored_real"]["k"] == int((scores[real] >= 0.5).sum())
    assert summary["reals_scored_real"]["fraction"] == pytest.approx(np.mean(scores[real] >= 0.5))
    assert summary["bogus_scored_bogus"]["fraction"] == pytest.approx(np.mean(scores[bogus] < 0.5))
    asteroid = np.isin(np.arange(60), [1, 3, 40])
    assert summary["asteroids"]["n"] == 3 and table["asteroid"] == [str(int(a)) for a in asteroid]
    assert summary["asteroids"]["scored_real"]["k"] == int((scores[asteroid] >= 0.5).sum())
    assert summary["n_masked_stamps"] == 1
    assert [i for i, v in enumerate(table["nan_count"]) if v != "0"] == [5]
    assert table["drb"][45] == "" and table["drb_class"][45] == "none"
    assert set(summary["by_isdiffpos"]) == {"t", "f"}
    assert sum(v["n"] for v in summary["by_isdiffpos"].values()) == 60
    for sign, group in summary["by_isdiffpos"].items():
        sel = cols["isdiffpos"] == sign
        r, b = real & sel, bogus & sel
        assert (group["n_probably_real"], group["n_probably_bogus"]) == (r.sum(), b.sum())
        y = np.r_[np.ones(r.sum()), np.zeros(b.sum())]
        assert group["auc"] == pytest.approx(roc_auc_score(y, np.r_[scores[r], scores[b]]), abs=1e-12)
    # Where the disagreements sit: counted again from the CSV's template peaks.
    snr = np.asarray(table["template_peak_snr"], float)
    passed = scores >= 0.5
    src = summary["on_template_source"]
    for name, sel in (("reals_scored_bogus", real & ~passed), ("reals_scored_real", real & passed),
                      ("bogus_scored_real", bogus & passed), ("bogus_scored_bogus", bogus & ~passed)):
        assert src[name]["n"] == sel.sum() and src[name]["n_on_source"] == (snr[sel] >= 20).sum(), name
    y = np.r_[np.ones(real.sum()), np.zeros(bogus.sum())]
    assert summary["unoriented"]["auc"] == pytest.approx(
        roc_auc_score(y, np.r_[as_stored[real], as_stored[bogus]]), abs=1e-6)


def test_template_peak_snr_against_a_direct_computation():
    """A star under the candidate in the template gives its peak in noise units; empty sky does not."""
    rng = np.random.default_rng(3)
    images = rng.normal(100.0, 5.0, (3, 29, 29, 3))
    yy, xx = np.mgrid[:29, :29]
    images[0, ..., 1] += 400.0 * np.exp(-((yy - 14) ** 2 + (xx - 15) ** 2) / 4.0)  # a star one pixel off centre
    images[2, ..., 1] += 400.0 * np.exp(-((yy - 3) ** 2 + (xx - 3) ** 2) / 4.0)    # a star in the corner only
    snr = template_peak_snr(images)
    t = images[0, ..., 1]
    sky, mad = np.median(t), np.median(np.abs(t - np.median(t)))
    assert snr[0] == pytest.approx((t[12:17, 12:17].max() - sky) / (1.4826 * mad))
    assert snr[0] > 60 and snr[1] < 5 and snr[2] < 5


def test_fading_reads_every_isdiffpos_dtype(tmp_path):
    expected = [True, False, True, False]
    for values in (np.array(["f", "t", "F", "t"]), np.array([b"f", b"t", b"f", b"t"]), np.array(["0", "1", "0", "1"]),
                   np.array([0, 1, 0, 1]), np.array([False, True, False, True]), np.array(["false", "true", "f", "t"])):
        assert fading(values).tolist() == expected, values
    assert fading(np.array(["", "", "n", "t"])).tolist() == [False] * 4
    images = np.zeros((4, 29, 29, 3), np.float32)
    np.savez(tmp_path / "bytes.npz", images=images, drb=np.zeros(4), isdiffpos=np.array([b"f", b"t", b"f", b"t"]))
    _, columns = load_alerts(tmp_path / "bytes.npz")  # bytes in the file, no pickle needed
    assert fading(columns["isdiffpos"]).tolist() == expected
    stamps = np.arange(2 * 2 * 2 * 3, dtype=np.float32).reshape(2, 2, 2, 3)
    turned = orient_triplets(stamps, [True, False])
    np.testing.assert_array_equal(turned[0], stamps[0][..., [1, 0, 2]])
    np.testing.assert_array_equal(turned[1], stamps[1])
    assert turned is not stamps and stamps[0, 0, 0, 0] == 0  # a copy; the input is left alone


def toy_scores(stamps: np.ndarray) -> np.ndarray:
    """A sigmoid of (channel 0 - channel 1) at the centre pixel: high when the candidate is
    brighter in channel 0, as in the training data."""
    stamps = np.asarray(stamps, dtype=np.float32)
    contrast = stamps[:, 14, 14, 0].astype(np.float64) - stamps[:, 14, 14, 1]
    return 1.0 / (1.0 + np.exp(-contrast / 50.0))


class RecordingScorer:
    """Stands in for :class:`realbogus.deploy.inference.Scorer`: records every input it scores
    and scores it with :func:`toy_scores`."""

    calls: list = []

    def __init__(self, network, batch_size: int = 256, precision: str = "float32"):
        self.precision = "float32"

    def scores(self, stamps):
        stamps = np.array(stamps, dtype=np.float32, copy=True)
        RecordingScorer.calls.append(stamps)
        return toy_scores(stamps)


def fading_alerts(path: Path) -> dict[str, np.ndarray]:
    """The synthetic archive with its 'f' rows stored as ZTF stores them: the candidate in the
    reference (channel 1), the science image (channel 0) without it, and a positive difference."""
    cols = synthetic_alerts(path)
    f = cols["isdiffpos"] == "f"
    cols["images"][f] = cols["images"][f][..., [1, 0, 2]]
    np.savez(path, **cols)
    return cols


@pytest.mark.parametrize("orient", [True, False])
def test_orient_swaps_new_and_ref_of_fading_alerts(tmp_path, monkeypatch, orient):
    import types

    import realbogus.deploy.inference

    monkeypatch.setattr(realbogus.deploy.inference, "Scorer", RecordingScorer)
    monkeypatch.setattr(RecordingScorer, "calls", [])
    cols = fading_alerts(tmp_path / "alerts.npz")
    stored, f = cols["images"], cols["isdiffpos"] == "f"
    blob = np.arange(60) % 2 == 0  # rows with a source at the centre (channel 2 positive there)
    assert (blob & f).sum() == 10 and np.all(stored[blob & f, 14, 14, 1] > stored[blob & f, 14, 14, 0])

    fake = types.SimpleNamespace(input_shape=(None, 29, 29, 3), name="fake")
    summary = check_ztf(fake, tmp_path / "alerts.npz", tmp_path / "out", n_bootstrap=50, n_worst=2, orient=orient)
    table = read_csv(tmp_path / "out" / SCORES_FILE)
    calls = RecordingScorer.calls
    assert summary["orientation"]["orient"] is orient and summary["orientation"]["n_fading"] == 20
    if orient:
        assert len(calls) == 2  # all alerts as oriented, then the swapped ones as stored
        scored = calls[0]
        np.testing.assert_array_equal(scored[f][..., 0], stored[f][..., 1])  # new <-> ref for 'f'
        np.testing.assert_array_equal(scored[f][..., 1], stored[f][..., 0])
        np.testing.assert_array_equal(scored[f][..., 2], stored[f][..., 2])  # the difference stays
        np.testing.assert_array_equal(scored[~f], stored[~f])  # 't' rows untouched
        np.testing.assert_array_equal(calls[1], stored[f])
        # as oriented, every source is brighter in channel 0 and scored real
        assert np.all(scored[blob, 14, 14, 0] > scored[blob, 14, 14, 1])
        assert table["swapped"] == [str(int(v)) for v in f] and summary["orientation"]["n_swapped"] == 20
        score, plain = np.asarray(table["score"], float), np.asarray(table["score_unoriented"], float)
        np.testing.assert_array_equal(score[~f], plain[~f])
        assert np.all(score[blob & f] > 0.5) and np.all(plain[blob & f] < 0.5)
        again = summarise(toy_scores(stored), load_alerts(tmp_path / "alerts.npz")[1], n_bootstrap=50)
        for key in ("auc", "auc_ci", "reals_scored_real", "bogus_scored_bogus", "by_isdiffpos"):
            assert summary["unoriented"][key] == again[key], key
    else:
        assert len(calls) == 1
        np.testing.assert_array_equal(calls[0], stored)  # nothing swapped
        assert table["swapped"] == ["0"] * 60 and summary["orientation"]["n_swapped"] == 0
        assert "unoriented" not in summary and "score_unoriented" not in table
        assert np.all(np.asarray(table["score"], float)[blob & f] < 0.5)
    assert json.loads((tmp_path / "out" / CHECK_FILE).read_text()) == json.loads(json.dumps(summary))
    with pytest.raises(ConfigError, match="orient"):
        check_ztf(fake, tmp_path / "alerts.npz", tmp_path / "bad", orient="false")


def test_ztf_alerts(tmp_path, ztf_npz, run_dir):
    summary = check_ztf(run_dir, ztf_npz, tmp_path / "check", n_bootstrap=200)
    for name in OUTPUTS:
        assert (tmp_path / "check" / name).stat().st_size > 0, name
    with np.load(ztf_npz, allow_pickle=False) as z:
        drb, candid, nan_count, ssdistnr = z["drb"], z["candid"], z["nan_count"], z["ssdistnr"]
        isdiffpos = z["isdiffpos"]
    n = len(drb)
    assert summary["n_alerts"] == n == 168
    assert summary["n_with_drb"] == int(np.isfinite(drb).sum())
    assert summary["n_probably_real"] == int((drb >= 0.9).sum())
    assert summary["n_probably_bogus"] == int((drb < 0.1).sum())
    assert summary["n_asteroids"] == int(((ssdistnr >= 0) & (ssdistnr < 5)).sum())
    assert 0.0 <= summary["auc"] <= 1.0
    assert summary["auc_ci"][0] <= summary["auc_ci"][1]
    assert -1.0 <= summary["spearman"]["rho"] <= 1.0
    table = read_csv(tmp_path / "check" / SCORES_FILE)
    scores = np.asarray(table["score"], float)
    assert len(scores) == n and np.all((scores >= 0) & (scores <= 1))
    f = fading(isdiffpos)
    assert summary["orientation"]["n_swapped"] == int(f.sum()) > 0
    assert table["swapped"] == [str(int(v)) for v in f]
    assert set(summary["unoriented"]["by_isdiffpos"]) == set(summary["by_isdiffpos"])
    assert table["candid"] == [str(c) for c in candid]
    masked = np.asarray(table["nan_count"], int) > 0
    np.testing.assert_array_equal(masked, nan_count.sum(axis=1) > 0)
    assert summary["n_masked_stamps"] == int(masked.sum())


def test_bad_inputs_fail_with_one_line(tmp_path, run_dir):
    np.savez(tmp_path / "no_drb.npz", images=np.zeros((3, 29, 29, 3), np.float32))
    with pytest.raises(DataError, match="no array 'drb'"):
        load_alerts(tmp_path / "no_drb.npz")
    np.savez(tmp_path / "short.npz", images=np.zeros((3, 29, 29, 3), np.float32), drb=np.zeros(2))
    with pytest.raises(DataError, match="shape"):
        load_alerts(tmp_path / "short.npz")
    # the command line: missing files give one line and exit status 2, before TensorFlow starts
    work = tmp_path / "work"
    work.mkdir()
    cases = {
        "missing input": ([f"model={run_dir}", f"input={tmp_path / 'nothing.npz'}"], "no such file"),
        "missing model": ([f"model={tmp_path / 'no_run'}", f"input={tmp_path / 'no_drb.npz'}"], "no such run folder"),
        "no drb": ([f"model={run_dir}", f"input={tmp_path / 'no_drb.npz'}"], "no array 'drb'"),
        "no model given": ([], "model= is required"),
    }
    for case, (overrides, text) in cases.items():
        done = subprocess.run([sys.executable, "-m", "realbogus.realdata", *overrides], capture_output=True,
                              text=True, env=ENV, cwd=work)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (case, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], (case, done.stderr)
    assert list(work.iterdir()) == []
    done = subprocess.run([sys.executable, "-m", "realbogus.realdata", "--help"], capture_output=True, text=True,
                          env=ENV, cwd=work)
    assert done.returncode == 0 and "model=RUN_DIR_OR_KERAS" in done.stdout and "drb_real: 0.9" in done.stdout


def test_command_config_writes_into_the_run_folder(tmp_path, run_dir, capsys):
    from hydra import compose, initialize

    from realbogus.realdata import realdata

    synthetic_alerts(tmp_path / "alerts.npz", seed=1)
    with initialize(version_base="1.3", config_path=None):
        cfg = compose(config_name="realdata_command",
                      overrides=[f"model={run_dir}", f"input={tmp_path / 'alerts.npz'}", "n_bootstrap=50"])
    summary = realdata(cfg)
    for name in OUTPUTS:
        assert (run_dir / "ztf_check" / name).is_file(), name
    assert summary["n_alerts"] == 60 and summary["model"] == str(run_dir / "model.keras")
    out = capsys.readouterr().out
    assert "AUC (probable real vs bogus)" in out and f"wrote {run_dir / 'ztf_check'}" in out
    assert summary["orientation"]["orient"] is True and "without the swap: AUC" in out
    with initialize(version_base="1.3", config_path=None):
        cfg = compose(config_name="realdata_command", overrides=[f"model={run_dir}", "orient=maybe"])
    with pytest.raises(SystemExit) as exit_info:
        realdata(cfg)
    assert exit_info.value.code == 2 and "orient='maybe' must be true, false or auto" in capsys.readouterr().err


def test_several_models_side_by_side(tmp_path, run_dir, network, capsys):
    """Each model gets its own check folder; comparison.csv holds each one's own numbers."""
    import csv

    import keras
    from hydra import compose, initialize

    from realbogus.models import build_model
    from realbogus.realdata import realdata

    keras.utils.set_random_seed(5)
    other = tmp_path / "other"
    other.mkdir()
    build_model({"name": "simple"}).save(other / "model.keras")
    synthetic_alerts(tmp_path / "alerts.npz", seed=2)
    out = tmp_path / "side"
    with initialize(version_base="1.3", config_path=None):
        cfg = compose(config_name="realdata_command",
                      overrides=[f"model=[{run_dir},{other}]", "labels=[a,b]", f"input={tmp_path / 'alerts.npz'}",
                                 f"out={out}", "n_bootstrap=20"])
    summaries = realdata(cfg)
    with open(out / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == ["a", "b"]
    for r in rows:
        check = json.loads((out / r["label"] / CHECK_FILE).read_text())
        assert float(r["auc"]) == pytest.approx(check["auc"]) == pytest.approx(summaries[r["label"]]["auc"])
        assert float(r["reals_scored_real"]) == pytest.approx(check["reals_scored_real"]["fraction"])
    assert rows[0]["auc"] != rows[1]["auc"]  # two different networks
    assert "| a (`" in (out / "comparison.md").read_text()
    with initialize(version_base="1.3", config_path=None):
        cfg = compose(config_name="realdata_command", overrides=[f"model=[{run_dir},{other}]", "labels=[a]",
                                                                 f"out={out}"])
    with pytest.raises(SystemExit):
        realdata(cfg)
    assert "one distinct label per model" in capsys.readouterr().err
