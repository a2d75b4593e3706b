"""The real-data check: ``python -m realbogus.realdata model=RUN_DIR_OR_KERAS [input=ALERTS.npz] [out=DIR]``.

Examples::

    # a run's model on the ZTF alerts of ../shared/data; writes RUN/ztf_check/
    python -m realbogus.realdata model=experiments/train/quick-simple-ce-s0
    # a .keras file on another alert file, other drb cuts
    python -m realbogus.realdata model=model.keras input=alerts.npz out=check/ drb_real=0.95 drb_bogus=0.05
    # score isdiffpos=f alerts as stored, without swapping new and ref (orient=auto, the default,
    # does so for models trained on stored fadings: instrument.negative_detections)
    python -m realbogus.realdata model=experiments/train/quick-simple-ce-s0 orient=false
    # several models side by side (e.g. trained on the Tomo-e-like and on the ZTF-like camera)
    python -m realbogus.realdata 'model=[experiments/train/quick-complex-ce-s0,experiments/train/ztf-complex-ce-s0]' \
        'labels=[tomoe,ztf]' out=experiments/figures/ztf_check_side_by_side

Scores every alert and compares with ZTF's deep real/bogus score ``drb`` (see
:mod:`realbogus.evaluation.realdata`): ``ztf_scores.csv``, ``ztf_check.json``,
``ztf_check.png``/``.pdf`` and ``ztf_worst.png``/``.pdf`` in the output folder. By default
(``orient=auto``) alerts with ``isdiffpos='f'`` (template minus science) are scored with new and
ref swapped when the model saw brightenings only, and the numbers without the swap are reported
too; a model trained on fadings stored as the survey stores them (``instrument.negative_detections``)
scores them as stored.
With a list of models each is checked into ``out/<label>/`` and ``comparison.csv`` /
``comparison.md`` put their numbers side by side, so a model trained for one camera can be read
against one trained for the camera that took the alerts.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from realbogus.errors import ConfigError, DataError, report_errors

__all__ = ["default_out", "realdata", "comparison_rows", "main"]

#: Columns of comparison.csv: model label, then the check's headline numbers.
COMPARISON_COLUMNS = ("label", "model", "n_probably_real", "n_probably_bogus", "auc", "auc_lo", "auc_hi",
                      "reals_scored_real", "bogus_scored_bogus", "asteroids_scored_real", "reals_on_source",
                      "reals_on_source_scored_real")


def default_out(model: str | os.PathLike) -> Path:
    """``ztf_check/`` inside a run folder, or beside a ``.keras`` file."""
    model = Path(model)
    return (model if model.is_dir() else model.parent) / "ztf_check"


def comparison_rows(summaries: dict[str, tuple[str, dict]]) -> list[dict]:
    """One row of :data:`COMPARISON_COLUMNS` per checked model (label -> (model path, summary))."""
    rows = []
    for label, (model, s) in summaries.items():
        src = s.get("on_template_source") or {}
        on_real = (src.get("reals_scored_real") or {}).get("n_on_source")
        on_bogus = (src.get("reals_scored_bogus") or {}).get("n_on_source")
        rows.append({
            "label": label, "model": model, "n_probably_real": s["n_probably_real"],
            "n_probably_bogus": s["n_probably_bogus"], "auc": s["auc"],
            "auc_lo": (s.get("auc_ci") or [None, None])[0], "auc_hi": (s.get("auc_ci") or [None, None])[1],
            "reals_scored_real": s["reals_scored_real"]["fraction"],
            "bogus_scored_bogus": s["bogus_scored_bogus"]["fraction"],
            "asteroids_scored_real": s["asteroids"]["scored_real"]["fraction"],
            "reals_on_source": None if on_real is None else on_real + on_bogus,
            "reals_on_source_scored_real": on_real,
        })
    return rows


def _markdown(rows: list[dict]) -> str:
    def num(v, fmt="{:.3f}"):
        return "n/a" if v is None else fmt.format(v)

    lines = ["| model | probable reals / bogus | AUC vs drb (95% CI) | reals scored real | bogus scored bogus | "
             "asteroids scored real |", "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} (`{r['model']}`) | {r['n_probably_real']} / {r['n_probably_bogus']} | "
                     f"{num(r['auc'])} ({num(r['auc_lo'])}-{num(r['auc_hi'])}) | {num(r['reals_scored_real'])} | "
                     f"{num(r['bogus_scored_bogus'])} | {num(r['asteroids_scored_real'])} |")
    return "\n".join(lines) + "\n"


@report_errors
def realdata(cfg: DictConfig) -> dict:
    """Run :func:`realbogus.evaluation.realdata.check_ztf` from the composed config; print a summary.

    ``model`` may be a list: each model is checked into ``out/<label>/`` and the numbers are put
    side by side in ``out/comparison.csv`` and ``out/comparison.md``.
    """
    from realbogus.evaluation.realdata import DEFAULT_ZTF, check_ztf, format_summary
    from realbogus.io import atomic_write, save_csv_table
    from realbogus.deploy.card import read_card, resolve_orient
    from realbogus.predict import resolve_model

    if OmegaConf.is_missing(cfg, "model") or cfg.model in (None, ""):
        raise ConfigError("model= is required: python -m realbogus.realdata model=RUN_DIR_OR_KERAS [input=ALERTS.npz]")
    if not (isinstance(cfg.orient, bool) or cfg.orient == "auto"):
        raise ConfigError(f"orient={cfg.orient!r} must be true, false or auto")
    many = isinstance(cfg.model, ListConfig)
    models = [str(m) for m in cfg.model] if many else [str(cfg.model)]
    labels = [str(x) for x in cfg.get("labels") or []] or [Path(m).name for m in models]
    if len(labels) != len(models) or len(set(labels)) != len(labels):
        raise ConfigError(f"labels={labels} must give one distinct label per model ({len(models)} models)")
    if many and cfg.out in (None, ""):
        raise ConfigError("out= is required with several models (the side-by-side folder)")
    inp = Path(cfg.input) if cfg.input not in (None, "") else DEFAULT_ZTF
    if not inp.is_file():
        raise DataError(f"{inp}: no such file (input= must name an .npz of ZTF alert triplets)")
    for m in models:
        resolve_model(m)  # a missing model is reported before anything is read
    base = Path(cfg.out) if cfg.out not in (None, "") else default_out(models[0])
    summaries = {}
    for model, label in zip(models, labels):
        out = base / label if many else base
        summaries[label] = (model, check_ztf(
            model, inp, out, drb_real=float(cfg.drb_real), drb_bogus=float(cfg.drb_bogus),
            score_threshold=float(cfg.score_threshold), asteroid_radius=float(cfg.asteroid_radius),
            n_bootstrap=int(cfg.n_bootstrap), confidence=float(cfg.confidence), seed=int(cfg.seed),
            n_worst=int(cfg.n_worst), batch_size=int(cfg.batch_size), precision=cfg.precision,
            nan_policy=cfg.nan_policy, title=cfg.title, orient=resolve_orient(cfg.orient, read_card(model)),
        ))
        if many:
            print(f"== {label} ({model})")
        print(format_summary(summaries[label][1]))
    if not many:
        print(f"wrote {base}")
        return summaries[labels[0]][1]
    rows = comparison_rows(summaries)
    save_csv_table(base / "comparison.csv", {c: [r[c] for r in rows] for c in COMPARISON_COLUMNS})
    with atomic_write(base / "comparison.md") as fh:
        fh.write(_markdown(rows))
    print(_markdown(rows), end="")
    print(f"wrote {base}")
    return {label: s for label, (_, s) in summaries.items()}


# ``model=`` would name the ``conf/model/`` config group if conf/ were the search path, so the
# command's own file is loaded into Hydra's config store and composed without a search path.
_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "realdata.yaml"
ConfigStore.instance().store(name="realdata_command", node=OmegaConf.load(_CONFIG))


@hydra.main(version_base="1.3", config_path=None, config_name="realdata_command")
def main(cfg: DictConfig) -> None:
    realdata(cfg)


if __name__ == "__main__":
    main()
