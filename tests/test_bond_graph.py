"""The bonded graph: hop distances against Floyd–Warshall, and the pairs priors and SchNet exclude."""

import numpy as np
import pytest

from jaxcg.bond_graph import adjacency, hop_distances, pairs_within_hops
from jaxcg.models import SchNet
from jaxcg.priors import prior_terms


def _floyd_warshall(n, bonds):
    d = np.full((n, n), np.inf)
    np.fill_diagonal(d, 0)
    for a, b in bonds:
        d[a, b] = d[b, a] = 1
    for k in range(n):
        d = np.minimum(d, d[:, k, None] + d[None, k, :])
    return d


def test_hop_distances_match_floyd_warshall_on_a_branched_graph_with_two_parts():
    bonds = np.array([[0, 1], [1, 2], [2, 3], [1, 4], [4, 5], [5, 2], [6, 7]])  # a ring, a branch, a loose pair
    hops = hop_distances(8, bonds)
    reference = _floyd_warshall(8, bonds)
    finite = np.isfinite(reference)
    np.testing.assert_array_equal(hops[finite], reference[finite])
    assert (hops[~finite] == 9).all()
    assert adjacency(8, bonds)[1] == [0, 2, 4]


def test_pairs_within_hops_is_the_complement_of_the_prior_pairs_and_schnet_leaves_them_out():
    bonds = np.stack([np.arange(7), np.arange(1, 8)], axis=1)
    for k in (1, 2, 3):
        near = {tuple(p) for p in pairs_within_hops(8, bonds, k).tolist()}
        far = {tuple(p) for p in prior_terms(8, bonds, exclusion_hops=k).pairs.tolist()}
        assert near == {(i, j) for i in range(8) for j in range(i + 1, 8) if j - i <= k}
        assert near.isdisjoint(far) and len(near) + len(far) == 8 * 7 // 2
        model = SchNet(np.zeros(8, int), bonds=bonds, exclusion_hops=k)
        kept = set(zip(model.pair_i.tolist(), model.pair_j.tolist(), strict=True))
        assert kept == far
    assert pairs_within_hops(8, bonds, 0).shape == (0, 2)


def test_bad_bonds_are_refused_by_name():
    with pytest.raises(ValueError, match="self-bond"):
        adjacency(3, np.array([[1, 1]]))
    with pytest.raises(ValueError, match="bonds must index the 3 beads"):
        hop_distances(3, np.array([[0, 3]]))
