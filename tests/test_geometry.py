"""jaxcg.geometry against mdtraj on a real topology, finite differences in float64, and finite
gradients where points coincide."""

import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxcg import geometry
from jaxcg.priors import prior_terms


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def alanine(shared_data):
    """Alanine dipeptide, 22 atoms, perturbed into 8 frames so every angle differs."""
    traj = md.load(str(shared_data / "alanine-dipeptide.pdb"))
    rng = np.random.default_rng(0)
    xyz = traj.xyz[0] + rng.normal(scale=0.03, size=(8, traj.n_atoms, 3))
    return md.Trajectory(xyz.astype(np.float32), traj.topology)


def _indices(traj):
    bonds = np.array([[a.index, b.index] for a, b in traj.topology.bonds])
    terms = prior_terms(traj.n_atoms, bonds)  # every bonded triple and quadruple
    return bonds, terms.angles, terms.dihedrals


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_matches_mdtraj(alanine, backend, x64):
    bonds, triplets, quads = _indices(alanine)
    assert len(triplets) == 36 and len(quads) == 41
    xyz = alanine.xyz.astype(np.float64)
    x = xyz if backend == "numpy" else jnp.asarray(xyz)
    got = [geometry.distances(x, bonds), geometry.angles(x, triplets), geometry.dihedrals(x, quads)]
    want = [md.compute_distances(alanine, bonds), md.compute_angles(alanine, triplets),
            md.compute_dihedrals(alanine, quads)]
    for g, w in zip(got, want, strict=True):
        assert isinstance(g, np.ndarray) == (backend == "numpy")
        assert g.dtype == np.float64 and g.shape == w.shape
        # mdtraj computes in float32; dihedrals compared modulo 2π.
        np.testing.assert_allclose(np.angle(np.exp(1j * (np.asarray(g) - w))), 0.0, atol=2e-5)


def test_numpy_and_jax_agree_and_keep_dtype(alanine):
    bonds, triplets, quads = _indices(alanine)
    for fn, index in ((geometry.distances, bonds), (geometry.angles, triplets), (geometry.dihedrals, quads)):
        host = fn(alanine.xyz, index)
        device = fn(jnp.asarray(alanine.xyz), index)
        assert host.dtype == np.float32 and device.dtype == jnp.float32
        np.testing.assert_allclose(host, np.asarray(device), atol=1e-5)


def test_hand_computed_values():
    x = np.array([[1.0, 0, 0], [0, 0, 0], [0, 2.0, 0], [-1.0, 1.0, 0], [0, 2.0, 1.0]])
    np.testing.assert_allclose(geometry.distances(x, np.array([[0, 2], [1, 3]])), [np.sqrt(5), np.sqrt(2)])
    np.testing.assert_allclose(geometry.angles(x, np.array([[0, 1, 2], [0, 1, 3], [2, 1, 3], [0, 1, 0]])),
                               [np.pi / 2, 3 * np.pi / 4, np.pi / 4, 0.0], atol=1e-12)
    # 0-1-2-4: looking down 1→2, bead 0 along +x, bead 4 along +z: φ = −90° (IUPAC: clockwise > 0).
    np.testing.assert_allclose(geometry.dihedrals(x, np.array([[0, 1, 2, 4], [4, 2, 1, 0], [0, 1, 2, 3]])),
                               [-np.pi / 2, -np.pi / 2, np.pi], atol=1e-12)


def test_gradients_match_finite_differences(alanine, x64):
    bonds, triplets, quads = _indices(alanine)
    x = jnp.asarray(alanine.xyz[:2], jnp.float64)
    weights = jnp.linspace(0.5, 1.5, 128, dtype=jnp.float64)

    for fn, index in ((geometry.distances, bonds), (geometry.angles, triplets), (geometry.dihedrals, quads)):
        @jax.jit
        def scalar(y, fn=fn, index=index):
            values = fn(y, index)
            return jnp.sum(jnp.sin(values) * weights[: values.shape[-1]])

        # Bonds are ~0.1 nm long: a step of 1e-6 nm keeps the central-difference error small.
        check_grads(scalar, (x,), order=1, modes=["fwd", "rev"], atol=1e-6, rtol=1e-6, eps=1e-6)
    check_grads(scalar, (x,), order=2, modes=["rev"], atol=1e-6, rtol=1e-6, eps=1e-6)  # dihedrals
    check_grads(lambda v: geometry.norm(v, softening=1e-3), (x[0],), order=2, atol=1e-6, rtol=1e-6, eps=1e-6)


def test_gradient_finite_where_points_coincide():
    x = jnp.array([[0.0, 0, 0], [0.0, 0, 0], [0.1, 0.2, 0.0], [0.1, 0.2, 0.0]])

    def total(y):
        return (jnp.sum(geometry.distances(y, np.array([[0, 1], [1, 2]])))
                + jnp.sum(geometry.angles(y, np.array([[0, 1, 2], [1, 2, 3]])))
                + jnp.sum(geometry.dihedrals(y, np.array([[0, 1, 2, 3], [1, 0, 2, 3]])))
                + jnp.sum(geometry.norm(y - y[0], softening=1e-6)))

    value, grad = jax.value_and_grad(total)(x)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    hessian = jax.hessian(lambda v: jnp.sum(geometry.norm(v)))(jnp.zeros((2, 3)))
    assert np.all(np.isfinite(hessian))
    # The distance of coincident points is 0 and its gradient is 0 (a subgradient), not NaN.
    np.testing.assert_array_equal(jax.grad(lambda y: geometry.distances(y, np.array([[0, 1]]))[0])(x), 0.0)


def test_softened_norm():
    v = np.array([[0.3, 0.4, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(geometry.norm(v), [0.5, 0.0])
    np.testing.assert_allclose(geometry.norm(v, softening=1e-3), np.sqrt([0.25 + 1e-6, 1e-6]))


def test_batched_and_jitted_shapes():
    x = jax.random.normal(jax.random.key(0), (5, 3, 6, 3))
    quads = np.array([[0, 1, 2, 3], [2, 3, 4, 5]])
    eager = geometry.dihedrals(x, quads)
    assert eager.shape == (5, 3, 2)
    np.testing.assert_allclose(jax.jit(geometry.dihedrals)(x, quads), eager, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(geometry.dihedrals, in_axes=(0, None))(x, quads), eager, atol=1e-6)
