"""The results report of ``python -m realbogus.reproduce``: our numbers beside the paper's.

Everything in the report is computed from the figures' numbers (see
:func:`realbogus.reproduce.draw_figures`): tables, the paper's values, and a verdict per claim
that says whether the claim holds on our data, whether the difference is within the bootstrap
intervals, and what the measured quantities say where it does not hold.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
from pathlib import Path

import numpy as np

from realbogus.io import atomic_write
from realbogus.rundir import RunDir

__all__ = ["PAPER", "PLATEAU_TAIL", "write_report", "verdict", "fmt_rate", "metrics_table", "plateau",
           "learning_curve", "steps_per_epoch"]

#: The paper's numbers (Takahashi et al. 2022), quoted beside ours.
PAPER = {
    "auc": 0.9998,
    "fpr_at_tpr_0.9": 0.0002,
    "candidates_before": 5000,
    "candidates_after": 40,
}


#: Share of a run's steps, at its end, in which a new best validation value means "still improving".
PLATEAU_TAIL = 0.2
#: History column of the validation FPR at TPR 0.9 (the training's ValidationOperatingPoint callback).
VAL_FPR = "val_fpr_at_tpr_0.9"


def plateau(steps, values, tail: float = PLATEAU_TAIL) -> dict:
    """Whether a validation curve (lower is better) reached its plateau.

    Rule: the run is **still improving** when its best value lies in the last ``tail`` of its
    steps (steps above ``(1 - tail)`` times the last one) and beats the best value before them
    by more than the curve's noise; otherwise it **reached its plateau**. The noise is the
    epoch-to-epoch scatter about a smooth trend, estimated from the second differences of the
    values (1.4826 x their median absolute deviation / sqrt(6), the standard deviation of white
    noise whose second differences these are), which a smoothly bending learning curve barely
    raises; with fewer than 4 values it cannot be estimated and is taken as 0, so any new best
    at the end counts as improving. A run whose every value lies in the tail (one epoch) is
    **too short to tell**.

    Parameters
    ----------
    steps, values : array-like
        Training step at the end of each epoch and the validation value there (non-finite values
        are dropped).
    tail : float
        Share of the run's steps that forms its end.

    Returns
    -------
    dict
        ``verdict`` ("still improving", "reached its plateau" or "too short to tell"),
        ``best_step``, ``best``, ``gain`` (best before the tail minus best in it), ``noise``.
    """
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(steps) & np.isfinite(values)
    steps, values = steps[ok], values[ok]
    out = {"verdict": "too short to tell", "best_step": float("nan"), "best": float("nan"),
           "gain": float("nan"), "noise": float("nan")}
    if values.size == 0:
        return out
    i = int(np.argmin(values))
    out.update(best_step=float(steps[i]), best=float(values[i]))
    in_tail = steps > (1.0 - tail) * steps.max()
    if in_tail.all():
        return out
    d2 = np.diff(values, 2)
    noise = 1.4826 * float(np.median(np.abs(d2 - np.median(d2)))) / np.sqrt(6.0) if d2.size >= 2 else 0.0
    gain = float(values[~in_tail].min() - values[in_tail].min()) if in_tail.any() else float("-inf")
    out.update(gain=gain, noise=noise)
    out["verdict"] = "still improving" if gain > noise else "reached its plateau"
    return out


def steps_per_epoch(run_dir) -> tuple[int | None, str]:
    """Training steps per epoch of a run folder, and where the number comes from.

    In order: ``steps_per_epoch`` in ``run_state.json`` (where the training records it), the
    config's ``trainer.steps_per_epoch``, or one pass over the fitted rows at the run's batch
    size, their number estimated from the validation predictions and
    ``trainer.validation_fraction`` (the split keeps that fraction of each label, so the estimate
    is off by a few rows at most). ``(None, "unknown")`` when none of these is on disk.
    """
    from realbogus.data.pipeline import count_batches

    run = RunDir(run_dir)
    state = run.state() or {}
    if state.get("steps_per_epoch"):
        return int(state["steps_per_epoch"]), RunDir.STATE
    saved = run.saved_config() or {}
    trainer = saved.get("trainer") or {}
    if trainer.get("steps_per_epoch"):
        return int(trainer["steps_per_epoch"]), "trainer.steps_per_epoch"
    val = run / RunDir.VALIDATION_PREDICTIONS
    fraction = float(trainer.get("validation_fraction") or 0.0)
    if val.is_file() and 0.0 < fraction < 1.0 and trainer.get("batch_size"):
        with open(val) as fh:
            n_val = sum(1 for _ in fh) - 1
        n_fit = int(round(n_val * (1.0 - fraction) / fraction))
        return count_batches(n_fit, int(trainer["batch_size"])), "estimated from the validation split"
    return None, "unknown"


def learning_curve(run_dir) -> dict | None:
    """A run's validation curves from its ``history.csv``, against the training step.

    Returns
    -------
    dict or None
        ``epoch`` (1-based), ``step`` (epochs x steps per epoch; the epoch number when the steps
        are unknown), ``steps_per_epoch`` and its ``steps_source``, ``val_loss``, ``val_fpr``
        (None when the history has no ``val_fpr_at_tpr_0.9`` column) and the :func:`plateau`
        verdicts ``loss_plateau`` and ``fpr_plateau`` (None without the column). None when the
        history is missing or has no ``val_loss``.
    """
    import csv

    path = RunDir(run_dir) / RunDir.HISTORY
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "val_loss" not in rows[0] or "epoch" not in rows[0]:
        return None
    by_epoch = {int(float(r["epoch"])): r for r in rows}  # a resumed run may log an epoch twice: the last counts
    epochs = np.array(sorted(by_epoch), dtype=np.int64) + 1  # Keras logs 0-based epochs

    def column(name):
        return np.array([float(by_epoch[e - 1].get(name) or "nan") for e in epochs], dtype=np.float64)

    spe, source = steps_per_epoch(run_dir)
    step = epochs * (spe or 1)
    val_fpr = column(VAL_FPR) if VAL_FPR in rows[0] else None
    val_loss = column("val_loss")
    return {"epoch": epochs, "step": step, "steps_per_epoch": spe, "steps_source": source, "val_loss": val_loss,
            "val_fpr": val_fpr, "loss_plateau": plateau(step, val_loss),
            "fpr_plateau": plateau(step, val_fpr) if val_fpr is not None else None}


def _rel(target: Path, start: Path) -> str:
    return os.path.relpath(target, start).replace(os.sep, "/")


def fmt_rate(value: float) -> str:
    """A rate for a table: 3 significant digits, scientific below 0.01."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    return f"{value:.2e}" if abs(value) < 0.01 else f"{value:.3g}"


