"""Force maps on real OpenMM data: the bundled flexible and rigid TIP3P water dimers, O-only map."""

import jax
import numpy as np
import pytest
from _qp_reference import objective as reference_objective
from _qp_reference import optimal_force_map_reference

from jaxcg.constraints import constraint_groups
from jaxcg.maps import (
    MapValidityError,
    basic_aggregation_map,
    check_map,
    mean_squared_mapped_force,
    optimal_linear_map,
    slice_map,
)
from jaxcg.reference import bundled_dataset


@pytest.fixture(scope="module")
def flexible():
    return bundled_dataset("water_dimer_flexible")


@pytest.fixture(scope="module")
def rigid():
    return bundled_dataset("water_dimer_rigid")


def water_atoms(topology):
    return [[a.index for a in residue.atoms] for residue in topology.residues]


def test_flexible_optimal_map_sums_each_water(flexible):
    oxygens = slice_map(flexible.topology, "element O")
    optimal = optimal_linear_map(flexible, oxygens)
    force = np.asarray(optimal.force)
    waters = water_atoms(flexible.topology)
    assert len(waters) == 2 and all(len(w) == 3 for w in waters)
    for bead, own in enumerate(waters):
        other = waters[1 - bead]
        np.testing.assert_allclose(force[bead, own], 1.0, atol=0.01)
        np.testing.assert_allclose(force[bead, other], 0.0, atol=0.01)
    noise_slice = float(mean_squared_mapped_force(oxygens, flexible.forces))
    noise_optimal = float(mean_squared_mapped_force(optimal, flexible.forces))
    assert noise_slice / noise_optimal > 10.0


def test_rigid_slice_rejected_basic_and_optimal_pass(rigid):
    assert rigid.constraints is not None and len(rigid.constraints) == 6
    oxygens = slice_map(rigid.topology, "element O")
    with pytest.raises(MapValidityError, match="constraint group"):
        check_map(oxygens, rigid.constraints)
    basic = basic_aggregation_map(oxygens, rigid.constraints)
    optimal = optimal_linear_map(rigid, oxygens, rigid.constraints)
    for linear_map in (basic, optimal):
        assert check_map(linear_map, rigid.constraints, tolerance=1e-6).valid
    # each water is one constraint group, so both maps sum each water's atoms exactly
    np.testing.assert_allclose(np.asarray(optimal.force), np.asarray(basic.force), atol=1e-6)


@pytest.mark.parametrize("name", ["water_dimer_flexible", "water_dimer_rigid"])
def test_optimal_matches_independent_solver_on_real_forces(name):
    data = bundled_dataset(name)
    oxygens = np.asarray(slice_map(data.topology, "element O").config, np.float64)
    groups = constraint_groups(data.constraints, data.n_atoms)
    expected = optimal_force_map_reference(data.forces, oxygens, groups)
    with jax.enable_x64(True):
        result = optimal_linear_map(data, oxygens, data.constraints)
    np.testing.assert_allclose(np.asarray(result.force), expected, atol=1e-5)
    np.testing.assert_allclose(
        reference_objective(result.force, data.forces), reference_objective(expected, data.forces), rtol=1e-6
    )
