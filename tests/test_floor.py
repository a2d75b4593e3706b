"""The oracle floor: known answers on toy S/N distributions, pass-rate tables, the smoke data end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import norm

from realbogus.evaluation.floor import (
    fit_likelihood_ratio,
    floor_at_tpr,
    main,
    method_pass_rates,
    oracle_floor,
    oracle_pass_rates,
    oracle_scores,
    pass_rates,
    read_truth,
)


def toy(rng, n_real, n_peak, real=(8.0, 1.0), peak=(6.0, 1.0), n_other_bogus=0, n_host_real=0):
    """Kinds, S/N and true labels: hostless reals and noise peaks (Gaussian S/N) plus separable kinds."""
    kind = np.concatenate([np.full(n_real, "rand_artificial_real"), np.full(n_peak, "noise_peak"),
                           np.full(n_other_bogus, "cosmic_ray"), np.full(n_host_real, "sn_in_host")])
    snr = np.concatenate([rng.normal(*real, n_real), rng.normal(*peak, n_peak),
                          rng.uniform(5, 50, n_other_bogus), rng.uniform(5, 50, n_host_real)])
    label = np.concatenate([np.ones(n_real), np.zeros(n_peak + n_other_bogus), np.ones(n_host_real)]).astype(int)
    return kind, snr, label


def fitted(rng, **kw):
    kind, snr, label = toy(rng, 40000, 40000, **kw)
    return fit_likelihood_ratio(snr[label == 1], snr[label == 0], n_bins=30)


def test_equal_variance_gaussians_give_the_analytic_floor():
    """Reals N(8, 1) against noise peaks N(6, 1): the likelihood ratio rises with S/N, so the
    optimal test at TPR 0.9 keeps v > 8 - z_0.9 and passes Phi(6 - 8 + z_0.9) = 23.6% of the peaks."""
    rng = np.random.default_rng(0)
    ratio = fitted(rng)
    kind, snr, label = toy(rng, 20000, 20000, n_other_bogus=60000)
    scores = oracle_scores(kind, snr, label, ratio)
    assert np.all(scores[kind == "cosmic_ray"] == 0.0)
    expected_confusable = norm.cdf(6.0 - 8.0 + norm.ppf(0.9))
    expected = expected_confusable * 20000 / 80000  # the other bogus never pass
    result = floor_at_tpr(scores, label, 0.9, n_bootstrap=200)
    assert result["fpr"] == pytest.approx(expected, abs=0.006)
    lo, hi = result["fpr_ci"]
    assert lo - 0.003 <= expected <= hi + 0.003 and lo < result["fpr"] < hi
    # a real on a visible host is known: with half the reals hosted, the hostless ones need only TPR 0.8
    kind, snr, label = toy(rng, 20000, 20000, n_host_real=20000)
    scores = oracle_scores(kind, snr, label, ratio)
    assert np.all(scores[kind == "sn_in_host"] == 1.0)
    assert floor_at_tpr(scores, label, 0.9, n_bootstrap=0)["fpr"] == pytest.approx(
        norm.cdf(6.0 - 8.0 + norm.ppf(0.8)), abs=0.015)
    # ... unless every real counts as confusable (the S/N-only view)
    scores_all = oracle_scores(kind, snr, label, ratio, confusable_reals="all")
    assert 0.0 < scores_all[kind == "sn_in_host"].max() < 1.0


def test_a_likelihood_ratio_that_is_not_monotonic_in_snr():
    """Reals N(6, 2) against peaks N(6, 0.5): the optimal region is |v - 6| > c with
    P(|Z| > c / 2) = 0.9, passing P(|Z| > 2c) = 61.5% of the peaks; ranking by S/N alone does worse."""
    rng = np.random.default_rng(1)
    ratio = fitted(rng, real=(6.0, 2.0), peak=(6.0, 0.5))
    kind, snr, label = toy(rng, 20000, 20000, real=(6.0, 2.0), peak=(6.0, 0.5))
    c = 2.0 * norm.ppf(0.55)
    expected = 2.0 * norm.sf(c / 0.5)
    oracle = floor_at_tpr(oracle_scores(kind, snr, label, ratio), label, 0.9, n_bootstrap=0)["fpr"]
    assert oracle == pytest.approx(expected, abs=0.03)
    by_snr = floor_at_tpr(snr, label, 0.9, n_bootstrap=0)["fpr"]
    assert by_snr > oracle + 0.2


def test_pass_rates_count_each_kind_and_snr_bin_at_the_threshold():
    kind = np.array(["noise_peak"] * 4 + ["cosmic_ray"] * 4 + ["sn_hostless"] * 4)
    label = np.array([0] * 8 + [1] * 4)
    snr = np.array([5.5, 5.5, 9.0, 20.0, 5.5, 9.0, 9.0, 40.0, 5.5, 9.0, 20.0, 40.0])
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.1, 0.85, 0.1, 0.1, 0.7, 0.95, 0.99, 0.99])
    out = pass_rates(scores, label, kind, snr, tpr=1.0, snr_edges=[-np.inf, 6, 10, np.inf])
    assert out["threshold"] == 0.7 and out["tpr"] == 1.0 and out["fpr"] == 3 / 8
    table = out["by_kind"]
    by_kind = {g: (p, f) for g, p, f in zip(table["group"], table["n_bogus_passed"], table["fpr"])}
    assert by_kind["noise_peak"] == (2, 0.5) and by_kind["cosmic_ray"] == (1, 0.25)
    assert list(out["by_snr"]["group"]) == ["<6", "6-10", ">=10"]
    assert list(out["by_snr"]["n_bogus_passed"]) == [1, 2, 0]
    assert list(out["by_snr"]["n_real_passed"]) == [1, 1, 2]
    assert out["by_kind"]["share"].sum() == pytest.approx(1.0)


def test_floor_on_the_smoke_data_end_to_end(smoke_dir, tmp_path):
    train, test = smoke_dir / "train.h5", smoke_dir / "test.h5"
    truth = read_truth(test)
    assert {"noise_peak", "sn_hostless"} <= set(truth["kind"])
    floor = oracle_floor(train, test, n_bootstrap=100)
    assert 0.0 <= floor["fpr_ci"][0] <= floor["fpr"] <= floor["fpr_ci"][1] <= 1.0 and floor["tpr"] >= 0.9
    # no more bogus pass than the confusable ones
    assert floor["fpr"] * floor["n_test_bogus"] <= floor["n_test_confusable_bogus"]
    loose = oracle_floor(train, test, n_bootstrap=0, confusable_reals="all")
    assert loose["fpr"] >= floor["fpr"]
    # a method that scores by S/N alone passes far more bogus than the oracle
    index = np.arange(truth["snr"].size)
    predictions = {"index": index, "score": 1.0 / (1.0 + np.exp(-(truth["snr"] - 10.0)))}
    method = method_pass_rates(predictions, test)
    oracle = oracle_pass_rates(train, test)
    assert method["fpr"] > oracle["fpr"]
    assert set(oracle["by_kind"]["group"][oracle["by_kind"]["n_bogus_passed"] > 0]) <= {"noise_peak"}
    # the command line writes the JSON and the figure
    import csv

    run = tmp_path / "run"
    run.mkdir()
    with open(run / "predictions.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "score", "label", "true_label", "sensor_id", "kind", "mag"])
        for i, s in zip(index, predictions["score"]):
            label = truth["true_label"][i]
            writer.writerow([i, repr(float(s)), label, label, -1, truth["kind"][i], ""])
    out = tmp_path / "floor"
    main(["--data", str(smoke_dir), "--runs", str(run), "--out", str(out), "--n-bootstrap", "50"])
    saved = json.loads((out / "floor.json").read_text())
    assert saved["floor"]["fpr"] == pytest.approx(floor["fpr"])
    assert set(saved["pass_rates"]) == {"oracle", "run"}
    assert (out / "pass_rates.png").stat().st_size > 10000