def _ci(lo: float, hi: float, fmt) -> str:
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    return f" ({fmt(lo)}–{fmt(hi)})"


def _count(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:,.0f}"


def _times(q: float) -> str:
    """A ratio baseline / row as 'N.Nx fewer' or 'N.Nx more'."""
    if not math.isfinite(q) or q <= 0:
        return "n/a"
    if abs(q - 1.0) < 1e-9:
        return "baseline"
    return f"{q:.1f}x fewer" if q >= 1 else f"{1 / q:.1f}x more"


def _seed_cell(r: dict) -> str:
    """The seeds column of a table row: each seed's FPR at TPR 0.9, or what the row is."""
    if "_floor" in r or (r.get("n_runs") == 0 and not r.get("run_dirs")):
        return "oracle"
    per_seed = str(r.get("fpr_at_tpr_0.9_per_seed") or "").split()
    if len(per_seed) <= 1:
        return "1"
    return f"{len(per_seed)}: " + ", ".join(fmt_rate(float(v)) for v in per_seed)


def metrics_table(rows: list[dict], ratio: bool = False) -> str:
    """Markdown table of metrics rows (as made by the reproduce command).

    With rows over several seeds (``n_seeds`` > 1) a column lists each seed's FPR at TPR 0.9;
    the row's values are then the seeds' mean and its interval that of
    :func:`realbogus.reproduce.aggregate_seeds`.
    """
    seeds = any(int(r.get("n_seeds") or 1) > 1 for r in rows)
    head = "| method | test real / bogus | AUC (95% CI) | FPR at TPR 0.9 (95% CI) | bogus per night (95% CI) |"
    sep = "| --- | ---: | ---: | ---: | ---: |"
    if ratio:
        head += " against the baseline |"
        sep += " ---: |"
    if seeds:
        head += " seeds: FPR at TPR 0.9 of each |"
        sep += " ---: |"
    lines = [head, sep]
    for r in rows:
        line = (f"| {r['method']} | {r['n_real']:,} / {r['n_bogus']:,} "
                f"| {r['auc']:.4f}{_ci(r['auc_lo'], r['auc_hi'], lambda v: f'{v:.4f}')} "
                f"| {fmt_rate(r['fpr_at_tpr_0.9'])}{_ci(r['fpr_lo'], r['fpr_hi'], fmt_rate)} "
                f"| {_count(r['bogus_per_night'])}{_ci(r['bogus_per_night_lo'], r['bogus_per_night_hi'], _count)} |")
        if ratio:
            q = r.get("reduction_vs_baseline", float("nan"))
            line += f" {_times(q)} |"
        if seeds:
            line += f" {_seed_cell(r)} |"
        lines.append(line)
    return "\n".join(lines)


def verdict(better: dict | None, worse: dict | None, claim: str) -> str:
    """One sentence on whether ``better`` beats ``worse`` (lower FPR at TPR 0.9), as claimed.

    ``holds``: lower FPR and the 95% intervals do not overlap; ``leans the paper's way``: lower
    FPR inside overlapping intervals (more test reals or seeds would be needed to tell);
    ``does not hold``: equal or higher FPR.
    """
    if better is None or worse is None:
        return f"- {claim}: not measured (a run is missing)."
    a, b = better, worse
    nums = (f"FPR at TPR 0.9 {fmt_rate(a['fpr_at_tpr_0.9'])} vs {fmt_rate(b['fpr_at_tpr_0.9'])}, "
            f"AUC {a['auc']:.4f} vs {b['auc']:.4f}")
    if a["fpr_at_tpr_0.9"] < b["fpr_at_tpr_0.9"]:
        separated = math.isfinite(a["fpr_hi"]) and math.isfinite(b["fpr_lo"]) and a["fpr_hi"] < b["fpr_lo"]
        if separated:
            return f"- {claim}: **holds** ({nums}; the 95% intervals are apart)."
        return (f"- {claim}: **leans the paper's way** ({nums}), but the 95% intervals overlap: "
                f"with {a['n_real']:,} test reals this difference is not resolved.")
    return f"- {claim}: **does not hold** here ({nums}){_budget_note(a, b)}."


