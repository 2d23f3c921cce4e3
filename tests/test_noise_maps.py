"""Noise-augmented maps against the analytic smoothed PMF of a harmonic system."""

import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np
import pytest

from jaxcg.data import make_atomistic_data
from jaxcg.maps import (
    LinearMap,
    apply_noise_augmented_map,
    augment_with_noise,
    check_map,
    noise_augmented_map,
)


def harmonic_data(n_frames=40000, k1=500.0, k2=2000.0, temperature=300.0, seed=0):
    """Two independent isotropic harmonic atoms, sampled exactly from their Boltzmann law."""
    kT = 0.0083144626 * temperature
    rng = np.random.default_rng(seed)
    r1 = rng.normal(scale=np.sqrt(kT / k1), size=(n_frames, 3))
    r2 = rng.normal(scale=np.sqrt(kT / k2), size=(n_frames, 3))
    positions = np.stack([r1, r2], axis=1).astype(np.float32)
    forces = np.stack([-k1 * r1, -k2 * r2], axis=1).astype(np.float32)
    top = md.Topology()
    chain = top.add_chain()
    for name in ("A", "B"):
        top.add_atom(name, md.element.carbon, top.add_residue("UNK", chain))
    return make_atomistic_data(positions, forces, top, temperature), kT, k1


@pytest.mark.parametrize("var", [1e-3, 5e-3])
def test_noised_mean_force_matches_smoothed_pmf(var):
    data, kT, k1 = harmonic_data()
    config = np.array([[1.0, 0.0]])
    noise_map = noise_augmented_map(data, config, var, jax.random.PRNGKey(0))
    y, f = apply_noise_augmented_map(noise_map, jnp.asarray(data.positions), jnp.asarray(data.forces), jax.random.PRNGKey(1))
    y, f = np.asarray(y).reshape(-1), np.asarray(f).reshape(-1)
    slope = np.sum(y * f) / np.sum(y * y)  # E[f | y] = -kT y / (kT/k1 + var)
    expected = -kT / (kT / k1 + var)
    assert slope == pytest.approx(expected, rel=0.03)
    # the extended map is valid: consistent with selecting the noised bead
    selector = LinearMap(config=jnp.asarray([[0.0, 0.0, 1.0]]), force=noise_map.force)
    assert check_map(selector, tolerance=1e-5).valid


def test_optimised_mixing_beats_either_pure_force():
    data, kT, k1 = harmonic_data(n_frames=20000)
    var = 1e-3
    config = jnp.asarray([[1.0, 0.0]])
    noise_map = noise_augmented_map(data, config, var, jax.random.PRNGKey(0))
    positions, forces = augment_with_noise(jnp.asarray(data.positions), jnp.asarray(data.forces), config, var, kT, jax.random.PRNGKey(2))

    def noise(g):
        return float(jnp.mean(jnp.sum(jnp.einsum("m,tmd->td", g, forces) ** 2, axis=-1)))

    optimal = noise(noise_map.force[0])
    score_only = noise(jnp.asarray([0.0, 0.0, 1.0]))
    forces_only = noise(jnp.asarray([1.0, 0.0, 1.0]))  # atom force F + kT noise/var, plus score: = F
    assert optimal <= min(score_only, forces_only) * 1.001
    assert optimal < 0.9 * min(score_only, forces_only)


def test_var_must_be_positive():
    data, _, _ = harmonic_data(n_frames=10)
    with pytest.raises(ValueError, match="var must be a positive"):
        noise_augmented_map(data, np.array([[1.0, 0.0]]), 0.0, jax.random.PRNGKey(0))
