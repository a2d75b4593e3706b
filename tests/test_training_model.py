"""The training wrapper: exact resume, stateless randomness, dropout masks in VAT, ECH warm-up."""

from __future__ import annotations

import random
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from realbogus.models import StepDropout, build_model, split_model
from realbogus.training.model import RealBogusModel, objective_kwargs

from test_models import model_cfg

TINY_COMPLEX = {"feature_layers": 1, "stages": [{"conv": 8, "blocks": [[8, 1], [16, 2]]}]}


def batches(n_batches=3, size=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(100.0, 10.0, size=(n_batches, size, 29, 29, 3)).astype(np.float32)
    x[..., 14, 14, :] += rng.uniform(0, 80, size=(n_batches, size, 1))  # something to classify
    y = rng.integers(-1, 2, size=(n_batches, size)).astype(np.int32)
    return x, y


def trainable(name, python_draws=0, **options):
    keras.utils.set_random_seed(1)
    for _ in range(python_draws):  # a resumed run may use Python's random stream differently
        random.random()
    cfg = model_cfg(name, **(TINY_COMPLEX if name == "complex" else {}))
    settings = {"lambda_ce": 1.0, "lambda_ech": 0.5, "lambda_lds": 1.0, "vat_xi": 1e-3, "vat_eps": 1.0, "seed": 3}
    model = RealBogusModel(build_model(cfg), **{**settings, **options})
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model(np.zeros((1, 29, 29, 3), np.float32))
    model.optimizer.build(model.trainable_variables)
    return model


@pytest.mark.parametrize(
    "name, options",
    [("simple", {}), ("simple", {"vat_radius": "noise", "vat_snr_change": 1.0, "vat_xi": 1.0}), ("complex", {})],
    ids=["simple-fixed", "simple-noise", "complex"],
)
def test_resuming_from_saved_weights_repeats_an_uninterrupted_run_exactly(name, options, tmp_path):
    """3 straight steps == 2 steps, save_weights, a fresh build, load_weights, 1 step.

    Keras' seed generators are not saved with the weights; VAT's directions and the dropout masks
    must therefore come from the saved step counter, not from generator state.
    """
    x, y = batches()
    straight = trainable(name, **options)
    for i in range(3):
        straight.train_on_batch(x[i], y[i])
    first = trainable(name, **options)
    for i in range(2):
        first.train_on_batch(x[i], y[i])
    first.save_weights(tmp_path / "last.weights.h5")
    resumed = trainable(name, python_draws=3, **options)
    resumed.load_weights(tmp_path / "last.weights.h5")
    assert int(resumed.optimizer.iterations) == 2
    resumed.train_on_batch(x[2], y[2])
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    # and the steps did something: the runs moved away from their start
    start = trainable(name, **options).get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(straight.get_weights(), start))


def test_keras_dropout_alone_would_not_resume_exactly(tmp_path):
    """The reason for StepDropout: a plain Keras Dropout's mask state is lost by save/load."""
    layer = keras.layers.Dropout(0.5, seed=1)
    x = np.ones((4, 64), np.float32)
    layer(x, training=True)
    states = [v for v in layer.variables if "seed" in v.path]
    assert states and int(states[0].numpy()[1]) > 0  # the generator advanced ...
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(4), layer])
    model.save_weights(tmp_path / "w.weights.h5")
    import h5py

    names = []
    with h5py.File(tmp_path / "w.weights.h5") as fh:
        fh.visit(names.append)
    assert not any("seed" in n for n in names)  # ... and its state is not in the weights file


def test_vat_passes_see_the_clean_pass_dropout_masks():
    """With a zero radius the perturbed prediction is the clean one: the smoothness term is 0.

    Had each pass drawn its own dropout mask, KL(clean || perturbed) would measure the masks.
    """
    model = trainable("simple", vat_eps=0.0)
    x, y = batches(1)
    model._follow_step()
    _, _, _, smooth, _ = model._terms(tf.constant(x[0]), tf.constant(y[0]), training=True)
    assert float(smooth) < 1e-10
    # the check has teeth: two training-mode passes with Keras' own masks differ
    normalizer, body = split_model(model.network)
    z = normalizer(x[0])
    plain = build_model(model_cfg("simple"))
    plain_body = split_model(plain)[1]
    dropout = plain_body.get_layer("dropout")
    assert isinstance(dropout, StepDropout)
    assert not np.array_equal(plain_body(z, training=True).numpy(), plain_body(z, training=True).numpy())


