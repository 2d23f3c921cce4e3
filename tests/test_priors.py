"""Priors: graph construction, energies against finite differences, and Boltzmann inversion that
recovers the parameters of exactly sampled harmonic / Fourier distributions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcg.data import CGData
from jaxcg.priors import (
    Prior,
    PriorParams,
    bond_angles,
    dihedral_angles,
    fit_prior,
    prior_energy,
    prior_terms,
)
from jaxcg.units import kT_from_temperature

TEMPERATURE = 300.0
KT = kT_from_temperature(TEMPERATURE)


def _sample_bond(rng, k, r0, n):
    """Exact samples of p(r) ∝ r² exp(−k (r − r0)² / 2kT) by rejection from the Gaussian."""
    sigma = np.sqrt(KT / k)
    r_max = r0 + 8 * sigma
    out = np.empty(0)
    while out.size < n:
        r = rng.normal(r0, sigma, 2 * n)
        keep = (r > 0) & (r < r_max) & (rng.random(2 * n) < (r / r_max) ** 2)
        out = np.concatenate([out, r[keep]])
    return out[:n]


def _sample_angle(rng, k, theta0, n):
    """Exact samples of p(θ) ∝ sin θ exp(−k (θ − θ0)² / 2kT) on [0, π]."""
    sigma = np.sqrt(KT / k)
    out = np.empty(0)
    while out.size < n:
        t = rng.normal(theta0, sigma, 2 * n)
        keep = (t > 0) & (t < np.pi) & (rng.random(2 * n) < np.sin(np.clip(t, 0, np.pi)))
        out = np.concatenate([out, t[keep]])
    return out[:n]


def _sample_dihedral(rng, cos_coef, sin_coef, n):
    """Exact samples (inverse CDF on a fine grid) of p(φ) ∝ exp(−Σ a_n cos nφ + b_n sin nφ / kT)."""
    grid = np.linspace(-np.pi, np.pi, 200_001)
    harmonics = np.arange(1, len(cos_coef) + 1)
    u = np.cos(np.outer(grid, harmonics)) @ cos_coef + np.sin(np.outer(grid, harmonics)) @ sin_coef
    cdf = np.cumsum(np.exp(-(u - u.min()) / KT))
    return np.interp(rng.random(n) * cdf[-1], cdf, grid)


def _random_rotations(rng, n):
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def _chain(r1, r2, r3, theta1, theta2, phi):
    """4-bead chain coordinates from internal coordinates (NeRF), (T, 4, 3) nm."""
    n = len(r1)
    p0 = np.zeros((n, 3))
    p1 = np.stack([r1, np.zeros(n), np.zeros(n)], -1)
    p2 = p1 + np.stack([-r2 * np.cos(theta1), r2 * np.sin(theta1), np.zeros(n)], -1)

    def place(a, b, c, bond, angle, torsion):
        bc = (c - b) / np.linalg.norm(c - b, axis=1, keepdims=True)
        nrm = np.cross(b - a, bc)
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
        m = np.stack([bc, np.cross(nrm, bc), nrm], axis=-1)
        d = np.stack(
            [-bond * np.cos(angle), bond * np.sin(angle) * np.cos(torsion), bond * np.sin(angle) * np.sin(torsion)], -1
        )
        return c + np.einsum("tij,tj->ti", m, d)

    p3 = place(p0, p1, p2, r3, theta2, phi)
    return np.stack([p0, p1, p2, p3], axis=1)


def _cg_data(x, bonds):
    n = x.shape[1]
    return CGData(
        positions=x.astype(np.float32),
        forces=np.zeros_like(x, dtype=np.float32),
        bead_types=np.zeros(n, np.int32),
        bonds=np.asarray(bonds),
        temperature=TEMPERATURE,
    )


def test_prior_terms_of_a_chain():
    terms = prior_terms(5, np.array([[0, 1], [1, 2], [2, 3], [3, 4]]))
    assert terms.angles.tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]
    assert terms.dihedrals.tolist() == [[0, 1, 2, 3], [1, 2, 3, 4]]
    assert terms.pairs.tolist() == [[0, 4]]
    assert prior_terms(5, np.array([[0, 1], [1, 2], [2, 3], [3, 4]]), exclusion_hops=2).pairs.tolist() == [
        [0, 3], [0, 4], [1, 4]
    ]


def test_prior_terms_rejects_bad_bonds():
    with pytest.raises(ValueError, match="bonds must index the 3 beads"):
        prior_terms(3, np.array([[0, 3]]))


def test_geometry_matches_numpy():
    rng = np.random.default_rng(1)
    n = 200
    r = rng.uniform(0.3, 0.4, (3, n))
    theta = rng.uniform(0.5, 2.8, (2, n))
    phi = rng.uniform(-np.pi, np.pi, n)
    x = _chain(r[0], r[1], r[2], theta[0], theta[1], phi)
    x = np.einsum("tij,tnj->tni", _random_rotations(rng, n), x) + rng.normal(size=(n, 1, 3))
    np.testing.assert_allclose(bond_angles(x, np.array([[0, 1, 2], [1, 2, 3]])), theta.T, atol=1e-4)
    got = np.asarray(dihedral_angles(x, np.array([[0, 1, 2, 3]])))[:, 0]
    np.testing.assert_allclose(np.angle(np.exp(1j * (got - phi))), 0.0, atol=1e-3)


def test_boltzmann_inversion_recovers_harmonic_bonds_and_angles():
    rng = np.random.default_rng(0)
    n = 200_000
    k_bond, r0, k_angle, theta0 = 3000.0, 0.38, 60.0, 1.9
    r1, r2 = _sample_bond(rng, k_bond, r0, n), _sample_bond(rng, k_bond, r0, n)
    theta = _sample_angle(rng, k_angle, theta0, n)
    x = _chain(r1, r2, np.full(n, 0.38), theta, np.full(n, 1.5), np.zeros(n))[:, :3]
    x = np.einsum("tij,tnj->tni", _random_rotations(rng, n), x)
    prior = fit_prior(_cg_data(x, [[0, 1], [1, 2]]))
    np.testing.assert_allclose(prior.params.bond_k, k_bond, rtol=0.05)
    np.testing.assert_allclose(prior.params.bond_r0, r0, atol=1e-3)
    np.testing.assert_allclose(prior.params.angle_k, [k_angle], rtol=0.05)
    np.testing.assert_allclose(prior.params.angle_theta0, [theta0], atol=0.01)
    assert prior.terms.pairs.size == 0


def test_boltzmann_inversion_recovers_fourier_dihedral():
    rng = np.random.default_rng(2)
    n = 200_000
    cos_coef, sin_coef = np.array([2.0, 0.0, -1.0]), np.array([0.0, 1.5, 0.0])
    phi = _sample_dihedral(rng, cos_coef, sin_coef, n)
    x = _chain(
        _sample_bond(rng, 3000.0, 0.38, n), _sample_bond(rng, 3000.0, 0.38, n), _sample_bond(rng, 3000.0, 0.38, n),
        _sample_angle(rng, 60.0, 1.9, n), _sample_angle(rng, 60.0, 1.9, n), phi,
    )
    prior = fit_prior(_cg_data(x, [[0, 1], [1, 2], [2, 3]]), n_harmonics=3)
    np.testing.assert_allclose(prior.params.dihedral_cos[0], cos_coef, atol=0.15)
    np.testing.assert_allclose(prior.params.dihedral_sin[0], sin_coef, atol=0.15)


def test_repulsion_sigma_is_the_minimum_distance():
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.normal(0.0, 0.2, (500, 5, 3)), axis=1) + 0.5 * np.arange(5)[:, None]
    prior = fit_prior(_cg_data(x, [[0, 1], [1, 2], [2, 3], [3, 4]]))
    d = np.linalg.norm(x[:, 4] - x[:, 0], axis=-1)
    np.testing.assert_allclose(prior.params.repulsion_sigma, [d.min()], rtol=1e-5)


def _random_prior(rng, n_beads=6):
    terms = prior_terms(n_beads, np.stack([np.arange(n_beads - 1), np.arange(1, n_beads)], 1), exclusion_hops=2)
    params = PriorParams(
        bond_k=rng.uniform(1000, 2000, len(terms.bonds)),
        bond_r0=rng.uniform(0.35, 0.4, len(terms.bonds)),
        angle_k=rng.uniform(20, 60, len(terms.angles)),
        angle_theta0=rng.uniform(1.5, 2.2, len(terms.angles)),
        dihedral_cos=rng.normal(size=(len(terms.dihedrals), 2)),
        dihedral_sin=rng.normal(size=(len(terms.dihedrals), 2)),
        repulsion_sigma=np.full(len(terms.pairs), 0.9),
        repulsion_k=np.asarray(5000.0),
    )
    return terms, params


def test_prior_forces_match_finite_differences_float64():
    rng = np.random.default_rng(4)
    terms, params = _random_prior(rng)
    x = np.cumsum(rng.normal(0.0, 0.25, (6, 3)), axis=0)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        energy = jax.jit(lambda y: prior_energy(terms, p64, y))
        x64 = jnp.asarray(x, jnp.float64)
        grad = np.asarray(jax.jit(jax.grad(energy))(x64))
        for v in rng.normal(size=(4, *x.shape)):
            v64 = jnp.asarray(v, jnp.float64)
            fd = (energy(x64 + 1e-6 * v64) - energy(x64 - 1e-6 * v64)) / 2e-6
            np.testing.assert_allclose(float(fd), np.sum(grad * v), rtol=1e-6, atol=1e-6)


def test_prior_energy_is_rotation_and_translation_invariant():
    rng = np.random.default_rng(5)
    terms, params = _random_prior(rng)
    prior = Prior(terms, params)
    x = np.cumsum(rng.normal(0.0, 0.25, (6, 3)), axis=0).astype(np.float32)
    p = prior.init(jax.random.key(0), jnp.asarray(x))
    rotation = _random_rotations(rng, 1)[0]
    moved = (x @ rotation.T + rng.normal(size=3)).astype(np.float32)
    energy = jax.jit(prior.energy)
    np.testing.assert_allclose(energy(p, jnp.asarray(moved)), energy(p, jnp.asarray(x)), rtol=2e-4)
    assert energy(p, jnp.asarray(x)).dtype == jnp.float32


def _alanine_like_phi(rng, n):
    """φ samples on φ < 0 only (two von Mises basins at −2.6 and −1.3 rad, truncated), the shape
    of alanine dipeptide's φ marginal, where the molecule never visits φ > 0."""
    centres = np.where(rng.random(4 * n) < 0.6, -2.6, -1.3)
    phi = np.angle(np.exp(1j * (centres + rng.vonmises(0.0, 6.0, 4 * n))))
    return phi[phi < -0.2][:n]


