"""Joint optimisation of force map and potential on the flexible water dimer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcg.joint import fit_joint, fixed_map_residual, joint_map
from jaxcg.maps import (
    check_map,
    mean_squared_mapped_force,
    optimal_linear_map,
    slice_map,
    valid_map_parametrization,
)
from jaxcg.models import RBFPairPotential
from jaxcg.reference import bundled_dataset


@pytest.fixture(scope="module")
def water():
    data = bundled_dataset("water_dimer_flexible")
    return data.subset(slice(0, 8000)), data.subset(slice(12000, None)), slice_map(data.topology, "element O")


def run(water, train_map, seed=0, steps=1500):
    train, _, oxygens = water
    model = RBFPairPotential(2, 32, 0.2, 1.2)
    params0 = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 3)))
    base = None if train_map else optimal_linear_map(train, oxygens)
    parametrization = valid_map_parametrization(oxygens, base=base)
    params, losses = fit_joint(
        model.energy, params0, parametrization, train, jax.random.PRNGKey(seed), steps=steps,
        learning_rate=0.2, map_learning_rate=0.05, train_map=train_map,
    )
    return model, parametrization, params, losses


def test_joint_reaches_the_sequential_hold_out_residual(water):
    train, test, oxygens = water
    optimal = optimal_linear_map(train, oxygens)
    x, f = jnp.asarray(test.positions), jnp.asarray(test.forces)
    model, _, sequential, _ = run(water, train_map=False)
    _, parametrization, joint, losses = run(water, train_map=True)
    residual_sequential = float(fixed_map_residual(model.energy, optimal, sequential.model, x, f))
    residual_joint = float(fixed_map_residual(model.energy, optimal, joint.model, x, f))
    assert residual_joint <= residual_sequential * 1.02
    # the jointly trained map started at slice and learned to aggregate each water
    fitted = joint_map(parametrization, joint)
    assert check_map(fitted, tolerance=1e-4).valid
    slice_noise = float(mean_squared_mapped_force(oxygens, test.forces))
    assert float(mean_squared_mapped_force(fitted, test.forces)) < 0.05 * slice_noise
    assert losses[:100].mean() > 10 * losses[-100:].mean()


def test_joint_training_is_deterministic_under_a_seed(water):
    _, _, first, _ = run(water, train_map=True, seed=3, steps=200)
    _, _, second, _ = run(water, train_map=True, seed=3, steps=200)
    _, _, other, _ = run(water, train_map=True, seed=4, steps=200)
    np.testing.assert_array_equal(np.asarray(first.theta), np.asarray(second.theta))
    np.testing.assert_array_equal(np.asarray(first.model["coefficients"]), np.asarray(second.model["coefficients"]))
    assert not np.array_equal(np.asarray(first.theta), np.asarray(other.theta))
