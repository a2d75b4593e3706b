"""Cross-entropy over the labelled samples of a batch."""

from __future__ import annotations

from keras import ops

from realbogus.losses._common import as_labels, as_logits, replica_share

__all__ = ["masked_cross_entropy", "masked_cross_entropy_per_sample"]


def masked_cross_entropy_per_sample(labels, logits):
    """Softmax cross-entropy of each sample, 0 for unlabelled samples (label < 0).

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Class index (1 real, 0 bogus) or -1 for unlabelled.
    logits : array-like of float, shape (N, K)
        Logits.

    Returns
    -------
    tensor
        float32 (N,).
    """
    labels = as_labels(labels)
    logits = as_logits(logits)
    labelled = labels >= 0
    target = ops.one_hot(ops.where(labelled, labels, 0), ops.shape(logits)[-1], dtype="float32")
    per_sample = -ops.sum(target * ops.log_softmax(logits, axis=-1), axis=-1)
    return ops.where(labelled, per_sample, 0.0)


def masked_cross_entropy(labels, logits, global_batch_size=None):
    """Mean softmax cross-entropy over the labelled samples (label >= 0); 0 if there are none.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Class index (1 real, 0 bogus) or -1 for unlabelled.
    logits : array-like of float, shape (N, K)
        Logits.
    global_batch_size : int, optional
        Under ``tf.distribute``, the global batch size: the result is then multiplied by
        ``N / global_batch_size``, as Keras does with its own losses. The sum over replicas is
        the single-device value when every replica holds the same fraction of labelled
        samples (always true without unlabelled samples).

    Returns
    -------
    tensor
        Scalar float32 loss.
    """
    labels = as_labels(labels)
    per_sample = masked_cross_entropy_per_sample(labels, logits)
    n_labelled = ops.sum(ops.cast(labels >= 0, "float32"))
    return replica_share(ops.sum(per_sample) / ops.maximum(n_labelled, 1.0), labels, global_batch_size)
