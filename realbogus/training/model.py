"""The trainable real/bogus model: a network plus the paper's composite objective.

``L = lambda_ce * L_ce + lambda_ech * L_ech + lambda_lds * L_lds``

- ``L_ce``: cross-entropy over labelled samples (label -1 = unlabelled is masked out);
- ``L_ech``: the exp-cross-hinge AUC loss over every (real, bogus) pair of the batch;
- ``L_lds``: virtual adversarial training's local distributional smoothness, over every sample,
  labelled or not. The adversarial perturbation is applied to the *normalised* stamp (the output
  of the network's first layer), so ``eps`` has the same meaning for every stamp whatever its
  count level.

Each weight multiplies its own term (the authors' scripts put the VAT weight on the AUC term).
Under a ``tf.distribute`` strategy every replica computes its terms on its share of the batch and
the total is divided by the number of replicas before differentiation, the same scaling Keras
applies to its built-in losses, so summing gradients across replicas gives the gradient of the
mean objective.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from realbogus.losses import exp_cross_hinge, lds, masked_cross_entropy
from realbogus.models import split_model

__all__ = ["RealBogusModel"]


@keras.saving.register_keras_serializable(package="realbogus")
class RealBogusModel(keras.Model):
    """Wrap a network (stamps -> two logits) with the composite training objective.

    Parameters
    ----------
    network
        Functional model mapping float32 (N, 29, 29, 3) counts to (N, 2) logits [bogus, real],
        whose first layer normalises each stamp.
    lambda_ce, lambda_ech, lambda_lds
        Weights of the cross-entropy, exp-cross-hinge and VAT smoothness terms.
    margin
        Margin of the exp-cross-hinge loss.
    vat_xi, vat_eps, vat_power_iterations
        VAT finite-difference step, perturbation radius (L2 over the normalised stamp) and number
        of power iterations.
    seed
        Seed of the VAT random directions.
    """

    def __init__(
        self,
        network: keras.Model,
        lambda_ce: float = 1.0,
        lambda_ech: float = 0.0,
        lambda_lds: float = 0.0,
        margin: float = 0.25,
        vat_xi: float = 1e-6,
        vat_eps: float = 1.0,
        vat_power_iterations: int = 1,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.network = network
        self.normalizer, self.body = split_model(network)
        self.lambda_ce = float(lambda_ce)
        self.lambda_ech = float(lambda_ech)
        self.lambda_lds = float(lambda_lds)
        self.margin = float(margin)
        self.vat_xi = float(vat_xi)
        self.vat_eps = float(vat_eps)
        self.vat_power_iterations = int(vat_power_iterations)
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.ech_tracker = keras.metrics.Mean(name="ech")
        self.lds_tracker = keras.metrics.Mean(name="lds")
        self.auc_metric = keras.metrics.AUC(num_thresholds=1000, name="auc")

    # -- Keras plumbing
    def call(self, x, training=False):
        return self.network(x, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.ce_tracker, self.ech_tracker, self.lds_tracker, self.auc_metric]

    def get_config(self):
        return {
            "network": keras.saving.serialize_keras_object(self.network),
            "lambda_ce": self.lambda_ce,
            "lambda_ech": self.lambda_ech,
            "lambda_lds": self.lambda_lds,
            "margin": self.margin,
            "vat_xi": self.vat_xi,
            "vat_eps": self.vat_eps,
            "vat_power_iterations": self.vat_power_iterations,
            "seed": self.seed,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)

    # -- the objective
    def _terms(self, x, y, training: bool):
        """Return (total, ce, ech, lds, logits) for a batch, each term a per-replica mean."""
        y = tf.cast(y, tf.int32)
        z = self.normalizer(x, training=training)
        logits = tf.cast(self.body(z, training=training), tf.float32)
        ce = masked_cross_entropy(y, logits) if self.lambda_ce else tf.zeros((), tf.float32)
        ech = exp_cross_hinge(y, logits, margin=self.margin) if self.lambda_ech else tf.zeros((), tf.float32)
        if self.lambda_lds and training:
            # The clean logits are reused: VAT needs no second clean forward pass.
            smooth = lds(
                lambda t: self.body(t, training=training), z, xi=self.vat_xi, eps=self.vat_eps,
                power_iterations=self.vat_power_iterations, logits=logits, seed=self.seed_generator,
            )
        else:
            smooth = tf.zeros((), tf.float32)
        total = self.lambda_ce * ce + self.lambda_ech * ech + self.lambda_lds * smooth
        return total, ce, ech, smooth, logits

    def _update_metrics(self, y, total, ce, ech, smooth, logits):
        self.loss_tracker.update_state(total)
        self.ce_tracker.update_state(ce)
        self.ech_tracker.update_state(ech)
        self.lds_tracker.update_state(smooth)
        y = tf.cast(y, tf.int32)
        labelled = tf.cast(y >= 0, tf.float32)
        score = tf.nn.softmax(logits, axis=-1)[:, 1]
        self.auc_metric.update_state(tf.maximum(y, 0), score, sample_weight=labelled)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y = data[0], data[1]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            total, ce, ech, smooth, logits = self._terms(x, y, training=True)
            # Same per-replica scaling as Keras' built-in losses; see the module docstring.
            scaled = total / tf.cast(replicas, total.dtype)
            if self.optimizer is not None and hasattr(self.optimizer, "scale_loss"):
                scaled = self.optimizer.scale_loss(scaled)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return self._update_metrics(y, total, ce, ech, smooth, logits)

    def test_step(self, data):
        x, y = data[0], data[1]
        total, ce, ech, smooth, logits = self._terms(x, y, training=False)
        return self._update_metrics(y, total, ce, ech, smooth, logits)

    def predict_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        return tf.cast(self.network(x, training=False), tf.float32)
