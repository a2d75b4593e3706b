"""Types and ranges of the training configs, checked right after Hydra composes them.

Hydra already refuses unknown keys and groups; this module refuses wrong values, before
TensorFlow loads or any data is simulated: ``trainer.epochs=abc`` stops with
``error: trainer.epochs: expected a positive integer, got 'abc'`` and exit status 2. Whole numbers
given where a float is meant (``optimizer.learning_rate=1``) are converted to floats, so Keras and
the losses always receive the type they expect.

:func:`check_train_config` checks a composed ``train`` config, including the stage-1 configs of
label cleaning and of boundary label noise, which have the same groups. Keys that no schema
names are left alone (new options are checked where they are read).
"""

from __future__ import annotations

import math
from typing import Callable

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from realbogus.errors import ConfigError

__all__ = ["check_train_config", "check_group", "SCHEMAS"]


class _Spec:
    """A value check: ``convert(value)`` returns the value to store or raises ValueError."""

    def __init__(self, what: str, convert: Callable, optional: bool = False):
        self.what, self.convert, self.optional = what, convert, optional


def _int(lo: int | None = None, hi: int | None = None, what: str = "an integer", optional: bool = False) -> _Spec:
    def convert(v):
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise ValueError
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError
        return v

    return _Spec(what, convert, optional)


