"""Loss terms checked against independent computations (numpy loops, explicit Hessians)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from realbogus.losses import (
    exp_cross_hinge,
    lds,
    lds_per_sample,
    masked_cross_entropy,
    masked_cross_entropy_per_sample,
    noise_scale,
    virtual_adversarial_perturbation,
)


def ech_brute_force(labels, logits, margin=0.25):
    """The paper's definition, one (real, bogus) pair at a time."""
    score = logits[:, 1].astype(np.float64) - logits[:, 0]
    terms = []
    for i in range(len(labels)):
        for j in range(len(labels)):
            if labels[i] == 1 and labels[j] == 0:
                terms.append(np.exp(np.clip(score[j] - score[i] + margin, 0.0, 6.0)))
    return float(np.mean(terms)) - 1.0 if terms else 0.0


def random_batch(rng, n, classes=(-1, 0, 1)):
    labels = rng.choice(classes, size=n).astype(np.int32)
    logits = rng.normal(0.0, 3.0, size=(n, 2)).astype(np.float32)  # wide: some pairs hit the cap of 6
    return labels, logits


@pytest.mark.parametrize(
    "classes", [(-1, 0, 1), (0, 1), (-1, 1), (-1, 0), (1,), (0,), (-1,)], ids=str
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exp_cross_hinge_matches_double_loop(classes, seed):
    labels, logits = random_batch(np.random.default_rng(seed), 37, classes)
    for margin in (0.25, 1.0):
        got = float(exp_cross_hinge(labels, logits, margin=margin))
        assert got == pytest.approx(ech_brute_force(labels, logits, margin), rel=1e-5, abs=1e-6)


def test_exp_cross_hinge_is_zero_without_both_classes_and_has_finite_gradient():
    logits = tf.constant(np.random.default_rng(0).normal(size=(6, 2)), tf.float32)
    for labels in ([1, 1, -1, 1, 1, 1], [0, -1, 0, 0, 0, 0], [-1] * 6):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = exp_cross_hinge(labels, logits)
        assert float(loss) == 0.0
        np.testing.assert_array_equal(tape.gradient(loss, logits).numpy(), 0.0)
    assert float(exp_cross_hinge(np.zeros(0, np.int32), np.zeros((0, 2), np.float32))) == 0.0


def test_exp_cross_hinge_perfect_ranking_is_zero_and_accepts_tensors_and_float_labels():
    labels = tf.constant([1.0, 0.0, -1.0, 1.0])
    logits = tf.constant([[0.0, 2.0], [1.0, 0.0], [5.0, -5.0], [-1.0, 0.0]])
    assert float(exp_cross_hinge(labels, logits, margin=0.25)) == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_masked_cross_entropy_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    labels, logits = random_batch(rng, 50)
    z = logits.astype(np.float64)
    log_norm = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    per_sample = np.where(labels >= 0, log_norm - z[np.arange(50), np.clip(labels, 0, 1)], 0.0)
    expected = per_sample[labels >= 0].mean()
    got = masked_cross_entropy_per_sample(labels, logits).numpy()
    np.testing.assert_allclose(got, per_sample, rtol=1e-5, atol=1e-6)
    assert float(masked_cross_entropy(labels, logits)) == pytest.approx(expected, rel=1e-5)
    # a column vector of labels works too
    assert float(masked_cross_entropy(labels[:, None], logits)) == pytest.approx(expected, rel=1e-5)


def test_masked_cross_entropy_without_labelled_samples_is_zero():
    logits = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    assert float(masked_cross_entropy(np.full(5, -1), logits)) == 0.0


def test_global_batch_size_scales_by_the_replica_share():
    labels, logits = random_batch(np.random.default_rng(3), 16)
    for loss in (masked_cross_entropy, exp_cross_hinge):
        assert float(loss(labels, logits, global_batch_size=64)) == pytest.approx(float(loss(labels, logits)) / 4)


# --- virtual adversarial training -----------------------------------------------------------


class TinyMLP:
    """x (N, D) -> tanh(x W1 + b1) W2 + b2 with K outputs; float32 for the code, float64 for the checks."""

    def __init__(self, dim=6, hidden=10, classes=3, seed=0, scale=1.0):
        rng = np.random.default_rng(seed)
        self.w1 = rng.normal(0, scale / np.sqrt(dim), (dim, hidden))
        self.b1 = rng.normal(0, 0.1, hidden)
        self.w2 = rng.normal(0, 2.0 / np.sqrt(hidden), (hidden, classes))
        self.b2 = rng.normal(0, 0.1, classes)
        self.variables = [tf.Variable(v, dtype=tf.float32) for v in (self.w1, self.b1, self.w2, self.b2)]

    def __call__(self, x):
        w1, b1, w2, b2 = self.variables
        return ops.matmul(ops.tanh(ops.matmul(x, w1) + b1), w2) + b2

    def kl_hessian(self, x):
        """Exact Hessian of KL(p(x) || p(x + r)) in r at r = 0: J^T (diag p - p p^T) J, float64."""
        h = np.tanh(x @ self.w1 + self.b1)
        logits = h @ self.w2 + self.b2
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        hessians = []
        for i in range(len(x)):
            jac = self.w2.T @ np.diag(1 - h[i] ** 2) @ self.w1.T  # (K, D)
            fisher = np.diag(p[i]) - np.outer(p[i], p[i])
            hessians.append(jac.T @ fisher @ jac)
        return np.array(hessians)


def test_vat_direction_is_the_dominant_eigenvector_of_the_kl_hessian():
    model = TinyMLP()
    x = np.random.default_rng(1).normal(size=(8, 6))
    values, vectors = np.linalg.eigh(model.kl_hessian(x))
    top = vectors[:, :, -1]
    # the power method converges at rate lambda2/lambda1: keep the test meaningful
    assert np.all(values[:, -2] / values[:, -1] < 0.8)
    r = virtual_adversarial_perturbation(model, x.astype(np.float32), xi=1e-3, eps=1.0, power_iterations=40, seed=0)
    r = r.numpy().astype(np.float64)
    cosine = np.abs(np.sum(r * top, axis=1)) / np.linalg.norm(r, axis=1)
    assert np.all(cosine > 0.999), cosine
    # a single step from the same random start is not always there yet: the iterations matter
    r1 = virtual_adversarial_perturbation(model, x.astype(np.float32), xi=1e-3, eps=1.0, power_iterations=1, seed=0)
    assert np.min(np.abs(np.sum(r1.numpy() * top, axis=1))) < 0.9


def test_vat_direction_for_two_logits_follows_the_score_gradient_even_when_confident():
    """With two classes the KL Hessian is rank one along grad(logit_real - logit_bogus)."""
    x = np.random.default_rng(2).normal(size=(6, 6)).astype(np.float32)
    for scale in (1.0, 30.0):  # 30: predictions within 1e-6 of 0 or 1
        model = TinyMLP(classes=2, seed=3)

        def scaled(z, model=model, scale=scale):
            return scale * model(z)

        z = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(z)
            out = scaled(z)
            score = out[:, 1] - out[:, 0]
        grad = tape.gradient(score, z).numpy()
        r = virtual_adversarial_perturbation(scaled, x, xi=1e-3, eps=2.0, seed=1).numpy()
        cosine = np.abs(np.sum(r * grad, axis=1)) / np.linalg.norm(r, axis=1) / np.linalg.norm(grad, axis=1)
        assert np.all(cosine > 0.999), (scale, cosine)


def test_r_adv_has_norm_eps_per_sample_for_images_and_flat_models():
    rng = np.random.default_rng(4)
    x = rng.uniform(size=(5, 7, 7, 3)).astype(np.float32)
    w = tf.constant(rng.normal(size=(7 * 7 * 3, 2)), tf.float32)

    def conv_like(z):
        return ops.matmul(ops.reshape(z, (-1, 7 * 7 * 3)) ** 2, w)

    def constant(z):  # no gradient at all: r_adv keeps the random direction
        return ops.zeros((ops.shape(z)[0], 2)) + 0.0 * ops.sum(z)

    for model in (conv_like, constant):
        for eps in (0.3, 2.5):
            r = virtual_adversarial_perturbation(model, x, xi=1e-3, eps=eps, power_iterations=2, seed=5).numpy()
            assert r.shape == x.shape and r.dtype == np.float32
            np.testing.assert_allclose(np.linalg.norm(r.reshape(5, -1), axis=1), eps, rtol=1e-5)


def test_lds_is_non_negative_and_reuses_given_logits():
    model = TinyMLP(seed=5, scale=3.0)
    x = np.random.default_rng(6).normal(size=(32, 6)).astype(np.float32)
    per_sample = lds_per_sample(model, x, xi=1e-3, eps=0.5, seed=7).numpy()
    assert per_sample.shape == (32,) and np.all(per_sample >= 0) and per_sample.max() > 0
    value = float(lds(model, x, xi=1e-3, eps=0.5, seed=7))
    assert value == pytest.approx(per_sample.mean(), rel=1e-6)
    given = float(lds(model, x, xi=1e-3, eps=0.5, seed=7, logits=model(tf.constant(x))))
    assert given == pytest.approx(value, rel=1e-6)
    assert float(lds(model, x, xi=1e-3, eps=0.5, seed=7, global_batch_size=128)) == pytest.approx(value / 4, rel=1e-6)


def test_lds_gradient_flows_through_the_perturbed_branch_only():
    model = TinyMLP(seed=8)
    x = tf.constant(np.random.default_rng(9).normal(size=(16, 6)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        clean = model(x)
        loss = lds(model, x, xi=1e-3, eps=0.5, logits=clean, seed=3)
    grad_clean = tape.gradient(loss, clean)
    assert grad_clean is None or np.all(grad_clean.numpy() == 0)
    grads = tape.gradient(loss, model.variables)
    assert all(g is not None for g in grads) and max(float(tf.reduce_max(tf.abs(g))) for g in grads) > 0

    # independent check: the same r_adv, with the clean prediction a numpy constant
    r_adv = virtual_adversarial_perturbation(model, x, xi=1e-3, eps=0.5, seed=3)
    target = tf.nn.softmax(tf.constant(clean.numpy()))
    with tf.GradientTape() as tape2:
        log_q = tf.nn.log_softmax(model(x + r_adv))
        reference = tf.reduce_mean(tf.reduce_sum(target * (tf.math.log(target) - log_q), axis=1))
    assert float(reference) == pytest.approx(float(loss), rel=1e-5)
    for g, g_ref in zip(grads, tape2.gradient(reference, model.variables)):
        np.testing.assert_allclose(g.numpy(), g_ref.numpy(), rtol=1e-4, atol=1e-7)


def test_vat_works_inside_a_traced_function_with_fresh_noise():
    model = TinyMLP(seed=10)
    x = tf.constant(np.random.default_rng(11).normal(size=(4, 6)), tf.float32)
    step = tf.function(lambda z: virtual_adversarial_perturbation(model, z, xi=1e-3, eps=1.0))
    first, second = step(x).numpy(), step(x).numpy()
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    assert not np.array_equal(first, second)  # power_iterations=1 does not fully converge


# --- VAT radius in units of each stamp's noise ---------------------------------------------


def gaussian_psf(size=29, sigma=1.5):
    yy, xx = np.mgrid[:size, :size] - size // 2
    p = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return p / p.sum()


def point_source_stamps(rng, n, snr, sigma):
    """(N, 29, 29, 3) stamps: white noise of per-channel sigma, a PSF of matched-filter S/N ``snr`` in every channel."""
    p = gaussian_psf()
    sigma = np.asarray(sigma, np.float64)
    amp = np.asarray(snr, np.float64)[:, None] * sigma[None, :] / np.sqrt((p**2).sum())  # (N, 3)
    x = 0.5 + rng.normal(size=(n, 29, 29, 3)) * sigma + amp[:, None, None, :] * p[None, :, :, None]
    return x.astype(np.float32), p


def matched_filter_snr(x, p, sigma):
    """S/N of the PSF-matched filter in each channel, with the true noise: (N, 3)."""
    return np.einsum("nijc,ij->nc", x.astype(np.float64), p) / (np.asarray(sigma) * np.sqrt((p**2).sum()))


def test_noise_scale_is_the_robust_sigma_of_each_channel():
    rng = np.random.default_rng(20)
    x = rng.normal(size=(4, 29, 29, 3)) * np.array([0.01, 0.05, 0.14])
    expected = 1.482602218505602 * np.median(np.abs(x - np.median(x, axis=(1, 2), keepdims=True)), axis=(1, 2))
    got = noise_scale(x.astype(np.float32)).numpy()
    assert got.shape == (4, 1, 1, 3)
    np.testing.assert_allclose(got[:, 0, 0], expected, rtol=1e-5)
    # within a few per cent of the true sigma, and blind to a bright compact source
    np.testing.assert_allclose(got[:, 0, 0], np.broadcast_to([0.01, 0.05, 0.14], (4, 3)), rtol=0.12)
    bright, _ = point_source_stamps(rng, 4, np.full(4, 30.0), [0.01, 0.05, 0.14])
    np.testing.assert_allclose(noise_scale(bright).numpy()[:, 0, 0], [[0.01, 0.05, 0.14]] * 4, rtol=0.12)
    # ... though the wings of a very bright one raise it (about +12% at S/N 500)
    brighter, _ = point_source_stamps(rng, 16, np.full(16, 500.0), [0.1, 0.1, 0.1])
    assert 1.05 < np.median(noise_scale(brighter).numpy()) / 0.1 < 1.25
    # a flat (masked) channel gets the floor, not zero
    x[0, :, :, 1] = 0.0
    assert noise_scale(x.astype(np.float32), floor=1e-4).numpy()[0, 0, 0, 1] == pytest.approx(1e-4)


@pytest.mark.parametrize("snr_change", [0.5, 2.0])
def test_noise_radius_bounds_the_change_of_the_matched_filter_snr(snr_change):
    """A classifier that scores the difference channel's matched filter gets a PSF-shaped r_adv,
    the worst case: the S/N changes by snr_change (up to the noise estimate), never more."""
    rng = np.random.default_rng(21)
    n = 32
    sigma = np.array([0.03, 0.01, 0.14])  # faint stamp: normalised difference noise ~0.14
    x, p = point_source_stamps(rng, n, rng.uniform(5, 10, n), sigma)
    psf = tf.constant(p, tf.float32)

    def matched(z):  # score = matched filter of the difference channel, in S/N units
        s = tf.einsum("nij,ij->n", z[..., 2], psf) / (0.14 * float(np.sqrt((p**2).sum())))
        return tf.stack([-0.5 * s, 0.5 * s], axis=1)

    rng_w = np.random.default_rng(22)
    w = tf.constant(rng_w.normal(size=(29 * 29 * 3, 2)) * 0.1, tf.float32)

    def mixed(z):  # another classifier, looking at every channel
        return tf.matmul(tf.tanh(tf.reshape(z, (-1, 29 * 29 * 3))), w)

    scale = noise_scale(x)
    for model, tight in ((matched, True), (mixed, False)):
        r = virtual_adversarial_perturbation(model, x, xi=1.0, eps=snr_change, seed=3, scale=scale).numpy()
        change = np.abs(matched_filter_snr(r, p, sigma))  # the S/N change in each channel
        # estimator's error: MAD of 841 pixels, a few per cent
        assert np.all(change <= snr_change * 1.15), change.max()
        whitened = np.sqrt(np.sum((r / sigma) ** 2, axis=(1, 2, 3)))
        np.testing.assert_allclose(whitened, snr_change, rtol=0.15)
        if tight:  # all of it goes into the difference channel's S/N
            np.testing.assert_allclose(change[:, 2], snr_change, rtol=0.15)
            moved = matched_filter_snr(x + r, p, sigma)[:, 2] - matched_filter_snr(x, p, sigma)[:, 2]
            np.testing.assert_allclose(np.abs(moved), snr_change, rtol=0.15)
    # a fixed radius of 1 on the same stamps moves the faint source's S/N by ~1/0.14 = 7
    r_fixed = virtual_adversarial_perturbation(matched, x, xi=1e-3, eps=1.0, seed=3).numpy()
    assert np.median(np.abs(matched_filter_snr(r_fixed, p, sigma)[:, 2])) > 6.0


def test_fixed_radius_is_unchanged_by_the_new_options():
    """scale=None, xi_min=0 is the original algorithm: norm eps, same direction as before."""
    model = TinyMLP(classes=2, seed=12)
    x = np.random.default_rng(13).normal(size=(8, 6)).astype(np.float32)
    a = virtual_adversarial_perturbation(model, x, xi=1e-3, eps=0.7, seed=4).numpy()
    b = virtual_adversarial_perturbation(model, x, xi=1e-3, eps=0.7, seed=4, scale=None, xi_min=0.0).numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 0.7, rtol=1e-5)
    # a per-sample eps
    eps = np.linspace(0.1, 0.8, 8).astype(np.float32)
    c = virtual_adversarial_perturbation(model, x, xi=1e-3, eps=eps, seed=4).numpy()
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), eps, rtol=1e-5)
    np.testing.assert_allclose(c / eps[:, None], a / 0.7, rtol=1e-4, atol=1e-6)


