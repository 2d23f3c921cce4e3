"""Configuration-dependent force maps: the divergence correction, validity per frame, fitting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_noise_maps import harmonic_data

from jaxcg.maps import (
    LinearMap,
    check_map,
    configurational_coefficients,
    configurational_mapped_forces,
    fit_configurational_map,
    init_configurational_map,
    mean_squared_configurational_force,
    mean_squared_mapped_force,
    optimal_linear_map,
    slice_map,
    valid_map_parametrization,
)


def test_divergence_term_removes_the_analytic_bias():
    """G(r) = [1, s·r2x]: E[f_x | x] = -k1 x only with the kT ∂G/∂r2x = kT s correction."""
    data, kT, k1 = harmonic_data(n_frames=50000)
    s = 3.0

    def coefficients(r):
        return jnp.stack([jnp.ones_like(r[1, 0]), s * r[1, 0]])[None, :]

    positions, forces = jnp.asarray(data.positions), jnp.asarray(data.forces)
    with_div = jax.vmap(lambda r, f: configurational_mapped_forces(coefficients, r, f, kT))(positions, forces)
    without = jax.vmap(lambda r, f: configurational_mapped_forces(coefficients, r, f, kT, divergence=False))(positions, forces)
    residual = lambda mapped: float(jnp.mean(mapped[:, 0, 0] + k1 * positions[:, 0, 0]))  # noqa: E731
    standard_error = float(jnp.std(with_div[:, 0, 0] + k1 * positions[:, 0, 0])) / np.sqrt(data.n_frames)
    assert abs(residual(with_div)) < 4 * standard_error
    assert residual(without) == pytest.approx(-s * kT, abs=4 * standard_error)
    assert abs(residual(without)) > 10 * standard_error


def random_parametrization_and_params(key, n_atoms=5):
    rng = np.random.default_rng(0)
    config = np.zeros((2, n_atoms))
    config[0, 0] = config[1, 3] = 1.0
    parametrization = valid_map_parametrization(config)
    params = init_configurational_map(parametrization, key, hidden=(16,))
    params[-1] = (jnp.asarray(rng.normal(size=params[-1][0].shape) * 0.3, params[-1][0].dtype), params[-1][1])
    return parametrization, params


def test_divergence_matches_finite_differences():
    with jax.enable_x64(True):
        parametrization, params = random_parametrization_and_params(jax.random.PRNGKey(0))
        r = jnp.asarray(np.random.default_rng(1).normal(size=(5, 3)) * 0.3)
        zero_forces = jnp.zeros_like(r)
        coefficients = jax.jit(lambda x: configurational_coefficients(parametrization, params, x))
        div = configurational_mapped_forces(coefficients, r, zero_forces, kT=1.0)
        h = 1e-6
        expected = np.zeros((2, 3))
        for a in range(5):
            for d in range(3):
                step = jnp.zeros_like(r).at[a, d].set(h)
                expected[:, d] += np.asarray(coefficients(r + step)[:, a] - coefficients(r - step)[:, a]) / (2 * h)
        np.testing.assert_allclose(np.asarray(div), expected, rtol=1e-6, atol=1e-8)


def test_coefficients_are_valid_at_every_frame():
    parametrization, params = random_parametrization_and_params(jax.random.PRNGKey(2))
    frames = jnp.asarray(np.random.default_rng(3).normal(size=(20, 5, 3)), jnp.float32)
    coefficients = jax.vmap(lambda r: configurational_coefficients(parametrization, params, r))(frames)
    for g in coefficients:
        assert float(jnp.abs(g - parametrization.base).max()) > 1e-3  # really configuration-dependent
        assert check_map(LinearMap(parametrization.config, g), tolerance=1e-5).valid


def test_fit_on_flexible_water_lowers_noise_below_base():
    from jaxcg.reference import bundled_dataset

    data = bundled_dataset("water_dimer_flexible")
    train, test = data.subset(slice(0, 4000)), data.subset(slice(-2000, None))
    oxygens = slice_map(data.topology, "element O")
    linear = optimal_linear_map(train, oxygens)
    parametrization = valid_map_parametrization(oxygens, base=linear)
    params, losses = fit_configurational_map(parametrization, train, jax.random.PRNGKey(0), steps=300, batch_size=64, hidden=(32,))
    assert np.isfinite(losses).all()
    base_noise = float(mean_squared_mapped_force(linear, test.forces))
    fitted_noise = mean_squared_configurational_force(parametrization, params, test)
    assert fitted_noise < base_noise * 1.02  # never materially worse than its linear starting point


def test_constrained_data_is_refused():
    from jaxcg.reference import bundled_dataset

    data = bundled_dataset("water_dimer_rigid")
    oxygens = slice_map(data.topology, "element O")
    parametrization = valid_map_parametrization(oxygens, data.constraints)
    with pytest.raises(ValueError, match="unconstrained data"):
        fit_configurational_map(parametrization, data, jax.random.PRNGKey(0), steps=1)


@pytest.mark.parametrize("hidden", [(), (6,), (8, 8)])
def test_closed_form_divergence_equals_the_autodiff_one(hidden):
    """The closed-form divergence used in training equals jacfwd over all coordinates, for a
    centre-of-mass configurational map (beads spread over several atoms) and slice rows."""
    from jaxcg.maps._configurational import mapped_forces_closed_form

    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        config = np.zeros((3, 7))
        config[0, :3] = [0.5, 0.3, 0.2]
        config[1, 3] = 1.0
        config[2, 4:] = [0.2, 0.5, 0.3]
        parametrization = valid_map_parametrization(config)
        params = init_configurational_map(parametrization, jax.random.PRNGKey(5), hidden=hidden)
        params[-1] = (jnp.asarray(rng.normal(size=params[-1][0].shape) * 0.5), params[-1][1])
        for _ in range(3):
            r = jnp.asarray(rng.normal(size=(7, 3)) * 0.3)
            f = jnp.asarray(rng.normal(size=(7, 3)) * 10.0)
            coefficients = lambda x: configurational_coefficients(parametrization, params, x)  # noqa: E731
            general = configurational_mapped_forces(coefficients, r, f, kT=2.5)
            closed, delta = mapped_forces_closed_form(parametrization, params, r, f, kT=2.5)
            np.testing.assert_allclose(np.asarray(closed), np.asarray(general), rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(np.asarray(delta), np.asarray(coefficients(r) - parametrization.base), atol=1e-12)
            # and the divergence is really there (not zero) in this configuration
            no_div = configurational_mapped_forces(coefficients, r, f, kT=2.5, divergence=False)
            assert float(jnp.abs(general - no_div).max()) > 1e-3
