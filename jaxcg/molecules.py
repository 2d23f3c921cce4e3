"""Several molecules in one dataset: a bead-type vocabulary shared across molecules, and frames
padded to one bead count so that a single model trains on all of them without recompiling.

The rule that names a bead type: ``(residue name, bead name)`` of each bead of a CG topology, as
``jaxcg.maps.map_dataset`` writes it (each bead named after its dominant atom and residue). A CA
bead of a tyrosine is ``("TYR", "CA")`` in every molecule; a backbone model's N, CA and C of an
alanine are three types. ``BeadVocabulary.from_topologies`` collects the types of several
molecules, numbered in sorted order; ``vocabulary.types(topology)`` maps another molecule's beads
into that index space and names any bead type it does not hold.

``pad_molecules`` pads every molecule's frames to N_max beads: padding beads sit at the origin
with zero force and type −1 (``PAD``). A padded SchNet (``jaxcg.models.TransferableSchNet``)
gives them zero filters and leaves their outputs out, so a padded frame has exactly the energy
and forces of the unpadded molecule; ``jaxcg.train.fit(..., bead_types=data.types)`` averages the
force error over the real beads of each frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import mdtraj as md
import numpy as np

from jaxcg.data import CGData

#: Bead type of a padding bead.
PAD = -1


def bead_keys(topology: md.Topology) -> list[tuple[str, str]]:
    """(residue name, bead name) of each bead (atom) of a CG topology, in bead order."""
    return [(atom.residue.name, atom.name) for atom in topology.atoms]


@dataclasses.dataclass(frozen=True)
class BeadVocabulary:
    """Bead types shared by several molecules: type k is ``keys[k]``, a (residue name, bead name)
    pair.

    Attributes:
      keys: the distinct (residue name, bead name) pairs, one per type.
    """

    keys: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        keys = tuple((str(r), str(b)) for r, b in self.keys)
        if not keys:
            raise ValueError("keys must hold at least one (residue name, bead name) pair")
        if len(set(keys)) != len(keys):
            raise ValueError(f"keys must be distinct, got duplicates {sorted({k for k in keys if keys.count(k) > 1})}")
        object.__setattr__(self, "keys", keys)

    @classmethod
    def from_topologies(cls, topologies: Sequence[md.Topology]) -> BeadVocabulary:
        """The bead types of all ``topologies`` (CG topologies), numbered in sorted order."""
        return cls(tuple(sorted({key for topology in topologies for key in bead_keys(topology)})))

    def __len__(self) -> int:
        return len(self.keys)

    def types(self, topology: md.Topology) -> np.ndarray:
        """(N,) int32 type of each bead of a CG topology.

        Raises:
          ValueError: a bead's (residue name, bead name) is not in the vocabulary (named, with
            the beads that carry it).
        """
        index = {key: k for k, key in enumerate(self.keys)}
        keys = bead_keys(topology)
        unknown = sorted({key for key in keys if key not in index})
        if unknown:
            where = {key: [b for b, k in enumerate(keys) if k == key][:5] for key in unknown}
            raise ValueError(
                f"topology has bead types outside the vocabulary of {len(self)} types: "
                + ", ".join(f"{r} {b} (beads {where[(r, b)]})" for r, b in unknown)
                + "; a model can only run on molecules whose (residue name, bead name) pairs it was built with"
            )
        return np.array([index[key] for key in keys], dtype=np.int32)

    def to_json(self) -> list[list[str]]:
        """The keys as a JSON-ready list of [residue name, bead name]."""
        return [list(key) for key in self.keys]

    @classmethod
    def from_json(cls, keys: Sequence[Sequence[str]]) -> BeadVocabulary:
        """Inverse of ``to_json``."""
        if any(len(key) != 2 for key in keys):
            raise ValueError(f"keys must be [residue name, bead name] pairs, got {list(keys)[:5]}")
        return cls(tuple((key[0], key[1]) for key in keys))


@dataclasses.dataclass(frozen=True, eq=False)
class PaddedMolecules:
    """Frames of several molecules padded to one bead count N_max (the largest molecule's).

    Attributes:
      positions: (T, N_max, 3) float32, nm; padding beads at the origin.
      forces: (T, N_max, 3) float32, kJ/mol/nm; zero on padding beads.
      types: (T, N_max) int32 bead types in the vocabulary; ``PAD`` (−1) marks padding.
      weights: (T,) float32 frame weights (each dataset's, or 1).
      molecule: (T,) int32, the index of each frame's molecule in the input list.
      vocabulary: the ``BeadVocabulary`` of ``types``.
    """

    positions: np.ndarray
    forces: np.ndarray
    types: np.ndarray
    weights: np.ndarray
    molecule: np.ndarray
    vocabulary: BeadVocabulary

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_beads(self) -> int:
        """N_max, the padded bead count."""
        return int(self.positions.shape[1])

    @property
    def mask(self) -> np.ndarray:
        """(T, N_max) bool, True on real beads."""
        return self.types != PAD


def pad_types(types: np.ndarray, n_beads: int) -> np.ndarray:
    """(n_beads,) int32: ``types`` (N,) followed by ``PAD`` up to ``n_beads`` >= N."""
    types = np.asarray(types, np.int32)
    if types.ndim != 1 or types.size > n_beads:
        raise ValueError(f"types must have shape (N,) with N <= {n_beads}, got {types.shape}")
    return np.concatenate([types, np.full(n_beads - types.size, PAD, np.int32)])


def pad_positions(x: np.ndarray, n_beads: int) -> np.ndarray:
    """(..., n_beads, 3): x (..., N, 3) with beads at the origin appended up to ``n_beads``."""
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[-1] != 3 or x.shape[-2] > n_beads:
        raise ValueError(f"x must have shape (..., N, 3) with N <= {n_beads}, got {x.shape}")
    pad = [(0, 0)] * (x.ndim - 2) + [(0, n_beads - x.shape[-2]), (0, 0)]
    return np.pad(x, pad)


def _interleaved_order(n_frames: Sequence[int]) -> np.ndarray:
    """Order of the concatenated frames that interleaves the molecules evenly, each in its own
    time order (frame t of molecule m at fraction (t + ½) / T_m), so contiguous blocks and
    batches hold every molecule."""
    when = np.concatenate([(np.arange(t) + 0.5) / t for t in n_frames])
    return np.argsort(when, kind="stable")


def pad_molecules(
    datasets: Sequence[CGData], vocabulary: BeadVocabulary | None = None, n_beads: int | None = None
) -> PaddedMolecules:
    """One dataset of the frames of several molecules, padded to a common bead count.

    Args:
      datasets: one ``CGData`` per molecule, each with a CG ``topology`` (its beads' names give
        their types; ``CGData.bead_types`` is not used). Forces may be mapped forces or delta
        forces (``jaxcg.train.delta_forces`` of each molecule's own prior).
      vocabulary: the shared bead types (default: ``BeadVocabulary.from_topologies`` of the
        datasets).
      n_beads: N_max (default the largest molecule's bead count).

    Returns:
      ``PaddedMolecules`` whose frames interleave the molecules evenly, each molecule's frames
      in their original order (so ``jaxcg.train.block_split`` still holds out contiguous blocks
      of each trajectory and every batch mixes molecules).
    """
    if len(datasets) == 0:
        raise ValueError("datasets must hold at least one CGData")
    for k, data in enumerate(datasets):
        if not isinstance(data, CGData):
            raise TypeError(f"datasets[{k}] must be a CGData, got {type(data).__name__}")
        if data.topology is None:
            raise ValueError(f"datasets[{k}] has no topology: its beads' (residue name, bead name) give their types")
    if vocabulary is None:
        vocabulary = BeadVocabulary.from_topologies([d.topology for d in datasets])
    n_max = max(d.n_beads for d in datasets)
    if n_beads is not None:
        if n_beads < n_max:
            raise ValueError(f"n_beads must be at least the largest molecule's {n_max} beads, got {n_beads}")
        n_max = int(n_beads)
    types = [pad_types(vocabulary.types(d.topology), n_max) for d in datasets]
    order = _interleaved_order([d.n_frames for d in datasets])
    return PaddedMolecules(
        positions=np.concatenate([pad_positions(d.positions, n_max) for d in datasets]).astype(np.float32)[order],
        forces=np.concatenate([pad_positions(d.forces, n_max) for d in datasets]).astype(np.float32)[order],
        types=np.concatenate([np.broadcast_to(t, (d.n_frames, n_max)) for t, d in zip(types, datasets, strict=True)])[order],
        weights=np.concatenate(
            [np.ones(d.n_frames, np.float32) if d.weights is None else np.asarray(d.weights, np.float32) for d in datasets]
        )[order],
        molecule=np.concatenate([np.full(d.n_frames, k, np.int32) for k, d in enumerate(datasets)])[order],
        vocabulary=vocabulary,
    )
