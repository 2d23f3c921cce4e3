"""The one neighbour-list format: its pairs against brute force (free space and a periodic box),
and the SchNet and the simulator build the same list."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcg import neighbors, simulate
from jaxcg.models import SchNet


def _listed_pairs(neighbor, n):
    i, j, valid = neighbors.pairs(neighbor, n)
    i, j, valid = (np.asarray(a) for a in (i, j, valid))
    return {(min(a, b), max(a, b)) for a, b in zip(i[valid].tolist(), j[valid].tolist(), strict=True)}


def _brute_force(x, reach, box=None):
    d = x[:, None] - x[None]
    if box is not None:
        d -= box * np.round(d / box)
    r = np.linalg.norm(d, axis=-1)
    i, j = np.nonzero(np.triu(r < reach, k=1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


@pytest.mark.parametrize("box", [None, 2.0])
def test_listed_pairs_are_every_pair_within_cutoff_plus_skin_once(box):
    x = np.random.default_rng(0).uniform(0.0, 2.0, (40, 3)).astype(np.float32)
    _, _, neighbor_fn = neighbors.neighbor_list(cutoff=0.5, skin=0.1, box=box)
    with jax.numpy_dtype_promotion("standard"):
        nbrs = neighbor_fn.allocate(jnp.asarray(x))
    assert not bool(nbrs.did_buffer_overflow)
    i, j, valid = (np.asarray(a) for a in neighbors.pairs(nbrs, 40))
    assert len(_listed_pairs(nbrs, 40)) == int(valid.sum())  # each pair once
    assert _listed_pairs(nbrs, 40) == _brute_force(x, 0.6, box)


def test_schnet_and_simulator_build_the_same_list_and_other_formats_are_refused():
    x = jnp.asarray(np.random.default_rng(1).uniform(0.0, 1.5, (12, 3)).astype(np.float32))
    model = SchNet(np.zeros(12, int), features=8, rbf=8, cutoff=0.7)
    _, model_fn = model.neighbor_list(dr_threshold=0.2)
    _, _, sim_fn = simulate.neighbor_list(cutoff=0.7, skin=0.2)
    with jax.numpy_dtype_promotion("standard"):
        a, b = model_fn.allocate(x), sim_fn.allocate(x)
    assert _listed_pairs(a, 12) == _listed_pairs(b, 12) == _brute_force(np.asarray(x), 0.9)
    with pytest.raises(ValueError, match="OrderedSparse"):
        neighbors.pairs(dataclasses.replace(a, format=type(a.format).Dense), 12)
    with pytest.raises(ValueError, match="skin must be a non-negative"):
        neighbors.neighbor_list(cutoff=0.5, skin=-0.1)
    with pytest.raises(ValueError, match="cutoff must be a positive"):
        neighbors.neighbor_list(cutoff=0.0)
