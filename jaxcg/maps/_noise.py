"""Noise-augmented force maps: forces plus the score of added Gaussian noise (arXiv 2407.01286).

Each frame is extended with N noised beads y = M r + √var ε, ε ~ N(0, I). In the extended
ensemble p(r, y) ∝ exp(−U(r)/kT) N(y; M r, var I) the "forces" are

    on atoms:        F(r) + kT Mᵀ (y − M r) / var        (kJ/mol/nm)
    on noised beads: −kT (y − M r) / var

and the CG coordinates are the noised beads y. Any valid linear force map of the extended system
(consistent with the map that selects y, equal weights inside constraint groups of the atoms)
gives unbiased mean forces of the *smoothed* PMF of y (the PMF of x convolved with the Gaussian).
The optimal one mixes the atomistic forces and the noise score to minimise E‖f‖²; ``var`` trades
noise in the targets for smoothing of the PMF (var → 0 recovers the ordinary optimal map).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxcg.data import AtomisticData
from jaxcg.maps._linear_map import LinearMap
from jaxcg.maps._optimal import optimal_linear_map


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NoiseAugmentedMap:
    """A stochastic map: add noise of variance ``var`` (nm²) to M r, then map forces linearly.

    Attributes:
      config: (N, n) configurational map M of the atoms.
      force: (N, n + N) force map of the extended system (atoms first, then noised beads).
      var: noise variance per Cartesian component, nm².
      kT: thermal energy of the data, kJ/mol.
    """

    config: jax.Array
    force: jax.Array
    var: float = dataclasses.field(metadata={"static": True})
    kT: float = dataclasses.field(metadata={"static": True})


def augment_with_noise(
    positions: jax.Array, forces: jax.Array, config: jax.Array, var: float, kT: float, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Extend frames with noised beads and their forces.

    Args:
      positions: (T, n, 3) nm. forces: (T, n, 3) kJ/mol/nm. config: (N, n) M.
      var: noise variance, nm². kT: kJ/mol. key: jax.random key.

    Returns:
      (T, n + N, 3) positions and forces of the extended system (see module docstring).
    """
    config = jnp.asarray(config, positions.dtype)
    mapped = jnp.einsum("Nn,tnd->tNd", config, positions)
    noise = jax.random.normal(key, mapped.shape, positions.dtype) * jnp.sqrt(var)
    noised = mapped + noise
    score = -kT * noise / var  # kT ∇_y log N(y; M r, var)
    atom_forces = forces - jnp.einsum("Nn,tNd->tnd", config, score)
    return jnp.concatenate([positions, noised], axis=1), jnp.concatenate([atom_forces, score], axis=1)


def noise_augmented_map(
    data: AtomisticData,
    config_map: LinearMap | np.ndarray,
    var: float,
    key: jax.Array,
    constraints: np.ndarray | None = None,
    l2: float = 0.0,
) -> NoiseAugmentedMap:
    """The optimal noise-augmented map for ``data``.

    Args:
      data: all-atom frames (positions nm, forces kJ/mol/nm) at temperature ``data.temperature``.
      config_map: a LinearMap or an (N, n) M.
      var: noise variance, nm² (must be > 0).
      key: jax.random key for the noise used in fitting.
      constraints: (K, 2) pairs (default: the data's).
      l2: ridge penalty as in ``optimal_linear_map``.
    """
    if not var > 0:
        raise ValueError(f"var must be a positive variance in nm², got {var}")
    config = np.asarray(config_map.config if isinstance(config_map, LinearMap) else config_map)
    if constraints is None:
        constraints = data.constraints
    n_beads, n_atoms = config.shape
    positions, forces = augment_with_noise(
        jnp.asarray(data.positions), jnp.asarray(data.forces), jnp.asarray(config), var, data.kT, key
    )
    selector = np.concatenate([np.zeros((n_beads, n_atoms)), np.eye(n_beads)], axis=1)
    extended = optimal_linear_map(np.asarray(forces), selector, constraints, l2=l2)
    return NoiseAugmentedMap(
        config=jnp.asarray(config, extended.force.dtype), force=extended.force, var=float(var), kT=data.kT
    )


def apply_noise_augmented_map(
    noise_map: NoiseAugmentedMap, positions: jax.Array, forces: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Map frames: noised CG positions y (T, N, 3) nm and their forces (T, N, 3) kJ/mol/nm.

    Each call draws fresh noise from ``key``: the map is stochastic by design.
    """
    extended_positions, extended_forces = augment_with_noise(
        positions, forces, noise_map.config, noise_map.var, noise_map.kT, key
    )
    n_atoms = np.shape(noise_map.config)[1]
    mapped = jnp.einsum("Nm,tmd->tNd", noise_map.force.astype(forces.dtype), extended_forces)
    return extended_positions[:, n_atoms:], mapped
