"""Virtual adversarial training (Miyato et al. 2018): adversarial direction and smoothness loss.

The local distributional smoothness (LDS) of a classifier at ``x`` is the KL divergence
between its prediction at ``x`` and at ``x + r_adv``, where ``r_adv`` (of L2 norm ``eps`` per
sample) is the direction in which the prediction changes fastest. To second order,
``KL(p(x) || p(x + r)) ~ r^T H r / 2``, so ``r_adv`` is the dominant eigenvector of the
Hessian ``H``; it is found by power iteration, each step a finite difference of the gradient
of the KL divergence at ``x + xi * d``. No label is needed, so unlabelled samples count too.

Here ``model`` is any callable from a batch to logits. In this project it is the body of the
network, applied to *normalised* stamps (see :func:`realbogus.models.split_model`), so that
``eps`` and ``xi`` are measured on the [0, 1] scale of each stamp (see ``conf/loss/``).

The search always runs in float32 (inputs, directions, norms and the gradient of the KL
divergence, which is evaluated in a form that stays accurate for confident predictions),
whatever the model's compute dtype; logits are cast to float32. Under a bfloat16 policy the
model's own forward pass is bfloat16, and ``xi * d`` must then be large enough to survive the
rounding of its input (about 0.4% of a pixel's value), i.e. ``xi`` of order 1 rather than 1e-3.
"""

from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf
from keras import ops

from realbogus.losses._common import as_logits, replica_share

__all__ = ["virtual_adversarial_perturbation", "lds", "lds_per_sample"]


def _kl_from_logits(p_logits, q_logits):
    """KL(softmax(p) || softmax(q)) per sample, float32 (N,)."""
    log_p = ops.log_softmax(p_logits, axis=-1)
    log_q = ops.log_softmax(q_logits, axis=-1)
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)


def _softmax_shift(p_logits, q_logits):
    """``softmax(q) - softmax(p)`` per sample, accurate also for confident predictions.

    Each class's difference is computed as ``p_k * expm1(log q_k - log p_k)``, except the most
    probable class of ``p``, whose difference is minus the sum of the others (both
    distributions sum to 1): a probability near 1 cannot resolve a change of 1e-7.
    """
    log_p = ops.log_softmax(p_logits, axis=-1)
    log_q = ops.log_softmax(q_logits, axis=-1)
    shift = ops.exp(log_p) * ops.expm1(log_q - log_p)
    top = ops.one_hot(ops.argmax(p_logits, axis=-1), ops.shape(p_logits)[-1], dtype="float32") > 0
    return ops.where(top, -ops.sum(ops.where(top, 0.0, shift), axis=-1, keepdims=True), shift)


def _per_sample_unit(d, fallback=None):
    """Scale each sample of ``d`` to unit L2 norm over all its other axes.

    Dividing by the largest absolute value first keeps the squares from underflowing when the
    gradient is tiny. A sample whose ``d`` is exactly zero takes its row of ``fallback``.
    """
    axes = tuple(range(1, len(d.shape)))
    peak = ops.max(ops.abs(d), axis=axes, keepdims=True)
    d = d / ops.where(peak > 0, peak, 1.0)
    norm = ops.sqrt(ops.sum(ops.square(d), axis=axes, keepdims=True))
    unit = d / ops.where(norm > 0, norm, 1.0)
    if fallback is not None:
        unit = ops.where(norm > 0, unit, fallback)
    return unit


def _normal_like(x, seed):
    if seed is None:
        # a stateful op: a fresh draw on every call, also inside a traced train step
        return tf.random.normal(tf.shape(x), dtype=tf.float32)
    return keras.random.normal(ops.shape(x), dtype="float32", seed=seed)


