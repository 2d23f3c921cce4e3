"""jaxcg.analysis: metrics against hand-computed values, PMFs against analytic densities, features
against mdtraj, TICA on a process with a known slow coordinate, and figures without a display."""

from __future__ import annotations

import json
import struct

import mdtraj as md
import numpy as np
import pytest

from jaxcg import analysis


def test_kl_divergence_hand_computed():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.75, 0.0])
    expected = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    assert analysis.kl_divergence(p, q) == pytest.approx(expected, rel=1e-12)
    # counts are normalised, and identical histograms give 0
    assert analysis.kl_divergence([2, 2, 0], [1, 1, 0]) == pytest.approx(0.0, abs=1e-15)
    # an empty model bin where the reference has mass gets the floor, then q is renormalised
    f = 1e-3
    expected = 0.5 * np.log(0.5 * (1 + f)) + 0.5 * np.log(0.5 * (1 + f) / f)
    assert analysis.kl_divergence([1, 1], [1, 0], floor=f) == pytest.approx(expected, rel=1e-12)


def test_free_energy_mse_hand_computed():
    f_ref = np.array([0.0, 1.0, 2.0, np.nan])
    f_model = np.array([1.0, 2.0, 4.0, 0.0])
    # common bins 0..2; shifted to mean zero: a = [-1, 0, 1], b = [-4/3, -1/3, 5/3]
    assert analysis.free_energy_mse(f_ref, f_model) == pytest.approx(2.0 / 9.0, rel=1e-12)
    assert analysis.free_energy_mse(f_ref, f_ref + 3.0) == pytest.approx(0.0, abs=1e-24)
    assert np.isnan(analysis.free_energy_mse([np.nan, 1.0], [1.0, np.nan]))


