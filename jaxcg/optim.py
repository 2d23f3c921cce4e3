"""The optimisation contract every jaxcg fit uses: ``loss(params, batch)``, ``step(state, batch)``,
``fit_loss(loss, params, data, ...)``.

- A loss is ``loss(params, batch) -> ()`` (or ``-> ((), aux dict)`` with ``has_aux=True``), where
  ``batch`` is a ``Batch``: ``data``, a PyTree of (B, ...) arrays gathered from the dataset, and
  ``weights`` (B,), 0 for padding frames. A loss that averages frames with ``weighted_mean`` gives
  exactly the unpadded value on a padded batch.
- ``make_step(loss, optimizer)`` returns the pure ``step(state, batch) -> (state, metrics)`` (metrics
  ``loss``, ``grad_norm`` and the loss's aux); ``state`` is any NamedTuple with ``params`` and
  ``opt_state`` fields (``OptState``, or ``jaxcg.train.TrainState``).
- ``fit_loss`` keeps the data on the device, shuffles it there (``jax.random.permutation`` of the
  frames each epoch, the last batch padded with weight 0 so every batch has one shape) and runs
  the steps in jitted ``lax.scan`` chunks: one compilation per call, whatever the number of epochs
  or the parameter values. The host only checks the losses between chunks.

``jaxcg.train.fit`` (force matching with checkpoints, validation and early stopping) builds its
step with ``make_step`` and gathers its batches with ``gather`` from device-resident data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Params = Any
Metrics = dict[str, jax.Array]


class Batch(NamedTuple):
    """``data``: PyTree of (B, ...) arrays; ``weights``: (B,) frame weights, 0 marks padding."""

    data: Any
    weights: jax.Array


class OptState(NamedTuple):
    """``params``: the parameters being fitted; ``opt_state``: the optax state."""

    params: Params
    opt_state: Any


class FitResult(NamedTuple):
    """``params``: final parameters; ``losses``: (steps,) loss of each step's batch; ``metrics``:
    each metric of ``make_step`` as a (steps,) array."""

    params: Params
    losses: np.ndarray
    metrics: dict[str, np.ndarray]


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """Σ_t w_t v_t / Σ_t w_t over the leading axis of values (B, ...) with weights (B,)."""
    w = weights.astype(values.dtype).reshape(weights.shape + (1,) * (values.ndim - 1))
    return jnp.sum(w * values, axis=0) / jnp.sum(weights).astype(values.dtype)


def init_state(optimizer: optax.GradientTransformation, params: Params) -> OptState:
    """``OptState(params, optimizer.init(params))``."""
    # optax mixes int step counts with float decays, which strict promotion rejects.
    with jax.numpy_dtype_promotion("standard"):
        return OptState(params, optimizer.init(params))


def make_step(
    loss: Callable[..., Any], optimizer: optax.GradientTransformation, has_aux: bool = False
) -> Callable[[Any, Any], tuple[Any, Metrics]]:
    """One pure optimisation step ``step(state, batch) -> (state, metrics)``.

    Args:
      loss: ``loss(params, batch) -> ()``, or ``-> ((), aux)`` with ``has_aux`` (aux a dict of
        arrays, returned among the metrics).
      optimizer: an optax transformation.

    Returns:
      ``step``; ``state`` is any NamedTuple with ``params`` and ``opt_state`` fields, the other
      fields pass through. Metrics: ``loss``, ``grad_norm`` (global gradient norm) and the aux.
      Jit it once (``jax.jit(step)``): it does not close over parameters or data.
    """

    def step(state: Any, batch: Any) -> tuple[Any, Metrics]:
        if has_aux:
            (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(state.params, batch)
        else:
            (value, grads), aux = jax.value_and_grad(loss)(state.params, batch), {}
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
        metrics = {"loss": value, "grad_norm": optax.tree.norm(grads), **aux}
        return state._replace(params=params, opt_state=opt_state), metrics

    return step


def gather(data: Any, weights: jax.Array, index: jax.Array, mask: jax.Array) -> Batch:
    """The batch at frame indices ``index`` (B,): every leaf of ``data`` (T, ...) taken along its
    first axis, weights (T,)[index] times ``mask`` (B,) (0 for padding). Runs on the device."""
    return Batch(jax.tree.map(lambda leaf: leaf[index], data), weights[index] * mask.astype(weights.dtype))


def batch_table(n_frames: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, B) frame indices 0..n_frames-1 in order and their (S, B) float32 mask; the last batch is
    padded with frame 0 at mask 0, so every batch has the shape (B,)."""
    n_steps = max(1, math.ceil(n_frames / batch_size))
    index = np.zeros(n_steps * batch_size, np.int32)
    mask = np.zeros(n_steps * batch_size, np.float32)
    index[:n_frames] = np.arange(n_frames)
    mask[:n_frames] = 1.0
    return index.reshape(n_steps, batch_size), mask.reshape(n_steps, batch_size)


