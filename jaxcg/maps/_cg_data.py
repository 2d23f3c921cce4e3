"""Apply a map to a whole dataset: all-atom ``AtomisticData`` to coarse-grained ``CGData``."""

from __future__ import annotations

import mdtraj as md
import numpy as np

from jaxcg.data import AtomisticData, CGData
from jaxcg.maps._checks import check_config_rows
from jaxcg.maps._linear_map import LinearMap, apply_map


def _dominant_atoms(linear_map: LinearMap) -> np.ndarray:
    """(N,) index of the atom with the largest configurational weight in each bead."""
    return np.argmax(np.abs(np.asarray(linear_map.config)), axis=1)


def cg_topology(topology: md.Topology, linear_map: LinearMap) -> md.Topology:
    """One atom per bead, named after its dominant atom and residue; bonds between consecutive
    beads of the same chain. Element: carbon (for viewers; bead masses are kept separately)."""
    cg = md.Topology()
    chains: dict[int, md.core.topology.Chain] = {}
    previous = None
    for bead, atom_index in enumerate(_dominant_atoms(linear_map)):
        atom = topology.atom(int(atom_index))
        if atom.residue.chain.index not in chains:
            chains[atom.residue.chain.index] = cg.add_chain()
        chain = chains[atom.residue.chain.index]
        residue = cg.add_residue(atom.residue.name, chain, resSeq=atom.residue.resSeq)
        new = cg.add_atom(atom.name if len(atom.name) <= 4 else f"B{bead}", md.element.carbon, residue)
        if previous is not None and previous.residue.chain is chain:
            cg.add_bond(previous, new)
        previous = new
    return cg


def bead_types_by_atom(topology: md.Topology, linear_map: LinearMap) -> np.ndarray:
    """(N,) int32 bead types: one per distinct (residue name, atom name) of the beads' dominant
    atoms, numbered in sorted order. Beads that play the same role in the same kind of residue
    share a type; beads that differ in either do not."""
    keys = [(topology.atom(int(a)).residue.name, topology.atom(int(a)).name) for a in _dominant_atoms(linear_map)]
    vocabulary = sorted(set(keys))
    return np.array([vocabulary.index(k) for k in keys], dtype=np.int32)


def map_dataset(
    data: AtomisticData,
    linear_map: LinearMap,
    bead_types: np.ndarray | None = None,
    bonds: np.ndarray | None = None,
    chunk_size: int = 4096,
) -> CGData:
    """Map every frame of ``data`` with ``linear_map``.

    Args:
      data: all-atom frames (T, n, 3).
      linear_map: the (M, G) map with n atoms and N beads.
      bead_types: (N,) int types; default: one type per distinct (residue name, atom name) of
        the beads' dominant atoms, numbered in sorted order (``bead_types_by_atom``). For a CA
        model this is one type per residue name; for a backbone model the N, CA and C of a
        residue get three types.
      bonds: (B, 2) bonded bead pairs; default: consecutive beads within a chain.
      chunk_size: frames per device call.

    Raises:
      MapValidityError: a row of ``linear_map.config`` does not sum to 1. (Force-map validity
        under constraints is not checked here: call ``check_map`` to refuse such maps.)

    Returns:
      CGData with positions (T, N, 3) nm, forces (T, N, 3) kJ/mol/nm, bead masses = the mass of
      each bead's residue (amu), and a CG topology.
    """
    if linear_map.n_atoms != data.n_atoms:
        raise ValueError(f"linear_map has {linear_map.n_atoms} atoms but data has {data.n_atoms}")
    check_config_rows(linear_map.config, "map_dataset: linear_map.config")
    xs, fs = [], []
    for positions, forces in data.chunks(chunk_size):
        x, f = apply_map(linear_map, positions, forces)
        xs.append(np.asarray(x))
        fs.append(np.asarray(f))
    topology = cg_topology(data.topology, linear_map)
    dominant = [data.topology.atom(int(a)) for a in _dominant_atoms(linear_map)]
    if bead_types is None:
        bead_types = bead_types_by_atom(data.topology, linear_map)
    if bonds is None:
        bonds = np.array([[b.atom1.index, b.atom2.index] for b in topology.bonds], dtype=np.int64).reshape(-1, 2)
    masses = np.array(
        [sum(a.element.mass for a in atom.residue.atoms if a.element is not None) for atom in dominant]
    )
    return CGData(
        positions=np.concatenate(xs),
        forces=np.concatenate(fs),
        bead_types=np.asarray(bead_types, dtype=np.int32),
        bonds=np.asarray(bonds, dtype=np.int64),
        temperature=data.temperature,
        topology=topology,
        weights=data.weights,
        masses=masses,
    )