def test_wasserstein_hand_computed_and_against_scipy():
    from scipy.stats import wasserstein_distance

    assert analysis.wasserstein_1d([0.0, 1.0], [1.0, 2.0]) == pytest.approx(1.0)
    assert analysis.wasserstein_1d([0.0], [0.0, 3.0]) == pytest.approx(1.5)
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=300), rng.gamma(2.0, size=170)
    assert analysis.wasserstein_1d(u, v) == pytest.approx(wasserstein_distance(u, v), rel=1e-10)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="share bins"):
        analysis.kl_divergence([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="kT"):
        analysis.pmf_1d(np.ones(3), np.linspace(0, 2, 3), -1.0)
    with pytest.raises(ValueError, match="pairs index beads"):
        analysis.pair_distances(np.zeros((2, 3, 3)), [[0, 3]])


def test_pmf_with_r2_jacobian_is_flat_for_uniform_points_in_a_ball():
    rng = np.random.default_rng(1)
    points = rng.uniform(-1, 1, size=(400_000, 3))
    r = np.linalg.norm(points[np.linalg.norm(points, axis=1) < 1.0], axis=1)
    edges = np.linspace(0.2, 1.0, 17)
    flat = analysis.pmf_1d(r, edges, kT=2.5, jacobian="r2")
    assert np.nanmax(flat.free_energy) < 0.1  # kJ/mol: flat up to sampling noise
    raw = analysis.pmf_1d(r, edges, kT=2.5)
    # without the Jacobian the PMF follows -kT ln r²
    expected = -2.5 * np.log(raw.centers**2)
    np.testing.assert_allclose(raw.free_energy, expected - expected.min(), atol=0.1)


def test_fes_2d_of_gaussian():
    rng = np.random.default_rng(2)
    kT, sx, sy = 2.5, 0.5, 1.0
    x, y = rng.normal(0, sx, 2_000_000), rng.normal(0, sy, 2_000_000)
    edges = np.linspace(-1, 1, 11)
    fes = analysis.fes_2d(x, y, edges, edges, kT)
    assert fes.free_energy.shape == (10, 10)
    assert fes.probability.sum() == pytest.approx(1.0)
    from scipy.stats import norm

    px, py = np.diff(norm.cdf(edges, scale=sx)), np.diff(norm.cdf(edges, scale=sy))
    expected = -kT * np.log(np.outer(px, py))  # exact bin integrals; equal bin areas
    np.testing.assert_allclose(fes.free_energy, expected - expected.min(), atol=0.15)


def _random_chain(n_frames: int, n_beads: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(n_frames, n_beads, 3))
    steps /= np.linalg.norm(steps, axis=-1, keepdims=True) / 0.38
    return np.cumsum(steps, axis=1).astype(np.float32)


def _ca_topology(n_beads: int) -> md.Topology:
    topology = md.Topology()
    chain = topology.add_chain()
    for _ in range(n_beads):
        topology.add_atom("CA", md.element.carbon, topology.add_residue("ALA", chain))
    return topology


def test_features_match_mdtraj():
    xyz = _random_chain(20, 6, 3)
    traj = md.Trajectory(xyz, _ca_topology(6))
    pairs = np.array([[0, 5], [1, 3]])
    quads = np.array([[0, 1, 2, 3], [2, 3, 4, 5]])
    np.testing.assert_allclose(analysis.pair_distances(xyz, pairs),
                               md.compute_distances(traj, pairs), rtol=1e-5)
    np.testing.assert_allclose(analysis.dihedrals(xyz, quads), md.compute_dihedrals(traj, quads),
                               atol=1e-4)
    np.testing.assert_allclose(analysis.kabsch_rmsd(xyz, xyz[0]), md.rmsd(traj, traj, 0),
                               atol=1e-4)


def test_folded_fraction_counts_frames_near_the_reference():
    reference = _random_chain(1, 5, 4)[0]
    rng = np.random.default_rng(5)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotation *= np.sign(np.linalg.det(rotation))
    near = reference @ rotation.T + 1.0 + rng.normal(0, 0.01, (30, 5, 3))
    far = _random_chain(10, 5, 6)
    frames = np.concatenate([near, far])
    assert analysis.folded_fraction(frames, reference, 0.05) == pytest.approx(30 / 40)


def test_tica_recovers_the_slow_coordinate():
    rng = np.random.default_rng(7)
    n = 4000
    slow = np.zeros(n)
    for t in range(1, n):  # AR(1) with a long correlation time
        slow[t] = 0.99 * slow[t - 1] + rng.normal(0, 0.1)
    fast = rng.normal(size=(n, 2))
    mixing = np.array([[1.0, 0.5, 0.2], [0.0, 1.0, 0.3], [0.0, 0.2, 1.0]])
    features = np.column_stack([slow, fast]) @ mixing
    ref, (other,) = analysis.tica_projection(features, [features[:500]], lagtime=10, dim=1)
    assert ref.shape == (n, 1) and other.shape == (500, 1)
    assert abs(np.corrcoef(ref[:, 0], slow)[0, 1]) > 0.95
    np.testing.assert_allclose(other, ref[:500], atol=1e-8)


def _png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_figures_are_written_with_the_requested_size(tmp_path):
    rng = np.random.default_rng(8)
    edges = np.linspace(0.3, 1.2, 31)
    metrics, ref, cg = analysis.compare_1d(rng.normal(0.7, 0.1, 5000), rng.normal(0.75, 0.1, 5000),
                                           edges, kT=2.5, jacobian="r2")
    written = analysis.plot_pmfs({"reference": ref, "CG": cg}, tmp_path / "pmf",
                                 size=(5.0, 3.5), dpi=80)
    angles = np.linspace(-np.pi, np.pi, 25)
    surfaces = {
        name: analysis.fes_2d(rng.vonmises(m, 2.0, 4000), rng.vonmises(-m, 2.0, 4000), angles,
                              angles, 2.5)
        for name, m in (("reference", 1.0), ("CG", 1.2))
    }
    metrics_2d = analysis.compare_2d(surfaces["reference"], surfaces["CG"])
    written += analysis.plot_fes(surfaces, tmp_path / "fes", size=(12.0, 3.6), dpi=50)
    analysis.save_metrics(tmp_path / "metrics.json", {"distance": metrics, "phi_psi": metrics_2d})
    for path in written:
        assert path.exists() and path.stat().st_size > 1000
    assert {p.suffix for p in written} == {".png", ".svg"}
    assert _png_size(tmp_path / "pmf.png") == (400, 280)
    assert _png_size(tmp_path / "fes.png") == (600, 180)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["distance"]["kl"] > 0 and saved["phi_psi"]["mse_kJ2_per_mol2"] > 0
    assert set(saved["distance"]) == {"kl", "mse_kJ2_per_mol2", "wasserstein1"}
