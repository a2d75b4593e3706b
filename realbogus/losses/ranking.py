"""The exp-cross-hinge loss: a smooth pairwise surrogate of 1 - AUC."""

from __future__ import annotations

from keras import ops

from realbogus.losses._common import as_labels, as_logits, replica_share

__all__ = ["exp_cross_hinge"]


def exp_cross_hinge(labels, logits, margin: float = 0.25, global_batch_size=None):
    """Exp-cross-hinge loss over every (real, bogus) pair of the batch.

    With the score ``s = logit_real - logit_bogus``, each pair of a real sample ``i`` and a
    bogus sample ``j`` costs ``exp(clip(s_j - s_i + margin, 0, 6)) - 1``: zero once the real
    one outscores the bogus one by ``margin``, growing exponentially (capped at ``e^6 - 1``)
    when the pair is ranked the wrong way. The loss is the mean over pairs, so it is zero for
    a perfectly ranked batch and for a batch without both classes. Unlabelled samples (-1)
    are ignored. The pairs are formed at once as an (N, N) matrix with masks.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        1 real, 0 bogus, -1 unlabelled.
    logits : array-like of float, shape (N, 2)
        Logits [bogus, real].
    margin : float
        Score margin by which a real sample should beat a bogus one.
    global_batch_size : int, optional
        Under ``tf.distribute``, the global batch size: the result is then multiplied by
        ``N / global_batch_size``, as Keras does with its own losses (pairs are formed within
        each replica's batch).

    Returns
    -------
    tensor
        Scalar float32 loss.
    """
    labels = as_labels(labels)
    logits = as_logits(logits)
    score = logits[:, 1] - logits[:, 0]
    # pair[i, j]: sample i is real and sample j is bogus
    pair = ops.logical_and(ops.expand_dims(labels == 1, 1), ops.expand_dims(labels == 0, 0))
    excess = ops.clip(ops.expand_dims(score, 0) - ops.expand_dims(score, 1) + margin, 0.0, 6.0)
    # mean(exp(c)) - 1 == mean(expm1(c)), which is exact for small c and 0 without pairs
    total = ops.sum(ops.where(pair, ops.expm1(excess), 0.0))
    n_pairs = ops.sum(ops.cast(pair, "float32"))
    return replica_share(total / ops.maximum(n_pairs, 1.0), labels, global_batch_size)
