"""Relative-entropy refinement of a CG potential against mapped reference configurations.

The relative entropy of the CG model p_θ(x) ∝ exp(−β U_θ(x)) from the mapped reference ensemble,
S_rel(θ) = ⟨ln p_ref(x) / p_θ(x)⟩_ref, has the gradient

    ∂S_rel/∂θ = β (⟨∂U_θ/∂θ⟩_mapped reference − ⟨∂U_θ/∂θ⟩_CG),

the second average over the model's own Boltzmann distribution. ``relative_entropy_loss`` is a
loss in ``jaxcg.optim``'s contract whose gradient is this estimate on a ``Samples`` batch (its
value, β(⟨U⟩_ref − ⟨U⟩_CG), is not S_rel itself); ``refine`` alternates CG sampling with the
simulator, given the current parameters at call time so one compiled chunk serves every
iteration, and an optax step built by ``jaxcg.optim.make_step``. It needs positions only, no
forces: every force map with the same configurational map has the same target.

Units: positions nm, energies and kT kJ/mol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcg.optim import OptState, init_state, make_step, weighted_mean

Array = jax.Array
Params = Any


class Samples(NamedTuple):
    """One batch of the two ensembles.

    Attributes:
      reference: (B, N, 3) nm, mapped reference configurations.
      reference_weights: (B,) frame weights (0 for padding).
      cg: (C, N, 3) nm, configurations sampled from the CG model.
      cg_weights: (C,) frame weights (0 for frames of stopped replicas).
    """

    reference: Array
    reference_weights: Array
    cg: Array
    cg_weights: Array


class RefineResult(NamedTuple):
    """What ``refine`` returns.

    Attributes:
      params: the refined parameters.
      positions: (R, N, 3) nm, the replicas' last positions (start a longer refinement from them).
        Stopped replicas stay stopped (their frames get weight 0).
      history: per iteration (iterations,) arrays: ``loss`` (β(⟨U⟩_ref − ⟨U⟩_CG), dimensionless),
        ``grad_norm`` (global norm of the gradient estimate), ``alive`` (fraction of replicas
        that ran the whole chunk).
    """

    params: Params
    positions: np.ndarray
    history: dict[str, np.ndarray]


def relative_entropy_loss(energy: Callable[..., Array], kT: float | Array) -> Callable[[Params, Samples], Array]:
    """``loss(params, samples) -> ()`` whose gradient is the estimate of ∂S_rel/∂θ.

    Args:
      energy: ``energy(x (N, 3) nm, params=params) -> kJ/mol`` (the simulator's convention).
      kT: kJ/mol, the temperature of the reference and of the CG samples.

    Returns:
      ``loss(params, Samples) = β(⟨U_θ⟩_ref − ⟨U_θ⟩_CG)`` with frame-weighted means; the CG frames
      enter under ``stop_gradient`` (they are samples, not functions of θ).
    """

    def loss(params: Params, samples: Samples) -> Array:
        def mean_energy(x, weights):
            u = jax.vmap(lambda xi: energy(xi, params=params))(x)
            return weighted_mean(u, weights)

        cg = jax.lax.stop_gradient(samples.cg)
        return (mean_energy(samples.reference, samples.reference_weights) - mean_energy(cg, samples.cg_weights)) / kT

    return loss


def relative_entropy_gradient(
    energy: Callable[..., Array], params: Params, reference: Array, cg: Array, kT: float | Array
) -> Params:
    """β(⟨∂U/∂θ⟩_reference − ⟨∂U/∂θ⟩_cg), a PyTree like ``params``.

    Args:
      energy: ``energy(x (N, 3) nm, params=params) -> kJ/mol``.
      params: PyTree of parameters θ.
      reference: (B, N, 3) nm, mapped reference configurations.
      cg: (C, N, 3) nm, configurations sampled from the model at ``params``.
      kT: kJ/mol.
    """
    reference, cg = jnp.asarray(reference), jnp.asarray(cg)
    samples = Samples(reference, jnp.ones(reference.shape[0], reference.dtype), cg, jnp.ones(cg.shape[0], cg.dtype))
    return jax.grad(relative_entropy_loss(energy, kT))(params, samples)


def refine(
    energy: Callable[..., Array],
    params: Params,
    reference: np.ndarray,
    simulator: Any,
    start: np.ndarray,
    optimizer: optax.GradientTransformation,
    *,
    kT: float,
    iterations: int,
    batch_size: int,
    key: Array,
    callback: Callable[[int, Params, dict[str, float]], None] | None = None,
) -> RefineResult:
    """Minimise the relative entropy by stochastic gradient steps, sampling the CG model as it goes.

    The replicas are persistent chains: each iteration continues them (positions and momenta)
    with the forces recomputed for the current parameters, runs one chunk
    (``simulator.run_chunk``), and takes one ``optimizer`` step on ``relative_entropy_loss`` with
    the chunk's saved frames against ``batch_size`` reference frames drawn at random. The parameters and ``kT`` are call-time
    arguments of the simulator: it compiles once, whatever the number of iterations.

    Args:
      energy: ``energy(x (N, 3) nm, params=params) -> kJ/mol``; the energy the simulator was
        built with.
      params: initial parameters (e.g. force-matched).
      reference: (T, N, 3) nm, mapped reference configurations (copied to the device once).
      simulator: a ``jaxcg.simulate`` Langevin or Brownian ``Simulator`` of that energy; its
        ``steps_per_chunk`` and ``save_every`` set the CG frames per iteration (R × frames per
        chunk).
      start: (R, N, 3) nm, the replicas' starting positions (e.g. reference frames).
      optimizer: an optax transformation; to refine a part of the parameters, give the others
        ``optax.set_to_zero()`` with ``optax.multi_transform`` (``optax.masked`` would pass their
        raw gradients through as updates).
      kT: kJ/mol, the temperature of the reference; the simulator samples at it.
      iterations: optimisation steps (one chunk each).
      batch_size: reference frames per step.
      key: jax.random key (momenta, noise, reference batches).
      callback: ``callback(iteration, params, metrics)`` after each step, on the host.

    Returns:
      RefineResult(params, positions, history).

    Raises:
      FloatingPointError: every replica stopped in a chunk (the parameters left the stable
        region), naming the iteration.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    reference = jax.device_put(jnp.asarray(reference, jnp.float32))
    if reference.ndim != 3 or reference.shape[2] != 3:
        raise ValueError(f"reference must have shape (T, N, 3), got {reference.shape}")
    positions = np.asarray(start, np.float32)
    if positions.ndim != 3 or positions.shape[1:] != reference.shape[1:]:
        raise ValueError(f"start must have shape (R, {reference.shape[1]}, 3), got {positions.shape}")
    kT_value = jnp.asarray(kT, jnp.float32)
    step = make_step(relative_entropy_loss(energy, kT_value), optimizer)

    @jax.jit
    def update(opt: OptState, frames: Array, alive: Array, reference: Array, key: Array):
        index = jax.random.randint(key, (batch_size,), 0, reference.shape[0])
        weights = jnp.broadcast_to(alive.astype(jnp.float32), frames.shape[:2]).reshape(-1)
        samples = Samples(reference[index], jnp.ones(batch_size, jnp.float32),
                          frames.reshape(-1, *frames.shape[2:]), weights)
        return step(opt, samples)

    @jax.jit
    def with_forces(state: Any, params: Params) -> Any:
        """``state`` with the forces of ``params`` (jax-md's Langevin state keeps the force)."""
        force = jax.vmap(jax.grad(lambda x: -energy(x, params=params)))(state.integrator.position)
        return state._replace(integrator=state.integrator.set(force=force))

    def refreshed(state: Any, params: Params) -> Any:
        if simulator.set_neighbors is not None:  # recomputes the forces with the replicas' lists
            return simulator.set_neighbors(state, state.neighbor, params=params, kT=kT_value)
        return with_forces(state, params) if hasattr(state.integrator, "force") else state

    opt = init_state(optimizer, params)
    init_key, key = jax.random.split(key)
    state = simulator.init(init_key, positions, params=opt.params, kT=kT_value)
    history: dict[str, list[float]] = {"loss": [], "grad_norm": [], "alive": []}
    for i in range(iterations):
        state = refreshed(state, opt.params)
        state, record = simulator.run_chunk(state, params=opt.params, kT=kT_value)
        if not bool(jnp.any(state.alive)):
            raise FloatingPointError(f"refine: every replica stopped in iteration {i}; lower the learning rate")
        opt, metrics = update(opt, record.positions, state.alive, reference, jax.random.fold_in(key, i))
        values = {"loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"]),
                  "alive": float(jnp.mean(state.alive))}
        for name, value in values.items():
            history[name].append(value)
        if callback is not None:
            callback(i, opt.params, values)
    history_arrays = {name: np.asarray(values) for name, values in history.items()}
    return RefineResult(opt.params, np.asarray(state.integrator.position), history_arrays)
