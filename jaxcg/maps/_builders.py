"""Builders of simple linear maps: slice, centre of mass, CA + side chain, basic aggregation."""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import mdtraj as md
import numpy as np

from jaxcg.constraints import group_labels
from jaxcg.maps._checks import check_config_rows
from jaxcg.maps._linear_map import LinearMap


def _select(topology: md.Topology, selection: str | Sequence[int], what: str) -> np.ndarray:
    """Atom indices of an mdtraj selection string or an index sequence, with clear errors."""
    if isinstance(selection, str):
        try:
            atoms = topology.select(selection)
        except Exception as err:  # mdtraj raises several types for bad syntax
            raise ValueError(f"{what}: invalid mdtraj selection {selection!r}: {err}") from err
    else:
        raw = np.asarray(selection).reshape(-1)
        if raw.size and not np.issubdtype(raw.dtype, np.integer):
            raise TypeError(f"{what}: atom indices must be integers, got dtype {raw.dtype} ({raw[:5].tolist()})")
        atoms = raw.astype(np.int64)
        values, counts = np.unique(atoms, return_counts=True)
        if np.any(counts > 1):
            raise ValueError(f"{what}: atom(s) {values[counts > 1][:5].tolist()} given more than once")
    if atoms.size == 0:
        raise ValueError(f"{what}: selection {selection!r} matches no atoms")
    if atoms.min() < 0 or atoms.max() >= topology.n_atoms:
        raise ValueError(
            f"{what}: atom indices {atoms.min()}..{atoms.max()} outside the topology's "
            f"{topology.n_atoms} atoms"
        )
    return atoms


def slice_map(topology: md.Topology, selection: str | Sequence[int]) -> LinearMap:
    """Keep the selected atoms as beads: M = G = one-hot rows (in atom order).

    Args:
      topology: mdtraj Topology with n atoms.
      selection: mdtraj selection string (e.g. "name CA") or atom indices; one bead per atom.

    Returns:
      LinearMap with (N, n) matrices, N the number of selected atoms. Under constraints the
      sliced forces include constraint forces: ``check_map`` rejects such a map.
    """
    atoms = np.unique(_select(topology, selection, "slice_map"))
    matrix = np.zeros((atoms.size, topology.n_atoms), dtype=np.float32)
    matrix[np.arange(atoms.size), atoms] = 1.0
    return LinearMap.validated(config=jnp.asarray(matrix), force=jnp.asarray(matrix))


def com_map(
    topology: md.Topology,
    groups: Sequence[str | Sequence[int]],
    weighting: str = "mass",
) -> LinearMap:
    """One bead per group of atoms, at the group's centre of mass.

    Args:
      topology: mdtraj Topology with n atoms (masses from its elements).
      groups: per bead, an mdtraj selection string or atom indices; groups must not overlap.
      weighting: "mass" (centre of mass) or "uniform" (geometric centre).

    Returns:
      LinearMap: M rows hold the normalised weights; G sums the forces of each group's atoms
      (aggregation, consistent with M). Use ``basic_aggregation_map`` when there are constraints.
    """
    if weighting not in ("mass", "uniform"):
        raise ValueError(f"weighting must be 'mass' or 'uniform', got {weighting!r}")
    if len(groups) == 0:
        raise ValueError("com_map: groups is empty; give one selection per bead")
    n_atoms = topology.n_atoms
    config = np.zeros((len(groups), n_atoms))
    force = np.zeros((len(groups), n_atoms), dtype=np.float32)
    owner = np.full(n_atoms, -1)
    for bead, group in enumerate(groups):
        atoms = np.unique(_select(topology, group, f"com_map bead {bead}"))
        taken = atoms[owner[atoms] >= 0]
        if taken.size:
            raise ValueError(
                f"com_map: atom {taken[0]} is in bead {owner[taken[0]]} and bead {bead}; groups must not overlap"
            )
        owner[atoms] = bead
        if weighting == "mass":
            masses = np.array([_mass(topology.atom(a)) for a in atoms])
        else:
            masses = np.ones(atoms.size)
        config[bead, atoms] = masses / masses.sum()
        force[bead, atoms] = 1.0
    return LinearMap.validated(config=jnp.asarray(config, dtype=jnp.float32), force=jnp.asarray(force))


