"""A SchNet shared by several molecules (a transferable model): bead types from one shared
index space (``jaxcg.molecules.BeadVocabulary`` maps molecules into it), frames padded to one
bead count."""

from __future__ import annotations

from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from jaxcg.models._schnet import SchNet


class TransferableSchNet:
    """SchNet over a bead-type vocabulary shared by several molecules, for any molecule whose
    beads have types in it.

    Two views of the same parameters:

    - padded (training on several molecules): ``energy(params, x, types)`` for x: (N_max, 3) nm
      and types: (N_max,) int, negative (``jaxcg.molecules.PAD``, −1) on padding beads. Every pair i < j of the N_max
      beads is listed once; a pair with a padding bead gets zero filters and padding beads'
      atom-wise outputs are left out, so the energy is that of the real beads alone and padding
      beads feel no force.
    - per molecule (simulation, a molecule never trained on, or one larger than N_max):
      ``for_molecule(bead_types)`` is a plain ``SchNet`` with that molecule's types (from
      ``BeadVocabulary.types(topology)``) and no padding,
      taking the same ``params``: parameters depend on the vocabulary size and the network sizes,
      never on the molecule.

    No bonded exclusions (``exclusion_hops=0``): the pair list is the same for every molecule.
    Priors are per molecule: train on each molecule's delta forces and add its prior at
    simulation time (``PriorPlusNet(prior, model.for_molecule(types))``), or train without
    (``jaxcg.pipeline.train_transferable_model`` does the former).

    Args:
      n_types: size of the shared bead-type vocabulary (``len(BeadVocabulary)``).
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
        n_types: int,
        n_beads: int,
        features: int = 128,
        blocks: int = 2,
        rbf: int = 32,
        cutoff: float = 1.2,
        filter_table: int | None = None,
        dtype: Any = jnp.float32,
    ):
        if isinstance(n_types, bool) or not isinstance(n_types, int | np.integer) or n_types < 1:
            raise ValueError(f"n_types must be a positive integer (the vocabulary size), got {n_types!r}")
        self.n_types = int(n_types)
        self.n_max = int(n_beads)
        self.settings = {"features": features, "blocks": blocks, "rbf": rbf, "cutoff": cutoff,
                         "filter_table": filter_table, "dtype": dtype}
        # The padded model: a SchNet over N_max beads whose types are given per call.
        self.padded = SchNet(np.zeros(self.n_max, np.int32), n_types=self.n_types, **self.settings)

    def init(self, key: jax.Array, positions: jax.Array | None = None) -> dict[str, Any]:
        """Random parameters from ``key`` (those of ``SchNet.module(key)``); positions, if given,
        must have shape (N_max, 3)."""
        if positions is not None and np.shape(positions) != (self.n_max, 3):
            raise ValueError(f"positions must have shape ({self.n_max}, 3), got {np.shape(positions)}")
        return self.padded.params_of(self.padded.module(key))

    def energy(self, params: dict[str, Any], x: jax.Array, types: jax.Array, tables: Any = None) -> jax.Array:
        """Energy in kJ/mol of the real beads of x: (N_max, 3) nm with types: (N_max,) int
        (negative on padding beads). Pure and jittable; ``jax.vmap`` over (x, types) batches
        frames of different molecules in one compiled call."""
        if np.shape(types) != (self.n_max,):
            raise ValueError(f"types must have shape ({self.n_max},), got {np.shape(types)}")
        real = types >= 0
        network = nnx.merge(self.padded._graphdef, params)
        return self.padded._dense_energy(network, x, tables, jnp.where(real, types, 0), real)

    def filter_tables(self, params: dict[str, Any]) -> tuple[jax.Array, ...]:
        """The filter grid for ``energy(..., tables=)`` (models with ``filter_table`` only)."""
        return self.padded.filter_tables(params)

    def for_molecule(self, bead_types: np.ndarray, max_pairs: int | None = None) -> SchNet:
        """The plain ``SchNet`` of one molecule with bead_types: (N,) int in [0, n_types) (e.g.
        ``BeadVocabulary.types(topology)``), taking this model's params: its energy equals the
        padded ``energy`` of the molecule's frames. ``max_pairs`` as in ``SchNet``."""
        return SchNet(np.asarray(bead_types), n_types=self.n_types, max_pairs=max_pairs, **self.settings)
