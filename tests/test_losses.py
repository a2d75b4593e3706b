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
