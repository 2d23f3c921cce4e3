"""The bonded graph of a CG molecule: neighbours and bond-hop distances between beads.

Used by the priors (angles, dihedrals, non-bonded pairs) and by SchNet's exclusions, so that
"pairs at most k bonds apart" means the same everywhere.
"""

from __future__ import annotations

from collections import deque

import numpy as np


def adjacency(n_beads: int, bonds: np.ndarray) -> list[list[int]]:
    """Sorted neighbour lists of each of the ``n_beads`` beads; bonds: (B, 2) int bead pairs.

    Raises ValueError for a self-bond or an index outside [0, n_beads)."""
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    if bonds.size and (bonds.min() < 0 or bonds.max() >= n_beads):
        raise ValueError(f"bonds must index the {n_beads} beads, got indices {bonds.min()}..{bonds.max()}")
    neighbours: list[list[int]] = [[] for _ in range(n_beads)]
    for i, j in bonds:
        if i == j:
            raise ValueError(f"bonds holds a self-bond ({i}, {j})")
        neighbours[int(i)].append(int(j))
        neighbours[int(j)].append(int(i))
    return [sorted(set(a)) for a in neighbours]


def hop_distances(n_beads: int, bonds: np.ndarray) -> np.ndarray:
    """(N, N) int number of bonds on the shortest path between beads (0 on the diagonal,
    N + 1 between beads in different connected parts), by breadth-first search."""
    neighbours = adjacency(n_beads, bonds)
    hops = np.full((n_beads, n_beads), n_beads + 1, dtype=np.int64)
    for start in range(n_beads):
        hops[start, start] = 0
        queue = deque([start])
        while queue:
            a = queue.popleft()
            for b in neighbours[a]:
                if hops[start, b] > hops[start, a] + 1:
                    hops[start, b] = hops[start, a] + 1
                    queue.append(b)
    return hops


def pairs_within_hops(n_beads: int, bonds: np.ndarray | None, max_hops: int) -> np.ndarray:
    """(E, 2) pairs i < j at most ``max_hops`` bonds apart, in row-major order (empty for
    ``max_hops`` <= 0 or no bonds)."""
    if bonds is None or max_hops <= 0 or len(bonds) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    hops = hop_distances(n_beads, bonds)
    i, j = np.nonzero(np.triu(hops <= max_hops, k=1))
    return np.stack([i, j], axis=1).astype(np.int64)