def _dihedral_chain(rng, phi):
    n = len(phi)
    return _chain(
        _sample_bond(rng, 3000.0, 0.38, n), _sample_bond(rng, 3000.0, 0.38, n), _sample_bond(rng, 3000.0, 0.38, n),
        _sample_angle(rng, 60.0, 1.9, n), _sample_angle(rng, 60.0, 1.9, n), phi,
    )


def _least_squares_over_populated_bins(phi, n_harmonics, bins=60):
    """The textbook (and previous) fit: −kT log p over populated bins only, least squares."""
    counts, edges = np.histogram(phi, bins=bins, range=(-np.pi, np.pi))
    centres = 0.5 * (edges[1:] + edges[:-1])
    keep = counts > 0
    n = np.arange(1, n_harmonics + 1)
    basis = np.concatenate([np.ones((keep.sum(), 1)), np.cos(centres[keep, None] * n),
                            np.sin(centres[keep, None] * n)], axis=1)
    w = np.sqrt(counts[keep])
    coef, *_ = np.linalg.lstsq(basis * w[:, None], -KT * np.log(counts[keep] / counts.sum()) * w, rcond=None)
    return coef[1 : n_harmonics + 1], coef[n_harmonics + 1 :]


@pytest.mark.parametrize("n_harmonics", [3, 4, 6])
def test_dihedral_prior_rises_where_there_is_no_data(n_harmonics):
    rng = np.random.default_rng(7)
    phi = _alanine_like_phi(rng, 20_000)
    prior = fit_prior(_cg_data(_dihedral_chain(rng, phi), [[0, 1], [1, 2], [2, 3]]), n_harmonics=n_harmonics)
    (profile,) = [p for p in prior.profiles if p.kind == "dihedral"]
    grid = np.linspace(-np.pi, np.pi, 721)
    h = np.arange(1, n_harmonics + 1)
    energy = (np.cos(np.outer(grid, h)) @ np.asarray(prior.params.dihedral_cos[0], np.float64)
              + np.sin(np.outer(grid, h)) @ np.asarray(prior.params.dihedral_sin[0], np.float64))
    inside = energy[(grid > -2.9) & (grid < -1.0)].min()
    # several kT above the basin everywhere on the side the data never visit
    assert energy[(grid > 0.5) & (grid < 2.5)].min() - inside > 4 * KT
    assert profile.well_outside == 0.0
    # the profile is the same function, shifted to 0 at its minimum over the populated bins
    populated_min = (np.cos(np.outer(profile.grid, h)) @ np.asarray(prior.params.dihedral_cos[0], np.float64)
                     + np.sin(np.outer(profile.grid, h)) @ np.asarray(prior.params.dihedral_sin[0], np.float64))
    np.testing.assert_allclose(profile.energy, populated_min - populated_min[profile.populated].min(), atol=1e-3)


