"""``LinearMap``: a configurational map M and a force map G, as one PyTree."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LinearMap:
    """A linear coarse-graining map.

    Attributes:
      config: (N, n) configurational map M; CG positions x = M r (nm). Rows sum to 1.
      force: (N, n) force map G; CG forces f = G F (kJ/mol/nm). Valid when G Mᵀ = I and G gives
        equal weights to the atoms of every constraint group (see ``check_map``).

    Both matrices are PyTree leaves, so a map can be passed through ``jax.jit``, differentiated
    with ``jax.grad``, optimised with optax, mapped over with ``jax.tree.map`` and stacked and
    ``jax.vmap``-ed (leading axes: ``config`` (..., N, n)). The constructor does not check
    anything, because JAX rebuilds the PyTree with other leaves (tracers, ``in_axes`` integers,
    optax mask booleans, stacked arrays). Builders (``slice_map``, ``com_map``,
    ``basic_aggregation_map``, ``optimal_linear_map``, ``parametrized_map``) return checked maps;
    build one from your own matrices with ``LinearMap.validated(config, force)``, and check
    physical validity (G Mᵀ = I, constraint groups) with ``check_map``.
    """

    config: jax.Array
    force: jax.Array

    @classmethod
    def validated(cls, config: jax.Array, force: jax.Array) -> LinearMap:
        """A LinearMap of config M and force G, after checking them.

        Args:
          config: (N, n) M, rows summing to 1 (nm → nm); force: (N, n) G (kJ/mol/nm → kJ/mol/nm).
            Arrays, tracers (shapes checked inside ``jit``) or anything ``jnp.asarray`` takes.

        Raises:
          ValueError: if either is not a (N, n) matrix, the shapes differ, a matrix is not
            floating point, or (for concrete values) holds NaN or inf.
        """
        config, force = jnp.asarray(config), jnp.asarray(force)
        check_matrices(config, force)
        return cls(config=config, force=force)

    @property
    def n_beads(self) -> int:
        """N (the second-to-last axis of ``config``)."""
        return int(np.shape(self.config)[-2])

    @property
    def n_atoms(self) -> int:
        """n (the last axis of ``config``)."""
        return int(np.shape(self.config)[-1])


def check_matrices(config: jax.Array, force: jax.Array) -> None:
    """Raise ValueError unless config and force are finite floating (N, n) matrices of one shape
    (values are checked only when concrete, not for tracers)."""
    config_shape, force_shape = np.shape(config), np.shape(force)
    if len(config_shape) != 2:
        raise ValueError(f"config must be a (N, n) matrix, got shape {config_shape}")
    if config_shape != force_shape:
        raise ValueError(
            f"force has shape {force_shape} but config has shape {config_shape}; both must be (N, n)"
        )
    for name, matrix in (("config", config), ("force", force)):
        if not jnp.issubdtype(jnp.result_type(matrix), jnp.floating):
            raise ValueError(f"{name} must be a floating-point matrix, got dtype {jnp.result_type(matrix)}")
        if not isinstance(matrix, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(matrix))):
            raise ValueError(f"{name} holds NaN or inf coefficients")


def _check_atoms(name: str, array: jax.Array, n_atoms: int) -> None:
    shape = np.shape(array)
    if len(shape) < 2 or shape[-1] != 3 or shape[-2] != n_atoms:
        raise ValueError(
            f"{name} must have shape (..., {n_atoms}, 3) to match the map's {n_atoms} atoms, got {shape}"
        )


def _as_float(name: str, array: jax.Array) -> jax.Array:
    """The dtype policy of mapped inputs: floats of at least 32 bits; integers refused."""
    dtype = getattr(array, "dtype", None)
    if dtype is None:
        array = np.asarray(array)
        dtype = array.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name} must hold floats (nm or kJ/mol/nm), got dtype {dtype}; convert explicitly, "
            f"e.g. {name}.astype(np.float32) (integer inputs would truncate the map's weights)"
        )
    if jnp.finfo(dtype).bits < 32:
        return array.astype(jnp.float32)
    return array


@jax.jit
def _apply(config: jax.Array, force: jax.Array, positions: jax.Array, forces: jax.Array):
    x = jnp.einsum("Nn,...nd->...Nd", config.astype(positions.dtype), positions)
    f = jnp.einsum("Nn,...nd->...Nd", force.astype(forces.dtype), forces)
    return x, f


def apply_map(
    linear_map: LinearMap, positions: jax.Array, forces: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Map all-atom positions and forces to CG positions and forces.

    Args:
      linear_map: the map (M, G), each (N, n).
      positions: (n, 3) or (T, n, 3), nm.
      forces: same shape as positions, kJ/mol/nm.

    Returns:
      x = M r and f = G F, each (N, 3) or (T, N, 3), in nm and kJ/mol/nm, in the inputs' float
      dtype (float32 or float64).

    Dtype policy: positions and forces must hold floats; integer (and bool) inputs raise a
    TypeError rather than being computed in integers, which would truncate the map's weights
    (a centre-of-mass map would give zeros). float16/bfloat16 inputs are upcast to float32.

    Jitted; works inside ``jax.grad``/``jax.vmap`` (shape and dtype checks run at trace time).
    """
    positions = _as_float("positions", positions)
    forces = _as_float("forces", forces)
    _check_atoms("positions", positions, linear_map.n_atoms)
    _check_atoms("forces", forces, linear_map.n_atoms)
    if np.shape(positions) != np.shape(forces):
        raise ValueError(
            f"forces has shape {np.shape(forces)} but positions has shape {np.shape(positions)}"
        )
    return _apply(linear_map.config, linear_map.force, positions, forces)


@jax.jit
def mapped_force_sq(force_map: jax.Array, forces: jax.Array) -> jax.Array:
    """Squared norm of each bead's mapped force, ‖(G F)_i‖², in (kJ/mol/nm)².

    Args:
      force_map: (N, n) force map G.
      forces: (T, n, 3) kJ/mol/nm.

    Returns:
      (T, N) array.
    """
    mapped = jnp.einsum("Nn,tnd->tNd", force_map.astype(forces.dtype), forces)
    return jnp.sum(mapped**2, axis=-1)


def mean_squared_mapped_force(
    linear_map: LinearMap | jax.Array, forces: jax.Array, per_bead: bool = False
) -> jax.Array:
    """The force map's noise objective: E_frames Σ_beads ‖(G F)_i‖², in (kJ/mol/nm)².

    Args:
      linear_map: a LinearMap or its (N, n) force matrix G.
      forces: (T, n, 3) kJ/mol/nm.
      per_bead: return the (N,) per-bead means instead of their sum.
    """
    force_map = linear_map.force if isinstance(linear_map, LinearMap) else linear_map
    forces = jnp.asarray(forces)
    _check_atoms("forces", forces, np.shape(force_map)[1])
    per_frame = mapped_force_sq(jnp.asarray(force_map), forces.reshape(-1, *forces.shape[-2:]))
    means = per_frame.mean(axis=0)
    return means if per_bead else means.sum()
