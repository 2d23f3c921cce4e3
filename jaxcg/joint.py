"""Joint optimisation of a valid force map and a CG potential (the dual variational principle).

For any valid force map G (consistent, constraint-orthogonal) the force-matching residual splits
into two non-negative parts,

    E‖G F − F_U(M r)‖² = E‖G F + ∇PMF(M r)‖²  +  E‖∇PMF(M r) + F_U(M r)‖²,
                          (noise of the map)       (error of the potential)

because E[G F | x] = −∇PMF(x). Minimising the residual over the map's parameters θ lowers only the
noise, over the potential's parameters only the PMF error, so both can be optimised in one optax
loop (``jaxcg.optim.fit_loss``). The map stays valid for every θ (``jaxcg.maps.valid_map_parametrization``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcg.data import AtomisticData
from jaxcg.dtypes import params_dtype
from jaxcg.maps import MapParametrization, force_matrix, parametrized_map
from jaxcg.maps._linear_map import LinearMap
from jaxcg.models import force_fn
from jaxcg.optim import fit_loss, weighted_mean

EnergyFn = Callable[[Any, jax.Array], jax.Array]


class JointParams(NamedTuple):
    """``theta``: (N, K) map parameters; ``model``: the potential's parameters."""

    theta: jax.Array
    model: Any


def _frame_residuals(
    energy: EnergyFn, config: jax.Array, force: jax.Array, model_params: Any, positions: jax.Array, forces: jax.Array
) -> jax.Array:
    """(B,) mean over beads of ‖G F − F_U(M r)‖² per frame, (kJ/mol/nm)²; config M and force G
    (N, n), positions and forces (B, n, 3) in nm and kJ/mol/nm."""
    x = jnp.einsum("Nn,bnd->bNd", config.astype(positions.dtype), positions)
    mapped = jnp.einsum("Nn,bnd->bNd", force.astype(forces.dtype), forces)
    model_forces = jax.vmap(force_fn(energy), in_axes=(None, 0))(model_params, x)
    return jnp.mean(jnp.sum((mapped - model_forces) ** 2, axis=-1), axis=-1)


def joint_residual(
    energy: EnergyFn, parametrization: MapParametrization, params: JointParams,
    positions: jax.Array, forces: jax.Array,
) -> jax.Array:
    """Mean over frames and beads of ‖G(θ) F − F_U(M r)‖², (kJ/mol/nm)².

    Args:
      positions: all-atom (B, n, 3), nm.
      forces: all-atom (B, n, 3), kJ/mol/nm.
    """
    g = force_matrix(parametrization, params.theta)
    return jnp.mean(_frame_residuals(energy, parametrization.config, g, params.model, positions, forces))


def fixed_map_residual(
    energy: EnergyFn, linear_map: LinearMap, model_params: Any, positions: jax.Array, forces: jax.Array
) -> jax.Array:
    """Mean over frames and beads of ‖G F − F_U(M r)‖² for a fixed map, (kJ/mol/nm)²."""
    return jnp.mean(_frame_residuals(energy, linear_map.config, linear_map.force, model_params, positions, forces))


def fit_joint(
    energy: EnergyFn,
    model_params: Any,
    parametrization: MapParametrization,
    data: AtomisticData,
    key: jax.Array,
    steps: int = 2000,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    map_learning_rate: float = 1e-2,
    train_map: bool = True,
    theta0: jax.Array | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[JointParams, np.ndarray]:
    """Minimise the force-matching residual over the map's θ and the potential's parameters.

    Args:
      energy: U(params, x) -> () kJ/mol, x (N, 3) nm (e.g. ``model.energy``).
      model_params: starting parameters of the potential.
      parametrization: valid-map parametrisation (θ = 0 is its base map).
      data: all-atom training frames.
      key: jax.random key of the shuffling (the run is deterministic given it).
      steps: optimisation steps.
      batch_size: frames per step.
      learning_rate: Adam learning rate (cosine-decayed) of the potential.
      map_learning_rate: Adam learning rate (cosine-decayed) of θ.
      train_map: False freezes θ (plain force matching with the parametrisation's map).
      theta0: starting θ (default zeros).
      callback: callback(step, loss) every 100 steps.

    Returns:
      (JointParams, losses (steps,) in (kJ/mol/nm)² per bead).
    """
    theta = parametrization.zeros() if theta0 is None else jnp.asarray(theta0)
    params = JointParams(theta=theta, model=model_params)
    map_rate = map_learning_rate if train_map else 0.0
    optimizer = optax.multi_transform(
        {
            "theta": optax.adam(optax.cosine_decay_schedule(map_rate, steps, alpha=1e-2))
            if train_map else optax.set_to_zero(),
            "model": optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=1e-2)),
        },
        JointParams(theta="theta", model=jax.tree.map(lambda _: "model", model_params)),
    )
    dtype = params_dtype(model_params)  # the frames follow the model's dtype (jaxcg.dtypes)
    frames = (np.asarray(data.positions, dtype), np.asarray(data.forces, dtype))

    def loss_fn(p: JointParams, batch) -> jax.Array:
        g = force_matrix(parametrization, p.theta)
        return weighted_mean(_frame_residuals(energy, parametrization.config, g, p.model, *batch.data), batch.weights)

    params, losses, _ = fit_loss(
        loss_fn, params, frames, optimizer, steps=steps, batch_size=batch_size, key=key, callback=callback,
        name="fit_joint",
    )
    return params, losses


def joint_map(parametrization: MapParametrization, params: JointParams) -> LinearMap:
    """The LinearMap of fitted joint parameters."""
    return parametrized_map(parametrization, params.theta)