def _training(row: dict) -> tuple[int, bool] | None:
    """(most epochs trained, whether any run was still improving) of a table row's runs: by the
    :func:`plateau` rule on its validation loss where its history is on disk, else whether its
    best epoch was its last."""
    epochs, still = [], False
    for run_dir in str(row.get("run_dirs", "")).split():
        state = _run_state(run_dir)
        if state is None or "epochs_trained" not in state or "best_epoch" not in state:
            return None
        epochs.append(int(state["epochs_trained"]))
        curve = learning_curve(run_dir)
        if curve is not None and curve["loss_plateau"]["verdict"] != "too short to tell":
            still |= curve["loss_plateau"]["verdict"] == "still improving"
        else:
            still |= int(state["best_epoch"]) >= int(state["epochs_trained"])
    return (max(epochs), still) if epochs else None


def _budget_note(claimed: dict, other: dict) -> str:
    """Why a claimed improvement may be missing: the claimed method stopped while still improving."""
    a, b = _training(claimed), _training(other)
    if a is None or not a[1]:
        return ""
    note = (f"; its run stopped after {a[0]} epoch{'s' if a[0] != 1 else ''} with the validation loss still "
            "falling, so it is undertrained at this budget")
    if b is not None:
        note += (f" (the other trained {b[0]} epoch{'s' if b[0] != 1 else ''}"
                 f"{', and was still improving too' if b[1] else ''})")
    return note


def _pct(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.2f}%"


def _row(rows: list[dict] | None, method: str) -> dict | None:
    return next((r for r in rows or [] if r["method"] == method), None)


def _run_state(run_dir) -> dict | None:
    """A run folder's state (``run_state.json``), or None when it is missing or unreadable."""
    return RunDir(run_dir).state()


def _wall(run_dirs) -> tuple[float, int]:
    """Seconds recorded by the runs' last sessions, and how many runs recorded one."""
    total, n = 0.0, 0
    for run_dir in run_dirs:
        s = _run_state(run_dir) or {}
        if "wall_seconds_last_session" in s:
            total += float(s["wall_seconds_last_session"])
            n += 1
    return total, n


def _section_runs(res, out: list[str]) -> None:
    """One line per training run: how it was computed (epochs, precision, wall time) and whether
    its validation curves reached their plateau (:func:`plateau`)."""
    lines = []
    for run_dir in res.get("run_dirs", []):
        run_dir = Path(run_dir)
        run = RunDir(run_dir)
        state, saved = run.state(), run.saved_config()
        if state is None or saved is None:
            continue
        trainer = saved["trainer"]
        wall = state.get("wall_seconds_last_session")
        curve = learning_curve(run_dir)
        loss = "no history" if curve is None else curve["loss_plateau"]["verdict"]
        fpr = "no history" if curve is None else (curve["fpr_plateau"] or {}).get("verdict", "not logged")
        lines.append(f"| `{run_dir.name}` | {state.get('epochs_trained', '?')} of {trainer['epochs']} | "
                     f"{trainer['batch_size']} | {state.get('precision') or trainer['precision']} | "
                     f"{'-' if wall is None else f'{float(wall) / 60:.1f}'} | {loss} | {fpr} |")
    if lines:
        out += ["## Runs", "",
                "Each training run behind the figures, as recorded in its folder (`run_state.json`, "
                "`run_config.yaml`, `history.csv`); wall time of its last session (training and scoring the test "
                "split); its validation loss and validation FPR at TPR 0.9 by the plateau rule above.", "",
                "| run | epochs trained | batch | precision | wall (min) | validation loss "
                "| validation FPR at TPR 0.9 |",
                "|---|---|---|---|---|---|---|", *lines, ""]


def _section_models(res, out: list[str], fig: str) -> None:
    rows = res.get("models_data")
    out += ["## Network and training data (the paper's ROC comparison of simple/complex and each/mix/all)", ""]
    if not rows:
        out += ["Not drawn yet (its runs have not finished).", ""]
        return
    out += [f"![network x data]({fig}/fig2_models_data.png)", "",
            "Each network trained on every sensor (**all**), on a sample of all sensors the size of one sensor's "
            "data (**mix**) and one model per sensor on that sensor alone (**each**), all scored on the test "
            "rows of the `each` sensors only, so that every entry sees the same stamps "
            "(`fig2_models_data.csv`).", "", metrics_table(rows), "",
            "Paper: complex beats simple; all beats mix and each (qualitative, from its ROC figure).", ""]
    for net in ("simple", "complex"):
        out.append(verdict(_row(rows, f"{net}, all"), _row(rows, f"{net}, mix"), f"{net}: all beats mix"))
        out.append(verdict(_row(rows, f"{net}, all"), _row(rows, f"{net}, each"), f"{net}: all beats each"))
    for data in ("all", "mix", "each"):
        out.append(verdict(_row(rows, f"complex, {data}"), _row(rows, f"simple, {data}"),
                           f"{data}: complex beats simple"))
    out.append("")


