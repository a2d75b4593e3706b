"""Networks: shapes, sizes against the paper, config knobs, custom layers, saving, precision."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

from realbogus.errors import ConfigError, DataError
from realbogus.models import (
    FilterResponseNormalization,
    ResidualBlock,
    SqueezeExcitation,
    StampNormalization,
    build_model,
    flops_per_sample,
    load_model,
    split_model,
)

REPO = Path(__file__).resolve().parents[1]
PAPER = {"simple": {"params": 0.23e6, "flops": 7e6}, "complex": {"params": 2.3e6, "flops": 209e6}}


def model_cfg(name: str, **overrides):
    cfg = OmegaConf.load(REPO / "conf" / "model" / f"{name}.yaml")
    return OmegaConf.merge(cfg, overrides)


@pytest.fixture(scope="module")
def networks():
    keras.utils.set_random_seed(0)
    return {name: build_model(model_cfg(name)) for name in PAPER}


def stamps(n=4, seed=0):
    """Raw-count triplets: sky of a few hundred ADU plus a point source of random flux."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:29, :29]
    source = np.exp(-((yy - 14) ** 2 + (xx - 14) ** 2) / 8.0)
    sky = rng.uniform(200, 2000, size=(n, 1, 1, 3))
    flux = rng.uniform(100, 30000, size=(n, 1, 1, 3))
    noise = rng.normal(0, 1, size=(n, 29, 29, 3)) * np.sqrt(sky)
    return (sky + flux * source[None, :, :, None] + noise).astype(np.float32)


@pytest.mark.parametrize("name", list(PAPER))
def test_output_shape_dtype_and_size_match_the_paper(networks, name):
    model = networks[name]
    logits = model.predict(stamps(3), verbose=0)
    assert logits.shape == (3, 2) and logits.dtype == np.float32 and np.all(np.isfinite(logits))
    assert model.count_params() == pytest.approx(PAPER[name]["params"], rel=0.1)
    assert model.name == name


@pytest.mark.parametrize("name", list(PAPER))
def test_flops_match_the_paper(networks, name):
    assert flops_per_sample(networks[name]) == pytest.approx(PAPER[name]["flops"], rel=0.1)


def test_split_model_recomposes_the_network(networks):
    x = stamps(4)
    for model in networks.values():
        normalizer, body = split_model(model)
        z = normalizer(x).numpy()
        assert z.min() == 0.0 and z.max() == 1.0
        np.testing.assert_allclose(body(z).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
        # a training wrapper holding the network as `network` is unwrapped
        assert split_model(types.SimpleNamespace(network=model))[1] is body


def test_logits_do_not_change_when_counts_are_scaled_and_offset(networks):
    x = stamps(6)
    rng = np.random.default_rng(1)
    gain = rng.uniform(0.2, 20.0, size=(6, 1, 1, 3)).astype(np.float32)
    offset = rng.uniform(-300, 3000, size=(6, 1, 1, 3)).astype(np.float32)
    for model in networks.values():
        np.testing.assert_allclose(model(x * gain + offset).numpy(), model(x).numpy(), atol=2e-4)


def test_flat_and_constant_stamps_are_safe(networks):
    x = stamps(2)
    x[0] = 500.0  # a flat stamp
    x[1, :, :, 2] = 0.0  # one flat channel
    z = StampNormalization()(x).numpy()
    assert np.all(z[0] == 0.0) and np.all(z[1, :, :, 2] == 0.0) and z[1, :, :, :2].max() == 1.0
    for model in networks.values():
        assert np.all(np.isfinite(model.predict(x, verbose=0)))


def body_layer_count(model):
    return len(split_model(model)[1].layers)


def test_depth_knobs_change_the_number_of_layers(networks):
    base = body_layer_count(networks["complex"])
    assert body_layer_count(build_model(model_cfg("complex", feature_layers=7))) == base + 3
    deeper = build_model(
        model_cfg("complex", stages=[{"conv": 64, "blocks": [[64, 1], [64, 1]]}, {"conv": 128, "blocks": [[256, 2]]}])
    )
    assert body_layer_count(deeper) == base - 1
    three_stages = build_model(model_cfg("complex", stages=[{"conv": 32, "blocks": []}] * 3, feature_layers=0))
    assert body_layer_count(three_stages) == base - 4 - 4 + 2
    assert three_stages.output_shape == (None, 2)

    simple = body_layer_count(networks["simple"])
    assert body_layer_count(build_model(model_cfg("simple", dense_units=[64]))) == simple - 1
    one_stage = build_model(model_cfg("simple", conv_filters=[16], kernel_sizes=[3]))
    assert body_layer_count(one_stage) == simple - 2
    assert one_stage.predict(stamps(2), verbose=0).shape == (2, 2)


def test_bad_model_configs_raise_config_errors():
    with pytest.raises(ConfigError, match="model.name"):
        build_model({"name": "resnet"})
    with pytest.raises(ConfigError, match="model.feature_layer"):
        build_model(model_cfg("complex", feature_layer=3))
    with pytest.raises(ConfigError, match="kernel_sizes"):
        build_model(model_cfg("simple", kernel_sizes=[5]))
    with pytest.raises(ConfigError, match="stage 1"):
        build_model(model_cfg("complex", stages=[{"width": 64}]))


def test_filter_response_normalization_matches_the_formula():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 5, 5, 4)).astype(np.float32) * 7
    layer = FilterResponseNormalization(epsilon=1e-6)
    layer.build(x.shape)
    gamma, beta, tau = rng.normal(size=(3, 4)).astype(np.float32)
    layer.set_weights([gamma, beta, tau])
    nu2 = np.mean(x.astype(np.float64) ** 2, axis=(1, 2), keepdims=True)
    expected = np.maximum(gamma * x / np.sqrt(nu2 + 1e-6) + beta, tau)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_residual_block_shortcut_and_shapes():
    x = np.random.default_rng(3).normal(size=(2, 7, 7, 16)).astype(np.float32)
    same = ResidualBlock(16)
    assert same(x).shape == (2, 7, 7, 16) and same.shortcut is None
    wider = ResidualBlock(32, strides=2)
    assert wider(x).shape == (2, 4, 4, 32) and wider.shortcut is not None
    assert wider.compute_output_shape((None, 7, 7, 16)) == (None, 4, 4, 32)
    # the first convolution keeps the input width, the second sets the output width
    assert wider.conv1.kernel.shape == (3, 3, 16, 16) and wider.conv2.kernel.shape == (3, 3, 16, 32)
    gate = SqueezeExcitation(ratio=4)
    assert gate(x).shape == x.shape and gate.squeeze.units == 4


