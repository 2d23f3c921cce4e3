"""Constraints from topologies and trajectories, and their groups."""

import mdtraj as md
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph

from jaxcg.constraints import (
    constraint_groups,
    constraints_from_topology,
    constraints_from_trajectory,
    expansion_matrix,
    group_labels,
)


def test_hbonds_and_allbonds_on_cln025(shared_data):
    top = md.load_topology(str(shared_data / "cln025.pdb"))
    hbonds = constraints_from_topology(top, "HBonds")
    hydrogens = [a.index for a in top.atoms if a.element.symbol == "H"]
    assert len(hbonds) == len(hydrogens)  # every hydrogen has exactly one bond
    assert all(any(a in hydrogens for a in pair) for pair in hbonds)
    assert len(constraints_from_topology(top, "AllBonds")) == top.n_bonds
    with pytest.raises(ValueError, match="kind must be one of"):
        constraints_from_topology(top, "HAngles")


def test_constraints_from_trajectory_finds_rigid_pairs():
    rng = np.random.default_rng(0)
    n_frames = 200
    base = rng.normal(size=(n_frames, 6, 3))  # atoms wander freely
    direction = rng.normal(size=(n_frames, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    base[:, 1] = base[:, 0] + 0.1 * direction  # 0-1 rigid at 0.1 nm
    base[:, 4] = base[:, 3] + 0.1 * direction + rng.normal(scale=0.01, size=(n_frames, 3))
    found = constraints_from_trajectory(base, threshold=1e-3, max_distance=5.0)
    np.testing.assert_array_equal(found, [[0, 1]])
    with pytest.raises(ValueError, match="at least 2"):
        constraints_from_trajectory(base[:1])


def test_groups_match_connected_components():
    rng = np.random.default_rng(1)
    n_atoms = 40
    pairs = rng.integers(0, n_atoms, size=(25, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    graph = scipy.sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_atoms, n_atoms))
    _, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    expected = sorted(tuple(np.flatnonzero(labels == k)) for k in np.unique(labels) if (labels == k).sum() > 1)
    assert constraint_groups(pairs, n_atoms) == expected
    ours = group_labels(pairs, n_atoms)
    for a in range(n_atoms):
        for b in range(n_atoms):
            assert (ours[a] == ours[b]) == (labels[a] == labels[b])
    expand = expansion_matrix(pairs, n_atoms)
    assert expand.shape == (n_atoms, len(np.unique(labels)))
    np.testing.assert_array_equal(expand.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="40 atoms"):
        group_labels(np.array([[0, 40]]), n_atoms)
