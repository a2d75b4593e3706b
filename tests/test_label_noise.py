"""Label-noise injection: per-class rates, seeded and nested draws, the boundary profile, records.

Most tests work on synthetic labels and out-of-fold scores; the ones that go through the
training driver use the smoke data with a stand-in for stage 1 or a two-step training.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from realbogus.errors import ConfigError
from realbogus.label_noise import inject_label_noise, requested_rates
from realbogus.label_noise.injection import (
    boundary_weights,
    draw_flips,
    error_profile,
    flip_counts,
    inject,
    label_error_rates,
    model_weights,
)

REPO = Path(__file__).resolve().parents[1]


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def synthetic(n: int = 40000, seed: int = 11, error_rates=(0.006, 0.010)):
    """Truth, given labels with tail-heavy errors, and out-of-fold scores (probability of real).

    Reals score high and bogus low; the existing label errors are ordinary members of their
    true class (a hidden real looks real), as in the simulator.
    """
    rng = np.random.default_rng(seed)
    true = (rng.random(n) < 0.38).astype(np.int64)
    scores = np.where(true == 1, rng.beta(6, 1.5, n), rng.beta(1.5, 6, n))
    given = true.copy()
    for c, rate in enumerate(error_rates):
        # errors of class c: samples labelled c that are truly 1 - c
        n_err = int(rate * np.count_nonzero(true == c))
        given[rng.choice(np.flatnonzero(true == 1 - c), n_err, replace=False)] = c
    given[rng.choice(n, 50, replace=False)] = -1  # a few unlabelled rows: never touched
    return true, given, scores


# ------------------------------------------------------------------------------------ rates
def test_injection_hits_the_requested_rate_of_each_class():
    true, given, _ = synthetic()
    rates = {"bogus": 0.03, "real": 0.05}
    noisy, flipped = inject(given, rates, seed=1, true_label=true)
    n_bogus, n_real = np.count_nonzero(given == 0), np.count_nonzero(given == 1)
    assert flipped["bogus"].size == round(0.03 * n_bogus) == flip_counts(given, rates)["bogus"]
    assert flipped["real"].size == round(0.05 * n_real)
    # every flip turned a correct label of the other class into a wrong one
    assert (given[flipped["bogus"]] == 1).all() and (noisy[flipped["bogus"]] == 0).all()
    assert (given[flipped["real"]] == 0).all() and (noisy[flipped["real"]] == 1).all()
    assert (true[flipped["bogus"]] == 1).all() and (true[flipped["real"]] == 0).all()
    changed = np.flatnonzero(noisy != given)
    assert sorted(changed) == sorted(np.concatenate(list(flipped.values())))
    # the class's share of wrong labels grows by the requested rate, within rounding and the
    # small change of class sizes the flips cause
    before, after = label_error_rates(given, true), label_error_rates(noisy, true)
    assert after["bogus"] - before["bogus"] == pytest.approx(0.03, abs=0.003)
    assert after["real"] - before["real"] == pytest.approx(0.05, abs=0.005)
    assert (noisy[given == -1] == -1).all()


def test_zero_rate_flips_nothing_and_impossible_rates_are_refused():
    true, given, _ = synthetic(n=2000)
    noisy, flipped = inject(given, {"bogus": 0.0, "real": 0.0}, seed=0, true_label=true)
    assert (noisy == given).all() and all(v.size == 0 for v in flipped.values())
    with pytest.raises(ConfigError, match="candidates"):
        inject(given, {"bogus": 0.9, "real": 0.0}, seed=0, true_label=true)  # more than there are reals
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        flip_counts(given, {"bogus": -0.1})


def test_same_seed_same_flips_and_lower_rates_are_nested():
    true, given, scores = synthetic()
    weight_fn = lambda target, rows: boundary_weights(scores, given, target, rows, true)[0]  # noqa: E731
    for fn in (None, weight_fn):
        a = inject(given, {"bogus": 0.02, "real": 0.04}, seed=7, true_label=true, weight_fn=fn)
        b = inject(given, {"bogus": 0.02, "real": 0.04}, seed=7, true_label=true, weight_fn=fn)
        c = inject(given, {"bogus": 0.02, "real": 0.04}, seed=8, true_label=true, weight_fn=fn)
        high = inject(given, {"bogus": 0.06, "real": 0.1}, seed=7, true_label=true, weight_fn=fn)
        for name in ("bogus", "real"):
            assert np.array_equal(a[1][name], b[1][name])
            assert not np.array_equal(a[1][name], c[1][name])
            assert np.isin(a[1][name], high[1][name]).all()
        assert np.array_equal(a[0], b[0])


def test_ground_truth_is_only_read():
    true, given, scores = synthetic(n=5000)
    true_before, given_before = true.copy(), given.copy()
    inject(given, {"bogus": 0.05, "real": 0.05}, seed=0, true_label=true,
           weight_fn=lambda t, rows: boundary_weights(scores, given, t, rows, true)[0])
    assert np.array_equal(true, true_before) and np.array_equal(given, given_before)
    # Without keep_existing_errors a flip may hit an existing error (and repair it).
    _, flipped = inject(given, {"bogus": 0.5, "real": 0.0}, seed=0, true_label=true, keep_existing_errors=False)
    assert (true[flipped["bogus"]] == 0).any()


# ---------------------------------------------------------------------------- boundary mode
def test_error_profile_by_hand():
    edges = np.array([0.0, 0.5, 1.0])
    scores = np.array([0.1, 0.2, 0.7, 0.9, 0.1, 0.6, 0.8, 0.9])
    given = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    true = np.array([0, 0, 1, 0, 0, 1, 1, 1])
    raw = error_profile(scores, given, true, edges, smoothing=0.0)
    # bogus labels: low bin 0 of 2 wrong, high bin 1 of 2 wrong; real labels: low bin 1 of 1 wrong
    np.testing.assert_allclose(raw["bogus"]["ratio"], [0.0, 0.5])
    np.testing.assert_allclose(raw["real"]["ratio"], [1.0, 0.0])
    smooth = error_profile(scores, given, true, edges, smoothing=1.0)
    # (e + r) / (n + 1) with the class's overall rate r = 1/4
    np.testing.assert_allclose(smooth["bogus"]["ratio"], [0.25 / 3, 1.25 / 3])
    assert error_profile(scores, given, given, edges)["bogus"]["ratio"] is None  # no errors: no profile


def test_weighted_draw_selects_in_proportion_to_weight():
    rng = np.random.default_rng(0)
    u = 1.0 - rng.random(20000)
    w = np.where(np.arange(20000) % 2 == 0, 1.0, 3.0)
    picked = draw_flips(u, w, 400)
    assert picked.size == 400 and np.unique(picked).size == 400
    assert (w[picked] == 3.0).mean() == pytest.approx(0.75, abs=0.05)
    np.testing.assert_array_equal(draw_flips(u, np.ones(20000), 50), np.sort(np.argsort(-u)[:50]))


@pytest.mark.parametrize("with_truth", [True, False])
def test_boundary_flips_where_the_profile_says(with_truth):
    """Bogus-labelled errors go to reals that look most real; real-labelled ones to bogus that look bogus."""
    true, given, scores = synthetic(n=60000, seed=13)
    truth = true if with_truth else None
    rates = {"bogus": 0.03, "real": 0.05}
    sources = set()

    def weight_fn(target, rows):
        w, source = boundary_weights(scores, given, target, rows, truth)
        sources.add(source)
        return w

    _, uniform = inject(given, rates, seed=0, true_label=truth)
    _, boundary = inject(given, rates, seed=0, true_label=truth, weight_fn=weight_fn)
    assert sources == {"truth" if with_truth else "model"}
    # injected bogus labels sit on higher out-of-fold real-scores than a uniform draw ...
    assert scores[boundary["bogus"]].mean() > scores[uniform["bogus"]].mean() + 0.02
    # ... and injected real labels on lower ones
    assert scores[boundary["real"]].mean() < scores[uniform["real"]].mean() - 0.02
    if with_truth:
        # The flips follow the measured profile: bins weigh in proportion to rho * candidates.
        profile = error_profile(scores, given, true)
        bins = np.clip(np.searchsorted(profile["edges"], scores, side="right") - 1, 0, 19)
        rows = np.flatnonzero((given == 1) & (true == 1))
        expected = np.bincount(bins[rows], weights=profile["bogus"]["ratio"][bins[rows]], minlength=20)
        observed = np.bincount(bins[boundary["bogus"]], minlength=20)
        top = np.argmax(expected)
        assert observed[top] / observed.sum() == pytest.approx(expected[top] / expected.sum(), abs=0.08)


def test_model_weights_are_the_other_class_probability():
    scores = np.array([0.1, 0.8, 0.5])
    np.testing.assert_allclose(model_weights(scores, np.arange(3), target=0), [0.1, 0.8, 0.5])
    np.testing.assert_allclose(model_weights(scores, np.arange(3), target=1), [0.9, 0.2, 0.5])
    with pytest.raises(ConfigError, match="profile"):
        boundary_weights(scores, np.array([0, 1, 0]), 0, np.arange(3), None, source="truth")


# ------------------------------------------------------------------------------------ configs
def test_rates_and_run_names_from_configs():
    assert compose_train([]).run_name == "quick-complex-ce_ech_vat-s0"  # default unchanged
    cfg = compose_train(["data=smoke", "label_noise=boundary", "label_noise.multiple=5", "seed=2"])
    assert cfg.run_name == "smoke-boundary_x5-complex-ce_ech_vat-s2"
    assert requested_rates(cfg.label_noise) == pytest.approx({"bogus": 0.03, "real": 0.05})
    assert cfg.label_noise.seed == 2
    absolute = compose_train(["label_noise=uniform", "label_noise.rates={bogus: 0.1, real: 0.2}", "label_noise.tag=abs"])
    assert requested_rates(absolute.label_noise) == {"bogus": 0.1, "real": 0.2}
    assert absolute.run_name == "quick-uniform_abs-complex-ce_ech_vat-s0"
    with pytest.raises(ConfigError, match="tag"):
        requested_rates(compose_train(["label_noise=uniform", "label_noise.rates={bogus: 0.1, real: 0.2}"]).label_noise)
    with pytest.raises(ConfigError, match="non-negative"):
        requested_rates(compose_train(["label_noise=uniform", "label_noise.multiple=-1"]).label_noise)


def test_boundary_stage1_shares_the_cache_of_label_cleaning(tmp_path):
    from realbogus.label_errors.oof import cache_key, stage1_settings

    cfg = compose_train(["label_noise=boundary", "label_cleaning=predicted_neq_given", "label_treatment=unlabel"])
    assert stage1_settings(cfg.label_noise.stage1) == stage1_settings(cfg.label_cleaning)
    labels = np.array([0, 1] * 10)
    (tmp_path / "train.h5").write_bytes(b"x")
    keys = [cache_key(tmp_path / "train.h5", labels, stage1_settings(node))[0]
            for node in (cfg.label_noise.stage1, cfg.label_cleaning)]
    assert keys[0] == keys[1]


# ----------------------------------------------------------------------- on the smoke data
def read_file_labels(path: Path):
    from realbogus.data.format import open_dataset

    with open_dataset(path) as ds:
        return ds.column("label").astype(int), ds.column("true_label").astype(int)


def test_record_lists_the_flips_and_the_file_is_untouched(smoke_dir, tmp_path, monkeypatch):
    import realbogus.label_errors.oof as oof

    train = smoke_dir / "train.h5"
    given, true = read_file_labels(train)
    mtime = train.stat().st_mtime_ns
    # A stand-in for stage 1: scores that know the truth, so the profile is sharp.
    rng = np.random.default_rng(0)
    scores = np.clip(np.where(true == 1, 0.8, 0.2) + 0.15 * rng.standard_normal(true.size), 0, 1)
    monkeypatch.setattr(oof, "out_of_fold_scores", lambda *a, **k: {"oof_score": scores, "cache_dir": tmp_path / "c"})
    cfg = compose_train(["data=smoke", "label_noise=boundary", "label_noise.multiple=5", "trainer.progress=none"])
    noisy = inject_label_noise(cfg, train, tmp_path)
    assert train.stat().st_mtime_ns == mtime
    assert np.array_equal(read_file_labels(train)[1], true)  # true_label untouched

    record = json.loads((tmp_path / "label_noise.json").read_text())
    assert record["mode"] == "boundary" and record["weight_source"] == {"bogus": "truth", "real": "truth"}
    assert record["n_injected"] == {"bogus": round(0.03 * (given == 0).sum()), "real": round(0.05 * (given == 1).sum())}
    after = label_error_rates(noisy, true)
    assert record["label_error_rates"]["after"] == pytest.approx(after)
    with open(tmp_path / "label_noise.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["index", "given_label", "noisy_label", "true_label", "oof_score"]
    index = np.array([int(r["index"]) for r in rows])
    assert np.array_equal(index, np.flatnonzero(noisy != given))
    assert all(int(r["noisy_label"]) == 1 - int(r["given_label"]) == 1 - int(r["true_label"]) for r in rows)
    # Same config, same flips; mode none injects nothing and writes nothing.
    assert np.array_equal(inject_label_noise(cfg, train, tmp_path / "again"), noisy)
    assert inject_label_noise(compose_train(["data=smoke"]), train, tmp_path / "none") is None
    assert not (tmp_path / "none").exists()


def test_training_run_sees_the_noisy_labels(smoke_dir, tmp_path, monkeypatch):
    import realbogus.label_errors as label_errors
    from realbogus.train import train as run_training

    seen = {}
    real_prepare = label_errors.prepare_labels

    def spy(cfg, train_path, run_dir, given_labels=None):
        seen["given"] = given_labels
        return real_prepare(cfg, train_path, run_dir, given_labels=given_labels)

    monkeypatch.setattr(label_errors, "prepare_labels", spy)
    cfg = compose_train(["data=smoke", "model=simple", "loss=ce", "label_noise=uniform", "label_noise.multiple=4"])
    with open_dict(cfg):
        cfg.data.dir = str(smoke_dir)
        cfg.trainer.epochs = 1
        cfg.trainer.steps_per_epoch = 2
        cfg.trainer.batch_size = 64
        cfg.trainer.n_bootstrap = 10
        cfg.trainer.progress = "none"
    run_training(cfg, tmp_path)
    given, true = read_file_labels(smoke_dir / "train.h5")
    flipped = np.flatnonzero(seen["given"] != given)
    with open(tmp_path / "label_noise.csv", newline="") as fh:
        assert [int(r["index"]) for r in csv.DictReader(fh)] == flipped.tolist()
    assert flipped.size == round(0.024 * (given == 0).sum()) + round(0.04 * (given == 1).sum())
    # test metrics are scored against the file's (clean) test labels
    assert (tmp_path / "metrics.json").exists()
