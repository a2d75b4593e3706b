"""Choosing the fastest path by measurement: the shared cache, scoring and training precision."""

from __future__ import annotations

import json

import numpy as np
import pytest

from realbogus import speed


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("REALBOGUS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def counting(rates: dict):
    """Candidates returning fixed rates, and the list of the names measured."""
    calls: list[str] = []

    def make(name):
        def measure():
            calls.append(name)
            return rates[name]
        return measure

    return {name: make(name) for name in rates}, calls


def test_fastest_measures_once_then_answers_from_the_cache(cache_dir):
    candidates, calls = counting({"a": 10.0, "b": 30.0, "c": 20.0})
    first = speed.fastest("thing", {"model": "m1", "batch": 8}, candidates, announce=None)
    assert first.choice == "b" and first.measured and sorted(calls) == ["a", "b", "c"]
    again = speed.fastest("thing", {"model": "m1", "batch": 8}, candidates, announce=None)
    assert again.choice == "b" and not again.measured and len(calls) == 3  # not measured again
    entry = next(iter(json.loads((cache_dir / "speed.json").read_text()).values()))
    assert entry["choice"] == "b" and entry["cpu"] == speed.processor() and entry["cores"] == speed.usable_cores()
    # other work (another model, another batch size) is measured on its own
    slow_b, calls2 = counting({"a": 10.0, "b": 1.0, "c": 20.0})
    assert speed.fastest("thing", {"model": "m2", "batch": 8}, slow_b, announce=None).choice == "c"
    assert speed.fastest("thing", {"model": "m1", "batch": 16}, slow_b, announce=None).choice == "c"
    assert len(calls2) == 6
    assert speed.fastest("thing", {"model": "m1", "batch": 8}, slow_b, announce=None).choice == "b"  # cached


def test_fastest_survives_a_corrupt_cache_and_a_vanished_choice(cache_dir):
    cache_dir.mkdir()
    (cache_dir / "speed.json").write_text("{not json")
    candidates, calls = counting({"x": 2.0, "y": 1.0})
    assert speed.fastest("k", {}, candidates, announce=None).choice == "x" and calls == ["x", "y"]
    # the cached choice is no longer offered: measure again
    fewer, calls2 = counting({"y": 1.0, "z": 5.0})
    assert speed.fastest("k", {}, fewer, announce=None).choice == "z" and calls2 == ["y", "z"]


@pytest.fixture(scope="module")
def tiny_network():
    import keras

    from realbogus.models import build_model

    keras.utils.set_random_seed(0)
    return build_model({"name": "simple", "conv_filters": [4, 4], "dense_units": [8]})


def test_scorer_auto_follows_measured_rates_and_caches_them(tiny_network, monkeypatch):
    import realbogus.deploy.inference as I

    fake = {"float32": 100.0, "mixed_bfloat16": 250.0}
    calls: list[str] = []

    def measure(name, run, stamps):
        out = run(stamps[:3])  # the candidate path really runs
        assert out.shape == (3, 2) and np.isfinite(out).all()
        calls.append(name)
        return fake[name]

    monkeypatch.setattr(I, "_measure_rate", measure)
    first = I.Scorer(tiny_network, batch_size=4, precision="auto")
    assert first.precision == "mixed_bfloat16" and first.auto.measured and sorted(calls) == sorted(fake)
    again = I.Scorer(tiny_network, batch_size=4, precision="auto")
    assert again.precision == "mixed_bfloat16" and not again.auto.measured and len(calls) == 2
    # the choice is the faster path on this machine, whichever it is: CPU flags play no part
    fake.update({"float32": 300.0})
    assert I.Scorer(tiny_network, batch_size=8, precision="auto").precision == "float32"  # new batch size
    assert len(calls) == 4
    x = np.random.default_rng(0).normal(100, 5, (5, 29, 29, 3)).astype(np.float32)
    np.testing.assert_allclose(again.logits(x), tiny_network.predict(x, verbose=0), atol=0.1)


def test_scorer_auto_key_follows_model_content(tiny_network):
    import keras

    from realbogus.deploy.inference import model_content
    from realbogus.models import build_model

    keras.utils.set_random_seed(1)
    other = build_model({"name": "simple", "conv_filters": [4, 4], "dense_units": [8]})
    assert model_content(tiny_network) == model_content(tiny_network)
    assert model_content(other) != model_content(tiny_network)  # same architecture, other weights


def test_training_precision_auto_uses_the_shared_cache(monkeypatch, cache_dir, capsys):
    from omegaconf import OmegaConf

    import realbogus.training.precision as TP

    monkeypatch.delenv(TP.AUTO_ENV, raising=False)
    spec = OmegaConf.create({"model": {"name": "simple"}, "loss": {"lambda_ce": 1.0},
                             "trainer": {"batch_size": 32}})
    calls: list[str] = []
    monkeypatch.setattr(TP, "_step_rate", lambda s, name, steps=3: calls.append(name) or
                        {"float32": 50.0, "mixed_bfloat16": 40.0}[name])
    assert TP.resolve_precision("auto", spec) == "float32" and len(calls) == 2
    assert TP.resolve_precision("auto", spec) == "float32" and len(calls) == 2
    assert TP.cache_path() == speed.cache_path() and TP.cache_path().is_file()
    assert "trainer.precision=auto" in capsys.readouterr().out
    assert TP.resolve_precision("mixed_bfloat16", spec) == "mixed_bfloat16"


def test_bench_inference_smoke_runs_every_path(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "REALBOGUS_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, str(repo / "benchmarks" / "bench_inference.py"), "--smoke",
                           "--keep", str(tmp_path / "exports")], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split("  ")[1].strip() for line in done.stdout.splitlines() if line.startswith("  ")}
    for path in ("fp32 model.predict", "keras fp32", "keras bf16", "onnx fp32", "onnx int8", "cascade (onnx int8)",
                 "screen alone (simple onnx fp32)"):
        assert path in rows, (path, done.stdout)
    assert "FPR at TPR 0.9" in done.stdout and "stamps/s" in done.stdout and "per core" in done.stdout
    assert (tmp_path / "exports" / "complex.int8.onnx").is_file()


