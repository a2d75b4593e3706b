"""Label-error handling: selection rules, treatments, out-of-fold scores and their cache, reports.

The end-to-end tests share one small stage 1 on smoke data (3 folds of the simple network,
3 epochs): the smoke training set carries 22 label errors with known ``true_label``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from realbogus.errors import ConfigError
from realbogus.label_errors.selection import (
    RULE_PARAMETERS,
    confident_joint,
    confident_learning,
    confident_thresholds,
    predicted_neq_given,
    score_threshold,
    select,
)
from realbogus.label_errors.treatment import TREATMENTS, apply_treatment

REPO = Path(__file__).resolve().parents[1]
RULES = ["predicted_neq_given", "score_threshold", "confident_learning"]
# Stage 1 small enough for tests, trained enough to separate the smoke classes (AUC ~0.95).
TINY_STAGE1 = ["label_cleaning.folds=3", "label_cleaning.trainer.epochs=3", "label_cleaning.trainer.batch_size=64"]


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


# ----------------------------------------------------------------------------- selection rules
def test_predicted_neq_given_and_score_threshold_by_hand():
    scores = np.array([0.02, 0.49, 0.5, 0.95, 0.05, 0.5, 0.51, 0.99, 0.7])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, -1])
    assert predicted_neq_given(scores, labels).tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0]
    assert predicted_neq_given(scores, labels, threshold=0.96).tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0]
    assert score_threshold(scores, labels, t_hi=0.9, t_lo=0.1).tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert select("none", scores, labels).sum() == 0
    with pytest.raises(ConfigError):
        score_threshold(scores, labels, t_hi=0.1, t_lo=0.9)
    with pytest.raises(ConfigError, match="no parameter"):
        select("score_threshold", scores, labels, {"threshold": 0.5})
    with pytest.raises(ConfigError, match="not one of"):
        select("majority_vote", scores, labels)


def test_confident_learning_matches_hand_computation():
    # given bogus: p(real) = .1 .2 .3 .9 .6  -> p(bogus) = .9 .8 .7 .1 .4, t_bogus = 2.9/5 = 0.58
    # given real:  p(real) = .9 .8 .7 .2 .4  -> t_real = 3.0/5 = 0.60
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.6, 0.9, 0.8, 0.7, 0.2, 0.4])
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    np.testing.assert_allclose(confident_thresholds(scores, labels), [0.58, 0.60])
    # Confident class (p_j >= t_j; argmax when both): bogus rows -> B B B R R(.6 >= .6);
    # real rows -> R R R B B(p_bogus .6 >= .58). Off-diagonal: rows 3, 4, 8, 9.
    joint = confident_joint(scores, labels)
    assert joint["counts"].tolist() == [[3, 2], [2, 3]]
    np.testing.assert_allclose(joint["error_rates"], [0.4, 0.4])
    assert np.flatnonzero(confident_learning(scores, labels)).tolist() == [3, 4, 8, 9]
    # A sample confident of no class is left out; one that the argmax still gives to its
    # given label is not suspected.
    scores2 = np.array([0.05, 0.1, 0.5, 0.95, 0.9, 0.5])
    labels2 = np.array([0, 0, 0, 1, 1, 1])
    # t_bogus = (.95 + .9 + .5) / 3 = .7833, t_real = (.95 + .9 + .5) / 3 = .7833: the 0.5
    # samples reach neither threshold, so nothing is off-diagonal.
    assert confident_learning(scores2, labels2).sum() == 0
    assert confident_joint(scores2, labels2)["counts"].tolist() == [[2, 0], [0, 2]]


def test_confident_learning_agrees_with_cleanlab():
    from cleanlab import filter as cleanlab_filter  # pinned in requirements.txt: no silent skip

    rng = np.random.default_rng(3)
    labels = (rng.random(2000) < 0.4).astype(int)
    scores = np.clip(np.where(labels == 1, rng.beta(5, 2, 2000), rng.beta(2, 5, 2000)), 1e-6, 1 - 1e-6)
    probs = np.stack([1 - scores, scores], axis=1)
    theirs = cleanlab_filter.find_label_issues(labels, probs, filter_by="confident_learning")
    assert (confident_learning(scores, labels) == theirs).all()


def test_rule_defaults_match_configs():
    for rule in RULES:
        cfg = compose_train([f"label_cleaning={rule}"]).label_cleaning
        assert cfg.name == rule
        assert {k: cfg[k] for k in RULE_PARAMETERS[rule]} == RULE_PARAMETERS[rule]


# ----------------------------------------------------------------------------------- treatments
def test_every_treatment_gives_the_promised_labels():
    given = np.array([0, 1, 0, 1, -1, 0])
    suspected = np.array([1, 1, 0, 0, 1, 0], bool)  # the unlabelled row cannot be a label error
    rows, labels = apply_treatment("keep", given, suspected)
    assert rows.tolist() == [0, 1, 2, 3, 4, 5] and labels.tolist() == [0, 1, 0, 1, -1, 0]
    rows, labels = apply_treatment("remove", given, suspected)
    assert rows.tolist() == [2, 3, 4, 5] and labels.tolist() == [0, 1, -1, 0]
    rows, labels = apply_treatment("unlabel", given, suspected)
    assert rows.tolist() == [0, 1, 2, 3, 4, 5] and labels.tolist() == [-1, -1, 0, 1, -1, 0]
    rows, labels = apply_treatment("relabel", given, suspected)
    assert rows.tolist() == [0, 1, 2, 3, 4, 5] and labels.tolist() == [1, 0, 0, 1, -1, 0]
    for name in TREATMENTS:
        rows, labels = apply_treatment(name, given, suspected)
        assert rows.dtype == np.int64 and labels.dtype == np.int32
    with pytest.raises(ConfigError):
        apply_treatment("ignore", given, suspected)


def test_stratified_folds_are_balanced():
    from realbogus.label_errors.oof import stratified_folds

    labels = np.array([0] * 62 + [1] * 37 + [-1] * 11)
    folds = stratified_folds(labels, 5, seed=1)
    for value in (0, 1, -1):
        counts = np.bincount(folds[labels == value], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1
    assert (stratified_folds(labels, 5, seed=1) == folds).all()
    with pytest.raises(ConfigError, match="fewer than"):
        stratified_folds(np.array([0] * 10 + [1] * 3), 5, seed=0)


def test_a_training_file_rewritten_during_stage1_is_refused(tmp_path):
    import os

    from realbogus.errors import DataError
    from realbogus.label_errors.oof import _check_unchanged, _file_identity

    path = tmp_path / "train.h5"
    path.write_bytes(b"x" * 10)
    identity = _file_identity(path)
    _check_unchanged(path, identity)
    os.utime(path, ns=(identity["mtime_ns"] + 10**9, identity["mtime_ns"] + 10**9))
    with pytest.raises(DataError, match="rewritten"):
        _check_unchanged(path, identity)


# --------------------------------------------------------------------------------- configs
def test_run_name_and_stage1_configs():
    assert compose_train(["data=smoke", "model=simple", "loss=ce"]).run_name == "smoke-simple-ce-s0"
    cfg = compose_train(["data=smoke", "label_cleaning=predicted_neq_given", "label_treatment=unlabel"])
    assert cfg.run_name == "smoke-complex-ce_ech_vat-predicted_neq_given-unlabel-s0"
    assert (cfg.label_cleaning.model.name, cfg.label_cleaning.loss.name) == ("simple", "ce")
    assert cfg.label_cleaning.folds == 5
    paper = compose_train(["label_cleaning=confident_learning", "label_cleaning/stage1@label_cleaning=paper"])
    assert (paper.label_cleaning.model.name, paper.label_cleaning.loss.name) == ("complex", "ce")
    assert paper.model.name == "complex"


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "conf" / "experiment").glob("labels_*.yaml")))
def test_label_experiments_compose(name):
    cfg = compose_train([f"experiment={name}"])
    treatment = name.removeprefix("labels_")
    assert (cfg.model.name, cfg.loss.name) == ("complex", "ce_ech_vat")
    assert cfg.label_treatment.name == treatment
    assert cfg.label_cleaning.name == ("none" if treatment == "keep" else "predicted_neq_given")


# ------------------------------------------------------------------------- stage 1 on smoke data
@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("label_cache")


def cleaning_config(smoke_dir: Path, cache_dir: Path, rule: str = "predicted_neq_given", treatment: str = "unlabel",
                    extra: list[str] = ()):
    cfg = compose_train(["data=smoke", "model=simple", "loss=ce_vat", f"label_cleaning={rule}",
                         f"label_treatment={treatment}", f"label_cleaning.cache_dir={cache_dir}",
                         "trainer.progress=none", *TINY_STAGE1, *extra])
    with open_dict(cfg):
        cfg.data.dir = str(smoke_dir)
    return cfg


@pytest.fixture(scope="module")
def stage1(smoke_dir, cache_dir):
    """Out-of-fold scores of the smoke training set, the labels and the ground truth."""
    from realbogus.data.format import open_dataset
    from realbogus.label_errors.oof import out_of_fold_scores

    cfg = cleaning_config(smoke_dir, cache_dir)
    with open_dataset(smoke_dir / "train.h5") as ds:
        given, true = ds.column("label").astype(int), ds.column("true_label").astype(int)
    oof = out_of_fold_scores(cfg.label_cleaning, smoke_dir / "train.h5", given)
    return oof, given, true


def test_oof_scores_cover_every_training_sample_once(stage1):
    oof, given, _ = stage1
    n = given.size
    assert not oof["from_cache"]
    assert oof["index"].tolist() == list(range(n))
    assert np.isfinite(oof["oof_score"]).all() and ((oof["oof_score"] >= 0) & (oof["oof_score"] <= 1)).all()
    assert (oof["given_label"] == given).all()
    seen = []
    for k in range(3):
        _, rows = read_csv(oof["cache_dir"] / f"fold_{k}" / "scores.csv")
        idx = [int(r["index"]) for r in rows]
        assert (oof["fold"][idx] == k).all()  # fold k's model scored exactly its held-out rows
        seen += idx
    assert sorted(seen) == list(range(n))  # each sample scored once, by one fold
    assert np.bincount(oof["fold"]).min() >= n // 3


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_finds_injected_errors_far_better_than_chance(stage1, rule):
    from scipy.stats import hypergeom

    oof, given, true = stage1
    suspected = select(rule, oof["oof_score"], given)
    errors = given != true
    n, n_err, m = given.size, int(errors.sum()), int(suspected.sum())
    found = int((suspected & errors).sum())
    assert n_err >= 15 and m > 0
    precision, recall = found / m, found / n_err
    # A random selection of m samples has expected precision n_err/n and recall m/n.
    assert precision >= 3 * n_err / n, (rule, m, found)
    assert recall >= 3 * m / n, (rule, m, found)
    assert recall >= 0.3, (rule, m, found)
    # ... and finds this many errors or more with probability below one in a million.
    assert hypergeom.sf(found - 1, n, n_err, m) < 1e-6, (rule, m, found)


def test_cache_is_reused_and_stage1_resumes_per_fold(stage1, smoke_dir, cache_dir, monkeypatch):
    import realbogus.training.fit as driver
    from realbogus.label_errors.oof import cache_key, out_of_fold_scores, stage1_settings

    oof, given, _ = stage1
    key_dir = oof["cache_dir"]
    calls = []
    real_fit = driver.fit_network
    monkeypatch.setattr(driver, "fit_network", lambda *a, **k: calls.append(a[-1]) or real_fit(*a, **k))
    weights = sorted(key_dir.glob("fold_*/checkpoint/*.weights.h5"))
    mtimes = [p.stat().st_mtime_ns for p in weights]
    # Another rule, treatment and stage-2 model: the same stage 1, so the same cache entry.
    cfg = cleaning_config(smoke_dir, cache_dir, rule="confident_learning", treatment="remove",
                          extra=["model=complex", "loss=ce_ech_vat", "seed=3"])
    again = out_of_fold_scores(cfg.label_cleaning, smoke_dir / "train.h5", given)
    assert again["from_cache"] and again["cache_dir"] == key_dir and calls == []
    np.testing.assert_array_equal(again["oof_score"], oof["oof_score"])
    assert [p.stat().st_mtime_ns for p in weights] == mtimes
    # A changed stage-1 setting or other given labels get their own key.
    settings = stage1_settings(cfg.label_cleaning)
    key = cache_key(smoke_dir / "train.h5", given, settings)[0]
    assert key == key_dir.name
    settings["trainer"]["epochs"] = 4
    assert cache_key(smoke_dir / "train.h5", given, settings)[0] != key
    assert cache_key(smoke_dir / "train.h5", 1 - given, stage1_settings(cfg.label_cleaning))[0] != key
    # Interrupted after two of three folds: only the missing fold is redone.
    (key_dir / "oof_scores.csv").unlink()
    (key_dir / "fold_2" / "scores.csv").unlink()
    resumed = out_of_fold_scores(cfg.label_cleaning, smoke_dir / "train.h5", given)
    assert [Path(c).name for c in calls] == ["fold_2"]
    assert not resumed["from_cache"]
    np.testing.assert_allclose(resumed["oof_score"], oof["oof_score"], rtol=1e-6)


def test_prepare_labels_applies_rule_and_treatment(stage1, smoke_dir, cache_dir, tmp_path):
    from realbogus.label_errors import prepare_labels

    oof, given, _ = stage1
    suspected = select("score_threshold", oof["oof_score"], given)
    cfg = cleaning_config(smoke_dir, cache_dir, rule="score_threshold", treatment="remove")
    rows, labels = prepare_labels(cfg, smoke_dir / "train.h5", tmp_path)
    assert rows.tolist() == np.flatnonzero(~suspected).tolist()
    assert (labels == given[rows]).all()
    # No cleaning: every row, the labels as given (or as passed in), no reports.
    none = compose_train(["data=smoke", "label_treatment=unlabel"])
    rows, labels = prepare_labels(none, smoke_dir / "train.h5", tmp_path / "none", given_labels=1 - given)
    assert rows.tolist() == list(range(given.size)) and (labels == 1 - given).all()
    assert not (tmp_path / "none").exists()


def test_reports_hold_the_documented_columns_and_keys(stage1, smoke_dir, cache_dir, tmp_path):
    """The documented training command writes the label-error files into the run folder."""
    oof, given, true = stage1
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "realbogus.train", "model=simple", "loss=ce_vat", "data=smoke",
           f"data.dir={smoke_dir}", "label_cleaning=predicted_neq_given", "label_treatment=unlabel",
           f"label_cleaning.cache_dir={cache_dir}", *TINY_STAGE1, "trainer.epochs=1",
           "trainer.steps_per_epoch=2", "trainer.n_bootstrap=10", "trainer.progress=none", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stage 1: fold" not in proc.stdout  # the stage 1 of the fixture was reused

    header, rows = read_csv(out / "label_errors.csv")
    assert header == ["index", "given_label", "oof_score", "suspected", "true_label"]
    assert [int(r["index"]) for r in rows] == list(range(given.size))
    suspected = np.array([int(r["suspected"]) for r in rows], bool)
    assert (suspected == predicted_neq_given(oof["oof_score"], given)).all()
    np.testing.assert_allclose([float(r["oof_score"]) for r in rows], oof["oof_score"], rtol=1e-9)

    report = json.loads((out / "label_error_report.json").read_text())
    assert (report["selected_rule"], report["treatment"]) == ("predicted_neq_given", "unlabel")
    assert report["n_true_errors"] == int((given != true).sum())
    assert set(report["generated_error_rates"]) == {"bogus", "real"}
    assert set(report["rules"]) == set(RULES)
    for rule in RULES:
        entry = report["rules"][rule]
        for key in ("precision", "recall", "f1", "n_suspected", "estimated_error_rates"):
            assert key in entry, (rule, key)
        assert set(entry["estimated_error_rates"]) == {"bogus", "real"}
    assert report["rules"]["predicted_neq_given"]["n_suspected"] == int(suspected.sum())

    header, rows = read_csv(out / "label_audit.csv")
    assert header[:7] == ["rank", "index", "given_label", "oof_score", "sensor_id", "kind", "mag"]
    assert sorted(int(r["index"]) for r in rows) == np.flatnonzero(suspected).tolist()
    disagreement = [abs(float(r["oof_score"]) - int(r["given_label"])) for r in rows]
    assert disagreement == sorted(disagreement, reverse=True)
    header, rows = read_csv(out / "label_error_analysis.csv")
    assert {"bin_lo", "bin_hi", "misclassified_fraction", "true_error_ratio"} <= set(header)
    assert sum(int(r["n_given_bogus"]) + int(r["n_given_real"]) for r in rows) == given.size
    for name in ("label_error_analysis.png", "label_audit.png", "metrics.json", "model.keras"):
        assert (out / name).exists(), name

    # Stage 2 trained on the treated labels: the suspects are unlabelled, the rest as given.
    run_cfg = OmegaConf.load(out / "run_config.yaml")
    assert run_cfg.label_treatment.name == "unlabel"
    assert "unlabelled" in proc.stdout and f"{int(suspected.sum())} of {given.size}" in proc.stdout
