"""The floor: the FPR an oracle reaches using only what the simulated stamps make knowable.

Why there is a floor
--------------------
The simulator draws a ``noise_peak`` bogus as pure background conditioned on its matched-filter
S/N ``v`` in the difference image: the noise is drawn, then the PSF-shaped component that sets
the matched filter to ``v`` is imposed (:meth:`realbogus.simulation.scenes.Scene.finish`). For
white Gaussian noise the matched-filter statistic is sufficient for a PSF's amplitude, so given
``v`` such a stamp is distributed exactly like a point source with no host (an injection at a
random position, a hostless transient) whose observed S/N is ``v``. No classifier can tell the
two apart beyond what ``v`` itself says: at each ``v`` the best possible score is the posterior

    P(real | v) = pi_r f_r(v) / (pi_r f_r(v) + pi_b f_b(v)),

whose ranking is that of the likelihood ratio ``f_r(v) / f_b(v)`` of the two classes' S/N
distributions. Every other kind is treated as knowable: a bogus kind that is not confusable
(residuals, cosmic rays, defects ...) gets score 0, a real kind that is not (a source on or near
a visible host) score 1.

The oracle
----------
- The confusable kinds are ``noise_peak`` against the hostless point-source reals
  (:data:`HOSTLESS_REALS`; ``confusable_reals="all"`` makes every real kind confusable, the
  S/N-only view in which a host is no evidence -- an estimate, no longer a bound).
- ``f_r`` and ``f_b`` are histograms of the S/N of the confusable reals and bogus of the
  *training* split (what a model trained there could know), in bins holding equal numbers of
  them, with half a count added to every bin (no empty bin gives 0/0). The log likelihood ratio
  is interpolated linearly in log S/N between bin centres (constant beyond the outer ones), so
  the score is continuous and ties are only between equal S/N values.
- The prior odds ``pi_r / pi_b`` are the training counts'; they shift every score alike and
  change no rate.

FPR at TPR 0.9 of the oracle on the test split, with a bootstrap interval from
:func:`realbogus.evaluation.metrics.bootstrap`, is the floor: what no classifier of these stamps
can beat, up to the approximations below. A method's FPR minus the floor is what it could still
gain; :func:`pass_rates` shows where (which bogus kinds pass, at which S/N).

Approximations, all toward a lower floor (an oracle that knows more than a model can): hosts and
non-confusable kinds are taken as perfectly recognisable, also when faint; the source's own
photon noise (negligible near the threshold) is ignored; the S/N distributions are estimated on
the training split, whose real S/N distribution differs from the test transients' -- the ranking
by S/N changes little as long as the likelihood ratio rises with S/N, which it does where the
noise peaks' steep S/N distribution falls off. ``fit="test"`` estimates them on the test split
itself (in-sample, the population-optimal oracle).

What the oracle shows on the simulated data (smoke scale, 150 test reals): with hosts knowable,
the hosted test reals (90% of them) already make TPR 0.9, so the floor at TPR 0.9 is 0 -- the
confusion of noise peaks with hostless reals only bites above TPR ~0.9. In the S/N-only view it
is ~3e-3. Every bogus kind is drawn above the detection threshold (S/N 5), the reals are not, so
an S/N below 5 is itself evidence of a real; the fitted ratio shows it.

Use
---
From Python: :func:`oracle_floor` (``train.h5``, ``test.h5`` -> JSON-ready dict) and
:func:`method_pass_rates` (a run's ``predictions.csv`` and ``test.h5``); plots in
:func:`realbogus.evaluation.plots.pass_rate_figure`. From the shell::

    python -m realbogus.evaluation.floor --data data/quick --runs experiments/train/RUN ... --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from realbogus.evaluation.metrics import auc, bootstrap, breakdown, fpr_at_tpr

__all__ = [
    "CONFUSABLE_BOGUS",
    "HOSTLESS_REALS",
    "SNR_EDGES",
    "SnrLikelihoodRatio",
    "read_truth",
    "confusable_masks",
    "fit_likelihood_ratio",
    "oracle_scores",
    "floor_at_tpr",
    "oracle_floor",
    "oracle_pass_rates",
    "pass_rates",
    "method_pass_rates",
    "main",
]

#: Bogus kinds drawn exactly like a point source of the same S/N (see the module docstring).
CONFUSABLE_BOGUS = ("noise_peak",)
#: Real kinds that are a point source without a host: nothing but the S/N tells them from a noise peak.
HOSTLESS_REALS = ("rand_artificial_real", "sn_hostless")
#: Default S/N bins of the pass-rate tables (difference-image matched-filter S/N).
SNR_EDGES = (-np.inf, 5.0, 6.0, 7.0, 8.0, 10.0, 15.0, 30.0, 100.0, np.inf)


def read_truth(path: str | os.PathLike) -> dict:
    """The ground-truth columns of a simulated split: ``kind`` (names), ``snr``, ``true_label``, ``label``.

    Raises
    ------
    DataError
        If the file is missing or lacks ``snr`` or ``true_label`` (not simulated data).
    """
    from realbogus.data.format import open_dataset
    from realbogus.errors import DataError

    with open_dataset(path) as ds:
        missing = [c for c in ("snr", "true_label", "kind") if c not in ds.fields]
        if missing:
            raise DataError(f"{path}: no {', '.join(missing)} column (the floor needs simulated ground truth)")
        names = np.asarray(ds.kind_names, dtype=object)
        return {
            "kind": names[ds.column("kind").astype(np.int64)].astype(str),
            "snr": ds.column("snr").astype(np.float64),
            "true_label": ds.column("true_label").astype(np.int64),
            "label": ds.column("label").astype(np.int64),
        }


def _resolve_reals(confusable_reals, kinds: np.ndarray, true_label: np.ndarray) -> tuple[str, ...]:
    if isinstance(confusable_reals, str):
        if confusable_reals == "hostless":
            return HOSTLESS_REALS
        if confusable_reals == "all":
            return tuple(np.unique(kinds[true_label == 1]).tolist())
        raise ValueError(f"confusable_reals must be 'hostless', 'all' or a list of kinds, got {confusable_reals!r}")
    return tuple(confusable_reals)


def confusable_masks(kind, true_label, confusable_bogus: Sequence[str] = CONFUSABLE_BOGUS,
                     confusable_reals="hostless") -> tuple[np.ndarray, np.ndarray]:
    """Masks of the confusable bogus and the confusable reals (by kind name and true class)."""
    kind = np.asarray(kind).astype(str)
    true_label = np.asarray(true_label)
    reals = _resolve_reals(confusable_reals, kind, true_label)
    bogus_mask = np.isin(kind, list(confusable_bogus)) & (true_label == 0)
    real_mask = np.isin(kind, list(reals)) & (true_label == 1)
    return bogus_mask, real_mask


@dataclass(frozen=True)
class SnrLikelihoodRatio:
    """The binned likelihood ratio ``f_r(v) / f_b(v)`` of the confusable kinds' S/N.

    Attributes
    ----------
    edges : numpy.ndarray
        Bin edges in S/N (increasing; the outer ones are the data's extremes).
    counts_real, counts_bogus : numpy.ndarray
        Samples per bin.
    log_lr : numpy.ndarray
        ``log f_r / f_b`` per bin, with half a count added to every bin.
    log_prior_odds : float
        ``log(n_real / n_bogus)`` of the fitted samples.
    """

    edges: np.ndarray
    counts_real: np.ndarray
    counts_bogus: np.ndarray
    log_lr: np.ndarray
    log_prior_odds: float

    def log_odds(self, snr) -> np.ndarray:
        """Posterior log odds of real at each S/N: interpolated log LR plus the prior odds."""
        snr = np.asarray(snr, dtype=np.float64)
        centres = np.log(np.sqrt(np.maximum(self.edges[:-1], 1e-3) * np.maximum(self.edges[1:], 1e-3)))
        return np.interp(np.log(np.maximum(snr, 1e-3)), centres, self.log_lr) + self.log_prior_odds

    def table(self) -> dict:
        """JSON-ready bins: edges, counts and log likelihood ratios."""
        return {"edges": self.edges.tolist(), "n_real": self.counts_real.tolist(),
                "n_bogus": self.counts_bogus.tolist(), "log_lr": self.log_lr.tolist(),
                "log_prior_odds": self.log_prior_odds}


def fit_likelihood_ratio(snr_real, snr_bogus, n_bins: int = 20) -> SnrLikelihoodRatio:
    """Histogram the two classes' S/N in ``n_bins`` bins of equal pooled counts.

    Parameters
    ----------
    snr_real, snr_bogus : array-like
        S/N of the confusable reals and bogus (non-finite values are dropped).
    n_bins : int
        Number of bins (fewer if the pooled S/N values have fewer distinct quantiles).

    Returns
    -------
    SnrLikelihoodRatio
    """
    r = np.asarray(snr_real, dtype=np.float64)
    b = np.asarray(snr_bogus, dtype=np.float64)
    r, b = r[np.isfinite(r)], b[np.isfinite(b)]
    if r.size == 0 or b.size == 0:
        raise ValueError(f"need confusable samples of both classes to fit (reals {r.size}, bogus {b.size})")
    pooled = np.concatenate([r, b])
    edges = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, int(n_bins) + 1)))
    if edges.size < 2:
        edges = np.array([pooled.min() - 0.5, pooled.max() + 0.5])
    inner = edges[1:-1]
    counts_real = np.bincount(np.searchsorted(inner, r, side="right"), minlength=edges.size - 1)
    counts_bogus = np.bincount(np.searchsorted(inner, b, side="right"), minlength=edges.size - 1)
    log_lr = np.log((counts_real + 0.5) / (r.size + 0.5 * counts_real.size)) - np.log(
        (counts_bogus + 0.5) / (b.size + 0.5 * counts_bogus.size)
    )
    return SnrLikelihoodRatio(edges, counts_real, counts_bogus, log_lr, float(np.log(r.size / b.size)))


def oracle_scores(kind, snr, true_label, ratio: SnrLikelihoodRatio, confusable_bogus: Sequence[str] = CONFUSABLE_BOGUS,
                  confusable_reals="hostless") -> np.ndarray:
    """The oracle's probability of real for every sample.

    Confusable samples get the posterior from ``ratio`` (kept strictly inside (0, 1)); other
    bogus 0 and other reals 1; samples of unknown class (``true_label`` < 0) NaN.
    """
    true_label = np.asarray(true_label)
    bogus_mask, real_mask = confusable_masks(kind, true_label, confusable_bogus, confusable_reals)
    scores = np.where(true_label == 1, 1.0, np.where(true_label == 0, 0.0, np.nan))
    conf = bogus_mask | real_mask
    odds = ratio.log_odds(np.asarray(snr, dtype=np.float64)[conf])
    scores[conf] = np.clip(1.0 / (1.0 + np.exp(-odds)), 1e-15, 1.0 - 1e-15)
    return scores


def floor_at_tpr(scores, labels, tpr: float = 0.9, n_bootstrap: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> dict:
    """FPR at ``tpr`` and the AUC, with bootstrap intervals (classes resampled separately), JSON-ready."""
    point = fpr_at_tpr(scores, labels, tpr)
    out = {"tpr_target": float(tpr), "fpr": point.fpr, "tpr": point.tpr, "threshold": point.threshold,
           "auc": auc(scores, labels)}
    if n_bootstrap > 0:
        draws = bootstrap(scores, labels, n_resamples=n_bootstrap, seed=seed, tpr_targets=[tpr], fpr_targets=[])
        alpha = (1.0 - confidence) / 2.0
        lo, hi = np.quantile(draws[f"fpr@{float(tpr)}"], [alpha, 1.0 - alpha])
        out["fpr_ci"] = [float(lo), float(hi)]
        # the AUC comes with the same draws: the floor's row in a table of methods needs both
        out["auc_ci"] = [float(v) for v in np.quantile(draws["auc"], [alpha, 1.0 - alpha])]
        out["confidence"] = float(confidence)
    return out


def _oracle_on_test(train_path, test_path, fit, confusable_bogus, confusable_reals, n_bins, test_rows=None):
    """(test truth, fitted ratio, oracle scores of the test split, or of its rows ``test_rows``)."""
    if fit not in ("train", "test"):
        raise ValueError(f"fit must be 'train' or 'test', got {fit!r}")
    test = read_truth(test_path)
    if test_rows is not None:
        # the floor of the stamps a comparison was scored on (e.g. some sensors' test rows)
        rows = np.asarray(test_rows, dtype=np.int64)
        test = {k: v[rows] for k, v in test.items()}
    source = read_truth(train_path) if fit == "train" else test
    # the truth, not the (possibly wrong) training label, says what a sample is
    bogus_mask, real_mask = confusable_masks(source["kind"], source["true_label"], confusable_bogus, confusable_reals)
    ratio = fit_likelihood_ratio(source["snr"][real_mask], source["snr"][bogus_mask], n_bins=n_bins)
    scores = oracle_scores(test["kind"], test["snr"], test["true_label"], ratio, confusable_bogus, confusable_reals)
    return test, ratio, scores


def oracle_floor(train_path, test_path, tpr: float = 0.9, fit: str = "train",
                 confusable_bogus: Sequence[str] = CONFUSABLE_BOGUS, confusable_reals="hostless",
                 n_bins: int = 20, n_bootstrap: int = 1000, seed: int = 0, test_rows=None) -> dict:
    """The oracle's FPR at ``tpr`` on the test split (see the module docstring).

    Parameters
    ----------
    train_path, test_path : path-like
        Simulated ``train.h5`` and ``test.h5`` (with ``kind``, ``snr``, ``true_label``).
    tpr : float
        TPR of the operating point.
    fit : {"train", "test"}
        Split on which the S/N likelihood ratio is estimated.
    confusable_bogus, confusable_reals
        Kinds treated as indistinguishable at equal S/N; ``confusable_reals`` may be
        ``"hostless"`` (:data:`HOSTLESS_REALS`), ``"all"`` or a list of kind names.
    n_bins, n_bootstrap, seed
        Histogram bins; bootstrap resamples and seed of the interval.
    test_rows : array-like of int, optional
        Rows of ``test_path`` to score (default: every row); with ``fit="test"`` also the fit's.

    Returns
    -------
    dict
        ``fpr``, ``tpr``, ``threshold``, ``fpr_ci``, ``auc``, ``auc_ci``; ``n_test`` and the
        confusable counts of the test split; ``likelihood_ratio`` (the fitted bins); and the
        settings used.
    """
    test, ratio, scores = _oracle_on_test(train_path, test_path, fit, confusable_bogus, confusable_reals, n_bins,
                                          test_rows)
    labels = test["true_label"]
    out = floor_at_tpr(scores, labels, tpr, n_bootstrap=n_bootstrap, seed=seed)
    t_bogus, t_real = confusable_masks(test["kind"], labels, confusable_bogus, confusable_reals)
    out.update({
        "n_test_real": int(np.sum(labels == 1)), "n_test_bogus": int(np.sum(labels == 0)),
        "n_test_confusable_real": int(t_real.sum()), "n_test_confusable_bogus": int(t_bogus.sum()),
        "fit": fit, "confusable_bogus": list(confusable_bogus),
        "confusable_reals": list(_resolve_reals(confusable_reals, test["kind"], labels)),
        "likelihood_ratio": ratio.table(),
    })
    return out


def _snr_bin_labels(edges: Sequence[float]) -> list[str]:
    def fmt(v):
        return "inf" if np.isinf(v) else f"{v:g}"

    return [f"<{fmt(hi)}" if np.isinf(lo) else (f">={fmt(lo)}" if np.isinf(hi) else f"{fmt(lo)}-{fmt(hi)}")
            for lo, hi in zip(edges[:-1], edges[1:])]


def pass_rates(scores, labels, kind, snr, tpr: float = 0.9, snr_edges: Sequence[float] = SNR_EDGES,
               threshold: float | None = None) -> dict:
    """Where a classifier's false positives come from, at the threshold reaching ``tpr``.

    Parameters
    ----------
    scores, labels : array-like
        Probabilities of real and true labels (1, 0; -1 left out).
    kind : array-like of str
        Kind name of each sample.
    snr : array-like
        Difference-image matched-filter S/N of each sample.
    tpr : float
        TPR defining the threshold (over all samples).
    snr_edges : sequence of float
        S/N bin edges (use -inf and inf to catch everything).
    threshold : float, optional
        Use this score threshold instead.

    Returns
    -------
    dict
        ``threshold``, ``tpr``, ``fpr`` (overall), ``by_kind`` and ``by_snr``: tables from
        :func:`realbogus.evaluation.metrics.breakdown` (``group`` is the kind name or the S/N bin
        label; ``fpr`` is a bogus group's pass rate, ``tpr`` a real group's), plus in each table
        ``share``: the group's part of all false positives.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if threshold is None:
        point = fpr_at_tpr(scores, labels, tpr)
        threshold = point.threshold
    keep = labels >= 0
    passed_bogus = (scores >= threshold) & (labels == 0)
    total_fp = max(int(passed_bogus.sum()), 1)
    edges = np.asarray(snr_edges, dtype=np.float64)
    snr = np.asarray(snr, dtype=np.float64)
    bin_index = np.clip(np.searchsorted(edges, np.nan_to_num(snr, nan=-np.inf), side="right") - 1, 0, edges.size - 2)
    labels_text = np.asarray(_snr_bin_labels(edges))
    out = {"threshold": float(threshold), "tpr": float(np.mean(scores[labels == 1] >= threshold)),
           "fpr": float(np.mean(scores[labels == 0] >= threshold))}
    for name, groups in (("by_kind", np.asarray(kind).astype(str)), ("by_snr", bin_index)):
        table = breakdown(scores[keep], labels[keep], groups[keep], threshold=threshold)
        table["share"] = table["n_bogus_passed"] / total_fp
        if name == "by_snr":
            table["group"] = labels_text[table["group"]]
        out[name] = table
    return out


def method_pass_rates(predictions, test_path, tpr: float = 0.9, snr_edges: Sequence[float] = SNR_EDGES) -> dict:
    """:func:`pass_rates` of a run, from its ``predictions.csv`` and the test file's truth.

    Parameters
    ----------
    predictions : path-like or mapping
        A run folder, its ``predictions.csv``, or columns as read by
        :func:`realbogus.evaluation.report.read_predictions` (``index``: row in ``test_path``).
    test_path : path-like
        The simulated ``test.h5`` the predictions were made on.
    """
    from realbogus.errors import DataError
    from realbogus.evaluation.report import read_predictions

    pred = predictions if isinstance(predictions, Mapping) else read_predictions(predictions)
    truth = read_truth(test_path)
    index = np.asarray(pred["index"], dtype=np.int64)
    if index.size and (index.min() < 0 or index.max() >= truth["snr"].size):
        raise DataError(f"predictions index out of range of {test_path} ({truth['snr'].size} rows)")
    return pass_rates(pred["score"], truth["true_label"][index], truth["kind"][index], truth["snr"][index],
                      tpr=tpr, snr_edges=snr_edges)


def oracle_pass_rates(train_path, test_path, tpr: float = 0.9, snr_edges: Sequence[float] = SNR_EDGES,
                      fit: str = "train", confusable_bogus: Sequence[str] = CONFUSABLE_BOGUS,
                      confusable_reals="hostless", n_bins: int = 20, test_rows=None) -> dict:
    """:func:`pass_rates` of the oracle (the oracle's settings as for :func:`oracle_floor`)."""
    test, _, scores = _oracle_on_test(train_path, test_path, fit, confusable_bogus, confusable_reals, n_bins,
                                      test_rows)
    return pass_rates(scores, test["true_label"], test["kind"], test["snr"], tpr=tpr, snr_edges=snr_edges)


def _jsonable(table: Mapping) -> list[dict]:
    keys = list(table)
    rows = []
    for i in range(len(table[keys[0]])):
        row = {}
        for k in keys:
            v = table[k][i]
            row[k] = v.item() if hasattr(v, "item") else v
            if isinstance(row[k], float) and not np.isfinite(row[k]):
                row[k] = None
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: the oracle floor and every given run's pass rates, as JSON and a figure."""
    parser = argparse.ArgumentParser(prog="python -m realbogus.evaluation.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder holding the simulated train.h5 and test.h5")
    parser.add_argument("--runs", nargs="*", default=[], help="run folders (or predictions.csv files) to compare")
    parser.add_argument("--out", default=None, help="output folder (default: print the JSON only)")
    parser.add_argument("--tpr", type=float, default=0.9, help="TPR of the operating point")
    parser.add_argument("--fit", choices=("train", "test"), default="train",
                        help="split the S/N likelihood ratio is fitted on")
    parser.add_argument("--confusable-reals", default="hostless", help="hostless, all, or comma-separated kind names")
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples of the floor's interval")
    args = parser.parse_args(argv)
    reals = args.confusable_reals if args.confusable_reals in ("hostless", "all") else args.confusable_reals.split(",")
    data = Path(args.data)
    train_path, test_path = data / "train.h5", data / "test.h5"
    result = {"floor": oracle_floor(train_path, test_path, tpr=args.tpr, fit=args.fit, confusable_reals=reals,
                                    n_bootstrap=args.n_bootstrap)}
    tables = {"oracle": oracle_pass_rates(train_path, test_path, tpr=args.tpr, fit=args.fit, confusable_reals=reals)}
    for run in args.runs:
        name = Path(run).name if Path(run).is_dir() else Path(run).parent.name
        tables[name] = method_pass_rates(run, test_path, tpr=args.tpr)
    result["pass_rates"] = {
        name: {"threshold": t["threshold"], "tpr": t["tpr"], "fpr": t["fpr"],
               "by_kind": _jsonable(t["by_kind"]), "by_snr": _jsonable(t["by_snr"])}
        for name, t in tables.items()
    }
    if args.out:
        from realbogus.evaluation.plots import plot_pass_rates
        from realbogus.io import save_json

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        save_json(out / "floor.json", result)
        plot_pass_rates(tables, out / "pass_rates", title=f"pass rates at TPR {args.tpr:g}")
    else:
        print(json.dumps(result["floor"], indent=2))
    return result


if __name__ == "__main__":  # pragma: no cover
    main()
