"""Display (new, reference, difference) stamps the way astronomers look at them: z-scaled.

Each stamp is shown with its own :class:`~astropy.visualization.ZScaleInterval` (the IRAF
"zscale" range around the median), so faint structure shows whatever the counts' scale.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["CHANNEL_NAMES", "zscale_norm", "show_stamp", "plot_triplets"]

CHANNEL_NAMES = ("new", "ref", "diff")


def zscale_norm(image: np.ndarray):
    """An :class:`~astropy.visualization.ImageNormalize` with a z-scale interval for ``image``."""
    from astropy.visualization import ImageNormalize, LinearStretch, ZScaleInterval

    finite = np.asarray(image, np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0 or np.ptp(finite) == 0:
        return ImageNormalize(vmin=-1.0, vmax=1.0)
    return ImageNormalize(finite, interval=ZScaleInterval(), stretch=LinearStretch())


def show_stamp(ax, image: np.ndarray, title: str | None = None, fontsize: float = 6.0) -> None:
    """Draw one stamp on ``ax`` (z-scaled, grey, origin at the lower left, no ticks)."""
    ax.imshow(image, cmap="gray", origin="lower", norm=zscale_norm(image), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize, pad=2)


def plot_triplets(images: np.ndarray, labels: Sequence[str] | None = None, per_row: int = 1,
                  panel_size: float = 0.9, fig=None, channel_titles: bool = True):
    """Plot triplets as (new, ref, diff) panels, ``per_row`` triplets side by side.

    Parameters
    ----------
    images
        (N, 29, 29, 3) stamps.
    labels
        One caption per triplet, written above its ``new`` panel.
    per_row
        Triplets per figure row.
    panel_size
        Size of one panel in inches.
    fig
        Figure to draw into (a new one by default).
    channel_titles
        Name the channels above the first row.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    n = images.shape[0]
    n_rows = max(1, -(-n // per_row))
    n_cols = 3 * per_row
    if fig is None:
        fig = plt.figure(figsize=(n_cols * panel_size, n_rows * panel_size * 1.15))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i in range(n_rows * per_row):
        r, g = divmod(i, per_row)
        for ch in range(3):
            ax = axes[r, 3 * g + ch]
            if i >= n:
                ax.axis("off")
                continue
            title = None
            if ch == 0 and labels is not None:
                title = labels[i]
            elif channel_titles and r == 0 and labels is None:
                title = CHANNEL_NAMES[ch]
            show_stamp(ax, images[i, :, :, ch], title)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.01, wspace=0.05, hspace=0.3)
    return fig
