"""ROC metrics against scikit-learn and a brute-force scan over every threshold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from realbogus.evaluation import metrics as M


def brute_force(scores, labels):
    """(threshold, fpr, tpr) of every candidate threshold: each distinct score, and inf."""
    keep = labels >= 0
    s, y = scores[keep], labels[keep]
    thresholds = np.concatenate([np.unique(s), [np.inf]])
    tpr = np.array([(s[y == 1] >= t).mean() for t in thresholds])
    fpr = np.array([(s[y == 0] >= t).mean() for t in thresholds])
    return thresholds, fpr, tpr


def brute_fpr_at_tpr(scores, labels, target):
    thr, fpr, tpr = brute_force(scores, labels)
    ok = tpr >= target
    i = np.flatnonzero(ok)[np.argmax(thr[ok])]  # the highest threshold reaching the TPR
    return fpr[i], tpr[i], thr[i]


def brute_tpr_at_fpr(scores, labels, target):
    thr, fpr, tpr = brute_force(scores, labels)
    ok = fpr <= target
    i = np.flatnonzero(ok)[np.argmin(thr[ok])]  # the lowest threshold within the FPR
    return fpr[i], tpr[i], thr[i]


def random_case(seed, n_real=60, n_bogus=900, n_unlabelled=30, decimals=2):
    """Overlapping classes with many ties (scores rounded) and some unlabelled rows."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.beta(5, 1, n_real), rng.beta(1, 5, n_bogus), rng.random(n_unlabelled)])
    labels = np.concatenate([np.ones(n_real, int), np.zeros(n_bogus, int), -np.ones(n_unlabelled, int)])
    order = rng.permutation(labels.size)
    return np.round(scores[order], decimals), labels[order]


