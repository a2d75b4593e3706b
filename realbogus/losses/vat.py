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

Radius in units of each stamp's noise
-------------------------------------
A fixed L2 radius on the min-max normalised stamp means very different things for a faint and
a bright stamp: the normalised noise of a faint candidate (S/N 5-10) is about 0.14 per pixel,
that of a bright one a hundred times less. Pass ``scale`` (the per-sample, per-channel noise
``sigma_c`` from :func:`noise_scale`) and the search runs in noise units instead: the model is
evaluated at ``x + sigma * u`` and ``r_adv = sigma * (eps * d)`` with ``||d|| = 1``, so
``eps`` bounds the noise-whitened norm ``sqrt(sum_c ||r_c||^2 / sigma_c^2)``.

Why this bounds the change of the candidate's S/N: in a channel with white noise of per-pixel
standard deviation ``sigma``, the matched-filter S/N of a source of profile ``p`` (any PSF) is
``S = <x, p> / (sigma ||p||)``. A perturbation ``r`` changes it by
``dS = <r, p> / (sigma ||p||) <= ||r|| / sigma`` (Cauchy-Schwarz), with equality when ``r`` is
along ``p``, i.e. exactly the PSF-shaped direction the power iteration finds for a point-source
classifier. So ``||r_c|| = snr_change * sigma_c`` lets the perturbation change the S/N of any
point source in channel ``c`` by at most ``snr_change``, and the whitened ball of radius
``snr_change`` bounds every channel at once (even ``sqrt(sum_c dS_c^2) <= snr_change``). Min-max
normalisation is affine per channel, so the bound is the same in counts. Two approximations:
the noise is estimated from the stamp (a 1.4826 x MAD over the pixels, robust to a compact
source, a few per cent uncertain for 841 pixels; the wings of a bright source raise it, for a
PSF of 1.5 pixel sigma by about 2% at S/N 10, 8% at S/N 100 and 12% at S/N 500, where an S/N
change of ``1.12 * snr_change`` does not matter), and the reference and difference noise of a
survey is somewhat correlated between pixels, for which ``||r|| / sigma`` is the white-noise
figure. With ``scale``, ``xi`` is also in noise units.

Precision
---------
The search always runs in float32 (inputs, directions, norms and the gradient of the KL
divergence, which is evaluated in a form that stays accurate for confident predictions),
whatever the model's compute dtype; logits are cast to float32. Under a bfloat16 policy the
model's own forward pass rounds its input to 8 significant bits (a spacing of 2^-8 = 0.004 for
values in [0.5, 1), finer for smaller ones), so a step ``xi * d`` that moves no pixel across a
rounding boundary is lost: the perturbed logits equal the clean ones, the gradient vanishes and
the direction stays the random start. A step that moves some pixels suffices: for a two-logit
classifier the KL Hessian has rank one (along the gradient of the score), so the direction found
is that gradient whatever the step's size. ``xi_min`` is a floor on the L2 norm of the step, in
input units: 0.1 moves each of the 2523 values of a random start by about 0.002, half a spacing
at the top of the range, so the search cannot be rounded away (1e-6 always is; 1e-3 usually
survives through the faint pixels near 0).

