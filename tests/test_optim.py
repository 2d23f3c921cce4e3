"""The one optimisation contract (jaxcg.optim): compiled once, exact on least squares, padding
that does not count, on-device shuffling that visits every frame once per epoch."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcg.optim import (
    Batch,
    batch_table,
    fit_loss,
    gather,
    init_state,
    make_step,
    shuffled_table,
    weighted_mean,
)


def _linear_problem(n_frames=50, n_features=4, noise=0.3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    design = rng.normal(size=(n_frames, n_features)) * np.array([1.0, 2.0, 0.5, 1.5])[:n_features]
    w_true = rng.normal(size=n_features)
    target = design @ w_true + noise * rng.normal(size=n_frames)
    return design.astype(dtype), target.astype(dtype), w_true


def _squared_error(w, batch):
    design, target = batch.data
    return weighted_mean((design @ w - target) ** 2, batch.weights)


def test_step_traces_once_for_any_parameter_values():
    traces = []

    def loss(w, batch):
        traces.append(1)
        return _squared_error(w, batch)

    design, target, _ = _linear_problem(dtype=np.float32)
    optimizer = optax.adam(1e-2)
    step = jax.jit(make_step(loss, optimizer))
    batch = Batch((jnp.asarray(design), jnp.asarray(target)), jnp.ones(len(design), jnp.float32))
    for value in (0.0, 1.0, -3.5):
        state = init_state(optimizer, jnp.full(4, value, jnp.float32))
        state, metrics = step(state, batch)
        assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])
    assert len(traces) == 1


@pytest.mark.parametrize("steps", [7, 200])
def test_fit_traces_once_across_epochs_and_chunks(steps):
    """T = 50 frames in batches of 16 (4 per epoch, the last padded) run in chunks of 30 steps,
    the last chunk partial: one trace of the loss whatever the number of epochs."""
    traces = []

    def loss(w, batch):
        traces.append(1)
        return _squared_error(w, batch)

    design, target, _ = _linear_problem(dtype=np.float32)
    result = fit_loss(loss, jnp.zeros(4, jnp.float32), (design, target), optax.adam(1e-2), steps=steps,
                      batch_size=16, key=jax.random.key(0), chunk_steps=30)
    assert len(traces) == 1
    assert result.losses.shape == (steps,) and result.metrics["grad_norm"].shape == (steps,)


def test_full_batch_fit_reaches_the_exact_least_squares_solution():
    """Gradient descent at step 1/L on the full batch converges linearly to numpy's lstsq (float64)."""
    with jax.enable_x64(True):
        design, target, _ = _linear_problem()
        exact = np.linalg.lstsq(design, target, rcond=None)[0]
        hessian = 2.0 * design.T @ design / len(design)
        rate = 1.0 / np.linalg.eigvalsh(hessian).max()
        result = fit_loss(_squared_error, jnp.zeros(4), (design, target), optax.sgd(rate), steps=2000,
                          batch_size=len(design), key=jax.random.key(0), chunk_steps=500)
        assert result.params.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(result.params), exact, rtol=1e-10, atol=1e-12)
        optimum = np.mean((design @ exact - target) ** 2)
        np.testing.assert_allclose(result.losses[-1], optimum, rtol=1e-12)


def test_minibatch_fit_reaches_the_exact_solution_of_a_consistent_system():
    """Noise-free targets: every padded minibatch gradient vanishes at w_true, so shuffled
    minibatches (50 frames, batches of 16) converge to it exactly."""
    with jax.enable_x64(True):
        design, target, w_true = _linear_problem(noise=0.0)
        result = fit_loss(_squared_error, jnp.zeros(4), (design, target), optax.sgd(0.05), steps=3000,
                          batch_size=16, key=jax.random.key(1))
        np.testing.assert_allclose(np.asarray(result.params), w_true, rtol=1e-9, atol=1e-10)


