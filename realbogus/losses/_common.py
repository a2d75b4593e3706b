"""Input conversion and distribution scaling shared by the loss functions."""

from __future__ import annotations

from keras import ops

__all__ = ["as_labels", "as_logits", "replica_share"]


def as_labels(labels):
    """Labels as an int32 vector (N,): 1 real, 0 bogus, -1 unlabelled."""
    return ops.reshape(ops.cast(ops.convert_to_tensor(labels), "int32"), (-1,))


def as_logits(logits):
    """Logits as float32 (N, K), whatever the model's compute dtype."""
    return ops.cast(ops.convert_to_tensor(logits), "float32")


def replica_share(value, batch, global_batch_size):
    """Scale a batch-mean ``value`` by ``local batch / global_batch_size`` (no-op when None).

    This is how Keras scales its own losses under ``tf.distribute``: the replicas' scaled
    values (and gradients) add up to the batch-size weighted mean of their unscaled values.
    """
    if global_batch_size is None:
        return value
    local = ops.cast(ops.shape(batch)[0], "float32")
    return value * local / ops.cast(global_batch_size, "float32")
