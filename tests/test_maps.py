"""Force maps: builders, validity, the optimal map against an independent float64 solver."""

import jax
import jax.numpy as jnp
import jax.test_util
import mdtraj as md
import numpy as np
import pytest
from _qp_reference import objective as reference_objective
from _qp_reference import optimal_force_map_reference

from jaxcg import constraints as cons
from jaxcg.data import make_atomistic_data
from jaxcg.maps import (
    LinearMap,
    MapValidityError,
    apply_map,
    basic_aggregation_map,
    check_map,
    com_map,
    force_second_moment,
    mean_squared_mapped_force,
    objective,
    optimal_linear_map,
    slice_map,
)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def random_problem(seed, n_atoms=12, n_beads=3, n_frames=400, vacuum=False, n_pairs=3):
    """Correlated Gaussian forces, a slice config map and constraint pairs off the bead atoms."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(n_atoms, n_atoms)) + 2 * np.eye(n_atoms)
    forces = np.einsum("nm,tmd->tnd", mixing, rng.normal(size=(n_frames, n_atoms, 3))) * 50.0
    if vacuum:  # isolated system: forces sum to zero in every frame
        forces -= forces.mean(axis=1, keepdims=True)
    beads = np.sort(rng.choice(n_atoms, size=n_beads, replace=False))
    config = np.zeros((n_beads, n_atoms))
    config[np.arange(n_beads), beads] = 1.0
    others = np.setdiff1d(np.arange(n_atoms), beads)
    pairs = []
    for k in range(n_pairs):  # each bead atom constrained to one non-bead atom, plus a free pair
        if k < n_beads:
            pairs.append((beads[k], others[k]))
        else:
            pairs.append((others[k], others[k + 1]))
    return forces, config, np.array(pairs)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("vacuum", [False, True])
@pytest.mark.parametrize("with_constraints", [False, True])
@pytest.mark.parametrize("l2", [0.0, 10.0])
def test_optimal_matches_independent_solver(x64, seed, vacuum, with_constraints, l2):
    forces, config, pairs = random_problem(seed, vacuum=vacuum)
    constraints = pairs if with_constraints else None
    groups = cons.constraint_groups(constraints, forces.shape[1])
    expected = optimal_force_map_reference(forces, config, groups, l2=l2)
    result = optimal_linear_map(forces, config, constraints, l2=l2)
    np.testing.assert_allclose(np.asarray(result.force), expected, atol=1e-5)
    np.testing.assert_allclose(
        reference_objective(result.force, forces), reference_objective(expected, forces), rtol=1e-7
    )
    report = check_map(result, constraints, tolerance=1e-6)
    assert report.valid


def test_optimal_beats_basic_and_slice(x64):
    forces, config, pairs = random_problem(3, n_pairs=0)
    sliced = LinearMap(config=jnp.asarray(config), force=jnp.asarray(config))
    basic = basic_aggregation_map(config, None)
    optimal = optimal_linear_map(forces, config)
    noise = [float(mean_squared_mapped_force(m, forces)) for m in (sliced, basic, optimal)]
    assert noise[2] <= min(noise[:2]) * (1 + 1e-9)
    # perturbing the optimum along a valid direction can only increase the objective
    moment = force_second_moment(forces).mean
    null = np.linalg.svd(config)[2][config.shape[0] :]  # rows orthogonal to M's rows
    perturbed = np.asarray(optimal.force) + 1e-2 * np.random.default_rng(0).normal(size=(3, 3)) @ null[:3]
    assert objective(perturbed, moment) > objective(optimal, moment)


def test_optimal_float32_default_close_to_float64():
    forces, config, pairs = random_problem(4)
    groups = cons.constraint_groups(pairs, forces.shape[1])
    expected = optimal_force_map_reference(forces, config, groups)
    result = optimal_linear_map(forces.astype(np.float32), config, pairs)
    assert result.force.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(result.force), expected, atol=1e-5)


def test_optimal_streams_chunks_and_weights(x64):
    forces, config, pairs = random_problem(5, n_frames=300)
    whole = optimal_linear_map(forces, config, pairs)
    chunks = ((np.zeros_like(forces[s : s + 37]), forces[s : s + 37]) for s in range(0, 300, 37))
    streamed = optimal_linear_map(chunks, config, pairs)
    np.testing.assert_allclose(np.asarray(streamed.force), np.asarray(whole.force), atol=1e-10)
    # integer weights equal repeating frames
    top = md.Topology()
    chain = top.add_chain()
    for k in range(forces.shape[1]):
        top.add_atom(f"C{k}", md.element.carbon, top.add_residue("UNK", chain))
    weights = np.random.default_rng(0).integers(0, 4, size=300).astype(float)
    data = make_atomistic_data(np.zeros_like(forces), forces, top, 300.0, constraints=pairs, weights=weights)
    weighted = optimal_linear_map(data, config)  # uses data.constraints
    repeated = optimal_linear_map(np.repeat(forces, weights.astype(int), axis=0), config, pairs)
    np.testing.assert_allclose(np.asarray(weighted.force), np.asarray(repeated.force), atol=1e-8)


def test_optimal_rejects_beads_sharing_a_constraint_group():
    forces, config, _ = random_problem(6)
    beads = np.flatnonzero(config.any(axis=0))
    with pytest.raises(ValueError, match="linearly dependent"):
        optimal_linear_map(forces, config, np.array([[beads[0], beads[1]]]))
    with pytest.raises(ValueError, match="atoms"):
        optimal_linear_map(forces[:, :-1], config)


# ------------------------------------------------------------------ builders on CLN025


@pytest.fixture(scope="module")
def cln025(shared_data):
    return md.load_topology(str(shared_data / "cln025.pdb"))


def test_basic_aggregation_cln025_ca_hbonds(cln025):
    constraints = cons.constraints_from_topology(cln025, "HBonds")
    ca = slice_map(cln025, "name CA")
    basic = basic_aggregation_map(ca, constraints)
    force = np.asarray(basic.force)
    assert force.shape == (10, cln025.n_atoms)
    assert set(np.unique(force)) == {0.0, 1.0}
    for bead, ca_atom in enumerate(np.flatnonzero(np.asarray(ca.config).any(axis=0))):
        residue = cln025.atom(ca_atom).residue
        expected = {ca_atom} | {
            a.index for a in residue.atoms if a.name in ("HA", "HA2", "HA3")
        }
        assert set(np.flatnonzero(force[bead])) == expected, residue
    glycines = [r for r in cln025.residues if r.name == "GLY"]
    assert glycines and all(force[:, [a.index for a in g.atoms if a.name in ("HA2", "HA3")]].sum() == 2 for g in glycines)


def builders(topology, constraints):
    ca = slice_map(topology, "name CA")
    heavy = [f"resid {r.index} and not element H" for r in topology.residues]
    com = com_map(topology, heavy)
    rng = np.random.default_rng(0)
    forces = rng.normal(size=(200, topology.n_atoms, 3)) * 100
    return {
        "slice": (ca, None),
        "com": (com, None),
        "basic_ca": (basic_aggregation_map(ca, constraints), constraints),
        "basic_com": (basic_aggregation_map(com, constraints), constraints),
        "optimal_ca": (optimal_linear_map(forces, ca, constraints), constraints),
        "optimal_com": (optimal_linear_map(forces, com, constraints), constraints),
    }


@pytest.mark.parametrize("name", ["slice", "com", "basic_ca", "basic_com", "optimal_ca", "optimal_com"])
def test_every_builder_is_consistent(cln025, name):
    constraints = cons.constraints_from_topology(cln025, "HBonds")
    linear_map, used = builders(cln025, constraints)[name]
    config, force = np.asarray(linear_map.config, np.float64), np.asarray(linear_map.force, np.float64)
    np.testing.assert_allclose(force @ config.T, np.eye(config.shape[0]), atol=1e-6)
    np.testing.assert_allclose(config.sum(axis=1), 1.0, atol=1e-6)
    for group in cons.constraint_groups(used, cln025.n_atoms):
        assert np.ptp(force[:, list(group)], axis=1).max() < 1e-6
    assert check_map(linear_map, used, tolerance=1e-6).valid


def test_com_map_is_mass_weighted(cln025):
    residue = next(r for r in cln025.residues if r.name == "TYR")
    atoms = [a.index for a in residue.atoms]
    masses = np.array([cln025.atom(a).element.mass for a in atoms])
    linear_map = com_map(cln025, [atoms])
    positions = np.random.default_rng(1).normal(size=(cln025.n_atoms, 3)).astype(np.float32)
    x, _ = apply_map(linear_map, positions, positions)
    np.testing.assert_allclose(np.asarray(x[0]), masses @ positions[atoms] / masses.sum(), rtol=1e-5)


def test_check_map_rejects_slice_under_constraints_and_inconsistent_maps(cln025):
    constraints = cons.constraints_from_topology(cln025, "HBonds")
    ca = slice_map(cln025, "name CA")
    with pytest.raises(MapValidityError, match="constraint group"):
        check_map(ca, constraints)
    report = check_map(ca, constraints, raise_on_error=False)
    assert not report.valid and report.constraint_spread == 1.0
    doubled = LinearMap(config=ca.config, force=2 * ca.force)
    with pytest.raises(MapValidityError, match="identity"):
        check_map(doubled)
    unnormalised = LinearMap(config=2 * ca.config, force=0.5 * ca.force)
    with pytest.raises(MapValidityError, match="sum to 1"):
        check_map(unnormalised)


def test_builder_errors(cln025):
    with pytest.raises(ValueError, match="matches no atoms"):
        slice_map(cln025, "name XYZ")
    with pytest.raises(ValueError, match="invalid mdtraj selection"):
        slice_map(cln025, "name CA and and")
    with pytest.raises(ValueError, match="must not overlap"):
        com_map(cln025, ["resid 0", "resid 0 or resid 1"])
    config = np.asarray(slice_map(cln025, "name CA").config).copy()
    config[3] = 0.0
    with pytest.raises(ValueError, match="bead 3 has no atoms"):
        basic_aggregation_map(config, None)
    # a constraint chain joining two CA atoms: the group reaches two beads
    ca_atoms = cln025.select("name CA")
    with pytest.raises(ValueError, match="holds atoms of bead 0 and bead 1"):
        basic_aggregation_map(slice_map(cln025, "name CA"), np.array([[ca_atoms[0], ca_atoms[1]]]))
    with pytest.raises(ValueError, match="shape"):
        LinearMap.validated(config=jnp.ones((2, 3)), force=jnp.ones((2, 4)))


# ------------------------------------------------------------------ apply_map


def test_apply_map_shapes_and_values():
    rng = np.random.default_rng(2)
    config = rng.dirichlet(np.ones(7), size=3).astype(np.float32)
    force = rng.normal(size=(3, 7)).astype(np.float32)
    linear_map = LinearMap(config=jnp.asarray(config), force=jnp.asarray(force))
    positions = rng.normal(size=(5, 7, 3)).astype(np.float32)
    forces = rng.normal(size=(5, 7, 3)).astype(np.float32)
    x, f = apply_map(linear_map, positions, forces)
    assert x.shape == f.shape == (5, 3, 3)
    np.testing.assert_allclose(np.asarray(x), np.einsum("Nn,tnd->tNd", config, positions), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(f), np.einsum("Nn,tnd->tNd", force, forces), rtol=1e-5, atol=1e-6)
    x1, f1 = apply_map(linear_map, positions[1], forces[1])
    np.testing.assert_allclose(np.asarray(f1), np.asarray(f[1]), rtol=1e-6)
    xv, fv = jax.vmap(lambda r, F: apply_map(linear_map, r, F))(positions, forces)
    np.testing.assert_allclose(np.asarray(fv), np.asarray(f), rtol=1e-6)
    with pytest.raises(ValueError, match="7 atoms"):
        apply_map(linear_map, positions[:, :6], forces[:, :6])


def test_apply_map_is_differentiable_in_the_map(x64):
    rng = np.random.default_rng(3)
    force = jnp.asarray(rng.normal(size=(2, 5)))
    config = jnp.asarray(rng.dirichlet(np.ones(5), size=2))
    forces = jnp.asarray(rng.normal(size=(4, 5, 3)))

    def loss(g):
        return jnp.mean(jnp.sum(apply_map(LinearMap(config, g), forces, forces)[1] ** 2, axis=(1, 2)))

    analytic = 2 * jnp.einsum("in,tnd,tmd->im", force, forces, forces) / forces.shape[0]
    np.testing.assert_allclose(np.asarray(jax.grad(loss)(force)), np.asarray(analytic), rtol=1e-10)
    jax.test_util.check_grads(loss, (force,), order=2, modes=["rev"])
    jitted = jax.jit(lambda m: apply_map(m, forces, forces)[1])(LinearMap(config, force))
    assert jitted.shape == (4, 2, 3)


def test_float32_moment_is_close_and_bad_precision_is_rejected():
    forces, config, pairs = random_problem(7, n_frames=3000)
    exact = force_second_moment(forces.astype(np.float32), precision="float64").total
    fast = force_second_moment(forces.astype(np.float32), precision="float32").total
    assert np.abs(fast - exact).max() <= 1e-6 * np.abs(exact).max()
    assert not np.array_equal(fast, exact)  # really a different code path
    g64 = np.asarray(optimal_linear_map(forces.astype(np.float32), config, pairs, precision="float64").force)
    g32 = np.asarray(optimal_linear_map(forces.astype(np.float32), config, pairs, precision="float32").force)
    np.testing.assert_allclose(g32, g64, atol=1e-4)
    assert not np.array_equal(g32, g64)
    # the default follows the returned dtype: float32 here (64-bit JAX off)
    default = np.asarray(optimal_linear_map(forces.astype(np.float32), config, pairs).force)
    np.testing.assert_array_equal(default, g32)
    with pytest.raises(ValueError, match="precision must be one of"):
        force_second_moment(forces, precision="bfloat16")


def test_default_moment_precision_is_float64_under_x64(x64):
    forces, config, pairs = random_problem(7, n_frames=500)
    default = np.asarray(optimal_linear_map(forces, config, pairs).force)
    assert default.dtype == np.float64
    np.testing.assert_array_equal(default, np.asarray(optimal_linear_map(forces, config, pairs, precision="float64").force))


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_moment_across_blocks_flushes_and_chunks_equals_one_product(precision):
    """Frames cross the gather blocks, the float32 flush interval and uneven stream chunks;
    the sum must equal one float64 product of the group-summed rows; frame weights equal
    repeated frames, and negative weights are refused."""
    from jaxcg.maps import _optimal

    forces, _, pairs = random_problem(11, n_frames=_optimal._FLUSH_ROWS // 3 + 2 * _optimal._BLOCK_FRAMES + 17)
    forces = forces.astype(np.float32)
    expand = cons.expansion_matrix(pairs, forces.shape[1])
    rows = np.swapaxes(forces.astype(np.float64), 1, 2).reshape(-1, forces.shape[1]) @ expand
    exact = rows.T @ rows
    tolerance = (1e-13 if precision == "float64" else 1e-6) * np.abs(exact).max()
    chunks = (forces[s : s + 301] for s in range(0, forces.shape[0], 301))
    streamed = force_second_moment(chunks, expansion=expand, precision=precision)
    np.testing.assert_allclose(streamed.total, exact, rtol=0, atol=tolerance)
    assert np.array_equal(streamed.total, streamed.total.T)
    weights = np.random.default_rng(1).integers(0, 3, size=forces.shape[0]).astype(float)
    top = md.Topology()
    chain = top.add_chain()
    for k in range(forces.shape[1]):
        top.add_atom(f"C{k}", md.element.carbon, top.add_residue("UNK", chain))
    data = make_atomistic_data(np.zeros_like(forces), forces, top, 300.0, constraints=pairs, weights=weights)
    weighted = force_second_moment(data, expansion=expand, precision=precision)
    repeated = np.repeat(rows.reshape(-1, 3, rows.shape[1]), weights.astype(int), axis=0).reshape(-1, rows.shape[1])
    np.testing.assert_allclose(weighted.total, repeated.T @ repeated, rtol=0, atol=tolerance)
    assert weighted.weight == weights.sum()
    with pytest.raises(ValueError, match="non-negative"):
        _optimal._MomentSum(expand.shape[1], np.float64).add_columns(rows[:6].T.copy(), -np.ones(6))
