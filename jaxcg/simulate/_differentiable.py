"""A trajectory observable as a pure, differentiable function of the potential's parameters."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcg.simulate._integrators import _check_positive, _standard_promotion, jmd_simulate, space

Array = jax.Array


def _block_size(checkpoint_every: int | str | None, n_steps: int) -> int | None:
    """Steps per rematerialised block: "auto" gives ceil(sqrt(n_steps)), None no checkpointing."""
    if checkpoint_every is None:
        return None
    if checkpoint_every == "auto":
        return max(1, math.isqrt(n_steps - 1) + 1)
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive int, 'auto' or None, got {checkpoint_every!r}")
    return min(int(checkpoint_every), n_steps)


@_standard_promotion
def trajectory_observable(
    energy: Callable[..., Array],
    params: Any,
    x0: Array,
    key: Array,
    n_steps: int,
    dt: float | Array,
    friction: float | Array,
    kT: float | Array,
    masses: Array,
    observable: Callable[[Array], Array],
    *,
    shift_fn: Callable | None = None,
    checkpoint_every: int | str | None = "auto",
) -> Array:
    """Time average of ``observable`` over one Langevin trajectory, differentiable in its inputs.

    The trajectory is the simulator's integrator (jax-md ``nvt_langevin``, BAOAB, as in
    ``langevin``) started at ``x0`` with Maxwell–Boltzmann momenta; ``key`` fixes the momenta and
    the noise of every step, so the result is a deterministic, differentiable function of
    ``params`` (and of ``x0``, ``kT``, ``dt``, ``friction``): ``jax.grad`` of it with respect to
    ``params`` is the pathwise sensitivity of the observable along this noise realisation. Replicas:
    ``jax.vmap`` over ``key`` and ``x0``. Dtypes follow ``x0`` (float64 under
    ``jax.experimental.enable_x64``).

    Reverse-mode memory: with ``checkpoint_every=None`` the backward pass keeps every step's
    intermediates (memory grows with ``n_steps``); with a block size b the steps are grouped in
    blocks under ``jax.checkpoint``, so only the state at each block's start is kept and one block
    is recomputed at a time (memory ~ n_steps / b states + one block's intermediates, one extra
    forward pass of compute). "auto" takes b = ceil(sqrt(n_steps)); b = 1 rematerialises per step.

    Args:
      energy: ``energy(x (N, 3) nm, params=params) -> kJ/mol``, the simulator's call-time
        convention.
      params: PyTree of the energy's parameters.
      x0: (N, 3) nm, the starting positions.
      key: jax.random key of the momenta and the noise.
      n_steps: steps (static: a new value compiles anew).
      dt: timestep, ps.
      friction: 1/ps.
      kT: kJ/mol.
      masses: (N,) amu.
      observable: ``observable(x (N, 3) nm) -> array`` (any shape) of one configuration.
      shift_fn: jax-md shift function (default ``space.free()``).
      checkpoint_every: steps per ``jax.checkpoint`` block, "auto" or None (no checkpointing).

    Returns:
      the mean of ``observable(x_t)`` over the positions after steps t = 1 .. n_steps.
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    if not isinstance(dt, jax.core.Tracer) and not isinstance(friction, jax.core.Tracer):
        _check_positive(dt=float(dt), friction=float(friction))
    x0 = jnp.asarray(x0)
    if x0.ndim != 2 or x0.shape[1] != 3:
        raise ValueError(f"x0 must have shape (N, 3), got {x0.shape}")
    masses = jnp.asarray(masses, x0.dtype)
    if masses.shape != (x0.shape[0],):
        raise ValueError(f"masses must have shape ({x0.shape[0]},) (one per bead), got {masses.shape}")
    block = _block_size(checkpoint_every, n_steps)
    shift = space.free()[1] if shift_fn is None else shift_fn
    kT = jnp.asarray(kT, x0.dtype)
    init_fn, step_fn = jmd_simulate.nvt_langevin(energy, shift, dt, kT, gamma=friction)
    state = init_fn(key, x0, mass=masses, kT=kT, params=params)

    def steps(state, length):
        def one(s, _):
            s = step_fn(s, kT=kT, params=params)
            return s, observable(s.position)

        state, values = jax.lax.scan(one, state, None, length=length)
        return state, jnp.sum(values, axis=0)

    if block is None:
        _, total = steps(state, n_steps)
        return total / n_steps
    n_blocks, tail = divmod(n_steps, block)
    remat = jax.checkpoint(steps, static_argnums=(1,), prevent_cse=False)
    state, sums = jax.lax.scan(lambda s, _: remat(s, block), state, None, length=n_blocks)
    total = jnp.sum(sums, axis=0)
    if tail:
        _, rest = remat(state, tail)
        total = total + rest
    return total / n_steps