def test_hand_made_vector():
    # 10 reals and 10 bogus; bogus 0.95 outranks two reals.
    real = np.array([0.99, 0.98, 0.97, 0.96, 0.94, 0.93, 0.92, 0.91, 0.90, 0.50])
    bogus = np.array([0.95, 0.40, 0.30, 0.20, 0.10, 0.05, 0.04, 0.03, 0.02, 0.01])
    scores = np.concatenate([real, bogus])
    labels = np.r_[np.ones(10, int), np.zeros(10, int)]
    # TPR 0.9 needs 9 of 10 reals: threshold 0.90, one bogus (0.95) above it.
    assert M.fpr_at_tpr(scores, labels, 0.9) == (0.1, 0.9, 0.90)
    # TPR 0.95 needs all 10 reals: threshold 0.50, still only the one bogus.
    assert M.fpr_at_tpr(scores, labels, 0.95) == (0.1, 1.0, 0.50)
    # No bogus may pass at FPR 0.05: the threshold must exceed 0.95, keeping 4 reals.
    assert M.tpr_at_fpr(scores, labels, 0.05) == (0.0, 0.4, 0.96)
    # AUC: 9 reals beat every bogus, 0.94..0.90 lose to 0.95 (5 pairs), 0.50 loses to 0.95.
    assert M.auc(scores, labels) == pytest.approx(1 - 6 / 100)
    assert M.auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    m = M.compute_metrics(scores, labels, n_bootstrap=0, bogus_detections_per_night=1000)
    assert m["fpr_at_tpr"]["0.9"] == {"fpr": 0.1, "ci": None, "threshold": 0.9, "tpr": 0.9}
    assert m["bogus_per_night"] == pytest.approx(100.0)
    assert m["at_score"]["0.5"] == {"tpr": 1.0, "fpr": 0.1}
    assert (m["n_real"], m["n_bogus"], m["n_unlabelled"]) == (10, 10, 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_brute_force_and_sklearn(seed):
    scores, labels = random_case(seed)
    keep = labels >= 0
    assert M.auc(scores, labels) == pytest.approx(roc_auc_score(labels[keep], scores[keep]), abs=1e-12)
    fpr, tpr, thr = M.roc(scores, labels)
    s_fpr, s_tpr, s_thr = roc_curve(labels[keep], scores[keep], drop_intermediate=False)
    np.testing.assert_array_equal(fpr, s_fpr)
    np.testing.assert_array_equal(thr, s_thr)
    for target in (0.5, 0.9, 0.95, 0.99, 1.0):
        assert M.fpr_at_tpr(scores, labels, target) == pytest.approx(brute_fpr_at_tpr(scores, labels, target))
    for target in (1e-3, 1e-2, 0.05, 0.2, 1.0):
        assert M.tpr_at_fpr(scores, labels, target) == pytest.approx(brute_tpr_at_fpr(scores, labels, target))


def test_tpr_at_fpr_below_one_bogus():
    # The top score is bogus: no threshold below inf keeps the FPR under 1/n_bogus.
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    labels = np.array([0, 1, 1, 0, 0])
    p = M.tpr_at_fpr(scores, labels, 1e-4)
    assert (p.fpr, p.tpr, p.threshold) == (0.0, 0.0, np.inf)


def test_weighted_core_matches_point_estimates_and_repeated_samples():
    """The vectorised bootstrap core: unit weights give the point estimates; integer weights
    give the metrics of the sample with each score repeated that many times."""
    scores, labels = random_case(5)
    real, bogus = scores[labels == 1], scores[labels == 0]
    prep = M._prepare(real, bogus)
    tprs, fprs = [0.9, 0.95, 0.99], [1e-3, 1e-2, 0.1]
    ones = M._rates_from_counts(np.ones((1, real.size), np.int64), np.ones((1, bogus.size), np.int64), prep, tprs, fprs)
    assert ones["auc"][0] == pytest.approx(M.auc(scores, labels), abs=1e-12)
    for t in tprs:
        assert ones[f"fpr@{t}"][0] == pytest.approx(M.fpr_at_tpr(scores, labels, t).fpr)
    for f in fprs:
        assert ones[f"tpr@{f}"][0] == pytest.approx(M.tpr_at_fpr(scores, labels, f).tpr)

    rng = np.random.default_rng(0)
    wr = M._resample_counts(rng, real.size, 4)
    wb = M._resample_counts(rng, bogus.size, 4)
    assert (wr.sum(axis=1) == real.size).all() and (wb.sum(axis=1) == bogus.size).all()
    got = M._rates_from_counts(wr, wb, prep, tprs, fprs)
    for b in range(4):
        s = np.concatenate([np.repeat(prep["real"], wr[b]), np.repeat(prep["bogus"], wb[b])])
        y = np.r_[np.ones(real.size, int), np.zeros(bogus.size, int)]
        assert got["auc"][b] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        for t in tprs:
            assert got[f"fpr@{t}"][b] == pytest.approx(brute_fpr_at_tpr(s, y, t)[0])
        for f in fprs:
            assert got[f"tpr@{f}"][b] == pytest.approx(brute_tpr_at_fpr(s, y, f)[1])


def gaussian_case(n_real, n_bogus, seed=0):
    rng = np.random.default_rng(seed)
    logit = np.concatenate([rng.normal(3.0, 1.0, n_real), rng.normal(0.0, 1.0, n_bogus)])
    return 1 / (1 + np.exp(-logit)), np.r_[np.ones(n_real, int), np.zeros(n_bogus, int)]


def test_bootstrap_interval_contains_estimate_and_narrows():
    widths = []
    for n in (300, 3000):
        scores, labels = gaussian_case(n, 10 * n)
        m = M.compute_metrics(scores, labels, n_bootstrap=200, seed=1)
        for value, ci in [(m["auc"], m["auc_ci"]), (m["bogus_per_night"], m["bogus_per_night_ci"])] + [
            (p["fpr"], p["ci"]) for p in m["fpr_at_tpr"].values()
        ]:
            assert ci[0] <= value <= ci[1]
        ci = m["fpr_at_tpr"]["0.9"]["ci"]
        widths.append((ci[1] - ci[0], m["auc_ci"][1] - m["auc_ci"][0]))
        assert m["bogus_per_night_ci"] == pytest.approx([c * 1e6 for c in ci])
    assert widths[1][0] < 0.6 * widths[0][0]
    assert widths[1][1] < 0.6 * widths[0][1]


def test_bootstrap_is_seeded():
    scores, labels = gaussian_case(200, 2000)
    a = M.bootstrap(scores, labels, 50, seed=7)
    b = M.bootstrap(scores, labels, 50, seed=7, max_cells=5000)  # other chunking, same draws
    c = M.bootstrap(scores, labels, 50, seed=8)
    for key in a:
        assert a[key].shape == (50,)
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["auc"], c["auc"])


