"""Scoring survey candidates: predict command, operating points, calibration, model card, export."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from realbogus.deploy import thresholds as T
from realbogus.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(autouse=True, scope="module")
def private_speed_cache(tmp_path_factory):
    """precision=auto remembers its measurements: keep them out of the user's cache."""
    from realbogus.speed import cache_dir

    with cache_dir(tmp_path_factory.mktemp("speed_cache")) as path:
        ENV["REALBOGUS_CACHE_DIR"] = str(path)  # for the commands run in subprocesses
        yield


# ----------------------------------------------------------------------------- fixtures
def make_stamps(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Count-like stamps: sky noise, half with a point source in new and diff (label 1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(200.0, 8.0, (n, 29, 29, 3)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.int8)
    yy, xx = np.mgrid[:29, :29]
    blob = np.exp(-((yy - 14) ** 2 + (xx - 14) ** 2) / 4.0).astype(np.float32)
    for i in np.flatnonzero(y):
        flux = rng.uniform(50, 400)
        x[i, ..., 0] += flux * blob
        x[i, ..., 2] = x[i, ..., 0] - x[i, ..., 1]
    return x, y


def read_csv(path: Path) -> dict[str, list[str]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return {name: [r[i] for r in rows[1:]] for i, name in enumerate(rows[0])}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished run folder of a small simple network: model, predictions, metrics, config, card."""
    import keras
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from realbogus.deploy import finalize_run
    from realbogus.evaluation.metrics import compute_metrics
    from realbogus.evaluation.report import write_predictions
    from realbogus.io import save_json
    from realbogus.models import build_model

    out = tmp_path_factory.mktemp("run")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["model=simple", "loss=ce", "data=smoke"])
    with open_dict(cfg):
        cfg.data.dir = str(out / "no_data")
    (out / "run_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    keras.utils.set_random_seed(1)
    network = build_model(cfg.model)
    network.save(out / "model.keras")
    rng = np.random.default_rng(3)
    for name, n in (("validation_predictions.csv", 3000), ("predictions.csv", 5000)):
        margin = rng.normal(-2.0, 3.0, n)  # calibrated margins; labels drawn from them
        labels = (rng.random(n) < 1 / (1 + np.exp(-margin))).astype(int)
        # scores twice as confident as they should be: the temperature to find is 2
        write_predictions(out / name, {"score": 1 / (1 + np.exp(-2.0 * margin)), "label": labels})
    from realbogus.evaluation.report import read_predictions

    test = read_predictions(out)
    save_json(out / "metrics.json", compute_metrics(test["score"], test["label"], n_bootstrap=0))
    finalize_run(out, network=network)
    return out


@pytest.fixture(scope="module")
def network(run_dir):
    from realbogus.models import load_model

    return load_model(run_dir / "model.keras")


@pytest.fixture(scope="module")
def stamps():
    return make_stamps(40, seed=5)


def reference_scores(network, x) -> np.ndarray:
    from realbogus.evaluation.scoring import scores_from_logits

    return scores_from_logits(network.predict(x, verbose=0))


def predict(run_dir, inp, out, **kwargs):
    from realbogus.predict import predict_file

    kwargs.setdefault("precision", "float32")
    return predict_file(run_dir, inp, out, **kwargs)


# ----------------------------------------------------------------------------- input formats
def write_inputs(folder: Path, x: np.ndarray, y: np.ndarray) -> dict[str, tuple[Path, str | None]]:
    """The same stamps in every supported layout: {name: (path, identifier column or None)}."""
    from astropy.io import fits

    from realbogus.data.format import write_dataset

    folder.mkdir()
    n = len(x)
    np.save(folder / "plain.npy", x)
    np.savez(folder / "cands.npz", images=x, candid=np.arange(1000, 1000 + n), objectId=[f"obj{i}" for i in range(n)])
    write_dataset(folder / "cands.h5", x, {"label": y, "sensor_id": np.full(n, 7), "kind": np.zeros(n, int),
                                           "mag": np.full(n, np.nan, np.float32), "candid": np.arange(n)})
    zen = folder / "zenodo"
    zen.mkdir()
    np.save(zen / "images5.npy", x.reshape(n, -1))  # flat rows, as published
    kinds = ["artifact", "rand_artificial_real"]
    rows = "".join(f"{kinds[v]},{17 + i / 10}\n" for i, v in enumerate(y))
    (zen / "params5.csv").write_text("object_type,mag\n" + rows)
    fdir = folder / "fits"
    fdir.mkdir()
    for i in range(n):
        fits.HDUList([fits.PrimaryHDU(), *(fits.ImageHDU(x[i, ..., c], name=nm) for c, nm in
                                           enumerate(("NEW", "REF", "DIFF")))]).writeto(fdir / f"cand{i:03d}.fits")
    return {
        "npy": (folder / "plain.npy", None),
        "npz": (folder / "cands.npz", "candid"),
        "hdf5": (folder / "cands.h5", "candid"),
        "zenodo": (zen, "sample_index"),
        "fits_dir": (fdir, "name"),
        "fits_file": (fdir / "cand007.fits", "name"),
    }


def test_every_input_format_scores_in_input_order(tmp_path, run_dir, network, stamps):
    x, y = stamps
    expected = reference_scores(network, x)
    for name, (inp, ident) in write_inputs(tmp_path / "in", x, y).items():
        out = tmp_path / f"{name}.csv"
        meta = predict(run_dir, inp, out, batch_size=16)
        cols = read_csv(out)
        rows = [7] if name == "fits_file" else list(range(len(x)))
        np.testing.assert_allclose(np.asarray(cols["score"], float), expected[rows], rtol=1e-5, atol=1e-7,
                                   err_msg=name)
        assert cols["index"] == [str(i) for i in range(len(rows))]
        assert "calibrated_score" in cols and "is_candidate" not in cols
        if ident:
            assert ident in cols, name
        assert meta["n"] == len(rows) and json.loads(Path(f"{out}.meta.json").read_text())["n"] == len(rows)
    assert read_csv(tmp_path / "npz.csv")["objectId"][3] == "obj3"
    assert read_csv(tmp_path / "fits_dir.csv")["name"][:2] == ["cand000", "cand001"]
    assert read_csv(tmp_path / "hdf5.csv")["label"] == [str(v) for v in y]


def test_hdf5_output_calibration_and_fast_path(tmp_path, run_dir, network, stamps):
    import h5py

    x, y = stamps
    np.savez(tmp_path / "in.npz", images=x)
    meta = predict(run_dir, tmp_path / "in.npz", tmp_path / "out.h5", precision="mixed_bfloat16", threshold=0.5)
    expected = reference_scores(network, x)
    with h5py.File(tmp_path / "out.h5") as f:
        score = f["score"][...]
        calibrated = f["calibrated_score"][...]
        flag = f["is_candidate"][...]
        assert json.loads(f.attrs["meta"])["n"] == len(x)
    assert meta["precision"] == "mixed_bfloat16"
    # bfloat16 compute: close to float32, not equal
    np.testing.assert_allclose(score, expected, atol=0.02)
    temperature = json.loads((run_dir / "calibration.json").read_text())["temperature"]
    from realbogus.deploy.calibration import apply_temperature

    np.testing.assert_allclose(calibrated, apply_temperature(score, temperature), rtol=1e-6)
    np.testing.assert_array_equal(flag, (score >= 0.5).astype(np.int8))


def test_streaming_in_small_blocks_matches_one_block(tmp_path, run_dir, stamps):
    x, _ = stamps
    np.save(tmp_path / "x.npy", x)
    predict(run_dir, tmp_path / "x.npy", tmp_path / "a.csv", batch_size=7, block_rows=7)
    predict(run_dir, tmp_path / "x.npy", tmp_path / "b.csv", batch_size=64)
    np.testing.assert_allclose(np.asarray(read_csv(tmp_path / "a.csv")["score"], float),
                               np.asarray(read_csv(tmp_path / "b.csv")["score"], float), rtol=1e-5)


# ----------------------------------------------------------------------------- operating points
def synthetic_reference(n_real=300, n_bogus=20000, seed=0):
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.beta(8, 2, n_real), rng.beta(1, 12, n_bogus)]
    labels = np.r_[np.ones(n_real, int), np.zeros(n_bogus, int)]
    return scores, labels


def test_threshold_from_candidates_per_night_budget():
    from realbogus.evaluation import metrics as M

    scores, labels = synthetic_reference()
    bogus = np.sort(scores[labels == 0])[::-1]
    for budget, detections in ((100, 1e6), (2500, 1e6), (40, 1e5), (5e5, 1e6)):
        p = T.operating_point(scores, labels, bogus_per_night=budget, detections_per_night=detections)
        assert p.mode == "bogus_per_night" and p.exact
        passed = np.mean(bogus >= p.threshold)
        assert passed == p.expected_fpr and p.expected_fpr * detections <= budget
        assert p.expected_bogus_per_night == pytest.approx(p.expected_fpr * detections)
        # the next lower bogus score would break the budget: the threshold is the lowest allowed
        k = int(round(passed * bogus.size))
        assert (k + 1) / bogus.size * detections > budget
        assert p.expected_tpr == np.mean(scores[labels == 1] >= p.threshold)
        assert p.fpr_upper >= p.expected_fpr
        ref = M.tpr_at_fpr(scores, labels, budget / detections)
        assert (p.expected_tpr, p.expected_fpr) == (ref.tpr, ref.fpr)


def test_budget_below_resolution_and_other_modes():
    from realbogus.evaluation import metrics as M

    scores, labels = synthetic_reference(n_bogus=2000)
    p = T.operating_point(scores, labels, bogus_per_night=10)  # 1 bogus = 500 a night here
    assert p.expected_fpr == 0 and p.threshold > scores[labels == 0].max() and p.notes
    assert p.bogus_per_night_upper > 10
    q = T.operating_point(scores, labels, target_tpr=0.9)
    ref = M.fpr_at_tpr(scores, labels, 0.9)
    assert (q.threshold, q.expected_fpr, q.expected_tpr) == (ref.threshold, ref.fpr, ref.tpr)
    r = T.operating_point(scores, labels, threshold=0.5)
    ref = M.rates_at_threshold(scores, labels, 0.5)
    assert (r.expected_fpr, r.expected_tpr) == (ref.fpr, ref.tpr)
    assert T.operating_point(scores, labels) is None


def test_card_curve_gives_the_exact_rates_of_budgets_and_targets():
    scores, labels = synthetic_reference()
    curve = T.curve_points(scores, labels)
    assert len(curve["fpr"]) < scores.size / 10
    for mode, value in (("bogus_per_night", 300.0), ("bogus_per_night", 5000.0), ("target_tpr", 0.9),
                        ("target_tpr", 0.99)):
        exact = T.operating_point(scores, labels, **{mode: value})
        card = T.from_card_curve(curve, mode, value, 1e6, "card")
        if mode == "bogus_per_night":  # the same TPR within the budget, never more bogus
            assert card.expected_tpr == exact.expected_tpr and card.expected_fpr <= exact.expected_fpr
        else:  # the same (smallest) FPR at the TPR target
            assert card.expected_fpr == exact.expected_fpr and card.expected_tpr >= exact.expected_tpr
        assert np.mean(scores[labels == 0] >= card.threshold) == card.expected_fpr
        assert np.mean(scores[labels == 1] >= card.threshold) == card.expected_tpr


@pytest.mark.parametrize("kwargs", [dict(threshold=0.5, target_tpr=0.9), dict(target_tpr=1.5), dict(threshold=-1),
                                    dict(bogus_per_night=-3), dict(bogus_per_night=5, detections_per_night=0)])
def test_invalid_operating_point_requests(kwargs):
    with pytest.raises(ConfigError):
        T.check_request(**kwargs)


def test_predict_with_budget_from_run_folder_and_from_keras_alone(tmp_path, run_dir, stamps):
    from realbogus.evaluation.report import read_predictions

    x, _ = stamps
    np.save(tmp_path / "x.npy", x)
    meta = predict(run_dir, tmp_path / "x.npy", tmp_path / "a.csv", bogus_per_night=2000)
    point = meta["operating_point"]
    ref = read_predictions(run_dir)
    exact = T.operating_point(ref["score"], ref["label"], bogus_per_night=2000)
    assert point["threshold"] == exact.threshold and point["expected_fpr"] == exact.expected_fpr
    assert point["reference"].endswith("(test split)")
    cols = read_csv(tmp_path / "a.csv")
    flags = np.asarray(cols["is_candidate"], int)
    assert flags.sum() == meta["n_candidates"]
    np.testing.assert_array_equal(flags, np.asarray(cols["score"], float) >= point["threshold"])
    # a .keras file on its own: the operating point comes from its card's ROC curve
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run_dir / "model.keras", alone / "m.keras")
    meta2 = predict(alone / "m.keras", tmp_path / "x.npy", tmp_path / "b.csv", target_tpr=0.95)
    assert "model card" in meta2["operating_point"]["reference"]
    assert meta2["temperature"] == meta["temperature"]


# ----------------------------------------------------------------------------- calibration
def test_temperature_fit_recovers_known_miscalibration():
    from realbogus.deploy import calibration as C

    rng = np.random.default_rng(0)
    true_margin = rng.normal(0.0, 3.0, 40000)
    labels = (rng.random(true_margin.size) < 1 / (1 + np.exp(-true_margin))).astype(int)
    for temperature in (2.5, 0.5):
        scores = 1 / (1 + np.exp(-true_margin * temperature))  # over- (T>1) or under-confident
        fitted = C.fit_temperature(scores, labels)
        assert fitted == pytest.approx(temperature, rel=0.05)
        summary = C.calibration_summary(scores, labels, fitted)
        assert summary["after"]["nll"] < summary["before"]["nll"]
        assert summary["after"]["brier"] < summary["before"]["brier"]
        assert summary["after"]["ece"] < 0.02
    assert C.fit_temperature(1 / (1 + np.exp(-true_margin)), labels) == pytest.approx(1.0, rel=0.05)
    # margins survive the round trip through stored float64 scores (to 1e-3 at 30: float64 near 1)
    m = np.array([-30.0, -5.0, 0.0, 5.0, 30.0])
    np.testing.assert_allclose(C.margins_from_scores(1 / (1 + np.exp(-m))), m, atol=2e-3)
    with pytest.raises(DataError, match="needs labelled reals and bogus"):
        C.fit_temperature([0.2, 0.4], [0, 0])


def test_finalize_writes_calibration_reliability_and_card(run_dir):
    calibration = json.loads((run_dir / "calibration.json").read_text())
    assert calibration["temperature"] == pytest.approx(2.0, rel=0.1)  # the fixture's over-confidence
    assert calibration["test"]["after"]["brier"] < calibration["test"]["before"]["brier"]
    assert (run_dir / "reliability.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- model card
def test_card_fields_and_round_trip(run_dir):
    from realbogus.deploy.card import read_card

    card = json.loads((run_dir / "model_card.json").read_text())
    assert read_card(run_dir / "model.keras") == card == read_card(run_dir)
    assert card["input"]["shape"] == [29, 29, 3] and card["input"]["channel_order"] == ["new", "ref", "diff"]
    assert card["input"]["pixel_scale_arcsec"] == pytest.approx(1.189)
    assert "min-max" in card["normalisation"]["method"]
    assert card["model"]["name"] == "simple" and card["model"]["parameters"] == 234242
    assert card["training"]["data"]["name"] == "smoke" and card["training"]["config"]["loss"]["name"] == "ce"
    assert set(card["thresholds"]) == {"0.9", "0.95", "0.99"}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert card["test_metrics"]["auc"] == metrics["auc"]
    assert card["thresholds"]["0.9"]["threshold"] == metrics["fpr_at_tpr"]["0.9"]["threshold"]
    assert card["calibration"]["temperature"] == json.loads((run_dir / "calibration.json").read_text())["temperature"]
    assert {"tensorflow", "keras", "realbogus", "numpy"} <= set(card["versions"]) and card["created"].endswith("Z")
    onnx = card["exports"]["onnx"]
    assert list(onnx["inputs"]) == ["stamps"] and "[batch, 29, 29, 3]" in onnx["inputs"]["stamps"]
    assert list(onnx["outputs"]) == ["logits", "score", "calibrated_score"] and len(card["model_version"]) == 12


def test_card_travels_inside_keras_file_to_a_fresh_process(tmp_path, run_dir, network, stamps):
    x, _ = stamps
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(run_dir / "model.keras", alone / "model.keras")
    np.save(tmp_path / "x.npy", x[:8])
    code = (
        "import json, sys, numpy as np\n"
        "from realbogus.deploy.card import read_card\n"
        "from realbogus.models import load_model\n"
        f"card = read_card({str(alone / 'model.keras')!r})\n"
        f"m = load_model({str(alone / 'model.keras')!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))\n"
        "json.dump(card, sys.stdout)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads((run_dir / "model_card.json").read_text())
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), network.predict(x[:8], verbose=0))


# ----------------------------------------------------------------------------- SavedModel
def test_saved_model_export_reloads_with_same_scores(tmp_path, run_dir, network, stamps):
    import tensorflow as tf

    from realbogus.deploy.export import export_saved_model

    x, _ = stamps
    out = export_saved_model(run_dir, tmp_path / "served")
    exported = json.loads((out / "model_card.json").read_text())
    assert exported["model_version"] == json.loads((run_dir / "model_card.json").read_text())["model_version"]
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    result = serve(stamps=tf.constant(x))
    np.testing.assert_allclose(result["logits"].numpy(), network.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result["score"].numpy(), reference_scores(network, x), rtol=1e-5, atol=1e-7)
    assert result["score"].dtype == tf.float64 and "calibrated_score" in result
    with pytest.raises(DataError, match="already exists"):
        export_saved_model(run_dir, out)


# ----------------------------------------------------------------------------- bad input
def bad_cases(tmp: Path, run_dir: Path, x: np.ndarray) -> dict[str, tuple[list[str], str]]:
    """{case: (command-line overrides, text the error line must hold)}."""
    tmp.mkdir()
    np.save(tmp / "good.npy", x[:4])
    np.save(tmp / "big.npy", np.zeros((3, 31, 31, 3), np.float32))
    np.save(tmp / "four.npy", np.zeros((3, 29, 29, 4), np.float32))
    nan = x[:4].copy()
    nan[2, 3, 3, 1] = np.nan
    np.save(tmp / "nan.npy", nan)
    inf = x[:4].copy()
    inf[0, 0, 0, 2] = np.inf
    np.savez(tmp / "inf.npz", images=inf)
    (tmp / "junk.npz").write_bytes(b"this is not a zip archive" * 10)
    (tmp / "cut.npy").write_bytes((tmp / "good.npy").read_bytes()[:-5000])
    (tmp / "exists.csv").write_text("keep me\n")
    good = f"input={tmp / 'good.npy'}"
    model = f"model={run_dir}"
    return {
        "wrong stamp size": ([model, f"input={tmp / 'big.npy'}"], "(3, 31, 31, 3)"),
        "wrong channel count": ([model, f"input={tmp / 'four.npy'}"], "4 channels"),
        "NaN pixels": ([model, f"input={tmp / 'nan.npy'}"], "row 2"),
        "inf pixels": ([model, f"input={tmp / 'inf.npz'}"], "masked pixel"),
        "unreadable file": ([model, f"input={tmp / 'junk.npz'}"], "not a readable .npz"),
        "truncated file": ([model, f"input={tmp / 'cut.npy'}"], "truncated"),
        "missing input": ([model, f"input={tmp / 'nothing.npy'}"], "no such file"),
        "output exists": ([model, good, f"output={tmp / 'exists.csv'}"], "already exists"),
        "output folder is a file": ([model, good, f"output={tmp / 'exists.csv' / 'sub' / 'scores.csv'}"],
                                    "is a file, not a folder"),
        "missing model": ([f"model={tmp / 'no_run'}", good], "no such run folder"),
        "not a model": ([f"model={tmp / 'junk.npz'}", good], "not a .keras file"),
        "two operating points": ([model, good, "threshold=0.5", "target_tpr=0.9"], "at most one"),
        "unknown output format": ([model, good, f"output={tmp / 'scores.txt'}"], "unknown format"),
    }


def test_bad_input_exits_2_with_one_error_line_and_no_output(tmp_path, run_dir, stamps):
    x, _ = stamps
    for case, (overrides, text) in bad_cases(tmp_path / "bad", run_dir, x).items():
        out_dir = tmp_path / case.replace(" ", "_")
        out_dir.mkdir()
        if not any(o.startswith("output=") for o in overrides):
            overrides = [*overrides, f"output={out_dir / 'scores.csv'}"]
        done = subprocess.run([sys.executable, "-m", "realbogus.predict", *overrides], capture_output=True,
                              text=True, env=ENV, cwd=out_dir)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (case, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], (case, done.stderr)
        assert list(out_dir.iterdir()) == [], case  # nothing written, not even a temporary file
    assert (tmp_path / "bad" / "exists.csv").read_text() == "keep me\n"


def test_command_line_writes_scores_and_nothing_else(tmp_path, run_dir, stamps):
    x, _ = stamps
    np.savez(tmp_path / "night.npz", images=x, candid=np.arange(len(x)) + 7)
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run([sys.executable, "-m", "realbogus.predict", f"model={run_dir}",
                           f"input={tmp_path / 'night.npz'}", "output=night.csv", "bogus_per_night=2000",
                           "detections_per_night=1e6"], capture_output=True, text=True, env=ENV, cwd=work)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in work.iterdir()) == ["night.csv", "night.csv.meta.json"]  # no Hydra folders
    cols = read_csv(work / "night.csv")
    assert cols["candid"][:2] == ["7", "8"] and len(cols["score"]) == len(x)
    meta = json.loads((work / "night.csv.meta.json").read_text())
    assert meta["operating_point"]["mode"] == "bogus_per_night" and "candidates" in done.stdout
    # precision=auto (the default) timed both paths and says so
    measured = meta["auto_measured"]["samples_per_s"]
    assert set(measured) == {"float32", "mixed_bfloat16"} and meta["precision"] == max(measured, key=measured.get)
    assert meta["auto_measured"]["choice"] == meta["precision"]
    assert meta["screen"] is None


def test_predict_killed_while_scoring_or_writing_leaves_nothing_and_reruns_to_the_same_bytes(tmp_path, run_dir,
                                                                                           stamps):
    x, _ = stamps
    np.save(tmp_path / "night.npy", x)
    cmd = [sys.executable, "-m", "realbogus.predict", f"model={run_dir}", f"input={tmp_path / 'night.npy'}",
           "batch_size=64", "threshold=0.5", "progress=none"]
    env = {k: v for k, v in ENV.items() if k != "REALBOGUS_FAULT"}
    whole = subprocess.run(cmd + [f"output={tmp_path / 'whole.csv'}"], capture_output=True, text=True, env=env)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "out" / "night.csv"
    for fault in ("scoring", "outputs"):  # mid-scoring; the scores written, not yet renamed into place
        killed = subprocess.run(cmd + [f"output={out}"], capture_output=True, text=True,
                                env=dict(env, REALBOGUS_FAULT=fault))
        assert killed.returncode == -9, killed.stderr
        assert not out.exists() and not out.with_name(out.name + ".meta.json").exists()
    assert list(out.parent.glob(".night.*.tmp.csv"))  # a SIGKILL leaves its temporary behind ...
    again = subprocess.run(cmd + [f"output={out}"], capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["night.csv", "night.csv.meta.json"]  # ... a rerun removes it
    assert out.read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_error_after_scoring_started_leaves_no_output(tmp_path, run_dir, stamps):
    x, _ = stamps
    bad = x.copy()
    bad[-1, 5, 5, 0] = np.nan  # in the last block, read after the network has started
    np.save(tmp_path / "late_nan.npy", bad)
    out = tmp_path / "out" / "scores.csv"
    out.parent.mkdir()
    with pytest.raises(DataError, match=f"row {len(x) - 1}"):
        predict(run_dir, tmp_path / "late_nan.npy", out, batch_size=8, block_rows=8)
    assert list(out.parent.iterdir()) == []
    # fill replaces the masked pixel and counts it
    meta = predict(run_dir, tmp_path / "late_nan.npy", out, nan_policy="fill")
    assert meta["n_masked_pixels"] == 1 and read_csv(out)["n_masked"][-1] == "1"
    # an existing output is replaced only with overwrite
    with pytest.raises(DataError, match="already exists"):
        predict(run_dir, tmp_path / "late_nan.npy", out, nan_policy="fill")
    predict(run_dir, tmp_path / "late_nan.npy", out, nan_policy="fill", overwrite=True)


# ----------------------------------------------------------------------------- labels, versions, help
def test_hdf5_without_labels_is_scored(tmp_path, run_dir, network, stamps):
    import h5py

    from realbogus.data.format import write_dataset

    x, y = stamps
    path = write_dataset(tmp_path / "unlabelled.h5", x, {"label": y, "sensor_id": np.zeros(len(x), int),
                                                         "kind": np.zeros(len(x), int), "mag": np.zeros(len(x)),
                                                         "candid": np.arange(len(x)) + 40})
    with h5py.File(path, "a") as f:
        for name in ("label", "sensor_id", "kind", "mag"):
            del f[name]
    out = tmp_path / "scores.csv"
    predict(run_dir, path, out)
    cols = read_csv(out)
    assert "label" not in cols and cols["candid"][0] == "40"
    np.testing.assert_allclose([float(v) for v in cols["score"]], reference_scores(network, x), rtol=1e-5)


def test_output_folder_that_is_a_file_fails_before_any_work(tmp_path, run_dir, monkeypatch):
    import realbogus.predict as P

    (tmp_path / "taken").write_text("a file")
    monkeypatch.setattr(P, "_open_input", lambda *a, **k: pytest.fail("the input was opened"))
    with pytest.raises(DataError, match="is a file, not a folder"):
        predict(run_dir, tmp_path / "missing.npy", tmp_path / "taken" / "scores.csv")
    assert (tmp_path / "taken").read_text() == "a file"


def test_model_version_on_every_score_and_in_card(tmp_path, run_dir, network, stamps):
    from realbogus.deploy.card import model_version, read_card

    x, _ = stamps
    np.save(tmp_path / "x.npy", x[:6])
    card = read_card(run_dir)
    version = card["model_version"]
    assert version == model_version(network, card)  # the reloaded network hashes as the trained one did
    meta = predict(run_dir, tmp_path / "x.npy", tmp_path / "s.csv", threshold=0.5)
    assert read_csv(tmp_path / "s.csv")["model_version"] == [version] * 6
    assert meta["model_version"] == version and "model_version_note" not in meta
    assert meta["threshold"] == 0.5 and meta["threshold_source"]["mode"] == "threshold"
    assert meta["threshold_source"]["reference"].endswith("predictions.csv (test split)")
    saved = json.loads((tmp_path / "s.csv.meta.json").read_text())
    assert saved["model_version"] == version and saved["threshold"] == 0.5


def test_help_describes_the_command_and_every_key(tmp_path):
    from omegaconf import OmegaConf

    done = subprocess.run([sys.executable, "-m", "realbogus.predict", "--help"], capture_output=True, text=True,
                          env=ENV, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "score candidates with a trained real/bogus model" in text
    examples = [line for line in text.splitlines() if line.strip().startswith("python -m realbogus.predict")]
    assert len(examples) == 4
    keys = [k for k in OmegaConf.load(REPO / "conf" / "predict.yaml") if k not in ("defaults", "hydra")]
    described = {line.split()[0] for line in text.splitlines() if line.startswith("  ") and line.split()}
    assert set(keys) <= described, set(keys) - described
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- cascade
@pytest.fixture(scope="module")
def complex_path(tmp_path_factory) -> Path:
    """A tiny complex network, the expensive model behind the screen."""
    import keras

    from realbogus.models import build_model

    keras.utils.set_random_seed(4)
    net = build_model({"name": "complex", "feature_filters": 8, "feature_layers": 1,
                       "stages": [{"conv": 8, "blocks": [[8, 1]]}]})
    path = tmp_path_factory.mktemp("complex") / "complex.keras"
    net.save(path)
    return path


def marked_stamps(n: int) -> np.ndarray:
    """Stamps whose row number is written into a corner pixel, so a scorer's input names its rows."""
    x, _ = make_stamps(n, seed=9)
    x[:, 0, 0, 1] = 10_000 + np.arange(n)
    return x


def test_cascade_screened_rows_never_reach_the_model_and_order_is_kept(tmp_path, run_dir, network, complex_path,
                                                                     monkeypatch):
    import realbogus.predict as P
    from realbogus.deploy.cascade import SCREEN_CEILING
    from realbogus.models import load_model

    n = 70
    x = marked_stamps(n)
    np.save(tmp_path / "night.npy", x)
    screen_scores = reference_scores(network, x)
    cut = float(np.median(screen_scores))
    passing = screen_scores >= cut
    assert 0 < passing.sum() < n
    seen: list[int] = []
    real_loader = P._keras_scorer

    def recording_loader(model_path, card, batch_size, precision):
        scorer, version = real_loader(model_path, card, batch_size, precision)
        if Path(model_path) == complex_path:
            inner = scorer.logits

            def logits(stamps):
                seen.extend(int(v) - 10_000 for v in np.asarray(stamps)[:, 0, 0, 1])
                return inner(stamps)

            scorer.logits = logits
        return scorer, version

    monkeypatch.setattr(P, "_keras_scorer", recording_loader)
    meta = predict(complex_path, tmp_path / "night.npy", tmp_path / "s.csv", screen=run_dir, screen_threshold=cut,
                   threshold=0.5, batch_size=8, block_rows=16)
    assert sorted(seen) == np.flatnonzero(passing).tolist()  # exactly the passing rows, each once
    cols = read_csv(tmp_path / "s.csv")
    assert cols["index"] == [str(i) for i in range(n)]
    score = np.array(cols["score"], float)
    out = np.array(cols["screened_out"], int).astype(bool)
    np.testing.assert_array_equal(out, ~passing)
    np.testing.assert_allclose(np.array(cols["screen_score"], float), screen_scores, atol=1e-6)
    want = reference_scores(load_model(complex_path), x)
    np.testing.assert_allclose(score[passing], want[passing], atol=1e-5)  # in input order
    np.testing.assert_allclose(score[out], SCREEN_CEILING * screen_scores[out] / cut, rtol=1e-5)
    assert (score[out] < SCREEN_CEILING).all() and not np.array(cols["is_candidate"], int)[out].any()
    sc = meta["screen"]
    assert sc["threshold"] == cut and sc["threshold_source"]["mode"] == "screen_threshold"
    assert sc["n_screened_out"] == int(out.sum()) and sc["fraction_screened_out"] == pytest.approx(out.mean())
    assert sc["n_scored_by_model"] == len(seen)


def test_cascade_threshold_comes_from_the_screen_validation_predictions(tmp_path, run_dir, complex_path):
    from realbogus.evaluation.report import read_predictions

    x = marked_stamps(12)
    np.save(tmp_path / "night.npy", x)
    meta = predict(complex_path, tmp_path / "night.npy", tmp_path / "s.csv", screen=run_dir, screen_tpr=0.9)
    val = read_predictions(run_dir / "validation_predictions.csv")
    reals = np.sort(val["score"][val["label"] == 1])[::-1]
    k = int(np.ceil(0.9 * reals.size))
    sc = meta["screen"]
    assert sc["threshold"] == reals[k - 1]  # the highest threshold keeping 90% of the validation reals
    assert sc["threshold_source"]["reference"].endswith("validation_predictions.csv (validation split)")
    assert sc["threshold_source"]["n_real_kept"] >= k and sc["threshold_source"]["tpr"] >= 0.9
    test = read_predictions(run_dir)  # the test split's quantile is a different number: it was not used
    test_reals = np.sort(test["score"][test["label"] == 1])[::-1]
    assert test_reals[int(np.ceil(0.9 * test_reals.size)) - 1] != sc["threshold"]


@pytest.mark.parametrize("kwargs, message", [
    ({"screen_tpr": 0.999}, "need screen="),
    ({"screen": "RUN"}, "exactly one of screen_threshold"),
    ({"screen": "RUN", "screen_threshold": 0.1, "screen_tpr": 0.99}, "exactly one of"),
    ({"screen": "RUN", "screen_threshold": 1.5}, "between 0 and 1"),
    ({"screen": "RUN", "screen_tpr": 0.0}, "must lie in"),
    ({"screen": "KERAS", "screen_tpr": 0.99}, "needs the screen's run folder"),
])
def test_cascade_bad_requests_fail_before_work(tmp_path, run_dir, complex_path, kwargs, message):
    x, _ = make_stamps(4)
    np.save(tmp_path / "in.npy", x)
    kwargs = {k: (str(run_dir) if v == "RUN" else str(run_dir / "model.keras") if v == "KERAS" else v)
              for k, v in kwargs.items()}
    with pytest.raises((ConfigError, DataError), match=message):
        predict(complex_path, tmp_path / "in.npy", tmp_path / "s.csv", **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]


def test_cascade_from_the_command_line(tmp_path, run_dir, complex_path):
    x = marked_stamps(30)
    np.save(tmp_path / "night.npy", x)
    done = subprocess.run([sys.executable, "-m", "realbogus.predict", f"model={complex_path}",
                           f"input={tmp_path / 'night.npy'}", f"output={tmp_path / 's.csv'}", f"screen={run_dir}",
                           "screen_tpr=0.5", "precision=float32"], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    assert "screened out" in done.stdout
    cols = read_csv(tmp_path / "s.csv")
    meta = json.loads((tmp_path / "s.csv.meta.json").read_text())
    assert meta["screen"]["threshold_source"]["mode"] == "screen_tpr"
    assert sum(map(int, cols["screened_out"])) == meta["screen"]["n_screened_out"]
