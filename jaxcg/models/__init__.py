"""CG energy models. Every model has one functional interface:

.. code-block:: python

    model = SchNet(bead_types, features=128, blocks=2, rbf=32, cutoff=1.2)
    params = model.init(key, example_positions)      # PyTree of float arrays; x: (N, 3) nm
    u = model.energy(params, x)                       # () kJ/mol, pure and jittable
    forces = force_fn(model.energy)                   # (params, x) -> (N, 3) kJ/mol/nm = -dU/dx
    batched = batched_energy_and_forces(model.energy) # (params, xs (T, N, 3)) -> (U (T,), F (T, N, 3))

- ``model.init(key: jax.Array, positions: jax.Array) -> params``
- ``model.energy(params, x: jax.Array) -> jax.Array`` (scalar), one configuration; use
  ``jax.vmap(model.energy, in_axes=(None, 0))`` for many replicas.
- The bead types and the bonded graph are fixed when the model is built (they are not arguments
  of ``energy``), so one model describes one CG molecule. ``TransferableSchNet`` is the
  exception: one set of parameters for every molecule of a shared bead vocabulary, with
  ``energy(params, x, types)`` on padded frames and ``for_molecule(topology)`` a plain SchNet.

Models:

- ``SchNet``: Flax nnx SchNet (dense pairs, each unordered pair once; ``max_pairs=`` keeps only
  pairs within the cutoff in a static buffer; a frame with more sets ``model.pair_overflow(x)``,
  which ``jaxcg.train.fit`` checks: pick it from ``model.pair_counts(positions)``; params are
  independent of it). For large systems,
  ``displacement, neighbor_fn = model.neighbor_list(box)`` and
  ``model.energy_neighbors(params, x, nbrs, displacement)`` use a jax-md ``OrderedSparse`` list;
  check ``nbrs.did_buffer_overflow`` on the host. ``filter_table=K`` tabulates the filters on
  K grid intervals (cubic Hermite, error O(K⁻⁴); ``model.filter_table_error(params)``), rebuilt
  from the weights on each call, so it trains; for simulation ``tables = model.filter_tables(params)``
  computes the grid once and ``model.energy(params, x, tables=tables)`` uses it. The same model
  as a stateful Flax nnx module: ``model.module(key)`` (a ``SchNetModule``, for ``nnx.jit`` and
  ``nnx.Optimizer``), ``model.params_of(module)``, ``model.module_from(params)``.
- ``TransferableSchNet(vocabulary, n_beads)``: SchNet over several molecules padded to
  ``n_beads`` (``jaxcg.molecules``); ``energy(params, x, types)``, types −1 on padding beads;
  ``for_molecule(topology)`` gives the molecule's plain ``SchNet`` with the same params.
- ``RBFPairPotential``: Σ_pairs Σ_k c_k φ_k(r) (the water-dimer model).
- ``PriorPlusNet(prior, net)``: U = U_prior + U_net, params ``{"prior": ..., "net": ...}``.
- ``jaxcg.priors.Prior`` (from ``jaxcg.priors.fit_prior``) follows the same interface.

Units: positions nm, energies kJ/mol, forces kJ/mol/nm. Float32 by default.
"""

from jaxcg.models._base import EnergyModel, batched_energy_and_forces, force_fn
from jaxcg.models._prior_plus_net import PriorPlusNet
from jaxcg.models._rbf import RBFPairPotential, cosine_cutoff, gaussian_rbf
from jaxcg.models._schnet import SchNet, SchNetModule, SchNetNetwork, shifted_softplus
from jaxcg.models._transferable import TransferableSchNet

__all__ = [
    "EnergyModel",
    "PriorPlusNet",
    "RBFPairPotential",
    "SchNet",
    "SchNetModule",
    "SchNetNetwork",
    "TransferableSchNet",
    "batched_energy_and_forces",
    "cosine_cutoff",
    "force_fn",
    "gaussian_rbf",
    "shifted_softplus",
]
