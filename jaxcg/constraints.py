"""Holonomic constraints: which atom pairs are held at fixed distance, and their groups.

A force map must give equal weights to all atoms of a constraint group, or the constraint forces
(which the data's total forces include) leak into the mapped forces.
"""

from __future__ import annotations

import mdtraj as md
import numpy as np

from jaxcg.geometry import distances

_TOPOLOGY_KINDS = ("HBonds", "AllBonds")


def constraints_from_topology(topology: md.Topology, kind: str = "HBonds") -> np.ndarray:
    """Constrained atom pairs implied by a topology, as OpenMM's ``constraints=`` option does.

    Args:
      topology: mdtraj Topology (with bonds).
      kind: "HBonds" (every bond to a hydrogen) or "AllBonds".

    Returns:
      (K, 2) int64 array of atom-index pairs, each sorted, rows sorted.
    """
    if kind not in _TOPOLOGY_KINDS:
        raise ValueError(f"kind must be one of {_TOPOLOGY_KINDS}, got {kind!r}")
    pairs = []
    for bond in topology.bonds:
        a, b = bond.atom1, bond.atom2
        if kind == "AllBonds" or _is_hydrogen(a) or _is_hydrogen(b):
            pairs.append(sorted((a.index, b.index)))
    if topology.n_bonds == 0:
        raise ValueError("topology has no bonds: cannot derive constraints from it")
    return _as_pairs(pairs)


def _is_hydrogen(atom: md.core.topology.Atom) -> bool:
    if atom.element is not None:
        return atom.element.symbol == "H"
    return atom.name.upper().startswith("H")


def constraints_from_trajectory(
    positions: np.ndarray,
    threshold: float = 1e-3,
    max_distance: float = 0.3,
    n_sample: int = 1000,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Pairs whose distance standard deviation over frames is below ``threshold`` (nm).

    Args:
      positions: (T, n, 3) nm.
      threshold: standard deviation (nm) under which a pair counts as constrained.
      max_distance: only pairs closer than this (nm, in the first frame) are considered;
        rigid non-bonded pairs further apart are not constraints.
      n_sample: number of frames sampled (without replacement) to estimate fluctuations.
      rng: numpy Generator for the sample (default: the first ``n_sample`` frames).

    Returns:
      (K, 2) int64 sorted pairs.
    """
    positions = np.asarray(positions)
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise ValueError(f"positions must have shape (T, n, 3), got {positions.shape}")
    if positions.shape[0] < 2:
        raise ValueError(
            f"positions holds {positions.shape[0]} frame(s); at least 2 are needed to see fluctuations"
        )
    n_frames = positions.shape[0]
    if n_frames > n_sample:
        frames = (
            rng.choice(n_frames, size=n_sample, replace=False)
            if rng is not None
            else np.arange(n_sample)
        )
        positions = positions[np.sort(frames)]
    positions = positions.astype(np.float64)
    pairs = np.stack(np.triu_indices(positions.shape[1], k=1), axis=1)
    pairs = pairs[distances(positions[0], pairs) < max_distance]
    rigid = distances(positions, pairs).std(axis=0) < threshold
    return _as_pairs(pairs[rigid])


def _as_pairs(pairs: list | np.ndarray) -> np.ndarray:
    array = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    array = np.sort(array, axis=1)
    if array.size == 0:
        return array
    return np.unique(array, axis=0)


def constraint_groups(constraints: np.ndarray | None, n_atoms: int) -> list[tuple[int, ...]]:
    """Connected components of the constraint graph with two or more atoms.

    Args:
      constraints: (K, 2) int pairs, or None.
      n_atoms: number of atoms n.

    Returns:
      Sorted tuples of atom indices, one per group, ordered by their first atom.
    """
    labels = group_labels(constraints, n_atoms)
    groups: dict[int, list[int]] = {}
    for atom, label in enumerate(labels):
        groups.setdefault(int(label), []).append(atom)
    return sorted(tuple(g) for g in groups.values() if len(g) > 1)


def group_labels(constraints: np.ndarray | None, n_atoms: int) -> np.ndarray:
    """(n,) int array: the label of each atom's constraint group (the group's smallest atom).

    Unconstrained atoms are their own group. Union-find over the pairs.
    """
    parent = np.arange(n_atoms)
    if constraints is None:
        return parent
    pairs = np.asarray(constraints, dtype=np.int64).reshape(-1, 2)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= n_atoms):
        raise ValueError(
            f"constraints index atoms {pairs.min()}..{pairs.max()} but there are {n_atoms} atoms"
        )

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(a) for a in range(n_atoms)])


def expansion_matrix(constraints: np.ndarray | None, n_atoms: int) -> np.ndarray:
    """(n, m) 0/1 matrix C mapping m per-group weights to n per-atom weights.

    Every map row of the form ``g = C w`` gives equal weights to all atoms of a group; m is the
    number of groups counting unconstrained atoms as groups of one. Columns follow the groups'
    smallest atoms in increasing order.
    """
    labels = group_labels(constraints, n_atoms)
    _, column = np.unique(labels, return_inverse=True)
    matrix = np.zeros((n_atoms, column.max() + 1))
    matrix[np.arange(n_atoms), column] = 1.0
    return matrix