def shuffled_table(key: jax.Array, n_frames: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """``batch_table`` of a random permutation of the frames (on the device, inside jit)."""
    index, mask = batch_table(n_frames, batch_size)
    order = jax.random.permutation(key, n_frames).astype(jnp.int32)
    flat = jnp.asarray(index.ravel()).at[:n_frames].set(order)
    return flat.reshape(index.shape), jnp.asarray(mask)


def _leading_size(data: Any) -> int:
    sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else -1 for leaf in jax.tree.leaves(data)}
    if len(sizes) != 1 or -1 in sizes or 0 in sizes:
        raise ValueError(f"data must be a PyTree of arrays with one common leading (frame) size >= 1, got sizes {sorted(sizes)}")
    return sizes.pop()


class _Carry(NamedTuple):
    state: OptState
    step: jax.Array  # () int32, steps done
    index: jax.Array  # (S, B) this epoch's frame table
    mask: jax.Array  # (S, B)


def _make_runner(step: Callable, n_frames: int, batch_size: int, chunk: int) -> Callable:
    """jit(run(carry, data, weights, key, n_steps) -> (carry, metrics (chunk,))): ``chunk`` steps
    of ``step``; those at or beyond ``n_steps`` leave the state unchanged."""
    n_batches = max(1, math.ceil(n_frames / batch_size))

    def one(carry: _Carry, data: Any, weights: jax.Array, key: jax.Array, n_steps: jax.Array):
        position = carry.step % n_batches
        if n_batches == 1:  # a full batch: the order of the frames does not matter
            index, mask = carry.index, carry.mask
        else:
            index, mask = jax.lax.cond(
                position == 0,
                lambda: shuffled_table(jax.random.fold_in(key, carry.step // n_batches), n_frames, batch_size),
                lambda: (carry.index, carry.mask),
            )
        state, metrics = step(carry.state, gather(data, weights, index[position], mask[position]))
        active = carry.step < n_steps
        state = jax.tree.map(lambda new, old: jnp.where(active, new, old), state, carry.state)
        return _Carry(state, carry.step + 1, index, mask), metrics

    def run(carry: _Carry, data: Any, weights: jax.Array, key: jax.Array, n_steps: jax.Array):
        return jax.lax.scan(lambda c, _: one(c, data, weights, key, n_steps), carry, None, length=chunk)

    return jax.jit(run)


def fit_loss(
    loss: Callable[..., Any],
    params: Params,
    data: Any,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    batch_size: int,
    key: jax.Array,
    weights: jax.Array | np.ndarray | None = None,
    has_aux: bool = False,
    callback: Callable[[int, float], None] | None = None,
    chunk_steps: int = 100,
    name: str = "fit",
) -> FitResult:
    """Minimise ``loss(params, batch)`` over shuffled minibatches of ``data`` with ``optimizer``.

    Args:
      loss: ``loss(params, Batch) -> ()`` (see the module docstring); average frames with
        ``weighted_mean`` so that padding (weight 0) does not count.
      params: initial parameters (PyTree).
      data: PyTree of arrays with a common leading frame axis (T, ...), in the units the loss
        expects; copied to the device once.
      optimizer: an optax transformation (its schedule counts ``steps``).
      steps: optimisation steps; the frames are reshuffled every ceil(T / batch_size) steps.
      batch_size: frames per step (at most T); the last batch of an epoch is padded with weight 0.
      key: jax.random key of the shuffling (the run is deterministic given it).
      weights: (T,) frame weights (default 1).
      has_aux: the loss returns ``(value, aux dict)``; aux is reported in ``metrics``.
      callback: ``callback(steps_done, last_loss)`` after every chunk (progress bars).
      chunk_steps: steps per jitted ``lax.scan`` call; the host checks the losses in between.
      name: named in the error of a non-finite loss.

    Returns:
      FitResult(params, losses (steps,), metrics).

    Raises:
      FloatingPointError: a non-finite loss, naming the chunk of steps.
    """
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    n_frames = _leading_size(data)
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = min(int(batch_size), n_frames)
    weights = jnp.ones(n_frames, jnp.float32) if weights is None else jnp.asarray(weights)
    if weights.shape != (n_frames,):
        raise ValueError(f"weights must have shape ({n_frames},) (one per frame), got {weights.shape}")
    data = jax.device_put(data)
    chunk = min(int(chunk_steps), int(steps))
    run = _make_runner(make_step(loss, optimizer, has_aux), n_frames, batch_size, chunk)
    index, mask = batch_table(n_frames, batch_size)
    carry = _Carry(init_state(optimizer, params), jnp.zeros((), jnp.int32), jnp.asarray(index), jnp.asarray(mask))
    n_steps = jnp.asarray(steps, jnp.int32)
    chunks: list[Metrics] = []
    for start in range(0, steps, chunk):
        carry, metrics = run(carry, data, weights, key, n_steps)
        metrics = jax.device_get(metrics)
        done = min(start + chunk, steps)
        metrics = {k: np.asarray(v)[: done - start] for k, v in metrics.items()}
        chunks.append(metrics)
        if not np.all(np.isfinite(metrics["loss"])):
            raise FloatingPointError(f"{name}: non-finite loss between steps {start} and {done}")
        if callback is not None:
            callback(done, float(metrics["loss"][-1]))
    merged = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    return FitResult(carry.state.params, merged["loss"], merged)
