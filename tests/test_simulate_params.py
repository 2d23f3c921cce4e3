"""Parameters and kT at call time (jax-md's convention): one compiled chunk serves every parameter
set and temperature, and gives the same trajectories as a simulator built with them bound."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcg import simulate
from jaxcg.units import kT_from_temperature

TEMPERATURE = 300.0
N_BEADS, N_REPLICAS = 3, 4
MASSES = np.full(N_BEADS, 12.0)


class Traces:
    """An energy that counts how often JAX traces it (each trace means a compilation)."""

    def __init__(self):
        self.count = 0

    def __call__(self, x, params, neighbor=None):
        self.count += 1
        bonds = x[1:] - x[:-1]
        stretch = jnp.sqrt(jnp.sum(bonds**2, axis=-1)) - params["r0"]
        return 0.5 * params["k"] * jnp.sum(stretch**2) + 0.5 * params["k_wall"] * jnp.sum(x**2)


def _params(k, r0=0.38):
    return {"k": jnp.asarray(k, jnp.float32), "r0": jnp.asarray(r0, jnp.float32),
            "k_wall": jnp.asarray(1.0, jnp.float32)}


def _start():
    x0 = np.stack([np.arange(N_BEADS) * 0.38, np.zeros(N_BEADS), np.zeros(N_BEADS)], 1)
    return jnp.asarray(np.broadcast_to(x0, (N_REPLICAS, N_BEADS, 3)), jnp.float32)


@pytest.mark.parametrize(("build", "replica_devices"), [
    (simulate.langevin, None), (simulate.langevin, "auto"), (simulate.brownian, None)])
def test_new_parameters_and_kT_reuse_the_compiled_chunk(build, replica_devices):
    energy = Traces()
    sim = build(energy, MASSES, TEMPERATURE, 0.002, 5.0, 20, 5, replica_devices=replica_devices)
    p1, p2 = _params(2000.0), _params(500.0, r0=0.42)
    state = sim.init(jax.random.key(0), _start(), params=p1)
    # warm up: a chunk from the initial state and one from a chunk's output (which, split over
    # devices, has another sharding and compiles once more, whatever the parameters)
    after_first, record1 = sim.run_chunk(state, params=p1)
    sim.run_chunk(after_first, params=p1)
    traced = energy.count
    assert traced > 0
    after_second, record2 = sim.run_chunk(state, params=p2)
    sim.run_chunk(after_second, params=_params(100.0))
    assert energy.count == traced  # new parameters: no new compilation
    sim.run_chunk(state, params=p2, kT=kT_from_temperature(600.0))
    sim.run_chunk(after_second, params=p2, kT=kT_from_temperature(600.0))
    traced = energy.count  # giving kT adds an argument: compiled once more
    hotter = sim.run_chunk(state, params=p2, kT=kT_from_temperature(900.0))[1]
    sim.run_chunk(after_second, params=p1, kT=kT_from_temperature(200.0))
    assert energy.count == traced  # another kT (and parameters): no new compilation
    assert not np.allclose(record1.positions, record2.positions)

    # the same trajectories as simulators built the old way, with the parameters and T bound
    for params, temperature, record in ((p2, TEMPERATURE, record2), (p2, 900.0, hotter)):
        bound = build(functools.partial(energy, params=params), MASSES, temperature, 0.002, 5.0, 20, 5,
                      replica_devices=replica_devices)
        _, expected = bound.run_chunk(state)
        np.testing.assert_allclose(record.positions, expected.positions, rtol=0, atol=1e-6)
        np.testing.assert_allclose(record.potential_energy, expected.potential_energy, rtol=1e-5, atol=1e-5)


def test_bound_simulator_runs_in_the_host_loop_without_recompiling(tmp_path):
    energy = Traces()
    sim = simulate.langevin(energy, MASSES, TEMPERATURE, 0.002, 5.0, 20, 5, replica_devices=None)
    finals = []
    for k in (2000.0, 800.0, 300.0):
        bound = sim.bind(params=_params(k))
        state, report = simulate.run(bound, bound.init(jax.random.key(1), _start()), 40,
                                     checkpoint_path=tmp_path / "state.npz")
        assert report.steps == 40 and not report.stopped
        resumed, _ = simulate.resume_state(bound, tmp_path / "state.npz")
        np.testing.assert_array_equal(resumed.integrator.position, state.integrator.position)
        finals.append(np.asarray(state.integrator.position))
        if k == 2000.0:
            traced = energy.count
    assert energy.count == traced  # three parameter sets, one compilation of each function
    old_style = simulate.langevin(functools.partial(energy, params=_params(300.0)), MASSES, TEMPERATURE,
                                  0.002, 5.0, 20, 5, replica_devices=None)
    expected, _ = simulate.run(old_style, old_style.init(jax.random.key(1), _start()), 40)
    np.testing.assert_allclose(finals[-1], expected.integrator.position, rtol=0, atol=1e-6)
    assert not np.allclose(finals[0], finals[-1])


def test_neighbor_list_with_call_time_parameters():
    energy = Traces()
    _, shift, neighbor_fn = simulate.neighbor_list(cutoff=0.6, skin=0.2)
    sim = simulate.langevin(energy, MASSES, TEMPERATURE, 0.002, 5.0, 20, 5, shift_fn=shift,
                            neighbor_fn=neighbor_fn, replica_devices=None)
    plain = simulate.langevin(energy, MASSES, TEMPERATURE, 0.002, 5.0, 20, 5, shift_fn=shift,
                              replica_devices=None)
    params = _params(1000.0)
    state = sim.init(jax.random.key(2), _start(), params=params)
    state = sim.set_neighbors(state, sim.allocate_neighbors(_start()), params=params)
    _, record = sim.run_chunk(state, params=params)
    _, expected = plain.run_chunk(plain.init(jax.random.key(2), _start(), params=params), params=params)
    np.testing.assert_allclose(record.positions, expected.positions, rtol=0, atol=1e-6)


def test_call_time_keywords_are_checked():
    nve = simulate.nve(Traces(), MASSES, TEMPERATURE, 0.002, 20, 5, replica_devices=None)
    state = nve.init(jax.random.key(0), _start(), params=_params(1000.0), kT=kT_from_temperature(200.0))
    with pytest.raises(ValueError, match="kT cannot be given to NVE"):
        nve.run_chunk(state, params=_params(1000.0), kT=1.0)
    with pytest.raises(ValueError, match="'neighbor' cannot be given"):
        nve.run_chunk(state, params=_params(1000.0), neighbor=None)
    with pytest.raises(ValueError, match="'dt' cannot be given"):
        nve.run_chunk(state, params=_params(1000.0), dt=0.001)


def test_gradient_through_a_chunk_with_respect_to_parameters():
    """Parameters as arguments make a chunk differentiable in them: d⟨bond length⟩/dk (fixed
    noise, 20 Langevin steps) against central finite differences."""
    sim = simulate.langevin(Traces(), MASSES, TEMPERATURE, 0.002, 5.0, 20, 5, replica_devices=None)
    base = _params(1000.0)
    state = sim.init(jax.random.key(0), _start(), params=base)

    @jax.jit
    def mean_bond(k):
        _, record = sim.run_chunk(state, params=dict(base, k=k))
        x = record.positions[-1]
        return jnp.mean(jnp.linalg.norm(x[:, 1] - x[:, 0], axis=-1))

    k, step = jnp.float32(1000.0), 10.0
    finite_difference = (mean_bond(k + step) - mean_bond(k - step)) / (2 * step)
    gradient = jax.grad(mean_bond)(k)
    assert abs(float(finite_difference)) > 1e-8
    np.testing.assert_allclose(gradient, finite_difference, rtol=0.02)