@pytest.fixture(scope="module")
def linear_onnx(tmp_path_factory):
    """A tiny ONNX model with the export's interface: stamps -> logits (a linear map), no TensorFlow."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(0, 1e-3, (29 * 29 * 3, 2)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["stamps"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "linear", [helper.make_tensor_value_info("stamps", TensorProto.FLOAT, ["batch", 29, 29, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], [numpy_helper.from_array(w, "w")])
    path = tmp_path_factory.mktemp("onnx") / "linear.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8  # what ONNX Runtime of any recent version reads
    onnx.save(model, path)
    return path, w


def test_onnx_scorer_auto_chooses_threads_or_streams_by_measurement(linear_onnx, monkeypatch):
    import realbogus.deploy.inference as I

    path, w = linear_onnx
    fake = {"threads/all": 10.0, "streams/all": 20.0, "threads/extended": 5.0, "streams/extended": 15.0}
    calls: list[str] = []

    def measure(name, run, stamps):
        assert run(stamps[:5]).shape == (5, 2)
        calls.append(name)
        return fake[name]

    monkeypatch.setattr(I, "_measure_rate", measure)
    monkeypatch.setattr(speed, "usable_cores", lambda: 2)  # the choice exists only with 2+ cores
    first = I.OnnxScorer(path, batch_size=4)
    assert (first.parallel, first.optimization) == ("streams", "all") and first.auto.measured
    assert sorted(calls) == sorted(fake)
    again = I.OnnxScorer(path, batch_size=4)
    assert (again.parallel, again.optimization) == ("streams", "all") and not again.auto.measured
    assert len(calls) == 4
    fake["threads/extended"] = 30.0
    other = I.OnnxScorer(path, batch_size=8)  # another batch size: measured again
    assert (other.parallel, other.optimization) == ("threads", "extended") and len(calls) == 8
    assert I.OnnxScorer(path, batch_size=8, parallel="streams").optimization == "all"  # only what is left open
    x = np.random.default_rng(1).normal(100, 5, (11, 29, 29, 3)).astype(np.float32)
    want = x.reshape(11, -1) @ w
    for parallel in ("threads", "streams"):  # both ways give the same logits, in input order
        got = I.OnnxScorer(path, batch_size=4, parallel=parallel, optimization="all").logits(x)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_cache_dir_redirects_and_restores(tmp_path, cache_dir):
    before = speed.cache_path()
    with speed.cache_dir(tmp_path / "elsewhere") as path:
        assert speed.cache_path() == path / "speed.json"
        candidates, _ = counting({"a": 1.0})
        speed.fastest("k", {}, candidates, announce=None)
        assert (path / "speed.json").is_file()
    assert speed.cache_path() == before and not before.exists()


def test_training_precision_auto_can_be_answered_by_the_environment(monkeypatch, cache_dir):
    from omegaconf import OmegaConf

    import realbogus.training.precision as TP
    from realbogus.errors import ConfigError

    spec = OmegaConf.create({"model": {"name": "simple"}, "loss": {"lambda_ce": 1.0},
                             "trainer": {"batch_size": 32}})
    monkeypatch.setattr(TP, "_step_rate", lambda *a, **k: pytest.fail("auto measured despite the preset"))
    monkeypatch.setenv(TP.AUTO_ENV, "mixed_bfloat16")
    assert TP.resolve_precision("auto", spec) == "mixed_bfloat16"
    assert TP.resolve_precision("float32", spec) == "float32"  # an explicit choice wins
    monkeypatch.setenv(TP.AUTO_ENV, "float16")
    with pytest.raises(ConfigError, match="REALBOGUS_AUTO_PRECISION"):
        TP.resolve_precision("auto", spec)