Randomness
----------
``seed`` may be a pair of integers (a tensor of shape (2,)): the starting direction is then a
stateless function of it, which the training step derives from its seed and the optimizer's step
counter, so that a run resumed from a checkpoint draws the directions an uninterrupted run draws.
"""

from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf
from keras import ops

from realbogus.losses._common import as_logits, replica_share

__all__ = ["virtual_adversarial_perturbation", "lds", "lds_per_sample", "noise_scale", "MAD_TO_SIGMA"]

#: sigma of a Gaussian over its median absolute deviation
MAD_TO_SIGMA = 1.482602218505602


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


def _is_stateless_seed(seed) -> bool:
    """Whether ``seed`` is a pair of integers for a stateless random op (not an int or generator)."""
    if isinstance(seed, (tf.Tensor, tf.Variable)):
        return seed.shape.rank == 1
    return isinstance(seed, (list, tuple)) or (hasattr(seed, "shape") and len(getattr(seed, "shape")) == 1)


def _normal_like(x, seed):
    if seed is None:
        # a stateful op: a fresh draw on every call, also inside a traced train step
        return tf.random.normal(tf.shape(x), dtype=tf.float32)
    if _is_stateless_seed(seed):
        return tf.random.stateless_normal(tf.shape(x), seed=tf.cast(seed, tf.int64), dtype=tf.float32)
    return keras.random.normal(ops.shape(x), dtype="float32", seed=seed)


def noise_scale(x, floor: float = 1e-6):
    """Robust per-sample, per-channel noise of images: ``1.4826 * MAD`` over the pixels.

    Parameters
    ----------
    x : array-like, shape (N, H, W, C)
        Images (here the normalised stamps).
    floor : float
        Smallest value returned: a channel that is flat over more than half its pixels (a
        masked or saturated region) has a MAD of zero, and would otherwise get no perturbation.

    Returns
    -------
    tensor
        float32 (N, 1, 1, C), no gradient. The median absolute deviation ignores a compact source
        (fewer than half the pixels), so for a sky-dominated stamp this is the sky noise.
    """
    x = tf.cast(tf.convert_to_tensor(x), tf.float32)
    shape = tf.shape(x)
    flat = tf.reshape(tf.transpose(x, (0, 3, 1, 2)), (shape[0], shape[3], shape[1] * shape[2]))

    def median(v):
        # the lower and upper middle values of the sorted pixels (equal for an odd count)
        v = tf.sort(v, axis=-1)
        n = tf.shape(v)[-1]
        return 0.5 * (tf.gather(v, (n - 1) // 2, axis=-1) + tf.gather(v, n // 2, axis=-1))

    centre = median(flat)
    sigma = MAD_TO_SIGMA * median(tf.abs(flat - centre[..., None]))
    sigma = tf.maximum(sigma, floor)
    return tf.stop_gradient(tf.reshape(sigma, (shape[0], 1, 1, shape[3])))


def _per_sample(value, x):
    """A scalar or a per-sample (N,) value, shaped to broadcast against ``x``."""
    value = tf.cast(tf.convert_to_tensor(value), tf.float32)
    if value.shape.rank == 0:
        return value
    return tf.reshape(value, tf.concat([tf.shape(value)[:1], tf.ones([tf.rank(x) - 1], tf.int32)], 0))


def virtual_adversarial_perturbation(
    model: Callable,
    x,
    xi: float,
    eps,
    power_iterations: int = 1,
    logits=None,
    seed=None,
    scale=None,
    xi_min: float = 0.0,
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
        ``||d|| = 1`` (``x + scale * xi * d`` with ``scale``). Small against ``eps``, but large
        enough to change ``x`` in the model's precision (see ``xi_min``).
    eps : float or array-like (N,)
        L2 norm of ``r_adv`` for each sample, over all its pixels and channels; with ``scale``,
        the norm of ``r_adv / scale`` (the largest change of a point source's S/N).
    power_iterations : int
        Number of power-iteration steps (1 is usual; more give a more exact eigenvector).
    logits : array-like, optional
        ``model(x)`` if already computed (reused, not recomputed). Treated as a constant.
    seed : int, keras.random.SeedGenerator or pair of ints, optional
        Seed of the random starting direction; None draws a fresh one on every call (from
        TensorFlow's global seed); a pair (shape (2,) tensor) draws it statelessly.
    scale : array-like, optional
        Broadcastable to ``x`` (e.g. (N, 1, 1, C) from :func:`noise_scale`): the search runs in
        the coordinates ``u = (x' - x) / scale``, so ``eps`` and ``xi`` are in units of ``scale``.
    xi_min : float
        Floor on the L2 norm of the finite-difference step in input units (0: none), so that
        the step survives the rounding of a bfloat16 forward pass (see the module docstring).

    Returns
    -------
    tensor
        float32, shaped like ``x``, with ``||r_adv[i]|| = eps[i]`` (``||r_adv[i] / scale[i]||``
        with ``scale``) for every sample; no gradient flows through it.
    """
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    if logits is None:
        logits = model(x)
    target = ops.stop_gradient(as_logits(logits))
    scale = None if scale is None else tf.stop_gradient(tf.cast(scale, tf.float32))
    axes = tuple(range(1, len(x.shape)))

    def to_input(u):
        return u if scale is None else scale * u

    d = _per_sample_unit(_normal_like(x, seed))
    for _ in range(int(power_iterations)):
        with tf.GradientTape() as tape:
            tape.watch(d)
            step = to_input(xi * d)
            if xi_min > 0:
                norm = tf.sqrt(tf.reduce_sum(tf.square(step), axis=axes, keepdims=True))
                step = step * tf.stop_gradient(tf.maximum(1.0, xi_min / tf.maximum(norm, 1e-30)))
            q_logits = as_logits(model(x + step))
            # gradient of KL(p || q) with respect to q's logits is softmax(q) - softmax(p);
            # this surrogate has that gradient, computed stably (see _softmax_shift)
            surrogate = ops.sum(ops.stop_gradient(_softmax_shift(target, q_logits)) * q_logits)
        # the gradient at xi * d is xi * H d to first order: one power-iteration step
        d = _per_sample_unit(tape.gradient(surrogate, d), fallback=d)
    return ops.stop_gradient(to_input(_per_sample(eps, x) * d))


def lds_per_sample(
    model: Callable,
    x,
    xi: float = 1e-3,
    eps=1.0,
    power_iterations: int = 1,
    logits=None,
    seed=None,
    scale=None,
    xi_min: float = 0.0,
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
    r_adv = virtual_adversarial_perturbation(
        model, x, xi, eps, power_iterations, logits=target, seed=seed, scale=scale, xi_min=xi_min
    )
    # rounding can make a vanishing divergence a hair negative
    return ops.maximum(_kl_from_logits(target, as_logits(model(x + r_adv))), 0.0)


def lds(
    model: Callable,
    x,
    xi: float = 1e-3,
    eps=1.0,
    power_iterations: int = 1,
    logits=None,
    seed=None,
    global_batch_size=None,
    scale=None,
    xi_min: float = 0.0,
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
    per_sample = lds_per_sample(
        model, x, xi, eps, power_iterations, logits=logits, seed=seed, scale=scale, xi_min=xi_min
    )
    return replica_share(ops.mean(per_sample), per_sample, global_batch_size)