def test_minibatch_adam_approaches_least_squares():
    """Noisy targets, shuffled minibatches and a decaying learning rate: close to lstsq (float32)."""
    design, target, _ = _linear_problem(n_frames=200, dtype=np.float32)
    exact = np.linalg.lstsq(design.astype(np.float64), target.astype(np.float64), rcond=None)[0]
    steps = 3000
    optimizer = optax.adam(optax.cosine_decay_schedule(0.05, steps, alpha=1e-4))
    result = fit_loss(_squared_error, jnp.zeros(4, jnp.float32), (design, target), optimizer, steps=steps,
                      batch_size=48, key=jax.random.key(2))
    np.testing.assert_allclose(np.asarray(result.params), exact, atol=5e-3)  # sampling error ~2e-2


def test_padding_with_zero_weight_gives_exactly_the_unpadded_loss_and_gradient():
    design, target, _ = _linear_problem(dtype=np.float32)
    weights = jnp.asarray(np.random.default_rng(3).uniform(0.5, 2.0, len(design)), jnp.float32)
    data = (jnp.asarray(design), jnp.asarray(target))
    index, mask = batch_table(len(design), 16)  # 50 frames: 3 full batches, the last holds 2
    assert index.shape == (4, 16) and mask[-1].sum() == 2
    padded = gather(data, weights, jnp.asarray(index[-1]), jnp.asarray(mask[-1]))
    unpadded = Batch((data[0][48:], data[1][48:]), weights[48:])
    w = jnp.asarray([0.3, -1.0, 2.0, 0.7], jnp.float32)
    value_grad = jax.jit(jax.value_and_grad(_squared_error))
    (a, ga), (b, gb) = value_grad(w, padded), value_grad(w, unpadded)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(ga), np.asarray(gb))
    # and against numpy: the weighted mean over the two real frames
    expected = np.average((design[48:] @ np.asarray(w) - target[48:]) ** 2, weights=np.asarray(weights[48:]))
    np.testing.assert_allclose(float(a), expected, rtol=1e-6)


def test_shuffled_table_visits_every_frame_once_per_epoch():
    index, mask = jax.jit(shuffled_table, static_argnums=(1, 2))(jax.random.key(4), 50, 16)
    index, mask = np.asarray(index), np.asarray(mask)
    assert index.shape == (4, 16)
    assert np.array_equal(np.sort(index[mask > 0]), np.arange(50))
    assert not np.array_equal(index[mask > 0], np.arange(50))  # shuffled
    other, _ = shuffled_table(jax.random.key(5), 50, 16)
    assert not np.array_equal(np.asarray(other), index)


def test_fit_is_deterministic_reports_aux_and_refuses_non_finite():
    design, target, _ = _linear_problem(dtype=np.float32)

    def loss(w, batch):
        value = _squared_error(w, batch)
        return value, {"frames": jnp.sum(batch.weights > 0)}

    def run(seed):
        return fit_loss(loss, jnp.zeros(4, jnp.float32), (design, target), optax.adam(1e-2), steps=20,
                        batch_size=16, key=jax.random.key(seed), has_aux=True)

    first, second, other = run(0), run(0), run(1)
    np.testing.assert_array_equal(np.asarray(first.params), np.asarray(second.params))
    assert not np.array_equal(np.asarray(first.params), np.asarray(other.params))
    assert first.metrics["frames"].tolist() == [16, 16, 16, 2] * 5  # four batches an epoch
    calls = []
    fit_loss(_squared_error, jnp.zeros(4, jnp.float32), (design, target), optax.adam(1e-2), steps=25,
             batch_size=16, key=jax.random.key(0), chunk_steps=10, callback=lambda s, v: calls.append(s))
    assert calls == [10, 20, 25]
    bad = target.copy()
    bad[7] = np.nan
    with pytest.raises(FloatingPointError, match="demo: non-finite loss between steps 0 and"):
        fit_loss(_squared_error, jnp.zeros(4, jnp.float32), (design, bad), optax.adam(1e-2), steps=20,
                 batch_size=16, key=jax.random.key(0), name="demo")
    with pytest.raises(ValueError, match="common leading"):
        fit_loss(_squared_error, jnp.zeros(4, jnp.float32), (design, target[:-1]), optax.adam(1e-2), steps=2,
                 batch_size=16, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"weights must have shape \(50,\)"):
        fit_loss(_squared_error, jnp.zeros(4, jnp.float32), (design, target), optax.adam(1e-2), steps=2,
                 batch_size=16, key=jax.random.key(0), weights=np.ones(3))
