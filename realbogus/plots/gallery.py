"""Gallery of every simulated kind, for each camera preset, next to real ZTF alert triplets.

    python -m realbogus.plots.gallery [--data DIR] [--instrument tomoe ztf] [--ztf PATH]
                                      [--out experiments/figures/stamp_gallery.png]

Top: one (new, ref, diff) triplet of every real and bogus kind, taken from ``DIR/train.h5`` and
``DIR/test.h5`` when ``--data`` is given, else simulated on the fly with each camera preset of
``--instrument`` (one block per preset: Tomo-e Gozen and ZTF by default), preferring a moderate
detection S/N so the feature is visible. Bottom: real ZTF alerts from ``--ztf`` (an ``.npz`` with
``images`` and ``drb``; see ``../shared/data/README.md``), probable reals (drb >= 0.9) and probable
bogus (drb < 0.1); skipped when the file is absent. Every stamp is z-scaled on its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from realbogus.data.kinds import KIND_NAMES, TEST_REAL_KINDS
from realbogus.errors import DataError, report_errors
from realbogus.io import atomic_path
from realbogus.plots.stamps import plot_triplets

__all__ = ["simulated_examples", "ztf_examples", "make_gallery", "main"]

DEFAULT_ZTF = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ztf_alerts_dev.npz"
DEFAULT_OUT = Path("experiments/figures/stamp_gallery.png")
_SHOW_KINDS = [k for k in KIND_NAMES if k != "unknown"]


def _pick(snr: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> int:
    good = rows[(snr[rows] >= 8.0) & (snr[rows] <= 60.0)]
    return int(rng.choice(good if good.size else rows))


def simulated_examples(data_dir: Path | None = None, seed: int = 0,
                       instrument: str = "tomoe") -> tuple[np.ndarray, list[str]]:
    """One triplet per kind: from the files in ``data_dir`` if given, else freshly simulated with
    the camera preset ``instrument`` (``conf/instrument/<instrument>.yaml``)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    if data_dir is not None:
        from realbogus.data.format import open_dataset

        found: dict[str, tuple[Path, int]] = {}
        for split in ("train", "test"):
            path = Path(data_dir) / f"{split}.h5"
            if not path.exists():
                raise DataError(f"{path}: no such file")
            with open_dataset(path) as ds:
                kind, names = ds.column("kind"), ds.kind_names
                snr = ds.column("snr") if "snr" in ds.fields else np.full(kind.size, 20.0)
                for code in np.unique(kind):
                    name = names[code]
                    if name not in found:
                        row = _pick(snr, np.flatnonzero(kind == code), rng)
                        images.append(ds.images([row])[0])
                        labels.append(name)
                        found[name] = (path, row)
        order = [labels.index(k) for k in _SHOW_KINDS if k in labels]
        return np.stack([images[i] for i in order]), [labels[i] for i in order]
    from realbogus.simulation import generate_kind, instrument_preset

    cfg = instrument_preset(instrument)
    for name in _SHOW_KINDS:
        split = "test" if name in TEST_REAL_KINDS else "train"
        out = generate_kind(name, 16, cfg=cfg, seed=seed, split=split)
        row = _pick(out["snr"], np.arange(16), rng)
        images.append(out["images"][row])
        labels.append(name)
    return np.stack(images), labels


def ztf_examples(path: Path, n_each: int = 8) -> tuple[np.ndarray, list[str]] | None:
    """Probable real and probable bogus ZTF triplets, or None if ``path`` is absent."""
    if not Path(path).exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        images = z["images"].astype(np.float32)
        drb = z["drb"].astype(np.float64)
        isdiffpos = z["isdiffpos"] if "isdiffpos" in z.files else None
    real = np.flatnonzero(drb >= 0.9)[:n_each]
    bogus = np.flatnonzero(drb < 0.1)[:n_each]
    rows = np.concatenate([real, bogus])
    # "ref-new": the difference is template minus science (a fading source), still positive.
    labels = [f"ZTF {'real' if drb[i] >= 0.9 else 'bogus'} {drb[i]:.2f}"
              + ("" if isdiffpos is None or str(isdiffpos[i]) == "t" else " ref-new") for i in rows]
    return images[rows], labels


def make_gallery(out: Path, data_dir: Path | None = None, ztf: Path | None = DEFAULT_ZTF, seed: int = 0,
                 fmt: str = "png", instruments: tuple[str, ...] = ("tomoe", "ztf")) -> Path:
    """Draw the gallery and write it to ``out`` (``fmt``: png or pdf, atomically).

    Without ``data_dir``, one block of simulated kinds per camera preset in ``instruments``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if data_dir is not None:
        blocks = [("simulated (new | ref | diff), one per kind", *simulated_examples(data_dir, seed))]
    else:
        blocks = [(f"simulated with the {name} camera (new | ref | diff), one per kind",
                   *simulated_examples(None, seed, name)) for name in instruments]
    zt = ztf_examples(ztf) if ztf is not None else None
    if zt is not None:
        blocks.append(("real ZTF alerts (science | template | difference), drb = ZTF deep real/bogus score", *zt))
    per_row = 4
    panel = 0.95
    rows = [-(-len(labels) // per_row) for _, _, labels in blocks]
    height = sum(rows) * panel * 1.18 + 0.3 * len(blocks)
    fig = plt.figure(figsize=(3 * per_row * panel, height))
    subs = [fig] if len(blocks) == 1 else fig.subfigures(len(blocks), 1, height_ratios=[r + 0.15 for r in rows])
    for sub, (title, images, labels) in zip(subs, blocks):
        sub.suptitle(title, fontsize=8, y=0.998)
        plot_triplets(images, labels, per_row=per_row, fig=sub)
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=72, format=fmt)
    plt.close(fig)
    return out


@report_errors
def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description="Gallery of simulated kinds next to real ZTF stamps.")
    parser.add_argument("--data", type=Path, default=None, help="folder with train.h5 and test.h5 (default: simulate)")
    parser.add_argument("--instrument", nargs="+", default=["tomoe", "ztf"],
                        help="camera presets to simulate, one block each (without --data)")
    parser.add_argument("--ztf", type=Path, default=DEFAULT_ZTF, help="ZTF alert triplets (.npz); skipped if absent")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output PNG")
    parser.add_argument("--seed", type=int, default=0, help="which examples to show")
    args = parser.parse_args(argv)
    out = make_gallery(args.out, args.data, args.ztf, args.seed, instruments=tuple(args.instrument))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