def _section_labels(res, out: list[str], fig: str) -> None:
    rows = res.get("label_handling")
    out += ["## Label handling", ""]
    if rows:
        out += [f"![label handling]({fig}/fig3a_label_handling.png)", "", metrics_table(rows), "",
                "Paper: turning the out-of-fold misclassified training samples into unlabelled ones "
                "(semi-supervised training with VAT) improves on training with every label as given.", "",
                verdict(_row(rows, "unlabel (paper)"), _row(rows, "keep"), "unlabel beats keep"),
                verdict(_row(rows, "remove"), _row(rows, "keep"), "remove beats keep"),
                verdict(_row(rows, "unlabel (paper)"), _row(rows, "remove"), "unlabel beats remove"), ""]
    else:
        out += ["Not drawn yet (its runs have not finished).", ""]
    le = res.get("label_errors")
    if le:
        rep = le["report"]
        out += ["### What stage 1 flags", ""]
        rules = rep.get("rules", rep)
        gen = rep.get("generated_error_rates") or {}
        lines = ["| rule | flagged | precision | recall | F1 | estimated error rate, bogus / real |",
                 "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, r in (rules.items() if isinstance(rules, dict) else []):
            if not isinstance(r, dict) or "precision" not in r:
                continue
            lines.append(f"| {name} | {r.get('n_suspected', 0):,} | {fmt_rate(r.get('precision'))} "
                         f"| {fmt_rate(r.get('recall'))} | {fmt_rate(r.get('f1'))} "
                         f"| {_pct(r.get('estimated_error_rates', {}).get('bogus'))} / "
                         f"{_pct(r.get('estimated_error_rates', {}).get('real'))} |")
        if len(lines) > 2:
            out += ["Against the simulator's ground truth (`label_error_report.json` of the paper's-method run); "
                    f"the training labels hold {_pct(gen.get('bogus'))} wrong bogus and {_pct(gen.get('real'))} "
                    "wrong real labels (the paper estimated 0.6% / 1.0% on its data):", "", *lines, ""]
        unl = _row(rows, "unlabel (paper)")
        keep = _row(rows, "keep")
        sel = rules.get(rep.get("selected_rule", "predicted_neq_given"), {}) if isinstance(rules, dict) else {}
        if unl and keep and unl["fpr_at_tpr_0.9"] >= keep["fpr_at_tpr_0.9"] and sel.get("precision") is not None:
            out += [f"Where unlabelling does not help, stage 1 is the likely reason: of its "
                    f"{sel.get('n_suspected', 0):,} suspects only {100 * sel['precision']:.0f}% are wrong labels, "
                    "so most of what it unlabels are correct, hard examples the supervised terms no longer see.", ""]


def _section_losses(res, out: list[str], fig: str) -> None:
    rows = res.get("losses")
    out += ["## Loss combinations", ""]
    if not rows:
        out += ["Not drawn yet (its runs have not finished).", ""]
        return
    out += [f"![losses]({fig}/fig3b_losses.png)", "", metrics_table(rows), "",
            "Paper: the AUC loss (exp-cross-hinge) and VAT each help; CE+ECH+VAT is best.", "",
            verdict(_row(rows, "CE+ECH"), _row(rows, "CE"), "CE+ECH beats CE"),
            verdict(_row(rows, "CE+VAT"), _row(rows, "CE"), "CE+VAT beats CE"),
            verdict(_row(rows, "CE+ECH+VAT"), _row(rows, "CE"), "CE+ECH+VAT beats CE"), ""]


def _section_label_errors(res, out: list[str], fig: str) -> None:
    le = res.get("label_errors")
    out += ["## Label errors against the out-of-fold score", ""]
    if not le:
        out += ["Not drawn yet (the paper's-method run has not finished).", ""]
        return
    t = le["table"]
    out += [f"![label errors]({fig}/fig4_label_errors.png)", "",
            "Paper: the label-error ratio among misclassified training samples grows toward the tails of "
            "the score distribution (a confidently real-looking sample labelled bogus is more often a "
            "label error).", ""]
    if "true_error_ratio" in t:
        ratio = np.asarray(t["true_error_ratio"], float)
        n_mis = np.asarray(t["n_misclassified"])
        ok = np.isfinite(ratio) & (n_mis > 0)
        lo, hi = np.asarray(t["bin_lo"]), np.asarray(t["bin_hi"])
        tails = ok & ((hi <= 0.1) | (lo >= 0.9))
        middle = ok & (lo >= 0.3) & (hi <= 0.7)
        if tails.any() and middle.any():
            rt = n_mis[tails] @ ratio[tails] / n_mis[tails].sum()
            rm = n_mis[middle] @ ratio[middle] / n_mis[middle].sum()
            word = "**holds**" if rt > rm else "**does not hold**"
            out += [f"- the error ratio grows toward the tails: {word} here: {100 * rt:.0f}% of the misclassified "
                    f"samples with scores below 0.1 or above 0.9 are true label errors, against {100 * rm:.0f}% "
                    "between 0.3 and 0.7 (ground truth from the simulator; `fig4_label_errors.csv`).", ""]


def _section_robustness(res, out: list[str], fig: str) -> None:
    from realbogus.label_noise.robustness import summary_markdown

    summary = res.get("robustness")
    out += ["## Robustness to label errors", ""]
    if not summary:
        out += ["Not drawn yet (run the noise sweep of this scale).", ""]
        return
    out += [f"![robustness]({fig}/fig5_robustness.png)", "",
            summary_markdown(summary, title="").strip().lstrip("#").strip(), "",
            "Paper: with label errors injected at multiples of the measured rates along the measured "
            "error profile, the paper's method kept working.", ""]
    by = {}
    for e in summary:
        by.setdefault(e["method"], []).append(e)
    change = {}
    for method, entries in by.items():
        entries.sort(key=lambda e: float(e["noise_rate"]))
        first, last = entries[0], entries[-1]
        if float(last["noise_rate"]) > float(first["noise_rate"]):
            # standard error of each cell's mean over its seeds
            se2 = sum((float(e.get("fpr_at_tpr_0.9_std") or 0.0) ** 2) / max(int(e.get("n_seeds") or 1), 1)
                      for e in (first, last))
            change[method] = (last["fpr_at_tpr_0.9_mean"] - first["fpr_at_tpr_0.9_mean"], se2, first, last)
    paper = change.get("complex_ce_ech_vat_unlabel")
    for other in ("simple_ce", "complex_ce", "complex_ce_ech_vat_keep"):
        if paper and other in change:
            (d_p, se_p, f_p, l_p), (d_o, se_o, f_o, l_o) = paper, change[other]
            gap, u = d_o - d_p, math.sqrt(se_p + se_o)
            if gap > 2 * u:
                word = "**holds**"
            elif gap > 0:
                word = "**leans the paper's way** (within twice the seed-to-seed standard error)"
            else:
                word = "**does not hold**"
            out.append(f"- the paper's method degrades less than {other}: {word}: FPR at TPR 0.9 rises by "
                       f"{fmt_rate(d_p)} vs {fmt_rate(d_o)} from x{f_p['noise_rate']:g} to x{l_p['noise_rate']:g} "
                       f"(standard error of the difference {fmt_rate(u)}); at the highest rate "
                       f"{fmt_rate(l_p['fpr_at_tpr_0.9_mean'])} vs {fmt_rate(l_o['fpr_at_tpr_0.9_mean'])}.")
    out.append("")


def _apart(a: dict, b: dict) -> str:
    """Whether two rows' 95% intervals of FPR at TPR 0.9 are apart."""
    lo, hi = sorted((a, b), key=lambda r: r["fpr_at_tpr_0.9"])
    return ("the 95% intervals are apart" if math.isfinite(lo["fpr_hi"]) and math.isfinite(hi["fpr_lo"])
            and lo["fpr_hi"] < hi["fpr_lo"] else "the 95% intervals overlap")


def _floor_table(floors: dict) -> list[str]:
    lines = ["| floor | confusable reals | test real / bogus (confusable) | AUC | FPR at TPR 0.9 (95% CI) "
             "| bogus per night (95% CI) |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for name, f in floors.items():
        lo, hi = f.get("fpr_ci") or (float("nan"), float("nan"))
        reals = "every real kind" if name.endswith("S/N only)") else ", ".join(f["confusable_reals"])
        lines.append(f"| {name} | {reals} | {f['n_test_real']:,} / {f['n_test_bogus']:,} "
                     f"({f['n_test_confusable_real']:,} / {f['n_test_confusable_bogus']:,}) | {f['auc']:.5f} "
                     f"| {fmt_rate(f['fpr'])}{_ci(lo, hi, fmt_rate)} "
                     f"| {_count(f['fpr'] * 1e6)}{_ci(lo * 1e6, hi * 1e6, _count)} |")
    return lines


def _section_floor(res, out: list[str]) -> None:
    """How the oracle floor is built, and its values on this scale's test split."""
    floors = res.get("floor")
    out += ["## The floor of the simulated data", ""]
    if not floors:
        out += ["Not computed (the data are not simulated, or not on disk yet).", ""]
        return
    out += ["The oracle (`realbogus/evaluation/floor.py`, `oracle_floor`) scores every test stamp from the "
            "simulator's ground truth. A `noise_peak` bogus is pure background conditioned on its difference-image "
            "matched-filter S/N, so at equal S/N it is drawn exactly like a point source without a host: for those "
            "confusable stamps the best any classifier can do is the posterior P(real | S/N), from the likelihood "
            "ratio of the two classes' S/N histograms on the training split; every other bogus kind scores 0 and "
            "every other real 1. **floor (oracle)** takes hosts as knowable (only hostless reals are confusable): "
            "a lower bound, what no classifier of these stamps can beat. **floor (oracle, S/N only)** makes every "
            "real confusable (a host is no evidence): an estimate of what an S/N-limited classifier reaches. Both "
            "appear as rows of the tables and as black markers at TPR 0.9 with their 95% bootstrap intervals in "
            "every ROC figure (a left-pointing triangle at the axis' edge is an FPR of 0: no bogus need pass). "
            "The module lists the approximations, all toward a lower floor.", "", *_floor_table(floors), ""]
    sub = res.get("floor_each_sensors")
    if sub:
        out += ["On the test rows of the \"each\" sensors (the stamps of the network x data comparison):", "",
                *_floor_table(sub), ""]


def _top_kinds(table: dict, n: int = 3) -> str:
    b = table["by_kind"]
    order = [i for i in np.argsort(-np.asarray(b["share"], float)) if b["n_bogus_passed"][i] > 0][:n]
    if not order:
        return "no bogus passes"
    return ", ".join(f"{b['group'][i]} {100 * b['share'][i]:.0f}% (pass rate {fmt_rate(b['fpr'][i])})" for i in order)


def _section_pass_rates(cfg, res, out: list[str], fig: str) -> None:
    tables = res.get("pass_rates")
    out += ["## Where the false positives come from", ""]
    if not tables:
        out += ["Not drawn yet (the summary's runs or the simulated ground truth are missing).", ""]
        return
    out += [f"![pass rates]({fig}/fig7_pass_rates.png)", "",
            f"At each method's own threshold for TPR 0.9 (seed {cfg.seed}; the oracles' as in the floor), the share of "
            "each bogus kind called real (left) and of bogus and reals called real per difference-image S/N bin "
            "(right); counts, Clopper-Pearson intervals and each kind's share of the false positives in "
            "`fig7_pass_rates.csv`. The kinds that make up most of each method's false positives:", ""]
    for name, t in tables.items():
        out.append(f"- {name} (FPR {fmt_rate(t['fpr'])}): {_top_kinds(t)}.")
    out.append("")


def _plateau_cell(p: dict | None) -> str:
    if p is None:
        return "not logged"
    if p["verdict"] == "too short to tell":
        return "too short to tell"
    return f"{p['verdict']} (gain {p['gain']:.3g}, noise {p['noise']:.2g})"


def _section_learning_curves(res, out: list[str], fig: str) -> None:
    entries = res.get("learning_curves")
    out += ["## Did the runs reach their plateau?", ""]
    if not entries:
        out += ["Not drawn yet (no finished run of the summary with a `history.csv`).", ""]
        return
    out += [f"![learning curves]({fig}/fig8_learning_curves.png)", "",
            "Validation loss and validation FPR at TPR 0.9 (the validation split, every epoch) against the training "
            f"step, for the summary's runs (`fig8_learning_curves.csv`). Rule (`realbogus.reporting.plateau`): a "
            f"run is **still improving** when its best validation value lies in the last {100 * PLATEAU_TAIL:.0f}% of "
            "its steps and beats the best before them by more than the curve's noise (the epoch-to-epoch scatter "
            "about a smooth trend, from the second differences; 0 with fewer than 4 epochs); otherwise it "
            "**reached its plateau**; a one-epoch run is too short to tell. Steps per epoch come from the run's "
            "record, its `trainer.steps_per_epoch`, or one pass over its training rows.", "",
            "| method | run | steps per epoch | epochs | validation loss | validation FPR at TPR 0.9 |",
            "| --- | --- | ---: | ---: | --- | --- |"]
    for e in entries:
        spe = "?" if e["steps_per_epoch"] is None else f"{e['steps_per_epoch']:,}"
        if e["steps_source"] == "estimated from the validation split":
            spe += " (est.)"
        out.append(f"| {e['method']} | `{e['run_dir'].name}` | {spe} | {len(e['epoch'])} "
                   f"| {_plateau_cell(e['loss_plateau'])} | {_plateau_cell(e['fpr_plateau'])} |")
    still = [e for e in entries if "still improving" in (e["loss_plateau"]["verdict"],
                                                         (e["fpr_plateau"] or {}).get("verdict"))]
    out += ["", f"{len(still)} of {len(entries)} runs were still improving when they stopped"
            + (": their comparisons measure the training budget as much as the method." if still else "."), ""]
    cosine = [e for e in still if _schedule_name(e["run_dir"]) == "cosine"]
    if cosine:
        out += [f"{len(cosine)} of them ran the cosine schedule, whose learning rate reaches zero at the last "
                "planned step: their last epoch is the best nearly by construction, so the rule cannot tell a "
                "finished run from a short one; only the same method trained longer (`trainer.epochs=`) can.", ""]


def _schedule_name(run_dir) -> str | None:
    """The ``schedule.name`` a run folder was trained with (None if its config cannot be read)."""
    import yaml

    try:
        with open(RunDir(run_dir).config_path) as fh:
            return ((yaml.safe_load(fh) or {}).get("schedule") or {}).get("name")
    except (OSError, yaml.YAMLError, AttributeError):
        return None


def _authors_baseline_lines(cfg, rows) -> list[str]:
    """How much of the paper's ratio the authors' weak baseline explains, from the numbers."""
    ours, auth, meth = _row(rows, cfg.baseline), _row(rows, cfg.get("authors_baseline")), _row(rows, cfg.method)
    if not (ours and auth) or min(ours["bogus_per_night"], auth["bogus_per_night"]) <= 0:
        return []
    paper = PAPER["candidates_before"] / PAPER["candidates_after"]
    handicap = auth["bogus_per_night"] / ours["bogus_per_night"]
    against = ""
    if meth and meth["bogus_per_night"] > 0:
        against = (f" Measured against this baseline the paper's method gives "
                   f"{_times(auth['bogus_per_night'] / meth['bogus_per_night'])} (against our simple + CE "
                   f"{_times(ours['bogus_per_night'] / meth['bogus_per_night'])}; the paper {paper:.0f}x fewer).")
    head = (f"The authors' baseline: trained as their scripts trained it (at this scale's epochs), the simple "
            f"network passes {_count(auth['bogus_per_night'])} bogus a night against {_count(ours['bogus_per_night'])} "
            "for our training of it")
    if handicap > 1:
        share = math.log(handicap) / math.log(paper)
        trained = _training(auth)
        # the authors trained until early stopping; a baseline cut short by our budget is weaker still
        caveat = (" Its run was still improving when it stopped, so at the authors' length of training the factor "
                  "would be smaller: an upper bound." if trained is not None and trained[1] else "")
        return [f"{head} ({handicap:.1f}x more; {_apart(auth, ours)}). That factor is {100 * share:.0f}% of the "
                f"paper's {paper:.0f}x on a log scale (log {handicap:.1f} / log {paper:.0f}): the part of the paper's "
                f"ratio that a weak baseline's training alone would explain.{caveat}{against}", ""]
    return [f"{head} ({1 / handicap:.1f}x fewer for theirs; {_apart(auth, ours)}): its training is no handicap here, "
            f"so it explains none of the paper's {paper:.0f}x.{against}", ""]


def _as_run_lines(cfg, rows) -> list[str]:
    run, meth = _row(rows, cfg.get("as_run")), _row(rows, cfg.method)
    if not (run and meth):
        return []
    return [f"The objective as the authors' scripts ran it (`loss=ce_ech_vat_as_run`: CE and ECH at 0.1 each, VAT at "
            f"1.0 with a radius of about 1e-3 noise units) gives FPR at TPR 0.9 {fmt_rate(run['fpr_at_tpr_0.9'])} "
            f"against {fmt_rate(meth['fpr_at_tpr_0.9'])} for the paper's objective as written "
            f"({_count(run['bogus_per_night'])} against {_count(meth['bogus_per_night'])} bogus a night; "
            f"{_apart(run, meth)}).", ""]


def _floor_gap_lines(cfg, rows) -> list[str]:
    meth = _row(rows, cfg.method)
    out = []
    for name in ("floor (oracle)", "floor (oracle, S/N only)"):
        f = _row(rows, name)
        if not (meth and f):
            continue
        if f["bogus_per_night"] > 0:
            q = meth["bogus_per_night"] / f["bogus_per_night"]
            where = f"{q:.1f}x the floor" if q >= 1 else "below it (the estimate is no bound: hosts are evidence)"
            out.append(f"- the paper's method against {name}: {_count(meth['bogus_per_night'])} against "
                       f"{_count(f['bogus_per_night'])} bogus a night, {where}.")
        else:
            out.append(f"- the paper's method against {name}: {_count(meth['bogus_per_night'])} bogus a night where "
                       "an oracle passes none at TPR 0.9.")
    return [*out, ""] if out else []


def _section_summary(cfg, res, out: list[str], fig: str) -> None:
    rows = res.get("summary")
    out += ["## Headline table: candidates a night", ""]
    if not rows:
        out += ["Not drawn yet (its runs have not finished).", ""]
        return
    out += [f"![summary]({fig}/fig6_summary.png)", "", metrics_table(rows, ratio=True), "",
            "Bogus per night: FPR at TPR 0.9 times 10^6 bogus detections a night; the ratio column compares "
            f"each row's with the baseline's ({cfg.baseline})."]
    if any(int(r.get("n_seeds") or 1) > 1 for r in rows):
        out += ["Rows trained at several seeds show the mean over the seeds; their interval spans both the mean of "
                "the seeds' 95% bootstrap intervals (one test set for all seeds) and the range of the seeds' own "
                "values, i.e. the wider of the test-set and the seed-to-seed uncertainty; the last column lists each "
                "seed's FPR at TPR 0.9 (`fig6_summary.csv`: `n_runs`, `n_seeds`, `fpr_at_tpr_0.9_per_seed`)."]
    out += [""]
    base, meth = _row(rows, cfg.baseline), _row(rows, cfg.method)
    if base and meth:
        ratio = base["bogus_per_night"] / meth["bogus_per_night"] if meth["bogus_per_night"] > 0 else float("inf")
        out += ["| | paper (Tomo-e Gozen, real data) | this run (simulated data) |", "| --- | ---: | ---: |",
                f"| AUC of the new classifier | {PAPER['auc']} | {meth['auc']:.4f} |",
                f"| FPR at TPR 0.9 | {fmt_rate(PAPER['fpr_at_tpr_0.9'])} | {fmt_rate(meth['fpr_at_tpr_0.9'])} |",
                f"| candidates a night, old -> new | {PAPER['candidates_before']:,} -> "
                f"{PAPER['candidates_after']:,} ({PAPER['candidates_before'] / PAPER['candidates_after']:.0f}x fewer) "
                f"| {_count(base['bogus_per_night'])} -> {_count(meth['bogus_per_night'])} ({_times(ratio)}) |", "",
                verdict(meth, base, "the paper's method beats the previous classifier"),
                "", "The paper's counts are candidates after deployment on real nights; ours are the bogus "
                "detections that pass at TPR 0.9 out of 10^6 simulated ones, so the ratio, not the count, is "
                "what compares.", ""]
    out += _authors_baseline_lines(cfg, rows) + _as_run_lines(cfg, rows) + _floor_gap_lines(cfg, rows)


def _frac(entry) -> str:
    if not entry or entry.get("fraction") is None:
        return "n/a"
    ci = entry.get("ci")
    return f"{entry['k']}/{entry['n']} = {entry['fraction']:.2f}" + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else "")


def _auc_ci(d) -> str:
    if not d or d.get("auc") is None:
        return "n/a"
    ci = d.get("auc_ci")
    return f"{d['auc']:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")