@pytest.fixture(scope="module")
def alanine_backbone_phi_negative():
    """The bundled alanine dipeptide's five backbone atoms (C N CA C N) as CG beads, frames with
    φ < 0 only (the molecule's φ > 0 region holds 3 of 20,000 frames; they are dropped)."""
    from jaxcg.analysis import dihedrals
    from jaxcg.experiments.alanine import LEVELS
    from jaxcg.reference import bundled_dataset

    data = bundled_dataset("alanine_dipeptide_vacuum")
    x = data.positions[:, data.topology.select(LEVELS["backbone"].selection)]
    phi = dihedrals(x, np.array([[0, 1, 2, 3]]))[:, 0]
    return x[phi < 0], phi[phi < 0]


def _fourier_energy(grid, cos_coef, sin_coef):
    h = np.arange(1, len(cos_coef) + 1)
    return (np.cos(np.outer(grid, h)) @ np.asarray(cos_coef, np.float64)
            + np.sin(np.outer(grid, h)) @ np.asarray(sin_coef, np.float64))


@pytest.mark.parametrize("n_harmonics", [3, 4])
def test_alanine_phi_prior_rises_at_positive_phi(alanine_backbone_phi_negative, n_harmonics):
    """Real data: the φ prior of alanine dipeptide's backbone model is several kT above its basin
    all over φ > 0, where no frame lies, and no term is lower outside its data than inside."""
    x, phi = alanine_backbone_phi_negative
    prior = fit_prior(_cg_data(x, [[0, 1], [1, 2], [2, 3], [3, 4]]), n_harmonics=n_harmonics)
    grid = np.linspace(-np.pi, np.pi, 721)
    d = [tuple(q) for q in prior.terms.dihedrals.tolist()].index((0, 1, 2, 3))
    energy = _fourier_energy(grid, prior.params.dihedral_cos[d], prior.params.dihedral_sin[d])
    inside = energy[(grid > phi.min()) & (grid < phi.max())].min()
    assert energy[(grid > 0.3) & (grid < 2.5)].min() - inside > 4 * KT
    assert all(p.well_outside == 0.0 for p in prior.profiles)