def test_stateless_seed_pairs_repeat_exactly_and_differ_between_steps():
    model = TinyMLP(seed=14)
    x = np.random.default_rng(15).normal(size=(4, 6)).astype(np.float32)
    step = tf.function(lambda s: virtual_adversarial_perturbation(model, x, xi=1e-3, eps=1.0, seed=s))
    one = step(tf.constant([7, 1], tf.int64)).numpy()
    np.testing.assert_array_equal(one, step(tf.constant([7, 1], tf.int64)).numpy())
    assert not np.array_equal(one, step(tf.constant([7, 2], tf.int64)).numpy())


def test_xi_min_keeps_the_direction_search_alive_in_bfloat16():
    """A bfloat16 forward pass rounds a tiny step away (the random start survives); the floor fixes it.

    Pixels in [0.5, 1) have a bfloat16 spacing of 2^-8: a step of 1e-6 spread over 2523 values
    crosses no rounding boundary, one of 0.1 moves about half of them.
    """
    rng = np.random.default_rng(16)
    x = rng.uniform(0.5, 0.95, size=(6, 29, 29, 3)).astype(np.float32)
    w = tf.constant(rng.normal(size=(29 * 29 * 3,)), tf.float32)

    def bf16(z):
        # the input is rounded to bfloat16, the sum accumulates in float32 (as in a matmul)
        h = tf.cast(tf.cast(tf.reshape(z, (-1, 29 * 29 * 3)), tf.bfloat16), tf.float32)
        s = tf.reduce_sum(h * w, axis=1)
        return tf.stack([-s, s], axis=1)

    def cosine(r):
        r = r.reshape(6, -1)
        return np.abs(r @ w.numpy()) / np.linalg.norm(r, axis=1) / np.linalg.norm(w.numpy())

    lost = virtual_adversarial_perturbation(bf16, x, xi=1e-6, eps=1.0, seed=5).numpy()
    assert np.all(cosine(lost) < 0.2)  # still the random start
    kept = virtual_adversarial_perturbation(bf16, x, xi=1e-6, eps=1.0, seed=5, xi_min=0.1).numpy()
    assert np.all(cosine(kept) > 0.99)
    np.testing.assert_allclose(np.linalg.norm(kept.reshape(6, -1), axis=1), 1.0, rtol=1e-5)

