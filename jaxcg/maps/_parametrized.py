"""Force maps in which every parameter value is valid, and their optimisation with optax.

For bead i, G_i = G0_i + θ_i B_i, where G0 is a valid map (basic aggregation by default) and the
rows of B_i (K × n) span the directions that keep the map valid: each is C z with z in the null
space of A = M C restricted to the groups the bead may use (its *support*). Then
Δ_i Mᵀ = θ_i (A z)ᵀ = 0, so G Mᵀ = I holds for every θ, and rows of the form C z give equal
weights inside every constraint group. With full support the parametrisation covers every valid
map, so minimising E‖G F‖² over θ reaches the KKT optimum of ``optimal_linear_map``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np
import optax

from jaxcg.constraints import expansion_matrix
from jaxcg.data import AtomisticData
from jaxcg.maps._builders import basic_aggregation_map
from jaxcg.maps._linear_map import LinearMap
from jaxcg.optim import fit_loss, weighted_mean


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MapParametrization:
    """The fixed part of a parametrised valid force map.

    Attributes:
      config: (N, n) configurational map M.
      base: (N, n) a valid force map G0 (θ = 0).
      basis: (N, K, n) per-bead valid directions, zero-padded to the largest K.
    """

    config: jax.Array
    base: jax.Array
    basis: jax.Array

    @property
    def n_params(self) -> tuple[int, int]:
        """Shape (N, K) of θ."""
        return tuple(np.shape(self.basis)[:2])

    def zeros(self) -> jax.Array:
        """θ = 0, the base map."""
        return jnp.zeros(self.n_params, dtype=self.basis.dtype)


def force_matrix(parametrization: MapParametrization, theta: jax.Array) -> jax.Array:
    """(N, n) force map G = G0 + Σ_k θ_ik B_ik, valid for every θ (N, K)."""
    return parametrization.base + jnp.einsum("ik,ikn->in", theta, parametrization.basis)


def parametrized_map(parametrization: MapParametrization, theta: jax.Array) -> LinearMap:
    """The LinearMap (M, G(θ))."""
    return LinearMap.validated(config=parametrization.config, force=force_matrix(parametrization, theta))


def valid_map_parametrization(
    config_map: LinearMap | np.ndarray,
    constraints: np.ndarray | None = None,
    support: np.ndarray | None = None,
    base: LinearMap | np.ndarray | None = None,
) -> MapParametrization:
    """Build the valid-map parametrisation of ``config_map`` under ``constraints``.

    Args:
      config_map: a LinearMap or an (N, n) matrix M.
      constraints: (K, 2) constrained atom pairs, or None.
      support: optional (N, n) bool mask of the atoms each bead's force row may use (e.g.
        ``support_within_bonds``); whole constraint groups and the bead's own atoms are always
        included. None: every atom (the full valid set).
      base: a valid map G0 inside the support; default basic aggregation.

    Returns:
      MapParametrization with float32 arrays (float64 under ``jax.enable_x64``).
    """
    config = np.asarray(config_map.config if isinstance(config_map, LinearMap) else config_map, np.float64)
    n_beads, n_atoms = config.shape
    expand = expansion_matrix(constraints, n_atoms)
    a = config @ expand
    if base is None:
        base_force = np.asarray(basic_aggregation_map(config, constraints).force, np.float64)
    else:
        base_force = np.asarray(base.force if isinstance(base, LinearMap) else base, np.float64)
    if support is None:
        support = np.ones((n_beads, n_atoms), dtype=bool)
    support = np.asarray(support, dtype=bool)
    if support.shape != (n_beads, n_atoms):
        raise ValueError(f"support must have shape ({n_beads}, {n_atoms}), got {support.shape}")
    directions = []
    for bead in range(n_beads):
        used = (support[bead] | (config[bead] != 0) | (base_force[bead] != 0)).astype(float)
        groups = np.flatnonzero(used @ expand > 0)  # groups touching the support, taken whole
        outside = np.abs(base_force[bead]) @ expand
        outside[groups] = 0.0
        if outside.any():
            raise ValueError(f"base map: bead {bead} has weights outside its support")
        _, singular, vt = np.linalg.svd(a[:, groups])
        rank = int((singular > 1e-10 * max(singular.max(initial=0.0), 1.0)).sum())
        null = vt[rank:].T  # (|groups|, k_i), orthonormal
        directions.append(expand[:, groups] @ null)  # (n, k_i)
    width = max(d.shape[1] for d in directions)
    basis = np.zeros((n_beads, width, n_atoms))
    for bead, d in enumerate(directions):
        basis[bead, : d.shape[1]] = d.T
    dtype = jnp.result_type(float)
    return MapParametrization(
        config=jnp.asarray(config, dtype), base=jnp.asarray(base_force, dtype), basis=jnp.asarray(basis, dtype)
    )


def support_within_bonds(topology: md.Topology, config_map: LinearMap | np.ndarray, hops: int = 2) -> np.ndarray:
    """(N, n) mask: atoms within ``hops`` bonds of any atom of each bead (bond-graph distance)."""
    config = np.asarray(config_map.config if isinstance(config_map, LinearMap) else config_map)
    n_atoms = topology.n_atoms
    adjacency = np.zeros((n_atoms, n_atoms), dtype=bool)
    for bond in topology.bonds:
        adjacency[bond.atom1.index, bond.atom2.index] = adjacency[bond.atom2.index, bond.atom1.index] = True
    reach = config != 0
    for _ in range(hops):
        reach = reach | (reach.astype(np.int32) @ adjacency.astype(np.int32) > 0)
    return reach


def fit_force_map(
    parametrization: MapParametrization,
    source: AtomisticData | np.ndarray,
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 2000,
    batch_size: int = 256,
    key: jax.Array | None = None,
    theta0: jax.Array | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[LinearMap, jax.Array, np.ndarray]:
    """Minimise E‖G(θ) F‖² over θ by minibatch gradients with optax.

    Args:
      parametrization: from ``valid_map_parametrization``.
      source: AtomisticData or forces (T, n, 3) in kJ/mol/nm.
      optimizer: optax transformation (default Adam with cosine-decayed learning rate 0.05).
      steps: optimisation steps; batch_size: frames per step (the frames are reshuffled every
        epoch, on the device; ``jaxcg.optim.fit_loss``).
      key: jax.random key of the shuffling (default PRNGKey(0)).
      theta0: starting θ (N, K); default zeros (the base map).
      callback: called as callback(step, loss) every 100 steps (for progress bars).

    Returns:
      (LinearMap, θ, losses): the fitted map, its parameters and the (steps,) minibatch losses
      in (kJ/mol/nm)² (mean over frames of Σ_beads ‖f‖²).
    """
    forces = source.forces if isinstance(source, AtomisticData) else np.asarray(source)
    forces = jnp.asarray(forces, dtype=parametrization.basis.dtype)
    if forces.ndim != 3 or forces.shape[1] != np.shape(parametrization.base)[1]:
        raise ValueError(
            f"forces must have shape (T, {np.shape(parametrization.base)[1]}, 3), got {forces.shape}"
        )
    if optimizer is None:
        optimizer = optax.adam(optax.cosine_decay_schedule(0.05, steps, alpha=1e-3))
    key = jax.random.PRNGKey(0) if key is None else key
    theta = parametrization.zeros() if theta0 is None else jnp.asarray(theta0)
    # normalise by the base map's noise so the learning rate does not depend on force units
    scale = jnp.mean(jnp.sum(jnp.einsum("in,tnd->tid", parametrization.base, forces[:1024]) ** 2, axis=(1, 2)))

    def loss_fn(th: jax.Array, batch) -> jax.Array:
        mapped = jnp.einsum("in,tnd->tid", force_matrix(parametrization, th), batch.data)
        return weighted_mean(jnp.sum(mapped**2, axis=(1, 2)), batch.weights) / scale

    report = None if callback is None else (lambda step, loss: callback(step, loss * float(scale)))
    theta, losses, _ = fit_loss(
        loss_fn, theta, forces, optimizer, steps=steps, batch_size=batch_size, key=key, callback=report,
        name="fit_force_map",
    )
    return parametrized_map(parametrization, theta), theta, losses * float(scale)