def test_least_squares_over_populated_bins_invents_a_well_and_fit_prior_warns(
    alanine_backbone_phi_negative, monkeypatch
):
    """The textbook fit on the same frames puts its deepest point at φ > 0 (the bug this prior
    fit replaces); fit_prior's profile check catches such a term and names it."""
    import jaxcg.priors as priors

    x, phi = alanine_backbone_phi_negative
    cos_coef, sin_coef = _least_squares_over_populated_bins(phi, 3)
    grid = np.linspace(-np.pi, np.pi, 721)
    energy = _fourier_energy(grid, cos_coef, sin_coef)
    assert energy[(grid > 0.3) & (grid < 2.5)].min() < energy[(grid > phi.min()) & (grid < phi.max())].min() - 40 * KT
    monkeypatch.setattr(priors, "_fourier_fit",
                        lambda values, kT, h, weights: _least_squares_over_populated_bins(values, h))
    with pytest.warns(priors.PriorWellWarning, match=r"dihedral prior on beads \[0, 1, 2, 3\]"):
        prior = fit_prior(_cg_data(x, [[0, 1], [1, 2], [2, 3], [3, 4]]), n_harmonics=3)
    (profile,) = [p for p in prior.profiles if p.beads == (0, 1, 2, 3)]
    assert profile.well_outside > 40 * KT