def _section_ztf(res, out: list[str], fig: str) -> None:
    z = res.get("ztf")
    out += ["## Real-data check: ZTF alerts", ""]
    if not z:
        out += ["Not run (the ZTF alert file or the paper's-method run is missing).", ""]
        return
    out += [f"![ZTF check]({fig}/ztf_check/ztf_check.png)", "",
            f"![ZTF worst]({fig}/ztf_check/ztf_worst.png)", "",
            f"The paper's-method model on {z['n_alerts']} real ZTF alerts ({z['n_with_drb']} with ZTF's deep "
            f"real/bogus score `drb`): {z['n_probably_real']} probably real (`drb` >= {z['drb_real']}), "
            f"{z['n_probably_bogus']} probably bogus (`drb` < {z['drb_bogus']}), {z['n_asteroids']} near known "
            "asteroids. Alerts with `isdiffpos=f` come from reference minus science; oriented, their new and "
            "reference stamps are swapped so that the candidate is brighter in the first channel, as in our "
            "training data.", ""]
    un = z.get("unoriented")
    f_or = (z.get("by_isdiffpos") or {}).get("f", {})
    f_un = ((un or {}).get("by_isdiffpos") or {}).get("f", {})
    out += ["| | oriented | as stored |", "| --- | ---: | ---: |",
            f"| AUC, probable reals vs probable bogus (95% CI) | {_auc_ci(z)} | {_auc_ci(un)} |",
            f"| probable reals scored real (>= {z['score_threshold']}) | {_frac(z.get('reals_scored_real'))} "
            f"| {_frac((un or {}).get('reals_scored_real'))} |",
            f"| probable bogus scored bogus | {_frac(z.get('bogus_scored_bogus'))} "
            f"| {_frac((un or {}).get('bogus_scored_bogus'))} |",
            f"| asteroids scored real | {_frac((z.get('asteroids') or {}).get('scored_real'))} "
            f"| {_frac(((un or {}).get('asteroids') or {}).get('scored_real'))} |",
            f"| `isdiffpos=f` only: AUC | {_auc_ci(f_or)} | {_auc_ci(f_un)} |", "",
            "ZTF's `drb` is another survey's machine score on another instrument (1.01\"/pixel CCD images, "
            "other seeing and depth), not a human label; with a few dozen alerts per class the intervals are "
            "wide. The AUC against it measures how far a model trained only on our simulated stamps carries "
            "over to real difference images, i.e. how realistic the simulator is.", ""]
    src = z.get("on_template_source")
    if src:
        def part(key: str) -> str:
            g = src[key]
            return f"{g['n_on_source']} of {g['n']}"
        out += [f"Where they disagree: {part('reals_scored_bogus')} probable reals scored bogus, and "
                f"{part('bogus_scored_real')} probable bogus scored real, sit on a source of at least "
                f"{src['min_template_snr']:g} sigma in the template (a star or nucleus), against "
                f"{part('reals_scored_real')} of the reals scored real. Changes of stars, which ZTF labels real "
                "when the star varies and bogus when the subtraction fails, are what our simulated training "
                "data do not teach (README, \"What the simulator lacks\").", ""]


