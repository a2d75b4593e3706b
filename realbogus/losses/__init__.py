"""Loss terms of the real/bogus objective ``lambda_ce * CE + lambda_ech * ECH + lambda_lds * LDS``.

- :func:`masked_cross_entropy` -- cross-entropy over labelled samples (labels -1 ignored);
- :func:`exp_cross_hinge` -- pairwise AUC surrogate over (real, bogus) pairs of the batch;
- :func:`virtual_adversarial_perturbation`, :func:`lds` -- virtual adversarial training's
  smoothness term over all samples, labelled or not;
  :func:`noise_scale` -- each stamp's per-channel noise, for a VAT radius in noise units.

All take numpy arrays or tensors (labels int (N,): 1 real, 0 bogus, -1 unlabelled; logits
float (N, 2) [bogus, real]) and return float32 tensors. Under ``tf.distribute`` pass
``global_batch_size`` to the scalar losses (each replica's value is then scaled by its share
of the global batch, like Keras' own losses), or reduce the ``*_per_sample`` variants yourself.
"""

from realbogus.losses.ranking import exp_cross_hinge
from realbogus.losses.supervised import masked_cross_entropy, masked_cross_entropy_per_sample
from realbogus.losses.vat import lds, lds_per_sample, noise_scale, virtual_adversarial_perturbation

__all__ = [
    "exp_cross_hinge",
    "masked_cross_entropy",
    "masked_cross_entropy_per_sample",
    "virtual_adversarial_perturbation",
    "lds",
    "lds_per_sample",
    "noise_scale",
]
