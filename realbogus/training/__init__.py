"""Training: fit one network from a typed spec.

- :mod:`.model`: the trainable model (network + the paper's composite objective, custom train step);
- :mod:`.fit`: :class:`~.fit.FitSpec` and :func:`~.fit.fit_network`, the one training loop;
- :mod:`.checkpoint`: per-epoch checkpoints, committed atomically, and early stopping;
  :mod:`.state` reads their state without Keras;
- :mod:`.precision`: float32 / bfloat16 policy, chosen by measurement with ``auto``;
- :mod:`.callbacks`: progress display.

This package knows nothing of label handling, runs or evaluation: :mod:`realbogus.train` puts
the pipeline together, and label cleaning's stage 1 calls the same :func:`~.fit.fit_network`.
"""