def _float(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
           what: str = "a number", optional: bool = False) -> _Spec:
    def convert(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError
        v = float(v)
        if not math.isfinite(v):
            raise ValueError
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise ValueError
        if hi is not None and (v > hi or (hi_open and v == hi)):
            raise ValueError
        return v

    return _Spec(what, convert, optional)


def _bool() -> _Spec:
    def convert(v):
        if not isinstance(v, bool):
            raise ValueError
        return v

    return _Spec("true or false", convert)


def _choice(*options: str) -> _Spec:
    def convert(v):
        if v not in options:
            raise ValueError
        return v

    return _Spec("one of " + ", ".join(options), convert)


def _text() -> _Spec:
    def convert(v):
        if not isinstance(v, str) or not v:
            raise ValueError
        return v

    return _Spec("a non-empty string", convert)


_POS_INT = "a positive integer"
_FRACTION = "a number between 0 and 1"

#: Per config group: key (dotted inside the group) -> check.
SCHEMAS: dict[str, dict[str, _Spec]] = {
    "trainer": {
        "epochs": _int(1, what=_POS_INT),
        "batch_size": _int(1, what=_POS_INT),
        "steps_per_epoch": _int(1, what=_POS_INT + " or null", optional=True),
        "validation_fraction": _float(0, 1, lo_open=True, hi_open=True, what="a number strictly between 0 and 1"),
        "monitor": _text(),
        "monitor_mode": _choice("min", "max"),
        "patience": _int(1, what=_POS_INT),
        "strategy": _choice("default", "mirrored"),
        "precision": _choice("float32", "mixed_bfloat16", "auto"),
        "resume": _bool(),
        "augment": _bool(),
        "eval_batch_size": _int(1, what=_POS_INT),
        "n_bootstrap": _int(0, what="a non-negative integer"),
        "progress": _choice("auto", "bar", "epoch", "lines", "none"),
        "progress_seconds": _float(0, lo_open=True, what="a positive number of seconds"),
    },
    "optimizer": {
        "name": _text(),
        "learning_rate": _float(0, lo_open=True, what="a positive number"),
        "beta_1": _float(0, 1, hi_open=True, what="a number in [0, 1)"),
        "beta_2": _float(0, 1, hi_open=True, what="a number in [0, 1)"),
        "momentum": _float(0, 1, hi_open=True, what="a number in [0, 1)"),
        "nesterov": _bool(),
        "rho": _float(0, 1, hi_open=True, what="a number in [0, 1)"),
        "epsilon": _float(0, lo_open=True, what="a positive number"),
        "weight_decay": _float(0, what="a non-negative number"),
        "clipnorm": _float(0, lo_open=True, what="a positive number or null", optional=True),
    },
    "schedule": {
        "name": _choice("constant", "cosine"),
        "warmup_steps": _int(0, what="a non-negative integer"),
        "final_fraction": _float(0, 1, what=_FRACTION),
        "max_warmup_fraction": _float(0, 1, what=_FRACTION),
    },
    "loss": {
        "name": _text(),
        "lambda_ce": _float(0, what="a non-negative number"),
        "lambda_ech": _float(0, what="a non-negative number"),
        "lambda_lds": _float(0, what="a non-negative number"),
        "margin": _float(0, what="a non-negative number"),
        "vat.xi": _float(0, lo_open=True, what="a positive number"),
        "vat.eps": _float(0, lo_open=True, what="a positive number"),
        "vat.power_iterations": _int(1, what=_POS_INT),
        "vat.radius": _choice("fixed", "noise"),
        "vat.snr_change": _float(0, lo_open=True, what="a positive number"),
        "vat.xi_min": _float(0, what="a non-negative number"),
        "vat.fraction": _float(0, 1, lo_open=True, what="a number in (0, 1]"),
        "ech_warmup_steps": _int(0, what="a non-negative integer"),
    },
    "model": {
        "name": _choice("simple", "complex"),
        "normalization_epsilon": _float(0, lo_open=True, what="a positive number"),
        "dropout": _float(0, 1, hi_open=True, what="a number in [0, 1)"),
        "feature_layers": _int(0, what="a non-negative integer"),
        "feature_filters": _int(1, what=_POS_INT),
        "stem_kernel_size": _int(1, what=_POS_INT),
        "se_ratio": _int(1, what=_POS_INT),
        "frn_epsilon": _float(0, lo_open=True, what="a positive number"),
        "padding": _choice("valid", "same"),
        "frn_learned_eps": _bool(),
        "frn_spatial": _choice("mean", "sum"),
        "zero_init_residual": _bool(),
    },
    "data_subset": {
        "seed": _int(0, what="a non-negative integer"),
        "test_sensors": _bool(),
    },
}
_TOP = {"seed": _int(0, what="a non-negative integer")}


def _check(node: DictConfig, specs: dict[str, _Spec], prefix: str) -> None:
    for dotted, spec in specs.items():
        value = OmegaConf.select(node, dotted, default=_MISSING, throw_on_missing=False)
        if value is _MISSING:
            continue
        if value is None and spec.optional:
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            got = OmegaConf.to_container(value)
        else:
            got = value
        try:
            new = spec.convert(value)
        except (ValueError, TypeError):
            raise ConfigError(f"{prefix}{dotted}: expected {spec.what}, got {got!r}") from None
        if new is not value and type(new) is not type(value):
            with open_dict(node):
                OmegaConf.update(node, dotted, new, merge=False)


_MISSING = object()


def check_group(cfg: DictConfig, group: str, prefix: str | None = None) -> None:
    """Check (and coerce in place) the config group ``group`` of ``cfg``."""
    node = cfg.get(group)
    if isinstance(node, DictConfig):
        _check(node, SCHEMAS[group], f"{prefix if prefix is not None else group}.")


def check_train_config(cfg: DictConfig) -> DictConfig:
    """Check a composed training config; raise :class:`ConfigError` on the first bad value.

    Interpolations are resolved first, so a value that depends on another is checked as used.
    """
    try:
        OmegaConf.resolve(cfg)
    except Exception as exc:  # omegaconf's interpolation errors carry the key
        raise ConfigError(f"config: {exc}".splitlines()[0]) from None
    _check(cfg, _TOP, "")
    for group in SCHEMAS:
        check_group(cfg, group)
    loss = cfg.get("loss")
    if isinstance(loss, DictConfig) and not any(float(loss.get(k, 0) or 0) > 0
                                                 for k in ("lambda_ce", "lambda_ech", "lambda_lds")):
        raise ConfigError("loss: every weight (lambda_ce, lambda_ech, lambda_lds) is 0; nothing to train")
    # Stage-1 trainings (label cleaning, boundary label noise) carry the same groups.
    for owner in ("label_cleaning", "label_noise.stage1"):
        stage1 = OmegaConf.select(cfg, owner, default=None)
        if isinstance(stage1, DictConfig):
            for group in ("trainer", "optimizer", "schedule", "loss", "model"):
                if group in stage1:
                    check_group(stage1, group, f"{owner}.{group}")
            if "folds" in stage1:
                _check(stage1, {"folds": _int(2, what="an integer of at least 2")}, f"{owner}.")
    return cfg
