"""A SchNet shared by several molecules (a transferable model): bead types from a shared
vocabulary, frames padded to one bead count."""

from __future__ import annotations

from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np

from jaxcg.data import CGData
from jaxcg.models._schnet import SchNet
from jaxcg.molecules import PAD, BeadVocabulary


class TransferableSchNet:
    """SchNet over the bead types of a ``BeadVocabulary``, for any molecule of those types.

    Two views of the same parameters:

    - padded (training on several molecules): ``energy(params, x, types)`` for x: (N_max, 3) nm
      and types: (N_max,) int, ``PAD`` (−1) on padding beads. Every pair i < j of the N_max
      beads is listed once; a pair with a padding bead gets zero filters and padding beads'
      atom-wise outputs are left out, so the energy is that of the real beads alone and padding
      beads feel no force.
    - per molecule (simulation, a molecule never trained on, or one larger than N_max):
      ``for_molecule(topology)`` is a plain ``SchNet`` with that molecule's types and no padding,
      taking the same ``params``: parameters depend on the vocabulary size and the network sizes,
      never on the molecule.

    No bonded exclusions (``exclusion_hops=0``): the pair list is the same for every molecule.
    Priors are per molecule: train on each molecule's delta forces and add its prior at
    simulation time (``PriorPlusNet(prior, model.for_molecule(topology))``), or train without.

    Args:
      vocabulary: the shared bead types.
      n_beads: N_max, the padded bead count.
      features: F, width of embeddings and filters (default 128).
      blocks: interaction blocks (default 2).
      rbf: K Gaussians in [0, cutoff] (default 32).
      cutoff: r_c in nm (default 1.2).
      filter_table: None or K, tabulated filters as in ``SchNet``.
      dtype: parameter and compute dtype (float32 default).
    """

    def __init__(
        self,
        vocabulary: BeadVocabulary,
        n_beads: int,
        features: int = 128,
        blocks: int = 2,
        rbf: int = 32,
        cutoff: float = 1.2,
        filter_table: int | None = None,
        dtype: Any = jnp.float32,
    ):
        if not isinstance(vocabulary, BeadVocabulary):
            raise TypeError(f"vocabulary must be a BeadVocabulary, got {type(vocabulary).__name__}")
        self.vocabulary = vocabulary
        self.n_max = int(n_beads)
        self.settings = {"features": features, "blocks": blocks, "rbf": rbf, "cutoff": cutoff,
                         "filter_table": filter_table, "dtype": dtype}
        # The padded model: a SchNet over N_max beads whose types are given per call.
        self.padded = SchNet(np.zeros(self.n_max, np.int32), n_types=len(vocabulary), **self.settings)

    @property
    def n_types(self) -> int:
        return len(self.vocabulary)

    def init(self, key: jax.Array, positions: jax.Array | None = None) -> dict[str, Any]:
        """Random parameters from ``key`` (those of ``SchNet.module(key)``); positions, if given,
        must have shape (N_max, 3)."""
        if positions is not None and np.shape(positions) != (self.n_max, 3):
            raise ValueError(f"positions must have shape ({self.n_max}, 3), got {np.shape(positions)}")
        return self.padded.params_of(self.padded.module(key))

    def energy(self, params: dict[str, Any], x: jax.Array, types: jax.Array, tables: Any = None) -> jax.Array:
        """Energy in kJ/mol of the real beads of x: (N_max, 3) nm with types: (N_max,) int
        (``PAD`` on padding beads). Pure and jittable; ``jax.vmap`` over (x, types) batches
        frames of different molecules in one compiled call."""
        if np.shape(types) != (self.n_max,):
            raise ValueError(f"types must have shape ({self.n_max},), got {np.shape(types)}")
        real = types != PAD
        network = nnx.merge(self.padded._graphdef, params)
        return self.padded._dense_energy(network, x, tables, jnp.where(real, types, 0), real)

    def filter_tables(self, params: dict[str, Any]) -> tuple[jax.Array, ...]:
        """The filter grid for ``energy(..., tables=)`` (models with ``filter_table`` only)."""
        return self.padded.filter_tables(params)

    def molecule_types(self, molecule: md.Topology | CGData) -> np.ndarray:
        """(N,) int32 vocabulary types of a molecule's beads (a CG topology, or a CGData with
        one); a bead type outside the vocabulary is a ``ValueError`` naming it."""
        topology = molecule.topology if isinstance(molecule, CGData) else molecule
        if not isinstance(topology, md.Topology):
            raise TypeError(f"molecule must be an mdtraj Topology or a CGData with a topology, got {type(molecule).__name__}")
        return self.vocabulary.types(topology)

    def for_molecule(self, molecule: md.Topology | CGData, max_pairs: int | None = None) -> SchNet:
        """The plain ``SchNet`` of one molecule (a CG topology, or a CGData with one), taking this
        model's params: its energy equals the padded ``energy`` of the molecule's frames."""
        return SchNet(self.molecule_types(molecule), n_types=self.n_types, max_pairs=max_pairs, **self.settings)