def _section_ztf_cameras(cfg, out: list[str], fig: str) -> None:
    """The side-by-side check of models trained on each camera preset, if it has been run."""
    path = Path(cfg.figures_dir) / "ztf_side_by_side" / "comparison.csv"
    if not path.is_file():
        return
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out += ["### A model per camera preset, side by side", "",
            f"From `{fig}/ztf_side_by_side/comparison.csv`, written by `python -m realbogus.realdata` with a list "
            "of models (the commands and the simulated-test numbers of each row are in README, \"A model per "
            "camera, side by side\"). Rows named `ztf_v1_*` were trained on the ZTF preset before it simulated "
            "fadings and core residuals, `ztf_scaled_*` on the preset with its bright-star residuals scaled to a "
            "drawn S/N (`bogus.star_residual_snr=scaled`) instead of selected by detection; fading alerts are "
            "scored as each model learned them (`orient=auto`).", "",
            "| model | run | AUC vs `drb` (95% CI) | reals scored real | bogus scored bogus |",
            "| --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        out.append(f"| {r['label']} | `{r['model']}` | {float(r['auc']):.3f} ({float(r['auc_lo']):.3f}–"
                   f"{float(r['auc_hi']):.3f}) | {float(r['reals_scored_real']):.2f} | "
                   f"{float(r['bogus_scored_bogus']):.2f} |")
    out.append("")


def write_report(cfg, res: dict, wall_seconds: float) -> Path:
    """Write the Markdown report of a reproduce run to ``cfg.report``; return its path."""
    report = Path(cfg.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    fig = _rel(Path(cfg.figures_dir), report.parent)
    total, n_runs = _wall(res.get("run_dirs", []))
    out = [f"# Reproducing Takahashi et al. (2022) on simulated Tomo-e-like data ({cfg.scale_name} scale)", "",
           "Regenerated by `python -m realbogus.reproduce scale=" + str(cfg.scale_name) + "` "
           f"(`make reproduce-figures SCALE={cfg.scale_name}`) on {datetime.date.today().isoformat()}; every "
           "number below comes from the run folders under "
           f"`{cfg.runs_dir}` and `{cfg.sweep_dir}`. This invocation took {wall_seconds / 60:.1f} min"
           f"{' (figures and report only: draw_only=true)' if cfg.get('draw_only') else ''}; the "
           f"{n_runs} training runs behind the figures recorded {total / 60:.0f} min of training and scoring "
           "(their last sessions; the noise sweep not included).", "",
           "Intervals are 95% bootstrap intervals over the test set (reals and bogus resampled separately). "
           "A claim **holds** when our FPR at TPR 0.9 moves the paper's way with the intervals apart.", ""]
    if res.get("gallery"):
        out += ["## Stamps", "", f"![stamp gallery]({fig}/stamp_gallery.png)", "",
                "Every simulated kind (new | ref | diff), next to real ZTF alerts where the file exists.", ""]
    _section_floor(res, out)
    _section_models(res, out, fig)
    _section_labels(res, out, fig)
    _section_losses(res, out, fig)
    _section_label_errors(res, out, fig)
    _section_robustness(res, out, fig)
    _section_summary(cfg, res, out, fig)
    _section_pass_rates(cfg, res, out, fig)
    _section_learning_curves(res, out, fig)
    _section_ztf(res, out, fig)
    _section_ztf_cameras(cfg, out, fig)
    _section_runs(res, out)
    with atomic_write(report) as fh:
        fh.write("\n".join(out).rstrip() + "\n")
    return report
