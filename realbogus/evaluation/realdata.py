"""The real-data check: how a model trained on simulated Tomo-e-like stamps scores real ZTF alerts.

The alerts (``../shared/data/ztf_alerts_dev.npz``, see its README) carry no human labels, only
ZTF's own deep real/bogus score ``drb`` (the braai CNN). We take ``drb >= 0.9`` as *probably
real* and ``drb < 0.1`` as *probably bogus*, and alerts near a known asteroid (``0 <= ssdistnr <
5`` arcsec) as real point sources whatever their ``drb``. Alerts without a ``drb`` (older than
the CNN) are scored and listed but left out of every comparison with it.

Orientation. The simulated training reals always brighten: ``diff = new - ref`` is positive at
the candidate, and channel 0 is the image in which it is brighter. ZTF alerts with ``isdiffpos``
``'f'`` come from template minus science (a fading source): the candidate is still positive in
channel 2, but it is brighter in the reference (channel 1) than in the science image
(channel 0). With ``orient=True`` (the default) those alerts are scored with channels 0 and 1
swapped, so every triplet reads as (image where the candidate is brighter, the other image,
positive difference), the orientation of the training data; the numbers without the swap are
reported beside them (``unoriented``). :func:`fading` says which ``isdiffpos`` values count as
``'f'``.

:func:`check_ztf` scores every alert and writes into its output folder, each file atomically:

``ztf_scores.csv``
    One row per alert in file order: ``index``, ``candid``, ``objectId``, ``drb``, ``rb``,
    ``isdiffpos``, ``magpsf``, ``ssdistnr``, ``nan_count`` (masked pixels of the stamp, set to 0
    in the file and scored as they are), ``template_peak_snr`` (:func:`template_peak_snr`),
    ``drb_class`` (``real``, ``bogus``, ``between`` or
    ``none``), ``asteroid`` (1/0), ``swapped`` (1: scored with channels 0 and 1 swapped) and
    ``score`` (our probability of real, of the stamp as scored); with ``orient`` on also
    ``score_unoriented`` (the score of the stamp as stored in the file).
``ztf_check.json``
    Counts, the AUC of our score for probable reals against probable bogus (with a bootstrap
    interval), the Spearman correlation of our score with ``drb``, the fractions of probable
    reals scored real and of probable bogus scored bogus at ``score_threshold`` (with exact
    binomial intervals), the same for asteroids, ``on_template_source`` (how many of the reals
    and bogus scored either way sit on a source in the template), and a breakdown by
    ``isdiffpos``; ``orientation``
    (whether ``isdiffpos='f'`` alerts were swapped, and how many), and with ``orient`` on
    ``unoriented``: the score-dependent numbers again for the stamps as stored, unswapped.
``ztf_check.png`` / ``.pdf``
    Score histograms of probable reals, probable bogus and asteroids; our score against
    ``drb``; the ROC curve of probable reals against probable bogus.
``ztf_worst.png`` / ``.pdf``
    The probable reals with the lowest scores and the probable bogus with the highest, as
    z-scaled triplets annotated with ``drb`` and our score, shown as scored (swapped alerts as
    (ref, new, diff), marked ``swapped``).

A threshold of 0.5 is the sign of the network's margin, so a temperature fitted for calibration
changes none of these numbers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from realbogus.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_ZTF",
    "SCORES_FILE",
    "CHECK_FILE",
    "FIGURE_FILE",
    "WORST_FILE",
    "load_alerts",
    "template_peak_snr",
    "fading",
    "orient_triplets",
    "summarise",
    "check_ztf",
    "format_summary",
]

#: The ZTF alert triplets beside the repository (``../shared/data``).
DEFAULT_ZTF = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ztf_alerts_dev.npz"
SCORES_FILE = "ztf_scores.csv"
CHECK_FILE = "ztf_check.json"
FIGURE_FILE = "ztf_check.png"
WORST_FILE = "ztf_worst.png"

_REAL_COLOUR = "tab:blue"
_BOGUS_COLOUR = "tab:red"
_ASTEROID_COLOUR = "tab:orange"
_BETWEEN_COLOUR = "0.6"


# ----------------------------------------------------------------------------- input
def load_alerts(npz_path: str | os.PathLike, nan_policy: str = "error") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Stamps and per-alert columns of a ZTF alert archive.

    Parameters
    ----------
    npz_path
        ``.npz`` with ``images`` (N, 29, 29, 3) and ``drb`` (N,); optionally ``channel_order``,
        ``candid``, ``objectId``, ``rb``, ``isdiffpos``, ``magpsf``, ``ssdistnr`` and
        ``nan_count`` ((N,) or (N, 3)). Missing optional columns become NaN, ``""`` or the row.
    nan_policy
        For pixels that are still NaN/inf in the file (see :mod:`realbogus.data.loaders`);
        ``fill`` replaces them and adds them to ``nan_count``.

    Returns
    -------
    images, columns
        float32 stamps with channels (new, ref, diff), and the columns ``candid``, ``objectId``,
        ``drb``, ``rb``, ``isdiffpos``, ``magpsf``, ``ssdistnr``, ``nan_count``.

    Raises
    ------
    DataError
        The file is missing, unreadable, not a stack of 29x29x3 stamps, or lacks ``drb``.
    """
    from realbogus.data.loaders import load_stamps

    path = Path(npz_path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (input= must name an .npz of ZTF alert triplets)")
    if path.suffix.lower() != ".npz":
        raise DataError(f"{path}: not an .npz archive (input= must name an .npz of ZTF alert triplets)")
    images, loaded = load_stamps(path, nan_policy=nan_policy, layout="npy")
    n = images.shape[0]
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {name: z[name] for name in z.files if name != "images"}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({str(exc).strip().splitlines()[0]})") from None
    if "drb" not in raw:
        raise DataError(f"{path}: no array 'drb' (ZTF's deep real/bogus score) to compare with")

    def column(name: str, default, kind: str):
        if name not in raw:
            return default
        values = np.asarray(raw[name])
        if values.shape != (n,):
            raise DataError(f"{path}: array {name!r} has shape {values.shape}, but there are {n} stamps")
        if kind == "float":
            if values.dtype.kind not in "biuf":
                raise DataError(f"{path}: array {name!r} has dtype {values.dtype}, expected numbers")
            return values if values.dtype.kind == "f" else values.astype(np.float64)  # float32 stays float32
        return values.astype(str) if kind == "str" else values

    nan_count = np.zeros(n, np.int64)
    if "nan_count" in raw:
        counts = np.asarray(raw["nan_count"])
        if counts.shape[:1] != (n,) or counts.ndim > 2 or counts.dtype.kind not in "biu":
            raise DataError(f"{path}: array 'nan_count' has shape {counts.shape} / dtype {counts.dtype}, "
                            f"expected integers of shape ({n},) or ({n}, 3)")
        nan_count = counts.reshape(n, -1).sum(axis=1).astype(np.int64)
    if "n_masked" in loaded:  # pixels still masked in the file, filled now
        nan_count = nan_count + np.asarray(loaded["n_masked"], np.int64)
    columns = {
        "candid": column("candid", np.arange(n, dtype=np.int64), "raw"),
        "objectId": column("objectId", np.full(n, "", dtype=object).astype(str), "str"),
        "drb": column("drb", None, "float"),
        "rb": column("rb", np.full(n, np.nan), "float"),
        "isdiffpos": column("isdiffpos", np.full(n, "", dtype=object).astype(str), "str"),
        "magpsf": column("magpsf", np.full(n, np.nan), "float"),
        "ssdistnr": column("ssdistnr", np.full(n, np.nan), "float"),
        "nan_count": nan_count,
    }
    return images, columns


# ----------------------------------------------------------------------------- orientation
_FADING_TEXT = ("f", "0", "false")


def fading(isdiffpos) -> np.ndarray:
    """Boolean mask of alerts whose difference is template minus science (``isdiffpos`` false).

    Accepts the ways ``isdiffpos`` is stored: strings or bytes ``'f'``/``'t'`` (also ``'0'``/``'1'``,
    ``'false'``/``'true'``, any case), numbers (0: false) and booleans. Anything else, such as an
    empty string for a missing column, counts as not fading.
    """
    values = np.asarray(isdiffpos)
    if values.dtype.kind == "b":
        return ~values
    if values.dtype.kind in "iuf":
        return values == 0
    if values.dtype.kind == "S":
        values = np.char.decode(values, "ascii", errors="replace")
    text = np.char.lower(np.char.strip(values.astype(str)))
    return np.isin(text, _FADING_TEXT)


def orient_triplets(images: np.ndarray, swap) -> np.ndarray:
    """A copy of (N, H, W, 3) ``images`` with channels 0 and 1 exchanged where ``swap`` is true."""
    swap = np.asarray(swap, bool)
    out = np.array(images, copy=True)
    out[swap, ..., 0], out[swap, ..., 1] = images[swap, ..., 1], images[swap, ..., 0]
    return out


# ----------------------------------------------------------------------------- numbers
def _fraction(hit: np.ndarray, confidence: float) -> dict:
    """``{n, k, fraction, ci}`` of a boolean array (exact binomial interval)."""
    from realbogus.evaluation.metrics import _binomial_interval

    n, k = int(hit.size), int(np.count_nonzero(hit))
    if n == 0:
        return {"n": 0, "k": 0, "fraction": None, "ci": None}
    lo, hi = _binomial_interval(k, n, confidence)
    return {"n": n, "k": k, "fraction": k / n, "ci": [float(lo), float(hi)]}


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def _as_float(values) -> np.ndarray:
    values = np.asarray(values)
    return values if values.dtype.kind == "f" else values.astype(np.float64)


def _classes(drb, drb_real: float, drb_bogus: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(has drb, probably real, probably bogus). The cuts are compared in drb's own precision, so a
    float32 ``drb`` of exactly ``float32(0.9)`` counts as ``>= 0.9``, as ``drb >= 0.9`` in NumPy."""
    drb = _as_float(drb)
    has = np.isfinite(drb)
    with np.errstate(invalid="ignore"):
        return has, has & (drb >= drb.dtype.type(drb_real)), has & (drb < drb.dtype.type(drb_bogus))


def _asteroids(ssdistnr: np.ndarray, radius: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(ssdistnr) & (ssdistnr >= 0) & (ssdistnr < radius)


#: Template peak (sigma above the stamp's sky) from which a candidate counts as sitting on a source.
SOURCE_SNR = 20.0


def template_peak_snr(images: np.ndarray, template_channel: int = 1, half_width: int = 2) -> np.ndarray:
    """Brightest pixel of the template within ``half_width`` of the stamp centre, in units of
    the template's robust noise (1.4826 MAD) above its median: large when the candidate sits
    on a star or galaxy nucleus (a variable star, a residual), small on an empty sky.

    ``images`` are (N, H, W, 3) as stored (ZTF: science, template, difference).
    """
    t = np.asarray(images, dtype=np.float64)[..., template_channel]
    cy, cx = t.shape[1] // 2, t.shape[2] // 2
    flat = t.reshape(t.shape[0], -1)
    sky = np.median(flat, axis=1)
    noise = 1.4826 * np.median(np.abs(flat - sky[:, None]), axis=1)
    peak = t[:, cy - half_width:cy + half_width + 1, cx - half_width:cx + half_width + 1].max(axis=(1, 2))
    return (peak - sky) / np.maximum(noise, 1e-12)


def _on_source(snr: np.ndarray, sel: np.ndarray) -> dict:
    return {"n": int(sel.sum()), "n_on_source": int((snr[sel] >= SOURCE_SNR).sum()),
            "median_template_snr": _median(snr[sel])}


def summarise(
    scores,
    columns: Mapping[str, np.ndarray],
    drb_real: float = 0.9,
    drb_bogus: float = 0.1,
    score_threshold: float = 0.5,
    asteroid_radius: float = 5.0,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """The numbers of ``ztf_check.json`` from our scores and the alerts' columns.

    Parameters
    ----------
    scores
        Our probability of real for each alert.
    columns
        At least ``drb``; ``ssdistnr``, ``isdiffpos``, ``nan_count`` and ``template_peak_snr``
        (:func:`template_peak_snr`) when present.
    drb_real, drb_bogus
        ``drb >= drb_real`` is probably real, ``drb < drb_bogus`` probably bogus.
    score_threshold
        Our score at or above which an alert counts as scored real.
    asteroid_radius
        Alerts with ``0 <= ssdistnr < asteroid_radius`` (arcsec) count as asteroids.
    n_bootstrap, confidence, seed
        Bootstrap of the AUC (reals and bogus resampled separately; 0: no interval), level of
        every interval, and the bootstrap's seed.

    Returns
    -------
    dict
        JSON-ready; ``auc`` and ``spearman`` are None where they cannot be computed.
    """
    from scipy.stats import spearmanr

    from realbogus.evaluation import metrics as M

    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    drb = np.asarray(columns["drb"], dtype=np.float64)
    n = scores.size
    has, real, bogus = _classes(columns["drb"], drb_real, drb_bogus)
    ssdistnr = np.asarray(columns.get("ssdistnr", np.full(n, np.nan)), dtype=np.float64)
    asteroid = _asteroids(ssdistnr, asteroid_radius)
    nan_count = np.asarray(columns.get("nan_count", np.zeros(n, np.int64)))
    passed = scores >= score_threshold

    out: dict = {
        "n_alerts": n,
        "n_with_drb": int(has.sum()),
        "n_without_drb": int((~has).sum()),
        "drb_real": float(drb_real),
        "drb_bogus": float(drb_bogus),
        "n_probably_real": int(real.sum()),
        "n_probably_bogus": int(bogus.sum()),
        "n_between": int((has & ~real & ~bogus).sum()),
        "n_asteroids": int(asteroid.sum()),
        "n_masked_stamps": int((nan_count > 0).sum()),
        "score_threshold": float(score_threshold),
    }
    labels = np.where(real, 1, np.where(bogus, 0, -1)).astype(np.int8)
    out["auc"], out["auc_ci"] = None, None
    if real.any() and bogus.any():
        out["auc"] = M.auc(scores, labels)
        if n_bootstrap > 0:
            boot = M.bootstrap(scores, labels, n_resamples=int(n_bootstrap), seed=int(seed),
                               tpr_targets=(), fpr_targets=())["auc"]
            alpha = (1.0 - confidence) / 2.0
            out["auc_ci"] = [float(v) for v in np.quantile(boot, [alpha, 1.0 - alpha])]
    out["bootstrap"] = {"n_resamples": int(n_bootstrap), "confidence": float(confidence), "seed": int(seed),
                        "method": "percentile; probable reals and probable bogus resampled separately"}
    rho = p_value = None
    if has.sum() >= 3 and np.ptp(scores[has]) > 0 and np.ptp(drb[has]) > 0:
        result = spearmanr(scores[has], drb[has])
        rho, p_value = float(result.statistic), float(result.pvalue)
    out["spearman"] = {"rho": rho, "p_value": p_value, "n": int(has.sum())}
    out["reals_scored_real"] = _fraction(passed[real], confidence)
    out["bogus_scored_bogus"] = _fraction(~passed[bogus], confidence)
    out["median_score"] = {"probably_real": _median(scores[real]), "probably_bogus": _median(scores[bogus]),
                           "asteroids": _median(scores[asteroid]), "all": _median(scores)}
    out["asteroids"] = {
        "max_distance_arcsec": float(asteroid_radius),
        "n": int(asteroid.sum()),
        "n_probably_real": int((asteroid & real).sum()),
        "scored_real": _fraction(passed[asteroid], confidence),
    }
    if "template_peak_snr" in columns:
        # Where the disagreements sit: on a star / nucleus in the template, or on empty sky.
        snr = np.asarray(columns["template_peak_snr"], dtype=np.float64)
        out["on_template_source"] = {
            "min_template_snr": SOURCE_SNR,
            "reals_scored_bogus": _on_source(snr, real & ~passed),
            "reals_scored_real": _on_source(snr, real & passed),
            "bogus_scored_real": _on_source(snr, bogus & passed),
            "bogus_scored_bogus": _on_source(snr, bogus & ~passed),
        }
    if "isdiffpos" in columns:
        # 't': new - ref, a brightening; 'f': ref - new, a fading source (the simulation has none;
        # check_ztf swaps new and ref for those unless orient=False)
        sign = np.asarray(columns["isdiffpos"]).astype(str)
        out["by_isdiffpos"] = {}
        for s in np.unique(sign):
            sel = sign == s
            group = {
                "n": int(sel.sum()),
                "n_probably_real": int((real & sel).sum()),
                "n_probably_bogus": int((bogus & sel).sum()),
                "auc": M.auc(scores[sel], labels[sel]) if (real & sel).any() and (bogus & sel).any() else None,
                "reals_scored_real": _fraction(passed[real & sel], confidence),
                "bogus_scored_bogus": _fraction(~passed[bogus & sel], confidence),
            }
            out["by_isdiffpos"][str(s)] = group
    return out


# ----------------------------------------------------------------------------- figures
def check_figure(scores, columns: Mapping[str, np.ndarray], summary: Mapping, title: str | None = None):
    """Score histograms, our score against ``drb``, and the ROC curve (probable real vs bogus)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from realbogus.evaluation import metrics as M

    scores = np.asarray(scores, np.float64)
    drb = np.asarray(columns["drb"], np.float64)
    has, real, bogus = _classes(columns["drb"], summary["drb_real"], summary["drb_bogus"])
    asteroid = _asteroids(np.asarray(columns["ssdistnr"], np.float64), summary["asteroids"]["max_distance_arcsec"])
    threshold = summary["score_threshold"]
    fig = Figure(figsize=(13.0, 4.0), layout="constrained")
    ax_h, ax_s, ax_r = fig.subplots(1, 3)

    bins = np.linspace(0.0, 1.0, 21)
    for name, sel, colour, style in ((f"drb >= {summary['drb_real']:g}", real, _REAL_COLOUR, "-"),
                                     (f"drb < {summary['drb_bogus']:g}", bogus, _BOGUS_COLOUR, "-"),
                                     ("asteroids", asteroid, _ASTEROID_COLOUR, "--")):
        if sel.any():
            ax_h.hist(scores[sel], bins=bins, histtype="step", color=colour, ls=style, lw=1.4,
                      label=f"{name} ({int(sel.sum())})")
    ax_h.axvline(threshold, color="0.3", ls=":", lw=0.9)
    ax_h.set_xlabel("our score (probability of real)")
    ax_h.set_ylabel("alerts")
    ax_h.set_xlim(0, 1)
    ax_h.legend(fontsize=8, loc="upper center")
    ax_h.set_title("our score by ZTF drb class", fontsize=9)

    fade = fading(columns["isdiffpos"])
    rise = ~fade & np.isin(np.char.lower(np.asarray(columns["isdiffpos"]).astype(str)), ("t", "1", "true"))
    colours = np.where(real, _REAL_COLOUR, np.where(bogus, _BOGUS_COLOUR, _BETWEEN_COLOUR))
    for sel, marker in ((has & rise, "o"), (has & fade, "^")):
        ax_s.scatter(drb[sel], scores[sel], c=colours[sel], marker=marker, s=22, alpha=0.8, lw=0)
    other = has & ~rise & ~fade
    ax_s.scatter(drb[other], scores[other], c=colours[other], marker="s", s=18, alpha=0.8, lw=0)
    ax_s.scatter(drb[has & asteroid], scores[has & asteroid], facecolors="none", edgecolors=_ASTEROID_COLOUR,
                 s=70, lw=1.1)
    ax_s.axhline(threshold, color="0.3", ls=":", lw=0.9)
    for x in (summary["drb_bogus"], summary["drb_real"]):
        ax_s.axvline(x, color="0.5", ls="--", lw=0.7)
    ax_s.set_xlim(-0.03, 1.03)
    ax_s.set_ylim(-0.03, 1.03)
    ax_s.set_xlabel("ZTF drb")
    ax_s.set_ylabel("our score")
    rho = summary["spearman"]["rho"]
    ax_s.set_title(f"Spearman rho = {rho:.3f}" if rho is not None else "Spearman rho: n/a", fontsize=9)
    handles = [Line2D([], [], ls="", marker="o", color="0.3", label="isdiffpos t (new - ref)"),
               Line2D([], [], ls="", marker="^", color="0.3",
                      label="isdiffpos f (ref - new), scored swapped" if summary.get("orientation", {}).get("orient")
                      else "isdiffpos f (ref - new)"),
               Line2D([], [], ls="", marker="o", mfc="none", mec=_ASTEROID_COLOUR, ms=8, label="asteroid")]
    if summary["n_without_drb"]:
        handles.append(Line2D([], [], ls="", label=f"{summary['n_without_drb']} without drb not shown"))
    ax_s.legend(handles=handles, fontsize=7, loc="upper left")

    labels = np.where(real, 1, np.where(bogus, 0, -1))
    if summary["auc"] is not None:
        fpr, tpr, _ = M.roc(scores, labels, drop_intermediate=True)
        text = f"AUC {summary['auc']:.3f}"
        if summary["auc_ci"]:
            lo, hi = summary["auc_ci"]
            text += f" ({lo:.3f}-{hi:.3f})"
        ax_r.plot(fpr, tpr, color="k", lw=1.4, drawstyle="steps-post", label=text)
        at = M.rates_at_threshold(scores, labels, threshold)
        ax_r.plot([at.fpr], [at.tpr], "o", color="0.3", ms=5, label=f"score >= {threshold:g}")
        ax_r.legend(fontsize=8, loc="lower right")
    else:
        ax_r.text(0.5, 0.5, "needs probable reals\nand probable bogus", ha="center", va="center", fontsize=9)
    ax_r.plot([0, 1], [0, 1], color="0.7", lw=0.7, ls="--")
    ax_r.set_xlim(0, 1)
    ax_r.set_ylim(0, 1.01)
    ax_r.set_xlabel(f"fraction of drb < {summary['drb_bogus']:g} scored real")
    ax_r.set_ylabel(f"fraction of drb >= {summary['drb_real']:g} scored real")
    ax_r.set_title(f"{summary['n_probably_real']} probable reals vs {summary['n_probably_bogus']} probable bogus",
                   fontsize=9)
    for ax in (ax_h, ax_s, ax_r):
        ax.grid(True, lw=0.4, alpha=0.4)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def worst_figure(images: np.ndarray, scores, columns: Mapping[str, np.ndarray], summary: Mapping,
                 n_worst: int = 8, per_row: int = 4, title: str | None = None, swapped=None):
    """Probable reals with the lowest scores and probable bogus with the highest, as triplets.

    ``images`` are the stamps as scored; ``swapped`` marks those whose channels 0 and 1 were
    exchanged before scoring (shown as ref | new | diff and captioned ``swapped``).
    """
    from matplotlib.figure import Figure

    from realbogus.plots.stamps import plot_triplets

    scores = np.asarray(scores, np.float64)
    drb = np.asarray(columns["drb"], np.float64)
    _, real, bogus = _classes(columns["drb"], summary["drb_real"], summary["drb_bogus"])
    fade = fading(columns["isdiffpos"])
    swapped = np.zeros(len(scores), bool) if swapped is None else np.asarray(swapped, bool)
    nan_count = np.asarray(columns["nan_count"])
    rows_real = np.flatnonzero(real)[np.argsort(scores[real], kind="stable")][:n_worst]
    rows_bogus = np.flatnonzero(bogus)[np.argsort(-scores[bogus], kind="stable")][:n_worst]

    def caption(i: int) -> str:
        text = f"drb {drb[i]:.2f}  ours {scores[i]:.2f}"
        if swapped[i]:
            text += " swapped"
        elif fade[i]:
            text += " ref-new"
        if nan_count[i] > 0:
            text += " masked"
        return text

    groups = [(f"probably real (drb >= {summary['drb_real']:g}), lowest scores", rows_real),
              (f"probably bogus (drb < {summary['drb_bogus']:g}), highest scores", rows_bogus)]
    heights = [max(1, -(-len(rows) // per_row)) for _, rows in groups]
    panel = 0.95
    fig = Figure(figsize=(3 * per_row * panel, sum(heights) * panel * 1.2 + 0.8))
    subs = fig.subfigures(2, 1, height_ratios=[h + 0.3 for h in heights])
    for sub, (name, rows) in zip(subs, groups):
        layout = ("as scored: new | ref | diff; swapped (isdiffpos f): ref | new | diff" if swapped.any()
                  else "as scored: new | ref | diff")
        sub.suptitle(f"{name} ({layout})", fontsize=8, y=0.995)
        if len(rows):
            plot_triplets(images[rows], [caption(i) for i in rows], per_row=per_row, fig=sub)
            sub.subplots_adjust(top=0.82 if len(rows) <= per_row else 0.9)
            # plot_triplets puts each caption over the new panel; centre it over the triplet instead
            axes = np.asarray(sub.axes).reshape(-1, 3 * per_row)
            for k in range(len(rows)):
                r, g = divmod(k, per_row)
                text = axes[r, 3 * g].get_title()
                axes[r, 3 * g].set_title("")
                axes[r, 3 * g + 1].set_title(text, fontsize=6.5, pad=2)
        else:
            sub.text(0.5, 0.5, "none in this file", ha="center", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9, y=1.0, va="bottom")
    return fig


# ----------------------------------------------------------------------------- the check
#: The entries of :func:`summarise` that depend on the scores, repeated under ``unoriented``.
_SCORE_KEYS = ("auc", "auc_ci", "spearman", "reals_scored_real", "bogus_scored_bogus", "median_score",
               "asteroids", "by_isdiffpos")


def _network(model) -> tuple[object, str]:
    """(Keras network, description) for a run folder, a ``.keras`` file or a network."""
    if isinstance(model, (str, os.PathLike)):
        from realbogus.models import load_model
        from realbogus.predict import resolve_model

        keras_path, _ = resolve_model(model)
        return load_model(keras_path), str(keras_path)
    if not hasattr(model, "input_shape"):
        raise ConfigError(f"model must be a run folder, a .keras file or a Keras network; got {type(model).__name__}")
    return model, f"in-memory network {getattr(model, 'name', '')}".strip()


def check_ztf(
    model,
    npz_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    drb_real: float = 0.9,
    drb_bogus: float = 0.1,
    score_threshold: float = 0.5,
    asteroid_radius: float = 5.0,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    n_worst: int = 8,
    batch_size: int = 256,
    precision: str = "float32",
    nan_policy: str = "error",
    title: str | None = None,
    orient: bool = True,
) -> dict:
    """Score the ZTF alerts of ``npz_path`` with ``model`` and write the check into ``out_dir``.

    Parameters
    ----------
    model
        A run folder (holding ``model.keras``), a ``.keras`` file, or a Keras network (raw
        counts -> logits [bogus, real]).
    npz_path
        The alert archive (see :func:`load_alerts`).
    out_dir
        Output folder (created); its files are replaced atomically.
    drb_real, drb_bogus
        ``drb >= drb_real``: probably real; ``drb < drb_bogus``: probably bogus.
    score_threshold, asteroid_radius, n_bootstrap, confidence, seed
        See :func:`summarise`.
    n_worst
        Triplets per group in ``ztf_worst.png``.
    batch_size, precision
        Stamps per network call and compute precision (see :class:`realbogus.deploy.inference.Scorer`).
    nan_policy
        For pixels still NaN/inf in the file: ``error`` or ``fill`` (see :func:`load_alerts`).
    title
        Figure title; default: the model and the input.
    orient
        Score alerts with ``isdiffpos`` false (template minus science, see :func:`fading`) with
        channels 0 and 1 swapped, so that every triplet reads (image where the candidate is
        brighter, the other image, positive difference) as in the training data; the numbers for
        the stamps as stored are then added under ``unoriented``. False: score the stamps as stored.

    Returns
    -------
    dict
        The content of ``ztf_check.json``.

    Raises
    ------
    DataError
        A missing or unusable input file or model.
    ConfigError
        Inconsistent settings.
    """
    if not 0.0 <= float(drb_bogus) <= float(drb_real) <= 1.0:
        raise ConfigError(f"need 0 <= drb_bogus <= drb_real <= 1; got drb_bogus={drb_bogus}, drb_real={drb_real}")
    if not 0.0 < float(confidence) < 1.0:
        raise ConfigError(f"confidence={confidence} must lie in (0, 1)")
    if int(n_bootstrap) < 0 or int(n_worst) < 0 or float(asteroid_radius) < 0:
        raise ConfigError("n_bootstrap, n_worst and asteroid_radius must not be negative")
    if not isinstance(orient, (bool, np.bool_)):
        raise ConfigError(f"orient={orient!r} must be True or False")
    images, columns = load_alerts(npz_path, nan_policy=nan_policy)  # fails before TensorFlow starts
    network, model_name = _network(model)

    from realbogus.deploy.inference import Scorer
    from realbogus.evaluation.plots import save_figure
    from realbogus.io import save_csv_table, save_json

    columns["template_peak_snr"] = template_peak_snr(images)
    fade = fading(columns["isdiffpos"])
    swapped = fade if orient else np.zeros_like(fade)
    scored = orient_triplets(images, swapped) if swapped.any() else images
    start = time.perf_counter()
    scorer = Scorer(network, batch_size=batch_size, precision=precision)
    scores = scorer.scores(scored)
    seconds = time.perf_counter() - start
    unoriented_scores = None
    if orient:  # the swapped alerts once more as stored; the others score the same either way
        unoriented_scores = scores.copy()
        if swapped.any():
            unoriented_scores[swapped] = scorer.scores(images[swapped])
    options = dict(drb_real=drb_real, drb_bogus=drb_bogus, score_threshold=score_threshold,
                   asteroid_radius=asteroid_radius, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    summary = {
        "model": model_name,
        "input": str(npz_path),
        "orientation": {
            "orient": bool(orient),
            "n_swapped": int(swapped.sum()),
            "n_fading": int(fade.sum()),
            "rule": ("isdiffpos false ('f', '0', 0, False: template - science) scored with channels 0 and 1 "
                     "swapped, as (ref, new, diff)" if orient else "every alert scored as stored (new, ref, diff)"),
        },
        **summarise(scores, columns, **options),
        "precision": scorer.precision,
        "scoring_seconds": seconds,
    }
    if orient:
        plain = summarise(unoriented_scores, columns, **options)
        summary["unoriented"] = {key: plain[key] for key in _SCORE_KEYS if key in plain}

    has, real, bogus = _classes(columns["drb"], drb_real, drb_bogus)
    drb_class = np.where(real, "real", np.where(bogus, "bogus", np.where(has, "between", "none")))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_csv_table(out / SCORES_FILE, {
        "index": np.arange(len(scores)),
        **{k: columns[k] for k in ("candid", "objectId", "drb", "rb", "isdiffpos", "magpsf", "ssdistnr",
                                   "nan_count", "template_peak_snr")},
        "drb_class": drb_class,
        "asteroid": _asteroids(columns["ssdistnr"], asteroid_radius).astype(np.int8),
        "swapped": swapped.astype(np.int8),
        "score": scores,
        **({"score_unoriented": unoriented_scores} if orient else {}),
    }, float_format="%.10g")
    title = title or f"{model_name} on {Path(npz_path).name}"
    if swapped.any():
        title += f" (scored as oriented: {int(swapped.sum())} isdiffpos=f alerts with new/ref swapped)"
    save_figure(check_figure(scores, columns, summary, title=title), out / FIGURE_FILE)
    save_figure(worst_figure(scored, scores, columns, summary, n_worst=int(n_worst), title=title, swapped=swapped),
                out / WORST_FILE)
    save_json(out / CHECK_FILE, summary)
    return summary


def format_summary(summary: Mapping) -> str:
    """A few lines for the terminal."""

    def frac(entry) -> str:
        if entry["fraction"] is None:
            return "n/a"
        lo, hi = entry["ci"]
        return f"{entry['fraction']:.3f} ({entry['k']}/{entry['n']}, {lo:.2f}-{hi:.2f})"

    s = summary
    auc = "n/a" if s["auc"] is None else f"{s['auc']:.3f}"
    if s["auc"] is not None and s["auc_ci"]:
        auc += f" ({s['auc_ci'][0]:.3f}-{s['auc_ci'][1]:.3f})"
    rho = s["spearman"]["rho"]
    t = s["score_threshold"]
    lines = [
        f"{s['n_alerts']} alerts, {s['n_with_drb']} with drb: {s['n_probably_real']} probably real "
        f"(drb >= {s['drb_real']:g}), {s['n_probably_bogus']} probably bogus (drb < {s['drb_bogus']:g}), "
        f"{s['n_asteroids']} asteroids, {s['n_masked_stamps']} with masked pixels",
        f"AUC (probable real vs bogus): {auc}; Spearman rho with drb: {'n/a' if rho is None else f'{rho:.3f}'}",
        f"probable reals scored >= {t:g}: {frac(s['reals_scored_real'])}",
        f"probable bogus scored < {t:g}: {frac(s['bogus_scored_bogus'])}",
        f"asteroids scored >= {t:g}: {frac(s['asteroids']['scored_real'])}",
    ]
    src = s.get("on_template_source")
    if src is not None:
        lines.append(f"on a template source (>= {src['min_template_snr']:g} sigma at the centre): "
                     + ", ".join(f"{name.replace('_', ' ')} {g['n_on_source']}/{g['n']}"
                                 for name, g in src.items() if isinstance(g, dict)))
    for sign, g in (s.get("by_isdiffpos") or {}).items():
        auc_g = "n/a" if g["auc"] is None else f"{g['auc']:.3f}"
        lines.append(f"isdiffpos={sign}: {g['n']} alerts, AUC {auc_g}, reals scored real "
                     f"{frac(g['reals_scored_real'])}, bogus scored bogus {frac(g['bogus_scored_bogus'])}")
    o = s.get("orientation")
    if o is not None:
        lines.append(f"orientation: {o['n_swapped']} of {s['n_alerts']} alerts (isdiffpos=f) scored with new/ref "
                     f"swapped" if o["orient"] else "orientation: every alert scored as stored (orient=false)")
    u = s.get("unoriented")
    if u is not None:
        auc_u = "n/a" if u["auc"] is None else f"{u['auc']:.3f}"
        if u["auc"] is not None and u["auc_ci"]:
            auc_u += f" ({u['auc_ci'][0]:.3f}-{u['auc_ci'][1]:.3f})"
        lines.append(f"without the swap: AUC {auc_u}; reals scored real {frac(u['reals_scored_real'])}; "
                     f"bogus scored bogus {frac(u['bogus_scored_bogus'])}")
        for sign, g in (u.get("by_isdiffpos") or {}).items():
            auc_g = "n/a" if g["auc"] is None else f"{g['auc']:.3f}"
            lines.append(f"  without the swap, isdiffpos={sign}: AUC {auc_g}, reals scored real "
                         f"{frac(g['reals_scored_real'])}, bogus scored bogus {frac(g['bogus_scored_bogus'])}")
    return "\n".join(lines)
