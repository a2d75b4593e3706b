"""The training input pipeline: row subsets, label overrides, in-memory vs streaming, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from realbogus.data.format import open_dataset, write_dataset
from realbogus.data.pipeline import count_batches, iter_batches, make_dataset, read_rows
from realbogus.errors import ConfigError

N = 1000
# Small blocks and windows so that streaming really crosses many blocks and windows here.
STREAM = dict(in_memory=False, block_rows=64, shuffle_buffer=256)


@pytest.fixture(scope="module")
def h5(tmp_path_factory):
    """A file whose stamp i holds the value i at pixel (0, 0, 0); labels cycle 0, 1, -1."""
    x = np.zeros((N, 29, 29, 3), np.float32)
    x[:, 0, 0, 0] = np.arange(N)
    cols = {
        "label": (np.arange(N) % 3 - (np.arange(N) % 3 == 2) * 3).astype(np.int8),
        "sensor_id": np.zeros(N, np.int16), "kind": np.zeros(N, np.int16), "mag": np.zeros(N, np.float32),
    }
    return write_dataset(tmp_path_factory.mktemp("pipe") / "d.h5", x, cols, chunk_rows=32)


def file_labels(path) -> np.ndarray:
    with open_dataset(path) as ds:
        return ds.column("label").astype(np.int32)


def epoch(epoch_batches, e: int = 0, skip: int = 0) -> tuple[np.ndarray, np.ndarray, list[int]]:
    ids, ys, sizes = [], [], []
    for x, y in epoch_batches(e, skip):
        assert x.dtype == np.float32 and x.shape[1:] == (29, 29, 3) and y.dtype == np.int32
        ids.append(x[:, 0, 0, 0].astype(np.int64))
        ys.append(y)
        sizes.append(len(y))
    return np.concatenate(ids), np.concatenate(ys), sizes


def test_read_rows_any_order_with_repeats(h5):
    rows = np.array([999, 3, 3, 500, 0, 501, 64, 998])
    with open_dataset(h5) as ds:
        got = read_rows(ds, rows, max_gap=2, max_span=100)
    np.testing.assert_array_equal(got[:, 0, 0, 0], rows)


@pytest.mark.parametrize("mode", [dict(in_memory=True), STREAM])
def test_subset_and_label_override(h5, mode):
    rows = np.random.default_rng(0).choice(N, 300, replace=False)
    f, n_batches = iter_batches(h5, rows=rows, batch_size=32, **mode)
    ids, ys, sizes = epoch(f)
    assert sizes == [32] * 9 + [12] and n_batches == 10 == count_batches(300, 32)
    np.testing.assert_array_equal(ids, rows)  # no shuffle: the order given
    np.testing.assert_array_equal(ys, file_labels(h5)[rows])
    # labels aligned with rows
    override = np.where(rows % 2 == 0, 1, -1)
    ids, ys, _ = epoch(iter_batches(h5, rows=rows, labels=override, batch_size=32, **mode)[0])
    np.testing.assert_array_equal(ys, override)
    # labels aligned with the file, indexed by rows
    noisy = 1 - np.clip(file_labels(h5), 0, 1)
    ids, ys, _ = epoch(iter_batches(h5, rows=rows, labels=noisy, batch_size=32, **mode)[0])
    np.testing.assert_array_equal(ys, noisy[rows])


def test_streaming_and_in_memory_give_the_same_samples_every_epoch(h5):
    rows = np.concatenate([np.arange(0, N, 2), [7, 7, 7]])  # repeats count as separate samples
    labels = np.random.default_rng(1).integers(-1, 2, rows.size)
    expected = sorted(zip(rows.tolist(), labels.tolist()))
    for mode in (dict(in_memory=True), STREAM):
        f, _ = iter_batches(h5, rows=rows, labels=labels, batch_size=50, shuffle=True, seed=4, **mode)
        orders = []
        for e in range(3):
            ids, ys, sizes = epoch(f, e)
            assert sorted(zip(ids.tolist(), ys.tolist())) == expected
            assert sizes == [50] * 10 + [3]
            orders.append(ids)
        assert not np.array_equal(orders[0], orders[1]), "each epoch reshuffles"
        assert abs(np.corrcoef(orders[0], np.arange(orders[0].size))[0, 1]) < 0.3, "well mixed"


@pytest.mark.parametrize("mode", [dict(in_memory=True), STREAM])
def test_shuffling_is_deterministic_for_a_seed(h5, mode):
    def run(seed):
        f, _ = iter_batches(h5, batch_size=64, shuffle=True, seed=seed, drop_remainder=True, **mode)
        return [epoch(f, e) for e in range(2)]

    a, b, c = run(1), run(1), run(2)
    for (ia, ya, sa), (ib, yb, sb) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ya, yb)
        assert sa == [64] * 15  # remainder of 40 dropped
    assert not np.array_equal(a[0][0], c[0][0])


def test_in_memory_auto_follows_the_budget(h5):
    assert iter_batches(h5)[0].in_memory
    assert not iter_batches(h5, memory_budget=100 * 10_092)[0].in_memory


def test_bad_selection_is_a_config_error(h5):
    with pytest.raises(ConfigError, match="rows reach"):
        iter_batches(h5, rows=[0, N])
    with pytest.raises(ConfigError, match="3 labels given for 2 selected rows"):
        iter_batches(h5, rows=[0, 1], labels=[0, 1, 1])
    with pytest.raises(ConfigError, match="labels must be"):
        iter_batches(h5, rows=[0, 1], labels=[0, 2])
    with pytest.raises(ConfigError, match="empty"):
        iter_batches(h5, rows=np.zeros(N, bool))


def test_make_dataset_tf(h5):
    import tensorflow as tf

    rows = np.arange(100, 400)
    ds = make_dataset(h5, rows=rows, batch_size=64, shuffle=True, seed=0, drop_remainder=True)
    assert ds.cardinality().numpy() == 4
    assert ds.element_spec[0].shape.as_list() == [64, 29, 29, 3] and ds.element_spec[1].dtype == tf.int32
    seen = {}
    for name, mode in (("memory", dict(in_memory=True)), ("stream", STREAM)):
        ds = make_dataset(h5, rows=rows, batch_size=64, shuffle=True, seed=0, **mode)
        assert ds.cardinality().numpy() == 5
        epochs = [np.concatenate([x.numpy()[:, 0, 0, 0] for x, _ in ds]) for _ in range(2)]
        assert sorted(epochs[0]) == list(rows)
        np.testing.assert_array_equal(epochs[0], epochs[1])  # one epoch, epoch 0, every pass
        seen[name] = epochs[0]
    assert sorted(seen["memory"]) == sorted(seen["stream"])
    repeated = make_dataset(h5, rows=rows, batch_size=64, repeat=True)
    assert repeated.cardinality().numpy() == tf.data.INFINITE_CARDINALITY
    assert sum(len(y) for _, y in repeated.take(7)) == 64 * 4 + 44 + 64 * 2


@pytest.mark.parametrize("mode", [dict(in_memory=True), STREAM, dict(STREAM, drop_remainder=True)])
def test_an_epoch_started_at_a_batch_equals_the_rest_of_the_whole_epoch(h5, mode):
    """What makes resume exact: skipping k batches of epoch e gives exactly batches k.. of epoch e."""
    rows = np.concatenate([np.arange(0, N, 3), [5, 5]])
    f, n_batches = iter_batches(h5, rows=rows, batch_size=40, shuffle=True, seed=3, **mode)
    for e in (0, 2):
        whole = list(f(e))
        assert len(whole) == n_batches
        for k in (0, 1, 5, n_batches - 1, n_batches):
            part = list(f(e, k))
            assert len(part) == n_batches - k
            for (xa, ya), (xb, yb) in zip(part, whole[k:]):
                np.testing.assert_array_equal(xa, xb)
                np.testing.assert_array_equal(ya, yb)


def test_training_stream_from_any_step_continues_the_uninterrupted_stream(h5):
    from realbogus.data.pipeline import training_stream

    f, n_batches = iter_batches(h5, rows=np.arange(300), batch_size=64, shuffle=True, seed=1, **STREAM)
    take = 3 * n_batches + 2

    def first(start, n):
        out = []
        for i, b in enumerate(training_stream(f, n_batches, start, augment=True, seed=1)):
            if i == n:
                return out
            out.append(b)

    whole = first(0, take)
    for start in (1, n_batches, 2 * n_batches + 3):
        for (xa, ya), (xb, yb) in zip(first(start, take - start), whole[start:]):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    # epochs differ in order, and augmentation turns stamps (pixel (0, 0) moves to another corner)
    assert not np.array_equal(whole[0][1], whole[n_batches][1])
    moved = np.concatenate([np.abs(b[0][:, [0, -1, -1], [-1, 0, -1], 0]).sum(1) > 0 for b in whole[:n_batches]])
    assert 0.5 < moved.mean() < 1.0  # 6 of the 8 symmetries move the (0, 0) corner elsewhere


def test_dihedral_gives_the_eight_symmetries_of_the_square():
    from realbogus.data.pipeline import dihedral

    x = np.random.default_rng(0).normal(size=(8, 29, 29, 3)).astype(np.float32)
    x[:] = x[0]
    out = dihedral(x, np.arange(8))
    np.testing.assert_array_equal(out[0], x[0])
    np.testing.assert_array_equal(out[1], np.rot90(x[0], 1, axes=(0, 1)))
    np.testing.assert_array_equal(out[4], x[0][:, ::-1])
    flat = {o.tobytes() for o in out}
    assert len(flat) == 8  # all distinct
    # each moves the three channels together
    for o in out:
        np.testing.assert_array_equal(np.sort(o[..., 0].ravel()), np.sort(x[0, ..., 0].ravel()))
