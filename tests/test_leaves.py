"""PyTree leaves in npz (models and simulation checkpoints share the scheme)."""

import jax
import numpy as np
import pytest

from jaxcg._leaves import read_leaves, write_leaves


def test_leaves_round_trip_in_tree_order_and_extra_arrays_keep_their_names(tmp_path):
    tree = {"b": np.arange(3.0), "a": [np.ones((2, 2), np.float32), np.int32(7)]} | {f"k{i}": np.float64(i) for i in range(12)}
    leaves = jax.tree.leaves(tree)
    path = write_leaves(tmp_path / "x.npz", leaves, {"version": 2})
    assert not list(tmp_path.glob("*.tmp*"))
    with np.load(path) as archive:
        back = read_leaves(archive)
        assert int(archive["version"]) == 2
    rebuilt = jax.tree.unflatten(jax.tree.structure(tree), back)
    for x, y in zip(jax.tree.leaves(rebuilt), leaves, strict=True):
        np.testing.assert_array_equal(x, y)
        assert np.asarray(x).dtype == np.asarray(y).dtype


def test_older_three_digit_leaf_names_read_in_numeric_order_and_gaps_are_refused(tmp_path):
    np.savez(tmp_path / "old.npz", leaf_010=np.float32(10), **{f"leaf_{i:03d}": np.float32(i) for i in range(10)})
    with np.load(tmp_path / "old.npz") as archive:
        assert [float(v) for v in read_leaves(archive)] == list(range(11))
    np.savez(tmp_path / "gap.npz", leaf_0000=1.0, leaf_0002=2.0)
    with np.load(tmp_path / "gap.npz") as archive, pytest.raises(ValueError, match="not numbered"):
        read_leaves(archive)
    with pytest.raises(ValueError, match="must not use leaf names"):
        write_leaves(tmp_path / "y.npz", [np.zeros(1)], {"leaf_0001": np.zeros(1)})
