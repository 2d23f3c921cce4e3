"""One minibatch optax loop shared by the fitted maps (and ``jaxcg.joint``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

#: Steps per jitted ``lax.scan`` chunk; the host checks losses and reports progress in between.
CHUNK_STEPS = 100


def minibatch_optimise(
    loss_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    optimizer: optax.GradientTransformation,
    n_frames: int,
    batch_size: int,
    steps: int,
    key: jax.Array,
    callback: Callable[[int, float], None] | None = None,
    name: str = "fit",
) -> tuple[Any, np.ndarray]:
    """Minimise ``loss_fn(params, frame_indices (batch_size,))`` over random minibatches.

    Steps run inside jitted ``lax.scan`` chunks of ``CHUNK_STEPS``; after each chunk the host
    raises ``FloatingPointError`` on a non-finite loss and calls ``callback(step, loss)``.
    Deterministic given ``key``. Returns (params, losses (steps,)).
    """

    @jax.jit
    def step(carry, step_key):
        p, opt_state = carry
        index = jax.random.randint(step_key, (batch_size,), 0, n_frames)
        loss, grad = jax.value_and_grad(loss_fn)(p, index)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes float and int32 step counts
            updates, opt_state = optimizer.update(grad, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), loss

    carry = (params, optimizer.init(params))
    keys = jax.random.split(key, steps)
    losses = []
    for start in range(0, steps, CHUNK_STEPS):
        carry, chunk = jax.lax.scan(step, carry, keys[start : start + CHUNK_STEPS])
        losses.append(np.asarray(chunk))
        if not np.all(np.isfinite(losses[-1])):
            raise FloatingPointError(f"{name}: non-finite loss between steps {start} and {start + CHUNK_STEPS}")
        if callback is not None:
            callback(min(start + CHUNK_STEPS, steps), float(losses[-1][-1]))
    return carry[0], np.concatenate(losses)
