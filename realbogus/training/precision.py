"""Numeric precision of training: a context manager for Keras' policy, and ``auto`` by measurement.

``float32`` computes and stores in float32; ``mixed_bfloat16`` computes in bfloat16 with float32
variables. Which is faster depends on the processor, not on its feature flags: on one 2-core
machine with AVX-512 bf16 instructions the bfloat16 step ran 1.8x the float32 step, on another
0.8x. ``auto`` therefore times a few training steps of the actual model and objective in both
precisions on the machine at hand and keeps the faster; the result is cached per processor,
model, objective and batch size by :func:`realbogus.speed.fastest` (``speed.json`` in
``$REALBOGUS_CACHE_DIR``, default ``~/.cache/realbogus``; the same mechanism chooses the scoring
path of ``predict``). A resumed run keeps the precision it started with (recorded in its
checkpoint). ``$REALBOGUS_AUTO_PRECISION`` (``float32`` or ``mixed_bfloat16``) answers ``auto``
without measuring: for test suites, whose results must not depend on the machine, and for
clusters whose answer is known.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

from realbogus import speed
from realbogus.errors import ConfigError

__all__ = ["PRECISIONS", "AUTO_ENV", "precision_policy", "resolve_precision", "measure_step_rates", "cache_path"]

PRECISIONS = ("float32", "mixed_bfloat16")
#: Environment variable naming what ``auto`` resolves to without a measurement.
AUTO_ENV = "REALBOGUS_AUTO_PRECISION"


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Set Keras' global dtype policy to ``name`` inside the block; restore the previous one after."""
    import keras

    if name not in PRECISIONS:
        raise ConfigError(f"trainer.precision={name!r} is not one of {', '.join(PRECISIONS)}, auto")
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def cache_path() -> Path:
    """The file remembering the measured choices (shared with scoring: :func:`realbogus.speed.cache_path`)."""
    return speed.cache_path()


def _work(spec) -> dict:
    """What the step rates depend on besides the processor: model, active loss terms, batch size."""
    from omegaconf import OmegaConf

    return {"model": OmegaConf.to_container(spec.model, resolve=True),
            "terms": [bool(float(spec.loss.get(k, 0) or 0)) for k in ("lambda_ce", "lambda_ech", "lambda_lds")],
            "batch": int(spec.trainer.batch_size)}


def _step_rate(spec, name: str, steps: int = 3) -> float:
    """Training samples per second of ``spec``'s model and objective in precision ``name``.

    Builds the model, traces the step, runs one warm-up step and times ``steps`` steps on
    random stamps of the configured batch size.
    """
    import keras
    import numpy as np

    from realbogus.training.fit import build_optimizer, build_trainable

    batch = int(spec.trainer.batch_size)
    rng = np.random.default_rng(0)
    x = rng.normal(100.0, 10.0, (batch, 29, 29, 3)).astype(np.float32)
    y = (np.arange(batch) % 2).astype(np.int32)
    with precision_policy(name):
        model = build_trainable(spec)
        model.compile(optimizer=build_optimizer(spec.optimizer))
        model.train_on_batch(x, y)
        t0 = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        rate = steps * batch / (time.perf_counter() - t0)
    keras.backend.clear_session()
    return rate


def measure_step_rates(spec, steps: int = 3) -> dict[str, float]:
    """Training samples per second of ``spec``'s model and objective in each precision."""
    return {name: _step_rate(spec, name, steps) for name in PRECISIONS}


def resolve_precision(requested: str, spec) -> str:
    """``requested`` itself, or for ``auto`` the faster precision on this machine (measured, cached)."""
    if requested in PRECISIONS:
        return requested
    if requested != "auto":
        raise ConfigError(f"trainer.precision={requested!r} is not one of {', '.join(PRECISIONS)}, auto")
    preset = os.environ.get(AUTO_ENV)
    if preset:
        if preset not in PRECISIONS:
            raise ConfigError(f"${AUTO_ENV}={preset!r} is not one of {', '.join(PRECISIONS)}")
        return preset
    candidates = {name: (lambda name=name: _step_rate(spec, name)) for name in PRECISIONS}
    choice = speed.fastest("trainer.precision", _work(spec), candidates,
                           announce=lambda line: print(line, flush=True))
    return choice.choice