#: Atom names of the backbone (and C-terminal oxygens), never part of a side-chain bead.
BACKBONE_NAMES = frozenset({"N", "CA", "C", "O", "OXT", "OC1", "OC2", "OT1", "OT2"})


def ca_sidechain_groups(topology: md.Topology) -> list[np.ndarray]:
    """Atom indices of the beads of ``ca_sidechain_map``, in residue order: per residue with a CA
    atom, [CA] and then (except glycine, which has none) its side-chain heavy atoms: every
    non-hydrogen atom of the residue whose name is not in ``BACKBONE_NAMES``."""
    groups = []
    for residue in topology.residues:
        ca = [a.index for a in residue.atoms if a.name == "CA"]
        if not ca:
            continue  # water, ions, caps
        groups.append(np.array(ca))
        side = [
            a.index
            for a in residue.atoms
            if a.name not in BACKBONE_NAMES and a.element is not None and a.element.symbol != "H"
        ]
        if side:
            groups.append(np.array(side))
    if not groups:
        raise ValueError("ca_sidechain_map: the topology has no residue with a CA atom")
    return groups


def ca_sidechain_map(topology: md.Topology, weighting: str = "uniform") -> LinearMap:
    """Two beads per amino acid: its CA atom and the centroid of its side-chain heavy atoms.

    Glycine (no side-chain heavy atom) gets its CA bead only; residues without a CA atom
    (water, ions, ACE/NME caps) get no bead. Beads are ordered by residue, CA first.

    Args:
      topology: mdtraj Topology with n atoms.
      weighting: "uniform" (geometric centroid of the side-chain heavy atoms) or "mass".

    Returns:
      LinearMap with (N, n) matrices: M rows the CA one-hot or the centroid weights, G the
      sum of each bead's atoms' forces (as ``com_map``). Under constraints (hydrogens bonded
      to these atoms) build the force map with ``basic_aggregation_map`` or
      ``optimal_linear_map`` from this map's ``config``.
    """
    return com_map(topology, ca_sidechain_groups(topology), weighting=weighting)


def _mass(atom: md.core.topology.Atom) -> float:
    if atom.element is None or atom.element.mass is None or atom.element.mass <= 0:
        raise ValueError(f"atom {atom} has no element mass; use weighting='uniform'")
    return float(atom.element.mass)


def basic_aggregation_map(
    config_map: LinearMap | np.ndarray, constraints: np.ndarray | None
) -> LinearMap:
    """Each bead sums the forces of its atoms, extended over their constraint groups.

    Args:
      config_map: a LinearMap (its ``config`` is used) or an (N, n) matrix M.
      constraints: (K, 2) constrained atom pairs, or None.

    Returns:
      LinearMap(config=M, force=G) with G[i, a] = 1 for every atom a with M[i, a] != 0 and every
      atom constrained (directly or through a chain) to such an atom, 0 elsewhere.

    Raises:
      ValueError: if a constraint group reaches the atoms of two beads (no aggregation map is
        then consistent with M), or a bead has no atoms.
    """
    config = np.asarray(config_map.config if isinstance(config_map, LinearMap) else config_map)
    if config.ndim != 2:
        raise ValueError(f"config_map must be an (N, n) matrix, got shape {config.shape}")
    n_beads, n_atoms = config.shape
    labels = group_labels(constraints, n_atoms)
    force = np.zeros((n_beads, n_atoms), dtype=np.float32)
    owner: dict[int, int] = {}
    for bead in range(n_beads):
        atoms = np.flatnonzero(config[bead] != 0)
        if atoms.size == 0:
            raise ValueError(f"basic_aggregation_map: bead {bead} has no atoms in config_map")
        for label in np.unique(labels[atoms]):
            if owner.setdefault(int(label), bead) != bead:
                members = np.flatnonzero(labels == label)
                raise ValueError(
                    f"basic_aggregation_map: constraint group {members.tolist()} holds atoms of "
                    f"bead {owner[int(label)]} and bead {bead}; no aggregation map is consistent"
                )
            force[bead, labels == label] = 1.0
    check_config_rows(config, "basic_aggregation_map: config_map")
    return LinearMap.validated(config=jnp.asarray(config, dtype=jnp.float32), force=jnp.asarray(force))
