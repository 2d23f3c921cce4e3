"""jaxcg.evaluate: the sampling report against exact histograms, drift and unvisited regions
detected where they are built in, and evaluation by simulation that tells the right model from a
wrong one; the CLI recipe train -> evaluate with default bead types."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcg import analysis
from jaxcg.evaluate import evaluate_model, sampling_report, simulate_replicas
from jaxcg.units import kT_from_temperature

KT = kT_from_temperature(300.0)
EDGES = (np.linspace(0.0, 4.0, 5), np.linspace(0.0, 2.0, 3))  # 4 x 2 bins of width 1


def _points(bins: list[tuple[int, int]], counts: list[int]) -> np.ndarray:
    """(sum(counts), 2) CV values at the centres of the given bins."""
    return np.concatenate([np.tile([[i + 0.5, j + 0.5]], (c, 1)) for (i, j), c in zip(bins, counts, strict=True)])


def test_kl_matches_the_exact_value_of_known_histograms():
    reference = _points([(0, 0), (1, 0)], [500, 500])
    cg = _points([(0, 0), (1, 0)], [300, 100]).reshape(4, 100, 2)  # 3/4 and 1/4
    report, surfaces = sampling_report(reference, cg, np.ones((4, 100), bool), EDGES, KT)
    exact = 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)
    assert report.kl == pytest.approx(exact, rel=1e-12)
    assert report.unvisited_fraction == 0.0
    assert set(surfaces) == {"reference", "CG"}


def test_drift_and_unvisited_fraction_are_measured_where_they_are_built_in():
    """8 replicas sample the reference for the first half of their run, then 40 % of their frames
    fall into a bin the reference never visits: drift > 0 and flagged, unvisited fraction 0.2."""
    rng = np.random.default_rng(0)
    reference = _points([(0, 0), (1, 1)], [5000, 5000])
    n_rep, n_frames = 8, 400
    first = np.where(rng.random((n_rep, n_frames // 2, 1)) < 0.5, [[0.5, 0.5]], [[1.5, 1.5]])
    second = np.where(rng.random((n_rep, n_frames // 2, 1)) < 0.5, [[0.5, 0.5]], [[1.5, 1.5]])
    drained = np.arange(n_frames // 2) < int(0.4 * n_frames // 2)
    second[:, drained] = [3.5, 0.5]
    cg = np.concatenate([first, second], axis=1)
    report, _ = sampling_report(reference, cg, np.ones((n_rep, n_frames), bool), EDGES, KT)
    assert report.unvisited_fraction == pytest.approx(0.2)
    assert report.kl_time_halves[0] < 0.01 < report.kl_time_halves[1]
    assert report.drift > 10 * report.sampling_error
    assert report.drifting
    # the same frames, each replica's shuffled in time: no drift
    shuffled = np.stack([frames[rng.permutation(n_frames)] for frames in cg])
    steady, _ = sampling_report(reference, shuffled, np.ones((n_rep, n_frames), bool), EDGES, KT)
    assert not steady.drifting and steady.kl == pytest.approx(report.kl)


def test_frames_after_a_stop_are_left_out():
    reference = _points([(0, 0), (1, 0)], [50, 50])
    cg = np.tile([[0.5, 0.5]], (3, 10, 1)).astype(float)
    cg[:, 1::2] = [1.5, 0.5]
    cg[1, 6:] = [3.5, 1.5]  # after the stop of replica 1 at frame 6: garbage
    alive = np.ones((3, 10), bool)
    alive[1, 6:] = False
    report, _ = sampling_report(reference, cg, alive, EDGES, KT, stopped=((1, 600),), frame_interval_ps=0.2)
    assert report.kl == pytest.approx(0.0, abs=1e-12) and report.unvisited_fraction == 0.0
    assert report.n_frames == 26 and report.stopped == ((1, 600),)
    assert report.simulated_ns == pytest.approx(26 * 0.2e-3)


def test_errors_name_the_argument():
    good = np.zeros((2, 3, 2))
    with pytest.raises(ValueError, match="reference_cv"):
        sampling_report(np.zeros((5, 3)), good, np.ones((2, 3), bool), EDGES, KT)
    with pytest.raises(ValueError, match="alive"):
        sampling_report(np.zeros((5, 2)), good, np.ones((3, 2), bool), EDGES, KT)
    with pytest.raises(ValueError, match="at least 2 replicas"):
        sampling_report(np.zeros((5, 2)), np.zeros((1, 3, 2)), np.ones((1, 3), bool), EDGES, KT)


# ----------------------------------------------------------------------------- by simulation

BOND_K, R0 = 2000.0, 0.3


def _chain_energy(dihedral_cos: float):
    """A 5-bead chain: harmonic bonds, a soft angle term, and a cosine on the first dihedral."""
    from jaxcg.priors import bond_angles, bond_lengths, dihedral_angles

    bonds = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
    angles = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4]])
    quads = np.array([[0, 1, 2, 3], [1, 2, 3, 4]])

    def energy(x):
        r = bond_lengths(x, bonds)
        theta = bond_angles(x, angles)
        phi = dihedral_angles(x, quads)
        return (0.5 * BOND_K * jnp.sum((r - R0) ** 2) + 0.5 * 40.0 * jnp.sum((theta - 1.9) ** 2)
                + dihedral_cos * jnp.cos(phi[0]))

    return energy


def _cv(x: np.ndarray) -> np.ndarray:
    return analysis.dihedrals(x, np.array([[0, 1, 2, 3], [1, 2, 3, 4]]))


def _zigzag(n: int) -> np.ndarray:
    x = np.zeros((1, 5, 3), np.float32)
    x[0, :, 0] = 0.25 * np.arange(5)
    x[0, 1::2, 1] = 0.15
    x[0, 2, 2] = 0.05
    return x


def test_evaluation_by_simulation_tells_the_right_model_from_a_wrong_one():
    """The reference is a run of the chain with a +6 kJ/mol cosine on φ; independent replicas of
    the same model sample its φ distribution, the model with the opposite sign (evaluated by
    ``evaluate_model``) is far from it."""
    masses = np.full(5, 20.0)
    edges = (np.linspace(-np.pi, np.pi, 9), np.array([-np.pi, np.pi]))  # 8 bins of φ, ψ pooled
    right_energy = _chain_energy(6.0)
    positions, alive, _ = simulate_replicas(right_energy, np.repeat(_zigzag(5), 64, 0), masses, 300.0,
                                            6000, jax.random.key(1), save_every=50, steps_per_chunk=6000)
    positions, alive = positions[:, 20:], alive[:, 20:]  # the first 1,000 steps dropped as equilibration
    reference, right_x = positions[:32].reshape(-1, 5, 3), positions[32:]  # two independent sets of replicas
    right, _ = sampling_report(_cv(reference), _cv(right_x.reshape(-1, 5, 3)).reshape(32, -1, 2), alive[32:],
                               edges, KT, frame_interval_ps=0.1)
    wrong, _, _ = evaluate_model(_chain_energy(-6.0), reference, _cv, edges, masses, 300.0, 32, 5000,
                                 jax.random.key(2), save_every=50)
    assert right.kl < 0.03 and not right.stopped
    assert wrong.kl > 10 * right.kl and wrong.kl > 0.3
    assert wrong.n_frames == 32 * 100 and wrong.simulated_ns == pytest.approx(32 * 100 * 0.1e-3)

    def near_zero(x):
        return float(np.mean(np.abs(_cv(x.reshape(-1, 5, 3))[:, 0]) < np.pi / 2))

    assert near_zero(reference) < 0.3
    assert near_zero(right_x) == pytest.approx(near_zero(reference), abs=0.05)


@pytest.mark.slow  # about 20-35 s on 2 cores: run with -m slow
def test_cli_recipe_train_then_evaluate(tmp_path):
    """`jaxcg train` on the bundled alanine data with the backbone selection and default settings
    (a tiny model and 1 epoch to keep the test short), then `jaxcg evaluate`: beads typed by
    (residue, atom name), the selection recorded, and the report recomputed from the frames."""
    import jaxcg
    from jaxcg.cli import main
    from jaxcg.experiments.alanine import BACKBONE, LEVELS
    from jaxcg.reference import bundled_dataset

    bundled = jaxcg.__file__.replace("__init__.py", "bundled/alanine_dipeptide_vacuum.h5")
    model = tmp_path / "model"
    assert main(["train", "--data", bundled, "--selection", BACKBONE, "--out", str(model), "--epochs", "1",
                 "--features", "8", "--blocks", "1", "--rbf", "8"]) == 0
    saved = json.loads((model / "model.json").read_text())
    assert saved["cg"]["selection"] == BACKBONE and saved["cg"]["map"] == "optimal"
    assert sorted(saved["bead_types"]) == [0, 1, 2, 3, 4]  # C(ACE), N, CA, C, N(NME): five roles
    out = tmp_path / "evaluation"
    assert main(["evaluate", "--model", str(model), "--reference", bundled, "--out", str(out),
                 "--replicas", "4", "--steps", "400", "--save-every", "50"]) == 0
    report = json.loads((out / "evaluation.json").read_text())["report"]
    frames = np.load(out / "cg_frames.npz")["positions"]
    assert frames.shape == (4, 8, 5, 3)
    data = bundled_dataset("alanine_dipeptide_vacuum")
    level = LEVELS["backbone"]
    ref_cv = level.observables(data.positions[:, data.topology.select(BACKBONE)])
    cg_cv = level.observables(frames.reshape(-1, 5, 3))
    expected = analysis.kl_divergence(np.histogram2d(ref_cv[:, 0], ref_cv[:, 1], [level.edges, level.edges])[0],
                                      np.histogram2d(cg_cv[:, 0], cg_cv[:, 1], [level.edges, level.edges])[0])
    assert report["kl"] == pytest.approx(expected, rel=1e-9)
    assert (out / "fes.png").exists()
