"""The training input pipeline: batches of (stamps, labels) from a realbogus HDF5 file.

:func:`make_dataset` selects rows of a file, optionally replaces their labels (label
treatments, injected label noise, -1 for unlabelled), and yields ``(images float32
(B, 29, 29, 3), labels int32 (B,))`` as a ``tf.data.Dataset``. Two modes give the same samples:

- **in memory** - the selected stamps are read once into RAM (when they fit under
  ``memory_budget`` bytes, about 10 kB per stamp) and each epoch is a fresh permutation;
- **streaming** - stamps stay on disk. Each epoch visits the file in contiguous blocks of
  ``block_rows`` rows in a random block order, gathers ``shuffle_buffer`` rows' worth of
  blocks into a window, permutes the window and cuts it into batches. Memory is bounded by
  the window (about 330 MB by default), so the paper-scale file (33 GB) trains on a small
  machine. Mixing is by block: a window draws from ``shuffle_buffer // block_rows`` random
  places of the file, so a file sorted by class or sensor still gives mixed batches.

Every random choice is a function of the seed and of *where* in training it is made, never of
what ran before in the process: epoch ``e`` is ordered by the seed pair ``(seed, e)``, and the
batch at global step ``s`` (counting every batch since the start of training) is augmented with
``(seed, s)``. A training stream started at step ``s`` (:func:`make_dataset` with
``start_step``) therefore yields exactly the batches an uninterrupted stream yields from step
``s`` on, which is what makes a resumed run identical to an uninterrupted one. Without
shuffling the rows come in the order given. Both modes give the same multiset of samples per
epoch.

Augmentation (``augment=True``) applies one of the 8 rotations and flips of the square to each
stamp, the same to its three channels: a candidate's label does not change under them.
"""

from __future__ import annotations

import itertools
import os
from typing import Iterator, Sequence

import numpy as np

from realbogus.data.format import STAMP_SHAPE, H5Dataset, open_dataset
from realbogus.errors import ConfigError

__all__ = ["make_dataset", "iter_batches", "count_batches", "read_rows", "select_rows", "dihedral", "STAMP_BYTES"]

#: Bytes of one float32 stamp (29 x 29 x 3).
STAMP_BYTES = int(np.prod(STAMP_SHAPE)) * 4
DEFAULT_MEMORY_BUDGET = 2 * 1024**3


def count_batches(n_samples: int, batch_size: int = 256, drop_remainder: bool = False) -> int:
    """Number of batches (steps) in one epoch over ``n_samples`` samples."""
    n_samples, batch_size = int(n_samples), int(batch_size)
    return n_samples // batch_size if drop_remainder else -(-n_samples // batch_size)