def test_step_dropout_masks_depend_on_seed_and_step_only():
    layer = StepDropout(0.5, seed=11)
    x = np.ones((8, 200), np.float32)
    counter = tf.Variable(5, dtype=tf.int64)
    layer.follow_step(lambda: counter)
    a = layer(x, training=True).numpy()
    np.testing.assert_array_equal(a, layer(x, training=True).numpy())
    assert set(np.unique(a)) == {0.0, 2.0} and 0.4 < np.mean(a == 0) < 0.6
    counter.assign(6)
    assert not np.array_equal(a, layer(x, training=True).numpy())
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)
    clone = StepDropout.from_config(layer.get_config())
    assert clone.seed == 11 and clone.rate == 0.5
    clone.follow_step(lambda: tf.constant(5, tf.int64))
    np.testing.assert_array_equal(clone(x, training=True).numpy(), a)


def test_vat_directions_are_a_function_of_seed_and_step():
    model = trainable("complex")
    x, y = batches(1)
    xs, ys = tf.constant(x[0]), tf.constant(y[0])

    def smooth():
        return float(model._terms(xs, ys, training=True)[3])

    first = smooth()
    assert first == smooth()
    model.optimizer.iterations.assign(7)
    assert smooth() != first
    model.optimizer.iterations.assign(0)
    assert smooth() == first


def test_ech_weight_ramps_linearly_during_training_only():
    model = trainable("complex", lambda_ech=2.0, ech_warmup_steps=10)
    for step, expected in ((0, 0.0), (5, 1.0), (10, 2.0), (25, 2.0)):
        model.optimizer.iterations.assign(step)
        assert float(model._ech_weight(training=True)) == pytest.approx(expected)
        assert float(model._ech_weight(training=False)) == 2.0
    x, y = batches(1)
    model.optimizer.iterations.assign(0)
    off = trainable("complex", lambda_ech=2.0, lambda_lds=0.0, ech_warmup_steps=10)
    total, ce, ech, _, _ = off._terms(tf.constant(x[0]), tf.constant(y[0]), training=True)
    assert float(ech) > 0 and float(total) == pytest.approx(float(ce))  # step 0: no ECH in the total
    assert trainable("complex", lambda_ech=2.0).ech_warmup_steps == 0  # off by default


def test_new_options_round_trip_through_the_config_and_are_checked():
    model = trainable("complex", vat_radius="noise", vat_snr_change=0.5, vat_xi_min=0.1, ech_warmup_steps=100)
    config = model.get_config()
    clone = RealBogusModel.from_config(config)
    for key in ("vat_radius", "vat_snr_change", "vat_xi_min", "ech_warmup_steps"):
        assert getattr(clone, key) == getattr(model, key)
    assert config["vat_radius"] == "noise"
    with pytest.raises(ValueError, match="vat_radius"):
        RealBogusModel(build_model(model_cfg("simple")), vat_radius="counts")
    # defaults are the previous behaviour
    plain = RealBogusModel(build_model(model_cfg("simple")))
    assert (plain.vat_radius, plain.vat_xi_min, plain.ech_warmup_steps) == ("fixed", 0.0, 0)


# --- the loss configs ----------------------------------------------------------------------


def loss_configs():
    conf = Path(__file__).resolve().parents[1] / "conf" / "loss"
    return {p.stem: (OmegaConf.to_container(OmegaConf.load(p)), p.read_text()) for p in sorted(conf.glob("*.yaml"))}


def flat_keys(cfg, prefix=""):
    keys = set()
    for key, value in cfg.items():
        keys |= flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return keys


