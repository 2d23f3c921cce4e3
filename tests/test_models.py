"""Models: invariances, forces against finite differences (float64), the neighbour-list path
against the dense path, and the uniform interface."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcg.models import (
    PriorPlusNet,
    RBFPairPotential,
    SchNet,
    batched_energy_and_forces,
    force_fn,
)
from jaxcg.priors import Prior, PriorParams, prior_terms

TYPES = np.array([0, 1, 0, 2, 1, 0])
BONDS = np.stack([np.arange(5), np.arange(1, 6)], axis=1)


def _positions(seed=0, n=6):
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.normal(0.0, 0.25, (n, 3)), axis=0)).astype(np.float32)


def _rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def _fd_check(energy, x, seed=0):
    """Directional central differences of a float64 energy against its jitted gradient."""
    energy = jax.jit(energy)
    grad = np.asarray(jax.jit(jax.grad(energy))(x))
    for v in np.random.default_rng(seed).normal(size=(3, *x.shape)):
        v = jnp.asarray(v, jnp.float64)
        fd = (energy(x + 1e-6 * v) - energy(x - 1e-6 * v)) / 2e-6
        np.testing.assert_allclose(float(fd), float(np.sum(grad * np.asarray(v))), rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def small_schnet():
    model = SchNet(TYPES, features=16, blocks=2, rbf=12, cutoff=1.2)
    return model, model.init(jax.random.key(0), jnp.asarray(_positions()))


def test_schnet_defaults_and_param_shapes():
    model = SchNet(TYPES)
    assert (model.features, model.blocks, model.rbf, model.cutoff) == (128, 2, 32, 1.2)
    params = model.init(jax.random.key(0), jnp.asarray(_positions()))
    assert params["interaction_1"]["filter_in"]["kernel"].shape == (32, 128)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    with pytest.raises(ValueError, match=r"positions must have shape \(6, 3\)"):
        model.init(jax.random.key(0), jnp.zeros((5, 3)))


def test_schnet_invariant_to_rotation_translation_and_permutation(small_schnet):
    model, params = small_schnet
    x = _positions(1)
    energy = jax.jit(model.energy)
    u = float(energy(params, jnp.asarray(x)))
    moved = (x @ _rotation(2).T + np.array([0.3, -1.0, 2.0])).astype(np.float32)
    np.testing.assert_allclose(float(energy(params, jnp.asarray(moved))), u, rtol=1e-5, atol=1e-6)
    # Swap the two beads of type 1 (indices 1 and 4) and two of type 0 (0 and 5).
    perm = np.array([5, 4, 2, 3, 1, 0])
    assert (TYPES[perm] == TYPES).all()
    np.testing.assert_allclose(float(energy(params, jnp.asarray(x[perm]))), u, rtol=1e-5, atol=1e-6)


def test_schnet_forces_match_finite_differences_float64():
    with jax.enable_x64(True):
        model = SchNet(TYPES, features=8, rbf=8, cutoff=1.2, dtype=jnp.float64, bonds=BONDS, exclusion_hops=1)
        x = jnp.asarray(_positions(3), jnp.float64)
        params = model.init(jax.random.key(1), x)
        _fd_check(lambda y: model.energy(params, y), x)


def test_schnet_cutoff_is_smooth():
    model = SchNet(np.array([0, 0]), features=8, rbf=8, cutoff=1.0)
    params = model.init(jax.random.key(0), jnp.zeros((2, 3)))
    x = lambda r: jnp.array([[0.0, 0.0, 0.0], [r, 0.0, 0.0]], jnp.float32)  # noqa: E731
    forces = jax.jit(force_fn(model.energy))
    assert float(jnp.abs(forces(params, x(0.999))).max()) < 1e-3
    assert float(jnp.abs(forces(params, x(1.5))).max()) == 0.0
    energy = jax.jit(model.energy)
    np.testing.assert_allclose(energy(params, x(1.5)), energy(params, x(2.5)), rtol=1e-6)


def test_neighbor_list_path_matches_dense(small_schnet):
    model = SchNet(TYPES, features=16, rbf=12, cutoff=0.6, bonds=BONDS, exclusion_hops=1)
    params = model.init(jax.random.key(0), jnp.asarray(_positions()))
    x = jnp.asarray(_positions(4))
    displacement, neighbor_fn = model.neighbor_list(dr_threshold=0.0)
    with jax.numpy_dtype_promotion("standard"):  # jax-md is not strict-promotion clean
        nbrs = neighbor_fn.allocate(x)
    assert not bool(nbrs.did_buffer_overflow)
    dense = jax.jit(batched_energy_and_forces(model.energy))(params, x[None])
    sparse_energy = lambda p, y: model.energy_neighbors(p, y, nbrs, displacement)  # noqa: E731
    sparse = jax.jit(batched_energy_and_forces(sparse_energy))(params, x[None])
    np.testing.assert_allclose(sparse[0], dense[0], rtol=1e-5)
    np.testing.assert_allclose(sparse[1], dense[1], rtol=1e-4, atol=1e-5)


def test_energy_neighbors_refuses_a_dense_list():
    """A Dense list (jax-md's default format) has rows of neighbours, not pairs: read as pairs it
    gave a wrong energy silently; it must be refused, by name."""
    with jax.numpy_dtype_promotion("standard"):
        from jax_md import partition, space

    model = SchNet(TYPES, features=8, rbf=8, cutoff=0.6)
    params = model.init(jax.random.key(0), jnp.asarray(_positions()))
    x = jnp.asarray(_positions(4))
    displacement, _ = space.free()
    with jax.numpy_dtype_promotion("standard"):
        dense_fn = partition.neighbor_list(displacement, 1.0, 0.6, disable_cell_list=True,
                                           format=partition.NeighborListFormat.Dense)
        dense = dense_fn.allocate(x)
    with pytest.raises(ValueError, match="OrderedSparse neighbour list .* got format Dense"):
        model.energy_neighbors(params, x, dense, displacement)
    with pytest.raises(ValueError, match="OrderedSparse neighbour list .* got format Dense"):
        jax.jit(lambda p, y: model.energy_neighbors(p, y, dense, displacement))(params, x)
    # the list SchNet builds is accepted, also batched over replicas by vmap
    displacement, sparse_fn = model.neighbor_list(dr_threshold=0.0)
    with jax.numpy_dtype_promotion("standard"):
        nbrs = sparse_fn.allocate(x)
    batched = jax.tree.map(lambda a: jnp.stack([a, a]), nbrs)
    energies = jax.vmap(lambda y, n: model.energy_neighbors(params, y, n, displacement))(jnp.stack([x, x]), batched)
    np.testing.assert_allclose(energies, jax.jit(model.energy)(params, x), rtol=1e-5)


def test_neighbor_list_overflow_is_carried_as_data():
    model = SchNet(np.zeros(8, np.int32), features=8, rbf=8, cutoff=1.0)
    _, neighbor_fn = model.neighbor_list(dr_threshold=0.0, capacity_multiplier=1.0)
    spread = jnp.asarray(np.arange(8)[:, None] * np.array([[2.0, 0.0, 0.0]]), jnp.float32)
    with jax.numpy_dtype_promotion("standard"):
        nbrs = neighbor_fn.allocate(spread)  # no pairs within the cutoff: minimal capacity
        nbrs = neighbor_fn.update(jnp.asarray(_positions(5, 8) * 0.3), nbrs)
    assert bool(nbrs.did_buffer_overflow)


def test_rbf_pair_potential_energy_and_forces():
    model = RBFPairPotential(n_beads=2, n_basis=6, r_min=0.2, r_max=0.8)
    x = jnp.array([[0.0, 0.0, 0.0], [0.3, 0.4, 0.0]], jnp.float32)
    params = {"coefficients": jnp.arange(1.0, 7.0, dtype=jnp.float32)}
    expected = np.sum(np.arange(1.0, 7.0) * np.exp(-model.gamma * (0.5 - model.centers) ** 2))
    np.testing.assert_allclose(jax.jit(model.energy)(params, x), expected, rtol=1e-5)
    with jax.enable_x64(True):
        p64 = {"coefficients": jnp.arange(1.0, 7.0, dtype=jnp.float64)}
        _fd_check(lambda y: model.energy(p64, y), jnp.asarray(x, jnp.float64))


def test_prior_plus_net_is_the_sum_and_forces_agree():
    terms = prior_terms(6, BONDS)
    prior = Prior(
        terms,
        PriorParams(
            bond_k=np.full(5, 1000.0), bond_r0=np.full(5, 0.38), angle_k=np.full(4, 30.0),
            angle_theta0=np.full(4, 1.9), dihedral_cos=np.ones((3, 2)), dihedral_sin=np.zeros((3, 2)),
            repulsion_sigma=np.full(len(terms.pairs), 0.4), repulsion_k=np.asarray(5000.0),
        ),
    )
    net = SchNet(TYPES, features=8, rbf=8)
    model = PriorPlusNet(prior, net)
    x = jnp.asarray(_positions(6))
    params = model.init(jax.random.key(0), x)

    @jax.jit
    def everything(params, xs):
        total = model.energy(params, xs[0])
        parts = prior.energy(params["prior"], xs[0]) + net.energy(params["net"], xs[0])
        u, f = batched_energy_and_forces(model.energy)(params, xs)
        return total, parts, u, f, force_fn(model.energy)(params, xs[1])

    total, parts, u, f, single = everything(params, jnp.stack([x, x + 0.01]))
    np.testing.assert_allclose(total, parts, rtol=1e-6)
    np.testing.assert_allclose(u[0], total, rtol=1e-5)
    np.testing.assert_allclose(f[1], single, rtol=1e-4, atol=1e-4)


def test_schnet_rejects_bad_types():
    with pytest.raises(ValueError, match="bead_types must lie in"):
        SchNet(np.array([0, 3]), n_types=2)


def test_compacted_pairs_match_all_pairs_and_overflow_is_a_flag():
    x = _positions(7) * 2.0  # spread out: some pairs beyond the cutoff
    full = SchNet(TYPES, features=8, rbf=8, cutoff=0.8)
    count = int(full.pair_counts(x[None])[0])
    assert 0 < count < len(full.pair_i)
    compact = SchNet(TYPES, features=8, rbf=8, cutoff=0.8, max_pairs=count)
    tight = SchNet(TYPES, features=8, rbf=8, cutoff=0.8, max_pairs=count - 1)
    params = full.init(jax.random.key(0), jnp.asarray(x))

    @jax.jit
    def all_three(params, xs):
        return [(*batched_energy_and_forces(m.energy)(params, xs), jax.vmap(m.pair_overflow)(xs))
                for m in (full, compact, tight)]

    (u, f, o), (uc, fc, oc), (ut, ft, ot) = all_three(params, jnp.asarray(x[None]))
    np.testing.assert_allclose(uc, u, rtol=1e-5)
    np.testing.assert_allclose(fc, f, rtol=1e-4, atol=1e-5)
    # overflow: a flag as data (jax-md's convention), finite values over the first max_pairs pairs
    assert not o.any() and not oc.any() and ot.all()
    assert np.isfinite(ut).all() and np.isfinite(ft).all()
    assert not np.allclose(ut, u)
    with pytest.raises(ValueError, match="max_pairs must be in"):
        SchNet(TYPES, max_pairs=100)


# ---------------------------------------------------------------------- tabulated filters


def test_hermite_interpolation_is_exact_for_cubics():
    """A cubic tabulated with its exact slopes is reproduced exactly, values and derivatives."""
    from jaxcg.models._schnet import hermite_coefficients, hermite_interpolate

    with jax.enable_x64(True):
        f = lambda r: jnp.stack([2.0 - r + 3.0 * r**2 - 5.0 * r**3, r**3], axis=-1)  # noqa: E731
        grid = jnp.linspace(0.0, 1.2, 7, dtype=jnp.float64)
        values, slopes = jax.jvp(f, (grid,), (jnp.ones_like(grid),))
        coefficients = hermite_coefficients(values, slopes, 0.2)
        r = jnp.asarray(np.random.default_rng(0).uniform(0.0, 1.2, 50))
        np.testing.assert_allclose(hermite_interpolate(coefficients, r, 0.2), f(r), rtol=1e-12, atol=1e-12)
        df = jax.vmap(jax.jacfwd(lambda s: hermite_interpolate(coefficients, s[None], 0.2)[0]))(r)
        np.testing.assert_allclose(df, jax.vmap(jax.jacfwd(f))(r), rtol=1e-10, atol=1e-10)


@pytest.mark.slow  # about 20-35 s on 2 cores: run with -m slow
def test_filter_table_converges_at_fourth_order_and_forces_follow():
    """Filter error falls ~16x and force error ~8x per halving of the grid spacing (float64)."""
    with jax.enable_x64(True):
        x = jnp.asarray(_positions(7), jnp.float64)
        exact = SchNet(TYPES, features=16, rbf=12, cutoff=1.2, dtype=jnp.float64)
        params = exact.init(jax.random.key(2), x)
        f_exact = force_fn(exact.energy)(params, x)
        filter_errors, force_errors = [], []
        for k in (32, 64, 128):
            model = SchNet(TYPES, features=16, rbf=12, cutoff=1.2, dtype=jnp.float64, filter_table=k)
            filter_errors.append(model.filter_table_error(params))
            f = force_fn(model.energy)(params, x)
            force_errors.append(float(jnp.linalg.norm(f - f_exact) / jnp.linalg.norm(f_exact)))
        assert exact.filter_table_error(params) == 0.0
        assert filter_errors[-1] < 1e-5, filter_errors
        for coarse, fine in zip(filter_errors, filter_errors[1:], strict=False):
            assert coarse / fine > 10.0, filter_errors
        for coarse, fine in zip(force_errors, force_errors[1:], strict=False):
            assert coarse / fine > 5.0, force_errors


def test_tabulated_forces_are_the_gradient_of_the_tabulated_energy():
    with jax.enable_x64(True):
        model = SchNet(TYPES, features=8, rbf=8, cutoff=1.2, dtype=jnp.float64, filter_table=16,
                       bonds=BONDS, exclusion_hops=1)
        x = jnp.asarray(_positions(3), jnp.float64)
        params = model.init(jax.random.key(1), x)
        _fd_check(lambda y: model.energy(params, y), x)
        tables = model.filter_tables(params)
        _fd_check(lambda y: model.energy(params, y, tables=tables), x, seed=1)


def test_precomputed_filter_tables_match_and_are_checked():
    x = jnp.asarray(_positions(2))
    model = SchNet(TYPES, features=16, rbf=12, cutoff=1.2, filter_table=64)
    params = model.init(jax.random.key(0), x)
    tables = model.filter_tables(params)
    # the tables live beside the parameters, not among them: params keep the weights only
    assert jax.tree.structure(params) == jax.tree.structure(SchNet(TYPES, features=16, rbf=12).init(jax.random.key(0), x))
    assert len(tables) == 2 and all(t.shape == (64, 4, 16) for t in tables)
    np.testing.assert_allclose(model.energy(params, x, tables=tables), model.energy(params, x), rtol=1e-6)
    forces = force_fn(lambda p, y: model.energy(p, y, tables=tables))(params, x)
    np.testing.assert_allclose(forces, force_fn(model.energy)(params, x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="filter_table=None"):
        SchNet(TYPES, features=16, rbf=12, cutoff=1.2).energy(params, x, tables=tables)
    with pytest.raises(ValueError, match="tables must be 2 arrays of shape"):
        SchNet(TYPES, features=16, rbf=12, cutoff=1.2, filter_table=32).energy(params, x, tables=tables)
    with pytest.raises(ValueError, match="needs a model built with filter_table"):
        SchNet(TYPES, features=16, rbf=12).filter_tables(params)
    for bad in (1, 0, True, 2.5):
        with pytest.raises(ValueError, match="filter_table must be an int"):
            SchNet(TYPES, filter_table=bad)


@pytest.mark.slow  # about 20 s on 2 cores: run with -m slow
def test_training_gradient_through_the_table_matches_the_exact_model():
    """Force-matching loss gradients w.r.t. every weight, through the rebuilt grid, agree with
    the exact model's to the grid's accuracy."""
    x = jnp.asarray(np.stack([_positions(s) for s in range(4)]))
    target = jnp.asarray(np.random.default_rng(0).normal(size=x.shape).astype(np.float32))
    exact = SchNet(TYPES, features=16, rbf=12, cutoff=1.2)
    table = SchNet(TYPES, features=16, rbf=12, cutoff=1.2, filter_table=256)
    params = exact.init(jax.random.key(3), x[0])

    def loss(model, p):
        forces = batched_energy_and_forces(model.energy)(p, x)[1]
        return jnp.mean((forces - target) ** 2)

    g_exact = jax.grad(lambda p: loss(exact, p))(params)
    g_table = jax.grad(lambda p: loss(table, p))(params)
    for a, b in zip(jax.tree.leaves(g_exact), jax.tree.leaves(g_table), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-3 * float(jnp.abs(a).max()) + 1e-7)


def test_schnet_params_are_those_of_flax_defaults():
    """init gives exactly the weights Flax's own initialisers draw for the module (LeCun-normal
    kernels, zero biases, Flax's embedding initialiser), and module_from/params_of round-trip."""
    import flax.nnx as nnx

    model = SchNet(TYPES, features=16, rbf=12)
    params = model.init(jax.random.key(4), jnp.asarray(_positions()))
    rngs = nnx.Rngs(jax.random.key(4))
    embedding = nnx.Embed(3, 16, rngs=rngs)  # the module's first draw is its embedding
    np.testing.assert_array_equal(params["embedding"]["embedding"], embedding.embedding[...])
    first = nnx.Linear(12, 16, rngs=rngs)  # then block 0's first filter layer
    np.testing.assert_array_equal(params["interaction_0"]["filter_in"]["kernel"], first.kernel[...])
    assert not np.any(np.asarray(params["out_2"]["bias"]))
    again = model.params_of(model.module_from(params))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params), strict=True))


