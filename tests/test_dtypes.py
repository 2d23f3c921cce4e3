"""The dtype policy (jaxcg.dtypes): float64 runs end to end where asked, checked against numpy
float64 to 1e-12, which a hidden float32 cast anywhere on the path would miss by orders of
magnitude (the float32 path is run beside it to show the check can tell)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcg import simulate
from jaxcg.dtypes import params_dtype
from jaxcg.models import RBFPairPotential
from jaxcg.train import TrainConfig, block_split, fit

K_SPRING = 500.0  # kJ/mol/nm²
MASSES = np.array([12.0, 16.0])
DT = 2.0**-9  # ps


def test_params_dtype_is_the_leaves_dtype_and_refuses_a_mix():
    assert params_dtype({"a": np.zeros(2, np.float32), "n": np.zeros(2, np.int32)}) == np.float32
    assert params_dtype({}) == np.float32
    with jax.enable_x64(True):
        assert params_dtype({"a": jnp.zeros(2, jnp.float64)}) == np.float64
        with pytest.raises(ValueError, match="params mix float dtypes"):
            params_dtype({"a": jnp.zeros(2, jnp.float64), "b": jnp.zeros(2, jnp.float32)})


def _rbf_forces_numpy(model, coefficients, positions):
    """Forces (T, 2, 3) of the 2-bead RBF pair potential, in numpy float64."""
    d = positions[:, 1] - positions[:, 0]
    r = np.linalg.norm(d, axis=1)
    diff = r[:, None] - np.asarray(model.centers, np.float64)[None]
    du_dr = np.sum(coefficients * -2.0 * model.gamma * diff * np.exp(-model.gamma * diff**2), axis=1)
    f1 = -du_dr[:, None] * d / r[:, None]
    return np.stack([-f1, f1], axis=1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fit_computes_in_the_parameters_dtype(dtype):
    """With learning rate 0 the reported validation loss is the force-matching loss of the initial
    parameters: equal to numpy float64 to 1e-12 on the float64 path, not on the float32 one."""
    rng = np.random.default_rng(0)
    n = 64
    positions = rng.normal(0.0, 0.3, (n, 2, 3))
    positions[:, 1] += 0.6
    forces = rng.normal(0.0, 50.0, (n, 2, 3))
    with jax.enable_x64(True):
        model = RBFPairPotential(n_basis=8, r_min=0.2, r_max=1.2, dtype=dtype)
        coefficients = rng.normal(0.0, 5.0, 8)
        params = {"coefficients": jnp.asarray(coefficients, dtype)}
        config = TrainConfig(epochs=1, batch_size=16, learning_rate=0.0, val_fraction=0.25, n_blocks=4,
                             patience=None, clip_norm=None)
        result = fit(model.energy, params, positions, forces, config)
        assert result.params["coefficients"].dtype == dtype
        _, val = block_split(n, 0.25, 4, 0)
        residual = _rbf_forces_numpy(model, coefficients, positions[val]) - forces[val]
        expected = np.mean(np.sum(residual**2, axis=2))  # Σ_i ‖Δf_i‖² / N, averaged over frames
        error = abs(result.history[-1]["val_loss"] - expected) / expected
    if dtype == np.float64:
        assert error < 1e-12, error
    else:
        assert error > 1e-10, error  # float32 rounding: the check above can tell the two apart


def _verlet_numpy(x, p, n_steps, dt):
    """Velocity Verlet of two beads on springs to the origin, numpy float64."""
    m = MASSES[:, None]
    for _ in range(n_steps):
        p = p - 0.5 * dt * K_SPRING * x
        x = x + dt * p / m
        p = p - 0.5 * dt * K_SPRING * x
    return x


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_simulator_state_has_the_builders_dtype(dtype):
    """NVE of a harmonic well follows numpy's float64 velocity Verlet to 1e-12 nm in float64."""
    with jax.enable_x64(True):
        # jax-md rounds dt to float32: 2^-9 ps is exact in both dtypes
        sim = simulate.nve(lambda x: 0.5 * K_SPRING * jnp.sum(x**2), MASSES, 300.0, dt=DT,
                           steps_per_chunk=200, save_every=200, replica_devices=None, dtype=dtype)
        x0 = np.array([[[0.1, 0.0, 0.05], [-0.2, 0.1, 0.0]]])
        state = sim.init(jax.random.key(0), x0)
        assert state.integrator.position.dtype == dtype and state.integrator.momentum.dtype == dtype
        p0 = np.asarray(state.integrator.momentum[0], np.float64)
        state, record = sim.run_chunk(state)
        expected = _verlet_numpy(np.asarray(x0[0], dtype).astype(np.float64), p0, 200, DT)
        error = float(np.max(np.abs(np.asarray(state.integrator.position[0], np.float64) - expected)))
        assert record.positions.dtype == dtype
    if dtype == jnp.float64:
        assert error < 1e-12, error
    else:
        assert error > 1e-10, error


def test_float64_simulator_needs_64_bit_jax():
    with jax.enable_x64(False), pytest.raises(ValueError, match="dtype float64 needs 64-bit JAX"):
        simulate.langevin(lambda x: jnp.sum(x**2), MASSES, 300.0, 0.002, 1.0, 10, 10, dtype=jnp.float64)
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        simulate.langevin(lambda x: jnp.sum(x**2), MASSES, 300.0, 0.002, 1.0, 10, 10, dtype=jnp.int32)