def virtual_adversarial_perturbation(
    model: Callable,
    x,
    xi: float,
    eps: float,
    power_iterations: int = 1,
    logits=None,
    seed=None,
):
    """The virtual adversarial perturbation ``r_adv`` of each sample.

    Parameters
    ----------
    model : callable
        Maps a float32 batch shaped like ``x`` to logits (N, K). Called with the batch only;
        wrap it (``lambda z: body(z, training=False)``) to choose the mode.
    x : array-like, shape (N, ...)
        The batch (cast to float32).
    xi : float
        Finite-difference step: the power iteration evaluates the model at ``x + xi * d`` with
        ``||d|| = 1``. Small against ``eps``, but large enough to change ``x`` in float32.
    eps : float
        L2 norm of ``r_adv`` for each sample, over all its pixels and channels.
    power_iterations : int
        Number of power-iteration steps (1 is usual; more give a more exact eigenvector).
    logits : array-like, optional
        ``model(x)`` if already computed (reused, not recomputed). Treated as a constant.
    seed : int or keras.random.SeedGenerator, optional
        Seed of the random starting direction; None draws a fresh one on every call (from
        TensorFlow's global seed).

    Returns
    -------
    tensor
        float32, shaped like ``x``, with ``||r_adv[i]|| = eps`` for every sample; no gradient
        flows through it.
    """
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    if logits is None:
        logits = model(x)
    target = ops.stop_gradient(as_logits(logits))
    d = _per_sample_unit(_normal_like(x, seed))
    for _ in range(int(power_iterations)):
        with tf.GradientTape() as tape:
            tape.watch(d)
            q_logits = as_logits(model(x + xi * d))
            # gradient of KL(p || q) with respect to q's logits is softmax(q) - softmax(p);
            # this surrogate has that gradient, computed stably (see _softmax_shift)
            surrogate = ops.sum(ops.stop_gradient(_softmax_shift(target, q_logits)) * q_logits)
        # the gradient at xi * d is xi * H d to first order: one power-iteration step
        d = _per_sample_unit(tape.gradient(surrogate, d), fallback=d)
    return ops.stop_gradient(eps * d)


def lds_per_sample(
    model: Callable,
    x,
    xi: float = 1e-3,
    eps: float = 1.0,
    power_iterations: int = 1,
    logits=None,
    seed=None,
):
    """``KL(p(x) || p(x + r_adv))`` of each sample, with ``p(x)`` held constant.

    Parameters are those of :func:`virtual_adversarial_perturbation`; ``logits`` (the clean
    prediction) is reused both as the target and for the direction search. The gradient flows
    only through the perturbed prediction ``p(x + r_adv)``.

    Returns
    -------
    tensor
        float32 (N,), non-negative.
    """
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    if logits is None:
        logits = model(x)
    target = ops.stop_gradient(as_logits(logits))
    r_adv = virtual_adversarial_perturbation(model, x, xi, eps, power_iterations, logits=target, seed=seed)
    # rounding can make a vanishing divergence a hair negative
    return ops.maximum(_kl_from_logits(target, as_logits(model(x + r_adv))), 0.0)


def lds(
    model: Callable,
    x,
    xi: float = 1e-3,
    eps: float = 1.0,
    power_iterations: int = 1,
    logits=None,
    seed=None,
    global_batch_size=None,
):
    """Local distributional smoothness loss: the mean of :func:`lds_per_sample` over the batch.

    All samples count, labelled or not. Defaults of ``xi`` and ``eps`` are for normalised
    stamps in [0, 1] (``conf/loss/*_vat.yaml``).

    Parameters
    ----------
    global_batch_size : int, optional
        Under ``tf.distribute``, the global batch size: the result is then
        ``sum(lds_per_sample) / global_batch_size``, as Keras does with its own losses, so the
        sum over replicas is the single-device value.

    Other parameters are those of :func:`virtual_adversarial_perturbation`.

    Returns
    -------
    tensor
        Scalar float32 loss.
    """
    per_sample = lds_per_sample(model, x, xi, eps, power_iterations, logits=logits, seed=seed)
    return replica_share(ops.mean(per_sample), per_sample, global_batch_size)