def test_schnet_module_trains_with_nnx_optimizer_like_the_pure_path():
    """The stateful module (nnx.jit + nnx.Optimizer) and the pure energy (jax.jit + optax) are one
    model: same energies and neighbour-list energies, and three Adam steps of force matching give
    the same weights."""
    import flax.nnx as nnx
    import optax

    model = SchNet(TYPES, features=16, rbf=12, bonds=BONDS, exclusion_hops=1)
    xs = jnp.asarray(np.stack([_positions(s) for s in range(4)]))
    target = jnp.asarray(np.random.default_rng(1).normal(size=xs.shape).astype(np.float32))
    module = model.module(jax.random.key(5))
    params = model.params_of(module)
    np.testing.assert_allclose(module(xs[0]), model.energy(params, xs[0]), rtol=1e-6)
    _, neighbor_fn = model.neighbor_list()
    with jax.numpy_dtype_promotion("standard"):  # jax-md is not strict-promotion clean
        nbrs = neighbor_fn.allocate(xs[0])
    np.testing.assert_allclose(module.energy_neighbors(xs[0], nbrs), model.energy(params, xs[0]), rtol=1e-5)

    tx = optax.adam(1e-2)

    def pure_loss(p):
        return jnp.mean((batched_energy_and_forces(model.energy)(p, xs)[1] - target) ** 2)

    @jax.jit
    def pure_step(p, opt_state):
        grads = jax.grad(pure_loss)(p)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    with jax.numpy_dtype_promotion("standard"):
        optimizer = nnx.Optimizer(module, tx, wrt=nnx.Param)

    @nnx.jit
    def module_step(module, optimizer):
        def loss(m):
            forces = jax.vmap(jax.grad(lambda x: -m(x)))(xs)
            return jnp.mean((forces - target) ** 2)

        grads = nnx.grad(loss)(module)
        optimizer.update(module, grads)

    with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts and float decays
        opt_state = tx.init(params)
        for _ in range(3):
            params, opt_state = pure_step(params, opt_state)
            module_step(module, optimizer)
    trained = model.params_of(module)
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                zip(jax.tree.leaves(params), jax.tree.leaves(model.init(jax.random.key(5), xs[0])), strict=True))
    assert moved > 1e-3  # the steps did change the weights
    for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
