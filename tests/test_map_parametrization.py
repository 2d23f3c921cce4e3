"""Parametrised valid force maps: every θ is valid; optax fitting reaches the KKT optimum."""

import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_maps import random_problem

from jaxcg.constraints import constraints_from_topology, group_labels
from jaxcg.maps import (
    check_map,
    fit_force_map,
    force_second_moment,
    objective,
    optimal_linear_map,
    parametrized_map,
    slice_map,
    support_within_bonds,
    valid_map_parametrization,
)


@pytest.fixture(scope="module")
def problem():
    forces, config, pairs = random_problem(11, n_atoms=14, n_beads=3, n_frames=2000)
    with jax.enable_x64(True):
        parametrization = valid_map_parametrization(config, pairs)
    return forces, config, pairs, parametrization


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3))
def test_every_parameter_value_is_a_valid_map(problem, seed, scale):
    _, _, pairs, parametrization = problem
    theta = np.random.default_rng(seed).normal(size=parametrization.n_params) * scale
    with jax.enable_x64(True):
        linear_map = parametrized_map(parametrization, jnp.asarray(theta))
        report = check_map(linear_map, pairs, tolerance=1e-9 * max(1.0, scale), raise_on_error=False)
    assert report.valid, report.problems()


def test_full_parametrization_spans_the_optimum(problem):
    forces, config, pairs, parametrization = problem
    with jax.enable_x64(True):
        optimal = np.asarray(optimal_linear_map(forces, config, pairs).force)
        basis = np.asarray(parametrization.basis)
        delta = optimal - np.asarray(parametrization.base)
        theta = np.einsum("ikn,in->ik", basis, delta)  # orthonormal directions per bead
        np.testing.assert_allclose(np.einsum("ik,ikn->in", theta, basis), delta, atol=1e-9)


def test_optax_fit_converges_to_kkt_optimum(problem):
    forces, config, pairs, _ = problem
    parametrization = valid_map_parametrization(config, pairs)  # float32, the default
    fitted, theta, losses = fit_force_map(parametrization, forces.astype(np.float32), steps=3000, batch_size=256)
    moment = force_second_moment(forces).mean
    optimum = objective(optimal_linear_map(forces, config, pairs), moment)
    start = objective(parametrization.base, moment)
    reached = objective(fitted, moment)
    assert start > 1.5 * optimum  # the problem is not trivial
    assert reached <= optimum * 1.005
    assert check_map(fitted, pairs, tolerance=1e-5).valid
    assert losses.shape == (3000,)


def test_sparse_support_stays_valid_and_sparse(shared_data):
    top = md.load_topology(str(shared_data / "cln025.pdb"))
    constraints = constraints_from_topology(top)
    ca = slice_map(top, "name CA")
    support = support_within_bonds(top, ca, hops=2)
    parametrization = valid_map_parametrization(ca, constraints, support=support)
    theta = jax.random.normal(jax.random.PRNGKey(0), parametrization.n_params)
    linear_map = parametrized_map(parametrization, theta)
    assert check_map(linear_map, constraints, tolerance=1e-4).valid
    force = np.asarray(linear_map.force)
    labels = group_labels(constraints, top.n_atoms)
    for bead in range(force.shape[0]):
        allowed = np.isin(labels, labels[support[bead]])  # whole groups touching the support
        assert np.all(np.abs(force[bead, ~allowed]) < 1e-6)
    assert (np.abs(force) > 1e-6).sum(axis=1).max() < top.n_atoms / 2


def test_fit_accepts_custom_optimizer_and_checks_shapes(problem):
    forces, config, pairs, _ = problem
    parametrization = valid_map_parametrization(config, pairs)
    fitted, _, losses = fit_force_map(parametrization, forces.astype(np.float32), optimizer=optax.sgd(1e-3), steps=100)
    assert np.isfinite(losses).all()
    with pytest.raises(ValueError, match="forces must have shape"):
        fit_force_map(parametrization, forces[:, :-1].astype(np.float32), steps=10)
