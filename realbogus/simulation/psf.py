"""Point-spread functions and smoothing kernels evaluated on the stamp's pixel grid.

Every function works on a batch: parameters are 1-D arrays with one entry per stamp, and the
result is a ``(N, size, size)`` float32 array. Pixel ``(i, j)`` of a stamp is row ``i`` (y) and
column ``j`` (x); its centre has coordinates ``(x, y) = (j, i)``, so the centre pixel of a 29-pixel
stamp is at ``(14, 14)`` and a source at ``x0 = 14.3`` sits 0.3 pixel right of that pixel's centre.

The Moffat profile is evaluated at pixel centres (not integrated over pixels) and normalised with
its analytic integral, so ``flux`` is the total flux of the source, including the part that
falls outside the stamp.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "STAMP",
    "moffat_alpha",
    "moffat_fwhm",
    "moffat",
    "gaussian_blob",
    "moffat_neff",
    "gaussian_kernels",
    "smooth",
]

#: Stamp side in pixels.
STAMP = 29
_GRID = np.arange(STAMP, dtype=np.float32)


def moffat_alpha(fwhm, beta):
    """Core width ``alpha`` of a Moffat profile with the given FWHM and power index ``beta``."""
    fwhm = np.asarray(fwhm, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat_fwhm(alpha, beta):
    """FWHM of a Moffat profile with core width ``alpha`` and power index ``beta``."""
    return 2.0 * np.asarray(alpha) * np.sqrt(2.0 ** (1.0 / np.asarray(beta)) - 1.0)


def _offsets(x0, y0, size: int):
    grid = _GRID if size == STAMP else np.arange(size, dtype=np.float32)
    dx = grid[None, None, :] - np.asarray(x0, np.float32)[:, None, None]
    dy = grid[None, :, None] - np.asarray(y0, np.float32)[:, None, None]
    return dx, dy


def _elliptical_r2(dx, dy, ax_major, ax_minor, theta):
    """Squared elliptical radius in units of the two semi-axes (broadcast over the batch)."""
    c = np.cos(theta).astype(np.float32)[:, None, None]
    s = np.sin(theta).astype(np.float32)[:, None, None]
    u = dx * c + dy * s
    v = dy * c - dx * s
    inv_a = (1.0 / np.asarray(ax_major, np.float32))[:, None, None]
    inv_b = (1.0 / np.asarray(ax_minor, np.float32))[:, None, None]
    u *= inv_a
    v *= inv_b
    return u * u + v * v


def moffat(x0, y0, flux, fwhm, beta, axis_ratio=None, theta=None, size: int = STAMP) -> np.ndarray:
    """Moffat point sources, one per stamp, at sub-pixel centres.

    Parameters
    ----------
    x0, y0
        Source centres in pixel coordinates, shape (N,).
    flux
        Total flux of each source (any unit; the result is in the same unit per pixel).
    fwhm
        Geometric-mean FWHM in pixels.
    beta
        Moffat power index (larger is closer to a Gaussian; seeing-limited PSFs have 2.5-5).
    axis_ratio, theta
        Minor/major axis ratio (1 = round) and the major axis' angle from +x in radians. The
        area of the profile is kept fixed, so the FWHM along the major axis is
        ``fwhm / sqrt(axis_ratio)``.
    size
        Side of the square grid.

    Returns
    -------
    numpy.ndarray
        float32 array of shape (N, size, size).
    """
    x0 = np.atleast_1d(x0)
    n = x0.shape[0]
    beta = np.broadcast_to(np.asarray(beta, np.float64), (n,))
    alpha = np.broadcast_to(moffat_alpha(fwhm, beta), (n,))
    dx, dy = _offsets(x0, y0, size)
    if axis_ratio is None:
        r2 = (dx * dx + dy * dy) * (1.0 / (alpha * alpha)).astype(np.float32)[:, None, None]
    else:
        q = np.broadcast_to(np.asarray(axis_ratio, np.float64), (n,))
        th = np.broadcast_to(np.asarray(theta if theta is not None else 0.0, np.float64), (n,))
        sq = np.sqrt(q)
        r2 = _elliptical_r2(dx, dy, alpha / sq, alpha * sq, th)
    # (1 + r^2)^-beta via log1p/exp: both are vectorised float32 kernels in numpy.
    prof = np.log1p(r2, out=r2)
    prof *= (-beta).astype(np.float32)[:, None, None]
    np.exp(prof, out=prof)
    amp = np.asarray(flux, np.float64) * (beta - 1.0) / (np.pi * alpha * alpha)
    prof *= np.broadcast_to(amp, (n,)).astype(np.float32)[:, None, None]
    return prof


def gaussian_blob(x0, y0, flux, sigma, axis_ratio=None, theta=None, size: int = STAMP) -> np.ndarray:
    """Gaussian blobs of total ``flux`` and width ``sigma`` (pixels), one per stamp."""
    x0 = np.atleast_1d(x0)
    n = x0.shape[0]
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), (n,))
    dx, dy = _offsets(x0, y0, size)
    if axis_ratio is None:
        r2 = (dx * dx + dy * dy) * (1.0 / (sigma * sigma)).astype(np.float32)[:, None, None]
    else:
        q = np.broadcast_to(np.asarray(axis_ratio, np.float64), (n,))
        th = np.broadcast_to(np.asarray(theta if theta is not None else 0.0, np.float64), (n,))
        sq = np.sqrt(q)
        r2 = _elliptical_r2(dx, dy, sigma / sq, sigma * sq, th)
    r2 *= np.float32(-0.5)
    prof = np.exp(r2, out=r2)
    amp = np.asarray(flux, np.float64) / (2.0 * np.pi * sigma * sigma)
    prof *= np.broadcast_to(amp, (n,)).astype(np.float32)[:, None, None]
    return prof


def moffat_neff(fwhm, beta):
    """Noise-equivalent area ``1 / integral(p^2)`` of a unit Moffat profile, in pixels."""
    beta = np.asarray(beta, np.float64)
    alpha = moffat_alpha(fwhm, beta)
    return np.pi * alpha**2 * (2.0 * beta - 1.0) / (beta - 1.0) ** 2


def gaussian_kernels(sigma, radius: int) -> np.ndarray:
    """Normalised 1-D Gaussian kernels, one per stamp, shape (N, 2*radius+1).

    A ``sigma`` of zero (or below 0.05 pixel) gives the identity kernel.
    """
    sigma = np.atleast_1d(np.asarray(sigma, np.float64))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    s = np.maximum(sigma, 0.05)[:, None]
    k = np.exp(-0.5 * (t[None, :] / s) ** 2)
    k /= k.sum(axis=1, keepdims=True)
    return k.astype(np.float32)


def smooth(images: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Convolve each padded image with its own separable kernel and crop the padding.

    Parameters
    ----------
    images
        (N, S + 2r, S + 2r) images, padded by ``r`` pixels on each side.
    kernels
        (N, 2r + 1) one-dimensional kernels from :func:`gaussian_kernels`.

    Returns
    -------
    numpy.ndarray
        (N, S, S) smoothed images.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    width = kernels.shape[1]
    # Each pass is a dot product of every pixel's window with its stamp's kernel.
    rows = np.einsum("nijk,nk->nij", sliding_window_view(images, width, axis=2), kernels)
    return np.einsum("nijk,nk->nij", sliding_window_view(rows, width, axis=1), kernels)