def test_unlabelled_rows_are_excluded():
    scores, labels = gaussian_case(100, 1000)
    rng = np.random.default_rng(3)
    extra = rng.random(500)
    m1 = M.compute_metrics(scores, labels, n_bootstrap=20)
    m2 = M.compute_metrics(np.r_[scores, extra], np.r_[labels, -np.ones(500, int)], n_bootstrap=20)
    assert m2.pop("n_unlabelled") == 500
    m1.pop("n_unlabelled")
    assert m1 == m2


@pytest.mark.parametrize(
    "scores, labels, message",
    [
        ([0.1, 0.9, 0.5], [1, 1, -1], "both real"),
        ([0.1, 0.9], [0, 0], "both real"),
        ([], [], "both real"),
        ([0.1, np.nan], [0, 1], "NaN"),
        ([0.1, 0.9], [0, 2], "labels must be"),
        ([0.1, 0.9], [0, 1, 1], "differ in length"),
    ],
)
def test_degenerate_inputs_raise(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        M.compute_metrics(scores, labels, n_bootstrap=10)


def test_bad_targets_raise():
    scores, labels = gaussian_case(10, 10)
    with pytest.raises(ValueError, match="TPR target"):
        M.fpr_at_tpr(scores, labels, 0.0)
    with pytest.raises(ValueError, match="FPR target"):
        M.tpr_at_fpr(scores, labels, 1.5)


def test_breakdown_by_group():
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.95, 0.1, 0.6, 0.99, 0.5])
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 1, -1])
    groups = np.array([2, 2, 2, 2, 5, 5, 7, 7, 7])
    t = M.breakdown(scores, labels, groups, threshold=0.75)
    np.testing.assert_array_equal(t["group"], [2, 5, 7])
    np.testing.assert_array_equal(t["n_real"], [3, 0, 2])
    np.testing.assert_array_equal(t["n_bogus"], [1, 2, 0])
    np.testing.assert_allclose(t["tpr"], [2 / 3, np.nan, 0.5])
    np.testing.assert_allclose(t["fpr"], [0.0, 0.5, np.nan])
    np.testing.assert_allclose(t["auc"], [2 / 3, np.nan, np.nan])
    assert (t["tpr_lo"][[0, 2]] <= t["tpr"][[0, 2]]).all() and (t["tpr"][[0, 2]] <= t["tpr_hi"][[0, 2]]).all()
    # default threshold: the global one reaching TPR 0.9
    d = M.breakdown(scores, labels, groups)
    assert d["threshold"][0] == M.fpr_at_tpr(scores, labels, 0.9).threshold


def test_mag_bins():
    index, edges = M.mag_bins([15.2, np.nan, 16.0, 18.9, 14.99])
    np.testing.assert_array_equal(edges, [14.0, 15.0, 16.0, 17.0, 18.0, 19.0])
    np.testing.assert_array_equal(index, [1, -1, 2, 4, 0])
    index, _ = M.mag_bins([10.0, 17.5, 30.0], edges=[15, 16, 17, 18])
    np.testing.assert_array_equal(index, [0, 2, 2])  # outside values join the end bins
    with pytest.raises(ValueError, match="increasing"):
        M.mag_bins([1.0], edges=[2, 1])
