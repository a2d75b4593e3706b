"""The real-data check: ``python -m realbogus.realdata model=RUN_DIR_OR_KERAS [input=ALERTS.npz] [out=DIR]``.

Examples::

    # a run's model on the ZTF alerts of ../shared/data; writes RUN/ztf_check/
    python -m realbogus.realdata model=experiments/train/quick-simple-ce-s0
    # a .keras file on another alert file, other drb cuts
    python -m realbogus.realdata model=model.keras input=alerts.npz out=check/ drb_real=0.95 drb_bogus=0.05
    # score isdiffpos=f alerts as stored, without swapping new and ref
    python -m realbogus.realdata model=experiments/train/quick-simple-ce-s0 orient=false

Scores every alert and compares with ZTF's deep real/bogus score ``drb`` (see
:mod:`realbogus.evaluation.realdata`): ``ztf_scores.csv``, ``ztf_check.json``,
``ztf_check.png``/``.pdf`` and ``ztf_worst.png``/``.pdf`` in the output folder. By default
(``orient=true``) alerts with ``isdiffpos='f'`` (template minus science) are scored with new and
ref swapped, as the training data are oriented, and the numbers without the swap are reported too.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from realbogus.errors import ConfigError, DataError, report_errors

__all__ = ["default_out", "realdata", "main"]


def default_out(model: str | os.PathLike) -> Path:
    """``ztf_check/`` inside a run folder, or beside a ``.keras`` file."""
    model = Path(model)
    return (model if model.is_dir() else model.parent) / "ztf_check"


@report_errors
def realdata(cfg: DictConfig) -> dict:
    """Run :func:`realbogus.evaluation.realdata.check_ztf` from the composed config; print a summary."""
    from realbogus.evaluation.realdata import DEFAULT_ZTF, check_ztf, format_summary
    from realbogus.predict import resolve_model

    if OmegaConf.is_missing(cfg, "model") or cfg.model in (None, ""):
        raise ConfigError("model= is required: python -m realbogus.realdata model=RUN_DIR_OR_KERAS [input=ALERTS.npz]")
    if not isinstance(cfg.orient, bool):
        raise ConfigError(f"orient={cfg.orient!r} must be true or false")
    inp = Path(cfg.input) if cfg.input not in (None, "") else DEFAULT_ZTF
    if not inp.is_file():
        raise DataError(f"{inp}: no such file (input= must name an .npz of ZTF alert triplets)")
    resolve_model(cfg.model)  # a missing model is reported before anything is read
    out = Path(cfg.out) if cfg.out not in (None, "") else default_out(cfg.model)
    summary = check_ztf(
        cfg.model, inp, out, drb_real=float(cfg.drb_real), drb_bogus=float(cfg.drb_bogus),
        score_threshold=float(cfg.score_threshold), asteroid_radius=float(cfg.asteroid_radius),
        n_bootstrap=int(cfg.n_bootstrap), confidence=float(cfg.confidence), seed=int(cfg.seed),
        n_worst=int(cfg.n_worst), batch_size=int(cfg.batch_size), precision=cfg.precision,
        nan_policy=cfg.nan_policy, title=cfg.title, orient=cfg.orient,
    )
    print(format_summary(summary))
    print(f"wrote {out}")
    return summary


# ``model=`` would name the ``conf/model/`` config group if conf/ were the search path, so the
# command's own file is loaded into Hydra's config store and composed without a search path.
_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "realdata.yaml"
ConfigStore.instance().store(name="realdata_command", node=OmegaConf.load(_CONFIG))


@hydra.main(version_base="1.3", config_path=None, config_name="realdata_command")
def main(cfg: DictConfig) -> None:
    realdata(cfg)


if __name__ == "__main__":
    main()
