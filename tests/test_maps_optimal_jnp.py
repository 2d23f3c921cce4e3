"""The optimal map's KKT solve as a pure jnp function: equal to a float64 numpy KKT solve on real
data, consistent (G Mᵀ = I) on vacuum data and when the KKT matrix is singular, jittable, and
differentiable (gradients against finite differences and the envelope theorem)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _qp_reference import optimal_force_map_reference
from jax.test_util import check_grads
from test_maps import random_problem

from jaxcg.constraints import constraint_groups, expansion_matrix
from jaxcg.maps import (
    force_second_moment,
    optimal_force_matrix,
    optimal_linear_map,
    slice_map,
    solve_optimal_force_map,
)
from jaxcg.reference import bundled_dataset


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _numpy_kkt(q, a):
    """The KKT solve in numpy float64, as the map was solved before it moved to jnp."""
    m, n_beads = q.shape[0], a.shape[0]
    scale = np.trace(q) / m
    kkt = np.block([[2.0 * q / scale, a.T], [a, np.zeros((n_beads, n_beads))]])
    rhs = np.concatenate([np.zeros((m, n_beads)), np.eye(n_beads)])
    return np.linalg.solve(kkt, rhs)[:m]


@pytest.mark.parametrize(("name", "selection"), [
    ("water_dimer_rigid", "element O"),
    ("water_dimer_flexible", "element O"),
    ("alanine_dipeptide_vacuum", "name CA or name C or name N"),
    ("alanine_dipeptide_vacuum", "not element H"),
])
@pytest.mark.parametrize("use_constraints", [True, False])
def test_equals_numpy_kkt_on_bundled_data(x64, name, selection, use_constraints):
    data = bundled_dataset(name)
    constraints = data.constraints if use_constraints else None
    config = np.asarray(slice_map(data.topology, selection).config, np.float64)
    expand = expansion_matrix(constraints, data.n_atoms)
    moment = force_second_moment(data, expansion=expand).mean
    got = np.asarray(optimal_force_matrix(jnp.asarray(moment), jnp.asarray(config), jnp.asarray(expand), reduced=True))
    want = (expand @ _numpy_kkt(moment, config @ expand)).T
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
    np.testing.assert_allclose(got @ config.T, np.eye(len(config)), atol=1e-12)  # vacuum: Q singular
    host = solve_optimal_force_map(moment, config, constraints, reduced=True)  # the numpy LAPACK route
    np.testing.assert_allclose(host, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_singular_kkt_gives_the_minimum_norm_optimum(x64):
    """An atom with zero force in every frame (a virtual site) outside every bead: the KKT matrix
    is exactly singular, the LU solve gives inf, and the pseudo-inverse branch takes over."""
    for vacuum in (False, True):
        forces, config, pairs = random_problem(0, vacuum=vacuum)
        idle = np.flatnonzero(~config.any(axis=0))[-1]
        forces[:, idle] = 0.0
        moment = force_second_moment(forces).mean
        assert not np.all(np.isfinite(jnp.linalg.solve(*_kkt(moment, config))))
        g = np.asarray(optimal_force_matrix(jnp.asarray(moment), jnp.asarray(config)))
        np.testing.assert_allclose(g @ config.T, np.eye(len(config)), atol=1e-12)
        np.testing.assert_allclose(g[:, idle], 0.0, atol=1e-12)  # minimum norm
        expected = optimal_force_map_reference(forces, config, constraint_groups(None, forces.shape[1]))
        objective = [np.einsum("in,nm,im->", x, moment, x) for x in (g, expected)]
        np.testing.assert_allclose(objective[0], objective[1], rtol=1e-10)


def _kkt(moment, config):
    from jaxcg.maps._optimal import _kkt_system

    return _kkt_system(jnp.asarray(moment), jnp.asarray(config))


def _parametrised_problem(seed=1):
    """A vacuum problem with constraints: atom-level moment F0 (n, n), a PSD direction S, M, C."""
    forces, config, pairs = random_problem(seed, n_frames=200, vacuum=True)
    moment = force_second_moment(forces).mean
    direction = np.random.default_rng(seed).normal(size=moment.shape)
    direction = direction @ direction.T / len(direction) * np.trace(moment) / len(moment)
    expand = expansion_matrix(pairs, forces.shape[1])
    return jnp.asarray(moment), jnp.asarray(direction), jnp.asarray(config), jnp.asarray(expand)


def test_objective_gradient_matches_finite_differences_and_envelope(x64):
    moment, direction, config, expand = _parametrised_problem()

    @jax.jit
    def objective(theta):
        """Σ_i g_iᵀ F(θ) g_i at the optimum for the moment F(θ) = F0 + θ S."""
        f = moment + theta * direction
        g = optimal_force_matrix(f, config, expand)
        return jnp.einsum("in,nm,im->", g, f, g)

    theta = jnp.asarray(0.3)
    check_grads(objective, (theta,), order=1, modes=["fwd", "rev"], atol=1e-7, rtol=1e-7)
    check_grads(objective, (theta,), order=2, modes=["rev"], atol=1e-6, rtol=1e-6)
    # envelope theorem: dJ/dθ = Σ_i g_iᵀ S g_i at the optimum (the constraint does not move with θ)
    g = optimal_force_matrix(moment + theta * direction, config, expand)
    envelope = jnp.einsum("in,nm,im->", g, direction, g)
    np.testing.assert_allclose(jax.grad(objective)(theta), envelope, rtol=1e-9)


def test_map_coefficients_differentiable_in_the_moment_and_l2(x64):
    moment, direction, config, expand = _parametrised_problem(2)

    @jax.jit
    def coefficient(theta, l2):
        return optimal_force_matrix(moment + theta * direction, config, expand, l2)[1, 4]

    check_grads(coefficient, (jnp.asarray(0.2), jnp.asarray(5.0)), order=1, modes=["fwd", "rev"], atol=1e-7, rtol=1e-7)
    # vmap runs the solve and its gradient over a batch of moments
    thetas = jnp.linspace(0.0, 1.0, 4)
    batched = jax.vmap(lambda t: jax.grad(coefficient)(t, 5.0))(thetas)
    looped = [jax.grad(coefficient)(t, 5.0) for t in thetas]
    np.testing.assert_allclose(batched, looped, rtol=1e-9)


def test_float32_pure_solve_close_to_float64_host_map():
    forces, config, pairs = random_problem(4)
    expand = expansion_matrix(pairs, forces.shape[1])
    moment = force_second_moment(forces, expansion=expand).mean
    g32 = optimal_force_matrix(jnp.asarray(moment, jnp.float32), jnp.asarray(config, jnp.float32),
                               jnp.asarray(expand, jnp.float32), reduced=True)
    assert g32.dtype == jnp.float32
    host = np.asarray(optimal_linear_map(forces, config, pairs).force)
    np.testing.assert_allclose(np.asarray(g32), host, atol=1e-4)
