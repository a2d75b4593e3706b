"""ONNX export (parity-checked), scoring with ONNX Runtime or OpenVINO alone, and the model version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from realbogus.errors import ConfigError, DataError

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
TEMPERATURE = 1.7


@pytest.fixture(autouse=True, scope="module")
def private_speed_cache(tmp_path_factory):
    """ONNX scoring measures threads against streams once: keep that out of the user's cache."""
    from realbogus.speed import cache_dir

    with cache_dir(tmp_path_factory.mktemp("speed_cache")) as path:
        ENV["REALBOGUS_CACHE_DIR"] = str(path)  # for the commands run in subprocesses
        yield


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A small complex network (FRN, squeeze-excitation, strided residual block) with a card."""
    import keras

    from realbogus.deploy.card import embed_card
    from realbogus.models import build_model

    keras.utils.set_random_seed(2)
    network = build_model({"name": "complex", "feature_filters": 8, "feature_layers": 1,
                           "stages": [{"conv": 8, "blocks": [[8, 1], [16, 2]]}]})
    # non-trivial FRN and gate parameters, so the export is checked away from their initial values
    network.set_weights([w + np.random.default_rng(i).normal(0, 0.1, w.shape).astype(w.dtype)
                         for i, w in enumerate(network.get_weights())])
    path = tmp_path_factory.mktemp("model") / "small.keras"
    network.save(path)
    embed_card(path, {"card_format": "realbogus-model-card/1", "model": {"name": "complex"},
                      "calibration": {"temperature": TEMPERATURE}})
    return path


@pytest.fixture(scope="module")
def network(model_path):
    from realbogus.models import load_model

    return load_model(model_path)


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory, model_path) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    done = subprocess.run([sys.executable, "-m", "realbogus.deploy.export", str(model_path), str(out)],
                          capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and out.is_file()
    return out


def stamps(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(300, 20, (n, 29, 29, 3)).astype(np.float32) * rng.uniform(0.5, 50, (n, 1, 1, 3)).astype(
        np.float32)


def test_onnx_model_layout_metadata_and_scores(onnx_path, network, model_path):
    import onnxruntime as ort
    from scipy.special import expit

    from realbogus.deploy.card import model_version, read_card

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "stamps" and inp.shape == ["batch", 29, 29, 3] and inp.type == "tensor(float)"
    outputs = {o.name: (o.shape, o.type) for o in session.get_outputs()}
    assert outputs == {"logits": (["batch", 2], "tensor(float)"), "score": (["batch"], "tensor(double)"),
                       "calibrated_score": (["batch"], "tensor(double)")}
    for n in (1, 7):  # the batch axis is dynamic
        x = stamps(n, seed=n)
        logits, score, calibrated = session.run(["logits", "score", "calibrated_score"], {"stamps": x})
        want = network.predict(x, verbose=0)
        np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)
        margin = want[:, 1].astype(np.float64) - want[:, 0]
        np.testing.assert_allclose(score, expit(margin), atol=1e-5)
        np.testing.assert_allclose(calibrated, expit(margin / TEMPERATURE), atol=1e-5)
    meta = session.get_modelmeta().custom_metadata_map
    card = json.loads(meta["model_card"])
    version = model_version(network, read_card(model_path))
    assert meta["model_version"] == card["model_version"] == version
    report = card["onnx_export"]
    assert report["n_stamps"] == 256 and report["max_score_difference"] <= report["score_tolerance"]
    assert card["calibration"]["temperature"] == TEMPERATURE


def test_onnx_export_refused_when_scores_differ(tmp_path, model_path, monkeypatch):
    import realbogus.deploy.export as E

    monkeypatch.setattr(E, "SCORE_TOLERANCE", -1.0)  # no difference, not even 0, is accepted
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    with pytest.raises(DataError, match="not written, ONNX scores differ") as info:
        E.export_onnx(model_path, out)
    assert "\n" not in str(info.value)
    assert list(out.parent.iterdir()) == []  # nothing left on disk
    (out.parent / "model.onnx").write_text("keep")
    with pytest.raises(DataError, match="already exists"):
        E.export_onnx(model_path, out)
    assert out.read_text() == "keep"


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_predict_with_onnx_never_imports_tensorflow(tmp_path, onnx_path, network, runtime):
    from realbogus.evaluation.scoring import scores_from_logits

    if runtime == "openvino":
        pytest.importorskip("openvino")
    x = stamps(20, seed=4)
    np.savez(tmp_path / "cands.npz", images=x, candid=np.arange(20) + 500)
    code = (
        "import json, sys\n"
        "from realbogus.predict import predict_file\n"
        f"meta = predict_file({str(onnx_path)!r}, {str(tmp_path / 'cands.npz')!r}, {str(tmp_path / 's.csv')!r},"
        f" batch_size=8, runtime={runtime!r})\n"
        "json.dump({'tf': 'tensorflow' in sys.modules, 'keras': 'keras' in sys.modules, 'meta': meta}, sys.stdout)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["tf"] is False and result["keras"] is False
    meta = result["meta"]
    assert meta["model_format"] == "onnx" and meta["precision"] == "float32" and meta["runtime"] == runtime
    way, level = meta["onnx_session"].split("/")  # the session settings measured fastest here
    if runtime == "onnxruntime":
        assert way in ("threads", "streams") and level in ("all", "extended")
    else:
        assert (way, level) == ("streams", "openvino")
    data = np.genfromtxt(tmp_path / "s.csv", delimiter=",", names=True, dtype=None, encoding="utf-8")
    np.testing.assert_allclose(data["score"], scores_from_logits(network.predict(x, verbose=0)), atol=1e-5)
    assert set(data["model_version"]) == {meta["model_version"]} and data["candid"][0] == 500
    assert data["calibrated_score"].shape == (20,)  # the temperature travels in the ONNX card


# ----------------------------------------------------------------------------- OpenVINO
def test_openvino_logits_agree_with_onnx_runtime(onnx_path):
    pytest.importorskip("openvino")
    from realbogus.deploy.inference import OnnxScorer, OpenVinoScorer

    reference = OnnxScorer(onnx_path, batch_size=64, parallel="threads", optimization="all")
    scorer = OpenVinoScorer(onnx_path, batch_size=64)
    assert (scorer.runtime, scorer.parallel, scorer.optimization) == ("openvino", "streams", "openvino")
    assert scorer.metadata == reference.metadata and scorer.precision == "float32" and scorer.auto is None
    x = stamps(150, seed=21)  # two full batches and a padded one
    got = scorer.logits(x)
    assert got.dtype == np.float32 and got.shape == (150, 2)
    np.testing.assert_allclose(got, reference.logits(x), rtol=0, atol=1e-4)
    np.testing.assert_allclose(scorer.scores(x), reference.scores(x), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(scorer.logits(x[:5]), got[:5])  # a lone short batch: padding changes nothing
    assert scorer.logits(x[:0]).shape == (0, 2)


def test_openvino_scores_an_int8_model(int8_export, network):
    pytest.importorskip("openvino")
    from realbogus.deploy.inference import OpenVinoScorer
    from realbogus.evaluation.scoring import scores_from_logits

    path, _ = int8_export
    scorer = OpenVinoScorer(path, batch_size=16)
    assert scorer.precision == "int8"
    x = stamps(40, seed=12)
    diff = np.abs(scores_from_logits(scorer.logits(x)) - scores_from_logits(network.predict(x, verbose=0)))
    assert diff.max() < 0.05 and diff.mean() < 0.02


def test_predict_runtime_choice_gives_the_same_scores_and_is_recorded(tmp_path, onnx_path):
    pytest.importorskip("openvino")
    from realbogus.predict import predict_file

    x = stamps(100, seed=22)
    np.save(tmp_path / "night.npy", x)
    scores, metas = {}, {}
    for runtime in ("openvino", "onnxruntime", "auto"):  # auto: $REALBOGUS_ONNX_RUNTIME (conftest) answers
        out = tmp_path / f"{runtime}.csv"
        metas[runtime] = predict_file(onnx_path, tmp_path / "night.npy", out, batch_size=32, runtime=runtime)
        scores[runtime] = np.genfromtxt(out, delimiter=",", names=True, dtype=None, encoding="utf-8")["score"]
    assert metas["openvino"]["runtime"] == "openvino" and metas["openvino"]["onnx_session"] == "streams/openvino"
    assert metas["onnxruntime"]["runtime"] == "onnxruntime"
    assert metas["auto"]["runtime"] == os.environ["REALBOGUS_ONNX_RUNTIME"]
    assert all(meta["runtime_auto_measured"] is None for meta in metas.values())  # nothing timed
    np.testing.assert_allclose(scores["openvino"], scores["onnxruntime"], rtol=0, atol=1e-4)
    saved = json.loads((tmp_path / "openvino.csv.meta.json").read_text())
    assert saved["runtime"] == "openvino"


def test_runtime_auto_measures_once_and_remembers(onnx_path, monkeypatch):
    pytest.importorskip("openvino")
    from realbogus.deploy.inference import RUNTIME_ENV, onnx_scorer

    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    first = onnx_scorer(onnx_path, batch_size=16)
    auto = first.runtime_auto
    assert auto.measured and set(auto.rates) == {"onnxruntime", "openvino"}
    assert first.runtime == auto.choice == max(auto.rates, key=auto.rates.get)
    again = onnx_scorer(onnx_path, batch_size=16)
    assert again.runtime == first.runtime and not again.runtime_auto.measured  # from the cache
    monkeypatch.setenv(RUNTIME_ENV, "tensorrt")
    with pytest.raises(ConfigError, match=RUNTIME_ENV):
        onnx_scorer(onnx_path, batch_size=16)


def test_unknown_or_unavailable_runtime_is_refused(tmp_path, onnx_path, model_path, monkeypatch):
    import realbogus.speed
    from realbogus.deploy.inference import RUNTIME_ENV, OnnxScorer, onnx_scorer
    from realbogus.predict import predict_file

    np.save(tmp_path / "night.npy", stamps(4, seed=1))
    with pytest.raises(ConfigError, match=r"runtime='tensorrt' is not one of auto, onnxruntime, openvino") as info:
        predict_file(onnx_path, tmp_path / "night.npy", tmp_path / "s.csv", runtime="tensorrt")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="applies to .onnx models"):
        predict_file(model_path, tmp_path / "night.npy", tmp_path / "s.csv", runtime="onnxruntime")
    done = subprocess.run([sys.executable, "-m", "realbogus.predict", f"model={onnx_path}",
                           f"input={tmp_path / 'night.npy'}", f"output={tmp_path / 's.csv'}", "runtime=tensorrt"],
                          capture_output=True, text=True, env=ENV, cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "runtime='tensorrt' is not one of" in lines[0], done.stderr
    # without the openvino package: openvino is refused, auto is ONNX Runtime, untimed
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` raise ImportError
    with pytest.raises(ConfigError, match="pip install openvino"):
        predict_file(onnx_path, tmp_path / "night.npy", tmp_path / "s.csv", runtime="openvino")
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    fastest = realbogus.speed.fastest

    def no_runtime_timing(kind, *args, **kwargs):
        assert kind != "onnx runtime", "runtimes timed without openvino"
        return fastest(kind, *args, **kwargs)

    monkeypatch.setattr(realbogus.speed, "fastest", no_runtime_timing)
    scorer = onnx_scorer(onnx_path, batch_size=16, runtime="auto")
    assert isinstance(scorer, OnnxScorer) and scorer.runtime_auto is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["night.npy"]


def test_openvino_refuses_what_is_not_a_stamps_to_logits_model(tmp_path):
    pytest.importorskip("openvino")
    import onnx
    from onnx import TensorProto, helper

    from realbogus.deploy.inference import OpenVinoScorer

    (tmp_path / "notes.onnx").write_text("not a model\n")
    with pytest.raises(DataError, match="notes.onnx: not a loadable ONNX model") as info:
        OpenVinoScorer(tmp_path / "notes.onnx")
    assert "\n" not in str(info.value)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 29, 29, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 29, 29, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "other.onnx")
    with pytest.raises(DataError, match="other.onnx: expected input 'stamps' and output 'logits'"):
        OpenVinoScorer(tmp_path / "other.onnx")


def test_model_version_is_stable_across_reloads_and_tracks_content(model_path, network, tmp_path):
    from realbogus.deploy.card import model_version, read_card
    from realbogus.models import load_model

    card = read_card(model_path)
    version = model_version(network, card)
    assert len(version) == 12 and int(version, 16) >= 0
    assert model_version(load_model(model_path), read_card(model_path)) == version
    assert model_version(network, {**card, "model_version": "ignored"}) == version  # its own field left out
    assert model_version(network, {**card, "created": "another day"}) != version
    changed = load_model(model_path)
    weights = changed.get_weights()
    weights[0] = weights[0].copy()
    weights[0].flat[0] += 1e-3
    changed.set_weights(weights)
    assert model_version(changed, card) != version


# ----------------------------------------------------------------------------- static int8
@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory) -> Path:
    """Count-like training stamps, unlabelled (so the int8 check compares scores only)."""
    path = tmp_path_factory.mktemp("calib") / "train.npz"
    np.savez(path, images=stamps(300, seed=11))
    return path


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory, model_path, calibration_file):
    import realbogus.deploy.export as E

    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    report = E.export_onnx(model_path, out, calibrate=calibration_file, calibration_rows=150, check_rows=200)
    return out, report


def test_int8_export_scores_close_to_float32_and_says_how_close(int8_export, network):
    import onnx

    from realbogus.deploy.inference import OnnxScorer
    from realbogus.evaluation.scoring import scores_from_logits

    path, report = int8_export
    q = report["int8"]
    assert q["n_check_stamps"] == 150 and q["max_score_difference"] <= q["score_tolerance"] == 0.05
    assert "auc_difference" not in q  # an unlabelled check set: scores only
    assert "150 stamps, one in 2" in q["calibration_set"]  # spread over all 300
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert any(init.data_type == onnx.TensorProto.INT8 for init in proto.graph.initializer)  # int8 weights
    # the first convolution keeps float32 weights, the others are fed dequantised int8 weights
    floats = {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert q["float_first_and_last_layer"] and [n.input[1] in floats for n in convs].count(True) == 1
    assert convs[0].input[1] in floats and len(convs) > 2
    scorer = OnnxScorer(path, batch_size=16)
    assert scorer.precision == "int8"
    card = json.loads(scorer.metadata["model_card"])
    assert card["onnx_export"]["int8"]["max_score_difference"] == q["max_score_difference"]
    x = stamps(40, seed=12)
    got = scores_from_logits(scorer.logits(x))
    want = scores_from_logits(network.predict(x, verbose=0))
    diff = np.abs(got - want)
    assert diff.max() < 0.05 and diff.mean() < 0.02
    assert diff.max() > 0  # really quantised: not the float32 graph


def test_int8_export_refused_beyond_tolerance_leaves_nothing(tmp_path, model_path, calibration_file):
    import realbogus.deploy.export as E

    out = tmp_path / "out" / "model.int8.onnx"
    out.parent.mkdir()
    with pytest.raises(DataError, match="not written, int8 scores differ from float32 by up to") as info:
        E.export_onnx(model_path, out, calibrate=calibration_file, calibration_rows=64, check_rows=64,
                      score_tolerance=1e-9)
    assert "\n" not in str(info.value)
    assert list(out.parent.iterdir()) == []
    # a labelled check set: an AUC tolerance below any difference refuses too
    x = stamps(64, seed=13)
    np.savez(tmp_path / "check.npz", images=x, label=np.arange(64) % 2)
    with pytest.raises(DataError, match=r"AUC [-+]"):
        E.export_onnx(model_path, out, calibrate=calibration_file, check=tmp_path / "check.npz",
                      calibration_rows=64, check_rows=64, score_tolerance=1.0, auc_tolerance=-1.0)
    assert list(out.parent.iterdir()) == []
    with pytest.raises(DataError, match="no such file"):
        E.export_onnx(model_path, out, calibrate=tmp_path / "missing.h5")


def test_predict_scores_with_an_int8_model(tmp_path, int8_export, network):
    from realbogus.evaluation.scoring import scores_from_logits
    from realbogus.predict import predict_file

    path, report = int8_export
    x = stamps(20, seed=14)
    np.save(tmp_path / "night.npy", x)
    meta = predict_file(path, tmp_path / "night.npy", tmp_path / "s.csv", batch_size=8)
    assert meta["model_format"] == "onnx" and meta["precision"] == "int8"
    data = np.genfromtxt(tmp_path / "s.csv", delimiter=",", names=True, dtype=None, encoding="utf-8")
    assert np.abs(data["score"] - scores_from_logits(network.predict(x, verbose=0))).max() < 0.05


def test_spread_stamps_mixes_the_whole_file_and_keeps_labels_aligned(tmp_path):
    from realbogus.data.format import write_dataset
    from realbogus.deploy.export import spread_stamps

    n = 3000
    x = np.full((n, 29, 29, 3), 100.0, np.float32)
    x[:, 0, 0, 0] = np.arange(n)  # each stamp names its row
    y = (np.arange(n) >= n // 2).astype(int)  # ordered by class, as a careless file might be
    write_dataset(tmp_path / "t.h5", x, {"label": y, "sensor_id": np.zeros(n, int), "kind": np.zeros(n, int),
                                         "mag": np.zeros(n, np.float32)})
    np.save(tmp_path / "t.npy", x)
    for name in ("t.h5", "t.npy"):
        got, labels, what = spread_stamps(tmp_path / name, 600)
        rows = got[:, 0, 0, 0].astype(int)
        assert len(got) == 600 and len(np.unique(rows)) == 600 and rows.min() < 30 and rows.max() > n - 30, what
        if name == "t.h5":
            np.testing.assert_array_equal(labels, y[rows])
            assert 0.45 < labels.mean() < 0.55
        else:
            assert labels is None


def test_int8_command_line_mistakes_fail_at_once(tmp_path, model_path):
    cases = [
        (["--calibrate", str(tmp_path / "train.npz"), str(tmp_path / "served")], "the output must end in .onnx"),
        (["--calibrate", str(tmp_path / "missing.h5"), str(tmp_path / "m.int8.onnx")], "no such file"),
        (["--calibrate", str(tmp_path / "train.npz"), "--check-rows", "0", str(tmp_path / "m.int8.onnx")],
         "--check-rows=0 must be a positive integer"),
    ]
    np.savez(tmp_path / "train.npz", images=stamps(4, seed=1))
    for extra, message in cases:
        done = subprocess.run([sys.executable, "-m", "realbogus.deploy.export", str(model_path), *extra],
                              capture_output=True, text=True, env=ENV, cwd=tmp_path)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and message in lines[0], (extra, done.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.npz"]