def select_rows(
    n_file: int, rows=None, labels=None, file_labels: np.ndarray | None = None, source: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Resolve a row selection and its labels.

    Parameters
    ----------
    n_file
        Rows in the file.
    rows
        Row indices (any order, repeats allowed), a boolean mask of length ``n_file``, or None
        for all rows.
    labels
        Labels for the selection: aligned with ``rows`` when it has ``len(rows)`` entries,
        otherwise with the file (``n_file`` entries, indexed by ``rows``). None: ``file_labels``.
    file_labels
        The file's own ``label`` column.

    Returns
    -------
    rows, labels
        int64 row indices and int32 labels of equal length.
    """
    if rows is None:
        rows = np.arange(n_file, dtype=np.int64)
    else:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (n_file,):
                raise ConfigError(f"{source}: boolean row mask has {rows.size} entries, the file {n_file}")
            rows = np.flatnonzero(rows)
        if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
            raise ConfigError(f"{source}: rows must be a 1-D array of integer indices")
        rows = rows.astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= n_file):
            raise ConfigError(f"{source}: rows reach {rows.min()}..{rows.max()}, the file has {n_file} rows")
    if rows.size == 0:
        raise ConfigError(f"{source}: the row selection is empty")
    if labels is None:
        if file_labels is None:
            raise ConfigError(f"{source}: no labels given and none in the file")
        labels = np.asarray(file_labels)[rows]
    else:
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] == rows.shape[0]:
            pass
        elif labels.shape[0] == n_file:
            labels = labels[rows]
        else:
            raise ConfigError(
                f"{source}: {labels.shape[0]} labels given for {rows.shape[0]} selected rows of a {n_file}-row file"
            )
    if labels.dtype.kind not in "biu" or not np.isin(labels, (-1, 0, 1)).all():
        raise ConfigError(f"{source}: labels must be 1 (real), 0 (bogus) or -1 (unlabelled)")
    return rows, labels.astype(np.int32)


def read_rows(
    ds: H5Dataset, rows: np.ndarray, out: np.ndarray | None = None, max_gap: int = 64, max_span: int = 4096,
) -> np.ndarray:
    """Read the stamps of ``rows`` (any order, repeats allowed) through contiguous slices.

    Sorted rows closer than ``max_gap`` are read in one slice of at most ``max_span`` rows,
    which is far faster than HDF5 point selection and keeps each read bounded.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if out is None:
        out = np.empty((rows.size, *STAMP_SHAPE), np.float32)
    order = np.argsort(rows, kind="stable")
    srt = rows[order]
    i, n = 0, srt.size
    while i < n:
        start = int(srt[i])
        limit = int(np.searchsorted(srt, start + max_span, side="left"))
        gaps = np.flatnonzero(np.diff(srt[i:limit]) > max_gap)
        j = i + int(gaps[0]) + 1 if gaps.size else limit
        block = ds.images(slice(start, int(srt[j - 1]) + 1))
        out[order[i:j]] = block[srt[i:j] - start]
        i = j
    return out


def _batches(x: np.ndarray, y: np.ndarray, order: np.ndarray, batch_size: int, drop_remainder: bool, skip: int = 0):
    n = order.size
    stop = n - n % batch_size if drop_remainder else n
    for s in range(skip * batch_size, stop, batch_size):
        idx = order[s:s + batch_size]
        yield x[idx], y[idx]


def _stream_shuffled(ds, rows, labels, rng, batch_size, drop_remainder, block_rows, shuffle_buffer, skip=0):
    """One epoch: blocks in random order, windows of blocks permuted and cut into batches.

    The first ``skip`` batches are not read: the windows they come from are permuted (the random
    draws are the same as when reading) and only the rows carried into the next window are kept.
    """
    blocks = rows // block_rows
    by_block = np.argsort(blocks, kind="stable")
    _, firsts = np.unique(blocks[by_block], return_index=True)
    groups = np.split(by_block, firsts[1:])
    per_window = max(1, shuffle_buffer // block_rows)
    group_order = rng.permutation(len(groups))
    carry = np.empty(0, np.int64)  # positions (into rows) carried to the next window
    carry_x = np.empty((0, *STAMP_SHAPE), np.float32)
    emitted = 0
    for w in range(0, len(groups), per_window):
        pos = np.concatenate([carry] + [groups[g] for g in group_order[w:w + per_window]])
        perm = rng.permutation(pos.size)
        full = pos.size - pos.size % batch_size
        n_here = full // batch_size
        if emitted + n_here <= skip:  # every batch of this window is skipped: read nothing
            emitted += n_here
            carry, carry_x = pos[perm[full:]], None
            continue
        m = carry.size
        x = np.empty((pos.size, *STAMP_SHAPE), np.float32)
        if carry_x is None:  # the carried rows come from a skipped window: read them now
            read_rows(ds, rows[carry], out=x[:m])
        else:
            x[:m] = carry_x
        read_rows(ds, rows[pos[m:]], out=x[m:])
        y = labels[pos]
        first = max(0, skip - emitted)
        yield from _batches(x, y, perm[:full], batch_size, False, first)
        emitted += n_here
        carry, carry_x = pos[perm[full:]], x[perm[full:]]
        del x
    if carry.size and not drop_remainder and emitted >= skip:
        if carry_x is None:
            carry_x = read_rows(ds, rows[carry])
        yield carry_x, labels[carry]


def _stream_ordered(ds, rows, labels, batch_size, drop_remainder, block_rows, skip=0):
    """One epoch in the order of ``rows``, read a few blocks at a time, from batch ``skip`` on."""
    chunk = batch_size * max(1, block_rows // batch_size)
    for s in range(skip * batch_size, rows.size, chunk):
        part = rows[s:s + chunk]
        x = read_rows(ds, part)
        yield from _batches(x, labels[s:s + chunk], np.arange(part.size), batch_size,
                            drop_remainder and s + chunk >= rows.size)


def dihedral(x: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Apply to each stamp ``x[i]`` (H, W, C) the symmetry ``which[i]`` of the square (0-7).

    ``which % 4`` quarter turns, then a left-right flip when ``which >= 4``; 0 is the identity.
    The channels of a stamp move together.
    """
    out = np.empty_like(x)
    for k in range(8):
        sel = np.flatnonzero(which == k)
        if sel.size == 0:
            continue
        t = np.rot90(x[sel], k % 4, axes=(1, 2))
        out[sel] = t[:, :, ::-1] if k >= 4 else t
    return out


def iter_batches(
    path: str | os.PathLike,
    rows=None,
    labels=None,
    batch_size: int = 256,
    shuffle: bool = False,
    seed: int = 0,
    in_memory: bool | str = "auto",
    drop_remainder: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    block_rows: int = 512,
    shuffle_buffer: int = 32768,
):
    """Return a callable ``epoch_batches(epoch=0, skip=0)`` and the number of batches per epoch.

    ``epoch_batches(e, k)`` returns an iterator of numpy ``(images, labels)`` batches: epoch
    ``e`` from its batch ``k`` on, ordered by ``(seed, e)`` alone. :func:`make_dataset` wraps
    this for ``tf.data``; use it directly when no TensorFlow is wanted. Arguments as in
    :func:`make_dataset`.
    """
    batch_size, block_rows, shuffle_buffer = int(batch_size), int(block_rows), int(shuffle_buffer)
    if batch_size < 1 or block_rows < 1 or shuffle_buffer < 1:
        raise ConfigError("batch_size, block_rows and shuffle_buffer must be positive")
    if in_memory not in (True, False, "auto"):
        raise ConfigError(f"in_memory={in_memory!r} is not one of true, false, auto")
    with open_dataset(path) as ds:
        file_labels = ds.column("label") if labels is None else None
        rows, labels = select_rows(len(ds), rows, labels, file_labels, str(ds.path))
        if in_memory == "auto":
            in_memory = rows.size * STAMP_BYTES <= memory_budget
        images = read_rows(ds, rows) if in_memory else None
    n_batches = count_batches(rows.size, batch_size, drop_remainder)
    if n_batches == 0:
        raise ConfigError(f"{path}: {rows.size} samples make no batch of {batch_size} with drop_remainder")

    def epoch_batches(epoch: int = 0, skip: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches ``skip, skip + 1, ...`` of epoch ``epoch`` (the order depends on both only)."""
        rng = np.random.default_rng([int(seed), int(epoch)])
        if images is not None:
            order = rng.permutation(rows.size) if shuffle else np.arange(rows.size)
            yield from _batches(images, labels, order, batch_size, drop_remainder, skip)
            return
        with open_dataset(path) as ds:
            if shuffle:
                yield from _stream_shuffled(ds, rows, labels, rng, batch_size, drop_remainder,
                                            block_rows, shuffle_buffer, skip)
            else:
                yield from _stream_ordered(ds, rows, labels, batch_size, drop_remainder, block_rows, skip)

    epoch_batches.in_memory = bool(in_memory)
    epoch_batches.n_samples = int(rows.size)
    return epoch_batches, n_batches


def training_stream(epoch_batches, n_batches: int, start_step: int = 0, augment: bool = False, seed: int = 0):
    """Endless batches from global step ``start_step`` on: epoch after epoch, each reshuffled.

    The batch at global step ``s`` is batch ``s % n_batches`` of epoch ``s // n_batches``; with
    ``augment`` its stamps are turned and flipped by draws seeded with ``(seed, s)``.
    """
    step = int(start_step)
    while True:
        epoch, skip = divmod(step, n_batches)
        for x, y in epoch_batches(epoch, skip):
            if augment:
                which = np.random.default_rng([int(seed), 0xA06, step]).integers(0, 8, y.size)
                x = dihedral(x, which)
            yield x, y
            step += 1


def make_dataset(
    path: str | os.PathLike,
    rows: Sequence[int] | np.ndarray | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 256,
    shuffle: bool = False,
    seed: int = 0,
    repeat: bool = False,
    in_memory: bool | str = "auto",
    drop_remainder: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    block_rows: int = 512,
    shuffle_buffer: int = 32768,
    start_step: int = 0,
    augment: bool = False,
):
    """Build a ``tf.data.Dataset`` of ``(images float32 (B, 29, 29, 3), labels int32 (B,))``.

    Parameters
    ----------
    path
        A realbogus HDF5 file.
    rows
        Rows to use (indices in any order, repeats allowed, or a boolean mask); None: all.
    labels
        Labels replacing the file's: ``len(rows)`` entries aligned with ``rows``, or one per
        file row (then indexed by ``rows``). When both lengths match, alignment with ``rows``
        wins. Values 1 real, 0 bogus, -1 unlabelled.
    batch_size
        Samples per batch.
    shuffle, seed
        Shuffle every epoch, deterministically for ``seed`` (epoch ``e`` by ``(seed, e)``).
    repeat
        Endless: epoch after epoch (each reshuffled) from global step ``start_step``; use with
        ``steps_per_epoch``. Without it the dataset is one epoch, epoch 0 (the same every pass).
    in_memory
        True, False or ``"auto"``: load the selected stamps into RAM when they take at most
        ``memory_budget`` bytes, else stream from the file.
    drop_remainder
        Drop the last, incomplete batch (then the batch dimension is static).
    memory_budget
        Byte budget for ``in_memory="auto"`` (default 2 GiB, about 200,000 stamps).
    block_rows, shuffle_buffer
        Streaming mode: rows per contiguous read, and rows gathered into one shuffling window.
    start_step
        With ``repeat``: the global step of the first batch (a resumed run passes the steps it
        has already trained).
    augment
        Turn and flip each stamp by one of the 8 symmetries of the square, drawn from
        ``(seed, global step)``.

    Returns
    -------
    tf.data.Dataset
        Prefetched; its cardinality is the number of batches per epoch (infinite if ``repeat``).
    """
    import tensorflow as tf

    epoch_batches, n_batches = iter_batches(
        path, rows, labels, batch_size, shuffle, seed, in_memory, drop_remainder,
        memory_budget, block_rows, shuffle_buffer,
    )
    def generator():
        stream = training_stream(epoch_batches, n_batches, start_step if repeat else 0, augment, seed)
        return stream if repeat else itertools.islice(stream, n_batches)
    batch_dim = int(batch_size) if drop_remainder else None
    ds = tf.data.Dataset.from_generator(
        generator,
        output_signature=(
            tf.TensorSpec((batch_dim, *STAMP_SHAPE), tf.float32),
            tf.TensorSpec((batch_dim,), tf.int32),
        ),
    )
    ds = ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY if repeat else n_batches))
    return ds.prefetch(tf.data.AUTOTUNE)
