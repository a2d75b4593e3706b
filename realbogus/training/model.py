"""The trainable real/bogus model: a network plus the paper's composite objective.

``L = lambda_ce * L_ce + lambda_ech * L_ech + lambda_lds * L_lds``

- ``L_ce``: cross-entropy over labelled samples (label -1 = unlabelled is masked out);
- ``L_ech``: the exp-cross-hinge AUC loss over every (real, bogus) pair of the batch;
- ``L_lds``: virtual adversarial training's local distributional smoothness, over every sample,
  labelled or not. The adversarial perturbation is applied to the *normalised* stamp (the output
  of the network's first layer), with a radius fixed on that scale (``vat_radius="fixed"``) or
  in units of each stamp's own noise (``vat_radius="noise"``: the perturbation can change a
  point source's S/N by at most ``vat_snr_change``; see :mod:`realbogus.losses.vat`).

``lambda_ech`` can ramp up linearly from 0 over the first ``ech_warmup_steps`` training steps
(the pairwise loss is large and noisy while the scores are still random).

Randomness is a stateless function of ``seed`` and the optimizer's step counter: VAT's random
start and the masks of the network's :class:`~realbogus.models.StepDropout` layers. The step
counter is saved with the optimizer, so a run resumed from ``save_weights`` draws exactly what an
uninterrupted run draws (Keras' seed generators are not saved with the weights), and within a
step the clean pass and every VAT pass see the same dropout masks, so the smoothness term
measures the perturbation alone and not the difference between two masks.

Each weight multiplies its own term (the authors' scripts put the VAT weight on the AUC term).
Under a ``tf.distribute`` strategy every replica computes its terms on its share of the batch and
the total is divided by the number of replicas before differentiation, the same scaling Keras
applies to its built-in losses, so summing gradients across replicas gives the gradient of the
mean objective.
"""

from __future__ import annotations

import zlib

import keras
import tensorflow as tf

from realbogus.losses import exp_cross_hinge, lds, masked_cross_entropy, noise_scale
from realbogus.models import StepDropout, split_model

__all__ = ["RealBogusModel", "VAT_RADII", "objective_kwargs"]

#: VAT radius modes: an L2 radius on the normalised stamp, or in units of each stamp's noise.
VAT_RADII = ("fixed", "noise")
#: Mixed into the VAT seed so that its directions differ from the dropout masks.
_VAT_SALT = 0x564154


