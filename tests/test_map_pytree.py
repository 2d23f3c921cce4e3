"""LinearMap as a PyTree: checked by its builders and ``LinearMap.validated``, never on rebuild, so
``jax.tree.map``, ``jax.vmap`` over stacked maps and optax masks work."""

import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np
import optax
import pytest

from jaxcg.maps import (
    LinearMap,
    MapValidityError,
    apply_map,
    basic_aggregation_map,
    check_map,
    com_map,
    mean_squared_mapped_force,
    parametrized_map,
    slice_map,
    valid_map_parametrization,
)


def _forces(n_atoms=7, n_frames=50, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n_frames, n_atoms, 3)), jnp.float32)


def _maps(n_maps=3, n_beads=2, n_atoms=7, seed=0):
    rng = np.random.default_rng(seed)
    return [
        LinearMap.validated(rng.dirichlet(np.ones(n_atoms), size=n_beads).astype(np.float32),
                            rng.normal(size=(n_beads, n_atoms)).astype(np.float32))
        for _ in range(n_maps)
    ]


def test_tree_map_to_other_leaves():
    linear_map = _maps(1)[0]
    sums = jax.tree.map(jnp.sum, linear_map)  # scalar leaves: not a (N, n) matrix
    np.testing.assert_allclose(sums.config, 2.0, rtol=1e-6)
    shapes = jax.tree.map(lambda a: a.shape, linear_map)
    assert shapes.config == shapes.force == (2, 7)
    dtypes = jax.tree.map(lambda a: a.dtype, linear_map)
    assert dtypes.force == jnp.float32


def test_vmap_over_stacked_maps():
    maps, forces = _maps(3), _forces()
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *maps)
    assert stacked.config.shape == (3, 2, 7) and (stacked.n_beads, stacked.n_atoms) == (2, 7)
    batched = jax.vmap(mean_squared_mapped_force, in_axes=(0, None))(stacked, forces)
    looped = [mean_squared_mapped_force(m, forces) for m in maps]
    np.testing.assert_allclose(batched, looped, rtol=1e-5)
    # in_axes given as a LinearMap of integers and None: the same map's config, three force maps
    spec = LinearMap(config=None, force=0)
    shared = LinearMap(config=maps[0].config, force=stacked.force)
    _, f = jax.vmap(apply_map, in_axes=(spec, None, None))(shared, forces, forces)
    np.testing.assert_allclose(f[1], apply_map(maps[1], forces, forces)[1], rtol=1e-5, atol=1e-5)


def test_optax_mask_trains_only_the_force_map():
    linear_map, forces = _maps(1)[0], _forces()

    def loss(m):
        x, f = apply_map(m, forces, forces)
        return jnp.mean(f**2) + jnp.mean(x**2)

    frozen = LinearMap(config=True, force=False)  # a mask: True where updates are zeroed
    for optimizer in (
        optax.chain(optax.sgd(0.1), optax.masked(optax.set_to_zero(), frozen)),
        optax.multi_transform({"train": optax.sgd(0.1), "freeze": optax.set_to_zero()},
                              LinearMap(config="freeze", force="train")),
    ):
        state = optimizer.init(linear_map)
        updates, state = optimizer.update(jax.grad(loss)(linear_map), state, linear_map)
        new = optax.apply_updates(linear_map, updates)
        assert isinstance(new, LinearMap)
        np.testing.assert_array_equal(new.config, linear_map.config)
        assert not np.allclose(new.force, linear_map.force)
        assert float(loss(new)) < float(loss(linear_map))


def test_validated_rejects_malformed_matrices():
    good = np.eye(2, 3, dtype=np.float32)
    assert isinstance(LinearMap.validated(good, good), LinearMap)
    with pytest.raises(ValueError, match=r"force has shape \(2, 4\) but config has shape \(2, 3\)"):
        LinearMap.validated(good, np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"config must be a \(N, n\) matrix, got shape \(3,\)"):
        LinearMap.validated(np.ones(3, np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="force must be a floating-point matrix"):
        LinearMap.validated(good, np.eye(2, 3, dtype=np.int32))
    with pytest.raises(ValueError, match="config holds NaN or inf"):
        LinearMap.validated(np.full((2, 3), np.nan, np.float32), good)
    # the raw constructor does not check (JAX rebuilds maps with any leaves); check_map does
    raw = LinearMap(config=jnp.ones((2, 3)), force=jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="shape"):
        check_map(raw)
    with pytest.raises(MapValidityError, match="NaN or inf"):
        check_map(LinearMap(config=good, force=np.full((2, 3), np.inf, np.float32)))


def test_builders_validate(shared_data):
    topology = md.load(str(shared_data / "cln025.pdb")).topology
    n = topology.n_atoms
    for linear_map in (slice_map(topology, "name CA"), com_map(topology, ["resid 0", "resid 1"]),
                       basic_aggregation_map(np.eye(2, n), None)):
        assert linear_map.config.shape == linear_map.force.shape and linear_map.n_atoms == n
    with pytest.raises(ValueError, match="config_map must be an"):
        basic_aggregation_map(np.ones(n), None)
    # parametrized_map checks shapes at trace time too
    parametrization = valid_map_parametrization(slice_map(topology, "name CA"))
    theta = parametrization.zeros()
    jitted = jax.jit(lambda t: parametrized_map(parametrization, t))(theta)
    np.testing.assert_allclose(jitted.force, parametrized_map(parametrization, theta).force)
    with pytest.raises(ValueError, match="floating-point"):
        LinearMap.validated(jnp.ones((2, 3)), jnp.ones((2, 3), jnp.int32))