@pytest.mark.parametrize(
    "layer",
    [StampNormalization(1e-3), FilterResponseNormalization(1e-5), SqueezeExcitation(8), ResidualBlock(24, 2, 4, 1e-4)],
    ids=lambda layer: type(layer).__name__,
)
def test_custom_layers_round_trip_through_their_config(layer):
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"].startswith("realbogus>")
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()


def test_saved_models_reload_in_a_fresh_process_with_identical_predictions(networks, tmp_path):
    x = stamps(8)
    np.save(tmp_path / "x.npy", x)
    for name, model in networks.items():
        model.save(tmp_path / f"{name}.keras")
        np.save(tmp_path / f"{name}_here.npy", model.predict(x, verbose=0))
    code = (
        "import sys, numpy as np; from pathlib import Path; from realbogus.models import load_model\n"
        "d = Path(sys.argv[1]); x = np.load(d / 'x.npy')\n"
        "for name in ('simple', 'complex'):\n"
        "    np.save(d / f'{name}_there.npy', load_model(d / f'{name}.keras').predict(x, verbose=0))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env, capture_output=True)
    for name in networks:
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}_there.npy"), np.load(tmp_path / f"{name}_here.npy"))


def test_load_model_reports_missing_and_broken_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_model(tmp_path / "absent.keras")
    broken = tmp_path / "broken.keras"
    broken.write_text("not a zip archive")
    with pytest.raises(DataError, match="broken.keras"):
        load_model(broken)


def test_mixed_bfloat16_keeps_normalisation_in_float32_and_logits_float32(networks):
    # a faint source on a bright sky: lost if the counts were rounded to bfloat16 (8 bits)
    x = stamps(4, seed=5) + 20000.0
    reference = networks["complex"]
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = build_model(model_cfg("complex"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.set_weights(reference.get_weights())
    normalizer, body = split_model(model)
    assert normalizer.compute_dtype == "float32" and body.layers[1].compute_dtype == "bfloat16"
    np.testing.assert_array_equal(normalizer(x).numpy(), split_model(reference)[0](x).numpy())
    logits = model(x)
    assert logits.dtype == "float32"
    expected = reference(x).numpy()
    assert np.max(np.abs(logits.numpy() - expected)) < 0.05 * np.max(np.abs(expected)) + 1e-3


# --- the authors' FRN (learned epsilon, sum of squares) and zero-initialised residual branches


@pytest.mark.parametrize("spatial", ["mean", "sum"])
def test_filter_response_normalization_with_a_learned_epsilon_matches_numpy(spatial):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 6, 5, 4)).astype(np.float32) * 0.3
    layer = FilterResponseNormalization(epsilon=1e-6, learned_epsilon=True, spatial=spatial)
    layer.build(x.shape)
    assert [w.name for w in layer.weights] == ["gamma", "beta", "tau", "epsilon_logit"]
    np.testing.assert_array_equal(layer.epsilon_logit.numpy(), 0.0)  # starts at softplus(0) = 0.69
    gamma, beta, tau, v = rng.normal(size=(4, 4)).astype(np.float32)
    layer.set_weights([gamma, beta, tau, v])
    x64 = x.astype(np.float64)
    nu2 = (np.mean if spatial == "mean" else np.sum)(x64**2, axis=(1, 2), keepdims=True)
    eps = 1e-6 + np.log1p(np.exp(v.astype(np.float64)))
    expected = np.maximum(gamma * x64 / np.sqrt(nu2 + eps) + beta, tau)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    # the epsilon matters here (nu2 is of its order): a fixed 1e-6 gives something else
    fixed = FilterResponseNormalization(epsilon=1e-6, spatial=spatial)
    fixed.build(x.shape)
    fixed.set_weights([gamma, beta, tau])
    assert np.max(np.abs(fixed(x).numpy() - expected)) > 0.02