def test_bond_and_angle_profiles_rise_on_both_sides_of_the_data():
    rng = np.random.default_rng(8)
    n = 20_000
    x = _chain(_sample_bond(rng, 3000.0, 0.38, n), _sample_bond(rng, 3000.0, 0.38, n), np.full(n, 0.38),
               _sample_angle(rng, 60.0, 1.9, n), np.full(n, 1.5), np.zeros(n))[:, :3]
    prior = fit_prior(_cg_data(x, [[0, 1], [1, 2]]))
    for profile in prior.profiles:
        assert profile.kind in ("bond", "angle") and profile.well_outside == 0.0
        populated = np.flatnonzero(profile.populated)
        below, above = profile.energy[: populated[0]], profile.energy[populated[-1] + 1 :]
        assert below.size and above.size and below.min() > 2 * KT and above.min() > 0.5 * KT
        # the fitted harmonic follows the data's own −kT log(p/J) where the data are dense
        dense = profile.populated & (profile.empirical < 2 * KT)
        np.testing.assert_allclose(profile.energy[dense], profile.empirical[dense], atol=0.6 * KT)


def test_maximum_likelihood_dihedral_fit_recovers_weighted_samples():
    """Frame weights are honoured: samples of a flat density reweighted to a Fourier density give
    that density's coefficients."""
    from jaxcg.priors import _fourier_fit

    rng = np.random.default_rng(9)
    cos_coef, sin_coef = np.array([3.0, -1.0]), np.array([1.0, 0.5])
    phi = rng.uniform(-np.pi, np.pi, 400_000)
    h = np.arange(1, 3)
    u = np.cos(np.outer(phi, h)) @ cos_coef + np.sin(np.outer(phi, h)) @ sin_coef
    a, b = _fourier_fit(phi, KT, 2, np.exp(-u / KT))
    np.testing.assert_allclose(a, cos_coef, atol=0.1)
    np.testing.assert_allclose(b, sin_coef, atol=0.1)


def test_profile_figure_draws_each_term_and_its_data(alanine_backbone_phi_negative, monkeypatch, tmp_path):
    """One panel per term with the fitted energy and the data's −kT log(p/J) as drawn data."""
    import jaxcg.analysis as analysis

    x, _ = alanine_backbone_phi_negative
    prior = fit_prior(_cg_data(x[::10], [[0, 1], [1, 2], [2, 3], [3, 4]]))
    figures = []
    real_save = analysis._save
    monkeypatch.setattr(analysis, "_save", lambda fig, path, dpi: figures.append(fig) or real_save(fig, path, dpi))
    paths = analysis.plot_prior_profiles(prior.profiles, tmp_path / "profiles")
    assert [p.suffix for p in paths] == [".png", ".svg"]
    axes = [ax for ax in figures[0].axes if ax.lines]
    assert len(axes) == len(prior.profiles) == 4 + 3 + 2  # bonds, angles, dihedrals
    for ax, profile in zip(axes, prior.profiles, strict=True):
        line, dots = ax.lines[:2]
        np.testing.assert_allclose(line.get_ydata(), profile.energy)
        np.testing.assert_allclose(dots.get_ydata(), profile.empirical)