def test_loss_configs_share_their_keys_comment_each_and_build_the_objective():
    configs = loss_configs()
    assert {"ce_ech_vat", "ce_ech_vat_as_written", "ce_ech_vat_as_run"} <= set(configs)
    keys = {name: flat_keys(cfg) for name, (cfg, _) in configs.items()}
    assert all(k == keys["ce"] for k in keys.values()), keys
    for name, (cfg, text) in configs.items():
        for line in text.splitlines():
            if ":" in line and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
                assert "#" in line, (name, line)  # a one-line comment on each key
        kwargs = objective_kwargs(cfg)
        assert kwargs["vat_radius"] in ("fixed", "noise") and kwargs["ech_warmup_steps"] >= 0
    paper, as_run = objective_kwargs(configs["ce_ech_vat_as_written"][0]), objective_kwargs(configs["ce_ech_vat_as_run"][0])
    # the paper as written, unchanged
    assert (paper["lambda_ce"], paper["lambda_ech"], paper["lambda_lds"]) == (0.1, 1.0, 0.1)
    assert (paper["vat_radius"], paper["vat_eps"], paper["vat_xi"]) == ("fixed", 1.0, 1e-3)
    # the default, chosen on the validation split: ECH at CE's weight, VAT's radius 1 in S/N
    chosen = objective_kwargs(configs["ce_ech_vat"][0])
    assert (chosen["lambda_ce"], chosen["lambda_ech"], chosen["lambda_lds"]) == (0.1, 0.1, 0.1)
    assert (chosen["vat_radius"], chosen["vat_snr_change"], chosen["vat_xi"]) == ("noise", 1.0, 0.1)
    # every config switches its terms on at the same weights, so two differ only by their terms
    for name, (cfg, _) in configs.items():
        if not name.endswith(("_as_run", "_as_written")):
            assert cfg["lambda_ech"] in (0.0, 0.1) and cfg["lambda_lds"] in (0.0, 0.1), name
    # what the scripts ran: CE and ECH equal, VAT at weight 1 with a radius of ~0.1 count
    assert (as_run["lambda_ce"], as_run["lambda_ech"], as_run["lambda_lds"]) == (0.1, 0.1, 1.0)
    assert as_run["vat_radius"] == "noise" and as_run["vat_snr_change"] == pytest.approx(0.1 / 115, rel=0.2)


def test_objective_kwargs_fill_keys_older_configs_lack():
    old = {"lambda_ce": 0.1, "lambda_ech": 1.0, "lambda_lds": 0.1, "margin": 0.25,
           "vat": {"xi": 1e-3, "eps": 1.0, "power_iterations": 1}}
    assert objective_kwargs(old) == {"lambda_ce": 0.1, "lambda_ech": 1.0, "lambda_lds": 0.1, "margin": 0.25,
                                     "vat_xi": 1e-3, "vat_eps": 1.0, "vat_power_iterations": 1}


@pytest.mark.parametrize("name", ["simple", "complex"])
def test_vat_on_part_of_the_batch_is_the_smoothness_of_that_part(name):
    """vat_fraction=0.5: the term equals the full-batch term of a batch made of the first half."""
    from realbogus.losses import lds

    x, y = batches(1, size=16)
    half = trainable(name, vat_fraction=0.5)
    half._follow_step()
    _, _, _, smooth_half, _ = half._terms(tf.constant(x[0]), tf.constant(y[0]), training=True)
    full = trainable(name)
    full._follow_step()
    _, _, _, smooth_full, _ = full._terms(tf.constant(x[0]), tf.constant(y[0]), training=True)
    # the same computation by hand on the first 8 samples, with the model's own seed and masks
    z = half.normalizer(x[0][:8])
    expected = lds(lambda t: half.body(t, training=True), z, xi=half.vat_xi, eps=half.vat_eps,
                   seed=half._vat_seed(), logits=tf.cast(half.body(z, training=True), tf.float32))
    assert float(smooth_half) == pytest.approx(float(expected), rel=1e-4, abs=1e-9)
    assert float(smooth_half) != pytest.approx(float(smooth_full), rel=1e-3)
    with pytest.raises(ValueError, match="vat_fraction"):
        trainable(name, vat_fraction=0.0)
