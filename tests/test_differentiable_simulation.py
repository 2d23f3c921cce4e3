"""The gradient of a trajectory observable through the Langevin integrator: against central finite
differences of the same fixed-noise trajectory (float64), with and without checkpointing, and the
same trajectory as the simulator's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcg import simulate
from jaxcg.units import kT_from_temperature

KT = kT_from_temperature(300.0)


def chain_energy(x, params):
    """Harmonic bonds (k kJ/mol/nm², r0 nm) of a bead chain in a weak harmonic well."""
    bonds = jnp.sqrt(jnp.sum((x[1:] - x[:-1]) ** 2, axis=-1))
    return 0.5 * params["k"] * jnp.sum((bonds - params["r0"]) ** 2) + 5.0 * jnp.sum(x**2)


def end_to_end(x):
    return jnp.linalg.norm(x[-1] - x[0])


def _start(dtype):
    return jnp.asarray([[0.0, 0.0, 0.0], [0.38, 0.0, 0.0], [0.70, 0.2, 0.0], [0.9, 0.5, 0.1]], dtype)


def test_gradient_matches_central_finite_differences_float64():
    with jax.enable_x64(True):
        x0, masses = _start(jnp.float64), jnp.full(4, 12.0, jnp.float64)
        params = {"k": jnp.float64(1500.0), "r0": jnp.float64(0.38)}

        def mean_distance(p, checkpoint_every):
            return simulate.trajectory_observable(
                chain_energy, p, x0, jax.random.key(3), 60, 0.002, 2.0, KT, masses, end_to_end,
                checkpoint_every=checkpoint_every)

        value = jax.jit(lambda p: mean_distance(p, "auto"))
        grads = {c: jax.jit(jax.grad(lambda p, c=c: mean_distance(p, c)))(params) for c in ("auto", None)}
        for name, step in (("k", 1e-2), ("r0", 1e-6)):
            up, down = dict(params), dict(params)
            up[name], down[name] = params[name] + step, params[name] - step
            finite_difference = (value(up) - value(down)) / (2 * step)
            assert abs(float(finite_difference)) > 1e-7
            np.testing.assert_allclose(grads["auto"][name], finite_difference, rtol=1e-6)
            np.testing.assert_allclose(grads[None][name], grads["auto"][name], rtol=1e-10)
        assert grads["auto"]["k"].dtype == jnp.float64


def test_same_trajectory_as_the_simulator():
    """With one replica and a frame saved every step, the simulator's frames average to the
    observable x itself: the function runs the simulator's integrator with the simulator's noise."""
    masses, key = np.full(4, 12.0), jax.random.key(5)
    params = {"k": jnp.float32(1500.0), "r0": jnp.float32(0.38)}
    sim = simulate.langevin(chain_energy, masses, 300.0, 0.002, 2.0, 25, 1, replica_devices=None)
    state = sim.init(key, _start(jnp.float32)[None], params=params)
    _, record = sim.run_chunk(state, params=params)
    mean_position = simulate.trajectory_observable(
        chain_energy, params, _start(jnp.float32), jax.random.split(key, 1)[0], 25, 0.002, 2.0, KT,
        masses, lambda x: x, checkpoint_every=4)  # 25 = 6 blocks of 4 + a tail of 1
    np.testing.assert_allclose(mean_position, np.mean(record.positions[:, 0], axis=0), rtol=0, atol=2e-6)


def test_arguments_are_checked():
    args = (chain_energy, {"k": 1.0, "r0": 0.38}, _start(jnp.float32), jax.random.key(0))
    tail = (0.002, 1.0, KT, np.full(4, 12.0), end_to_end)
    with pytest.raises(ValueError, match="n_steps"):
        simulate.trajectory_observable(*args, 0, *tail)
    with pytest.raises(ValueError, match="checkpoint_every"):
        simulate.trajectory_observable(*args, 10, *tail, checkpoint_every=0)
    with pytest.raises(ValueError, match="masses"):
        simulate.trajectory_observable(*args, 10, 0.002, 1.0, KT, np.full(3, 12.0), end_to_end)
    with pytest.raises(ValueError, match="dt"):
        simulate.trajectory_observable(*args, 10, -0.002, *tail[1:])