def objective_kwargs(loss) -> dict:
    """Keyword arguments of :class:`RealBogusModel` from a ``conf/loss/*.yaml`` config.

    Keys a config lacks (configs written before they existed) take the constructor's defaults,
    which are the earlier behaviour. Use as ``RealBogusModel(network, seed=cfg.seed,
    **objective_kwargs(cfg.loss))``.

    Parameters
    ----------
    loss : mapping or omegaconf.DictConfig
        ``lambda_ce``, ``lambda_ech``, ``lambda_lds``, ``margin``, optionally ``ech_warmup_steps``,
        and ``vat`` with ``xi``, ``eps``, ``power_iterations``, optionally ``radius``,
        ``snr_change`` and ``xi_min``.

    Returns
    -------
    dict
    """
    vat = loss.get("vat") or {}
    out = {
        "lambda_ce": float(loss["lambda_ce"]),
        "lambda_ech": float(loss["lambda_ech"]),
        "lambda_lds": float(loss["lambda_lds"]),
        "margin": float(loss["margin"]),
        "vat_xi": float(vat["xi"]),
        "vat_eps": float(vat["eps"]),
        "vat_power_iterations": int(vat["power_iterations"]),
    }
    optional = {"ech_warmup_steps": (loss, "ech_warmup_steps", int), "vat_radius": (vat, "radius", str),
                "vat_snr_change": (vat, "snr_change", float), "vat_xi_min": (vat, "xi_min", float),
                "vat_fraction": (vat, "fraction", float)}
    for name, (group, key, kind) in optional.items():
        if group.get(key) is not None:
            out[name] = kind(group[key])
    return out


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
        of power iterations. With ``vat_radius="noise"``, ``vat_xi`` is in units of each stamp's
        noise and ``vat_eps`` is unused.
    vat_radius
        ``"fixed"``: ``||r_adv|| = vat_eps`` on the normalised stamp; ``"noise"``: the radius of
        each sample in units of its per-channel noise (1.4826 x MAD of each normalised channel),
        ``vat_snr_change``.
    vat_snr_change
        With ``vat_radius="noise"``, the largest change of a point source's matched-filter S/N
        the perturbation can make.
    vat_xi_min
        Floor on the L2 norm of VAT's finite-difference step on the normalised stamp (0: none);
        0.1 keeps it above bfloat16's rounding (see :mod:`realbogus.losses.vat`).
    vat_fraction
        Share of each batch the smoothness term is computed on (its first samples; batches are
        shuffled): VAT's power iteration and perturbed pass cost about two forward-backward
        passes per sample, so 0.5 makes a CE+ECH+VAT step markedly cheaper
        (``benchmarks/bench_train_step.py --vat-fraction``). 1: every sample.
    ech_warmup_steps
        The exp-cross-hinge weight ramps linearly from 0 to ``lambda_ech`` over this many
        training steps (0: no ramp). Evaluation always uses ``lambda_ech``.
    seed
        Seed of the VAT random directions (with the step counter, statelessly).
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
        vat_radius: str = "fixed",
        vat_snr_change: float = 1.0,
        vat_xi_min: float = 0.0,
        ech_warmup_steps: int = 0,
        vat_fraction: float = 1.0,
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
        if vat_radius not in VAT_RADII:
            raise ValueError(f"vat_radius must be one of {VAT_RADII}, got {vat_radius!r}")
        self.vat_radius = vat_radius
        self.vat_snr_change = float(vat_snr_change)
        self.vat_xi_min = float(vat_xi_min)
        self.ech_warmup_steps = int(ech_warmup_steps)
        if not 0.0 < float(vat_fraction) <= 1.0:
            raise ValueError(f"vat_fraction must be in (0, 1], got {vat_fraction!r}")
        self.vat_fraction = float(vat_fraction)
        # With dropout, the clean logits of a sub-batch must be recomputed: the step's dropout
        # masks are drawn for the shape of the whole batch.
        self._has_dropout = any("dropout" in type(layer).__name__.lower() for layer in self.body._flatten_layers())
        self.seed = int(seed)
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
            "vat_radius": self.vat_radius,
            "vat_snr_change": self.vat_snr_change,
            "vat_xi_min": self.vat_xi_min,
            "ech_warmup_steps": self.ech_warmup_steps,
            "vat_fraction": self.vat_fraction,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)

    # -- randomness and schedules
    def _step(self):
        """The optimizer's step counter (int64; 0 before compile): the clock of every random draw."""
        optimizer = getattr(self, "optimizer", None)
        if optimizer is None:
            return tf.constant(0, tf.int64)
        return tf.cast(optimizer.iterations, tf.int64)

    def _follow_step(self):
        """Give the network's step-seeded dropout layers the step counter and a seed (idempotent).

        The seed comes from ``seed`` and the layer's name only, so a rebuilt network draws the
        same masks whatever Python's random state was when it was built.
        """
        for layer in self.body._flatten_layers(include_self=False):
            if isinstance(layer, StepDropout):
                seed = (self.seed * 1_000_003 + zlib.crc32(layer.name.encode())) % 2**31
                layer.follow_step(self._step, seed=seed)

    def _vat_seed(self):
        """Stateless seed of this step's VAT directions: (seed, step), and the replica under tf.distribute."""
        seed = tf.random.experimental.stateless_fold_in(tf.constant([self.seed, _VAT_SALT], tf.int64), self._step())
        context = tf.distribute.get_replica_context()
        if context is not None and tf.distribute.has_strategy():
            replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
            seed = tf.random.experimental.stateless_fold_in(seed, replica)
        return seed

    def _ech_weight(self, training: bool):
        if not training or self.ech_warmup_steps <= 0:
            return self.lambda_ech
        ramp = tf.cast(self._step(), tf.float32) / float(self.ech_warmup_steps)
        return self.lambda_ech * tf.minimum(ramp, 1.0)

    # -- the objective
    def _terms(self, x, y, training: bool):
        """Return (total, ce, ech, lds, logits) for a batch, each term a per-replica mean."""
        y = tf.cast(y, tf.int32)
        if training:
            self._follow_step()
        z = self.normalizer(x, training=training)
        logits = tf.cast(self.body(z, training=training), tf.float32)
        ce = masked_cross_entropy(y, logits) if self.lambda_ce else tf.zeros((), tf.float32)
        ech = exp_cross_hinge(y, logits, margin=self.margin) if self.lambda_ech else tf.zeros((), tf.float32)
        if self.lambda_lds and training:
            # The clean logits are reused: VAT needs no second clean forward pass (the dropout
            # masks of this step are the same in every pass, see the module docstring).
            zv, clean = z, logits
            if self.vat_fraction < 1.0:
                n = tf.shape(z)[0]
                k = tf.maximum(1, tf.cast(tf.math.ceil(self.vat_fraction * tf.cast(n, tf.float32)), tf.int32))
                zv = z[:k]
                clean = (tf.cast(self.body(zv, training=training), tf.float32) if self._has_dropout
                         else logits[:k])
            if self.vat_radius == "noise":
                scale, eps = noise_scale(zv), self.vat_snr_change
            else:
                scale, eps = None, self.vat_eps
            smooth = lds(
                lambda t: self.body(t, training=training), zv, xi=self.vat_xi, eps=eps,
                power_iterations=self.vat_power_iterations, logits=clean, seed=self._vat_seed(),
                scale=scale, xi_min=self.vat_xi_min,
            )
        else:
            smooth = tf.zeros((), tf.float32)
        total = self.lambda_ce * ce + self._ech_weight(training) * ech + self.lambda_lds * smooth
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