def test_frn_options_add_only_their_own_weights():
    plain = build_model(model_cfg("complex", frn_learned_eps=False))
    assert plain.count_params() == 2314022  # the published architecture, unchanged
    default = build_model(model_cfg("complex"))  # the recipe's default learns FRN's epsilon
    blocks = [layer for layer in split_model(default)[1].layers if isinstance(layer, ResidualBlock)]
    assert all(b.norm1.learned_epsilon and b.norm2.learned_epsilon and not b.zero_init for b in blocks)
    assert default.count_params() == 2314022 + sum(2 * b.norm1.gamma.shape[0] for b in blocks)
    learned = build_model(model_cfg("complex", frn_learned_eps=True, frn_spatial="sum", zero_init_residual=True))
    blocks = [layer for layer in split_model(learned)[1].layers if isinstance(layer, ResidualBlock)]
    # each block: an epsilon per channel in its two FRNs, a scale per output channel
    extra = sum(2 * block.norm1.gamma.shape[0] + block.filters for block in blocks)
    assert learned.count_params() == 2314022 + extra
    assert all(b.norm1.learned_epsilon and b.norm2.spatial == "sum" and b.zero_init for b in blocks)
    with pytest.raises(ConfigError, match="frn_spatial"):
        build_model(model_cfg("complex", frn_spatial="median"))


def test_zero_initialised_residual_blocks_start_as_their_shortcuts():
    x = np.random.default_rng(8).normal(size=(2, 7, 7, 16)).astype(np.float32)
    same = ResidualBlock(16, zero_init=True)
    np.testing.assert_array_equal(same(x).numpy(), x)
    wider = ResidualBlock(32, strides=2, zero_init=True)
    np.testing.assert_allclose(wider(x).numpy(), wider.shortcut(x).numpy(), rtol=1e-6, atol=1e-6)
    wider.branch_scale.assign(np.ones(32, np.float32))  # the branch is there once the scale moves
    assert np.max(np.abs(wider(x).numpy() - wider.shortcut(x).numpy())) > 1e-3


def test_saved_model_with_the_authors_frn_reloads_with_identical_predictions(tmp_path):
    keras.utils.set_random_seed(4)
    cfg = model_cfg("complex", feature_layers=1, stages=[{"conv": 16, "blocks": [[16, 1], [32, 2]]}],
                    frn_learned_eps=True, frn_spatial="sum", zero_init_residual=True)
    model = build_model(cfg)
    rng = np.random.default_rng(9)
    # move the learned epsilons and branch scales off their initial values, so that they count
    for weight in model.weights:
        if weight.name in ("epsilon_logit", "branch_scale"):
            weight.assign(rng.normal(size=weight.shape).astype(np.float32))
    x = stamps(6)
    before = model.predict(x, verbose=0)
    model.save(tmp_path / "frn.keras")
    reloaded = load_model(tmp_path / "frn.keras")
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), before)
    block = split_model(reloaded)[1].get_layer("stage1_res1")
    assert block.frn_learned_epsilon and block.frn_spatial == "sum" and block.zero_init


def test_step_dropout_round_trips_and_the_simple_model_uses_it():
    from realbogus.models import StepDropout

    layer = StepDropout(0.3, seed=5)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is StepDropout and clone.get_config() == layer.get_config()
    body = split_model(build_model(model_cfg("simple")))[1]
    assert isinstance(body.get_layer("dropout"), StepDropout)


def test_a_network_trained_in_bfloat16_has_a_float32_copy_with_the_same_weights():
    import numpy as np

    from realbogus.models import build_model, float32_copy
    from realbogus.training.precision import precision_policy

    with precision_policy("mixed_bfloat16"):
        net = build_model(model_cfg("complex", **TINY_COMPLEX_FOR_COPY))
    assert any(layer.compute_dtype == "bfloat16" for layer in net._flatten_layers())
    copy = float32_copy(net)
    assert {layer.compute_dtype for layer in copy._flatten_layers()} == {"float32"}
    for a, b in zip(net.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).normal(200, 15, (8, 29, 29, 3)).astype(np.float32)
    diff = np.abs(np.asarray(net(x), np.float32) - np.asarray(copy(x))).max()
    assert 0 < diff < 0.1  # bfloat16 rounding, nothing more
    assert float32_copy(copy) is copy


TINY_COMPLEX_FOR_COPY = {"feature_layers": 1, "stages": [{"conv": 8, "blocks": [[8, 1]]}]}
