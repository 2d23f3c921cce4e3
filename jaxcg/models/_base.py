"""The model interface shared by every CG energy model, and force helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp

Params = Any
EnergyFn = Callable[[Params, jax.Array], jax.Array]


class EnergyModel(Protocol):
    """What every jaxcg CG model provides (``SchNet``, ``RBFPairPotential``, ``PriorPlusNet``,
    ``jaxcg.priors.Prior``).

    ``init(key, positions) -> params``: a PyTree of float arrays; positions: (N, 3) nm.
    ``energy(params, x) -> ()``: potential energy in kJ/mol of one configuration x: (N, 3) nm;
    pure and jittable; batch it with ``jax.vmap(energy, in_axes=(None, 0))``.
    """

    def init(self, key: jax.Array, positions: jax.Array) -> Params: ...

    def energy(self, params: Params, x: jax.Array) -> jax.Array: ...


def force_fn(energy: EnergyFn) -> Callable[[Params, jax.Array], jax.Array]:
    """``forces(params, x) = -∂U/∂x``: (N, 3) kJ/mol/nm for x: (N, 3) nm."""

    def forces(params: Params, x: jax.Array) -> jax.Array:
        return -jax.grad(energy, argnums=1)(params, x)

    return forces


def batched_energy_and_forces(energy: EnergyFn) -> Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]:
    """``(params, xs) -> (U (T,) kJ/mol, F (T, N, 3) kJ/mol/nm)`` for xs: (T, N, 3) nm.

    One reverse pass over the summed energy of the batch (frames are independent, so the gradient
    of the sum is the per-frame gradient).
    """

    def total(params: Params, xs: jax.Array) -> tuple[jax.Array, jax.Array]:
        u = jax.vmap(energy, in_axes=(None, 0))(params, xs)
        return jnp.sum(u), u

    def energy_and_forces(params: Params, xs: jax.Array) -> tuple[jax.Array, jax.Array]:
        grad, u = jax.grad(total, argnums=1, has_aux=True)(params, xs)
        return u, -grad

    return energy_and_forces
