"""A tiny end-to-end run of the alanine-dipeptide experiment (few hundred frames, 1 epoch)."""

import jax
import numpy as np
import pytest

from jaxcg.analysis import compare_2d, plot_fes
from jaxcg.experiments.alanine import (
    BACKBONE,
    ModelSpec,
    backbone_maps,
    cg_datasets,
    data_efficiency,
    holdout_residual,
    map_table,
    plot_residuals,
    ramachandran,
    reference_ramachandran,
    simulate,
    size_to_reach,
    train_model,
)
from jaxcg.reference import bundled_dataset
from jaxcg.train import TrainConfig


@pytest.fixture(scope="module")
def data():
    return bundled_dataset("alanine_dipeptide_vacuum").subset(slice(0, 600))


@pytest.fixture(scope="module")
def maps(data):
    return backbone_maps(data, data.subset(slice(0, 400)))


def test_backbone_atoms_and_map_validity(data, maps):
    names = [data.topology.atom(int(a)).name for a in data.topology.select(BACKBONE)]
    assert names == ["C", "N", "CA", "C", "N"]
    rows = {r["map"]: r for r in map_table(maps, data, data.subset(slice(400, 600)))}
    # N-H and CA-HA are constrained (HBonds): the sliced forces miss the constraint forces.
    atoms = set(data.topology.select(BACKBONE).tolist())
    assert any(a in atoms or b in atoms for a, b in data.constraints.tolist())
    assert not rows["slice"]["valid"]
    assert rows["basic"]["valid"] and rows["optimal"]["valid"]
    # Held-out frames: the optimal map is fitted elsewhere, yet beats basic.
    assert rows["optimal"]["mean_sq_force_per_bead"] <= rows["basic"]["mean_sq_force_per_bead"]
    assert rows["optimal"]["ratio_to_slice"] < 1.0


def test_reference_fes_matches_cg_slice_angles(data, maps):
    # The slice map keeps the backbone atoms, so its CG φ/ψ equal the all-atom ones exactly.
    cg = cg_datasets(data, {"slice": maps["slice"]})["slice"]
    reference = reference_ramachandran(data)
    mapped = ramachandran(cg.positions, data.kT)
    assert compare_2d(reference, mapped)["kl"] == pytest.approx(0.0, abs=1e-9)


def test_size_to_reach_interpolates_on_log_scale():
    sizes = np.array([100, 1000, 10000])
    assert size_to_reach(sizes, np.array([4.0, 2.0, 1.0]), 3.0) == pytest.approx(np.sqrt(10) * 100)
    assert size_to_reach(sizes, np.array([4.0, 2.0, 1.0]), 5.0) == 100
    assert np.isnan(size_to_reach(sizes, np.array([4.0, 2.0, 1.0]), 0.5))
    rows = data_efficiency(sizes, np.array([4.0, 2.0, 1.0]), np.array([2.0, 1.0, 0.5]))
    assert rows[0]["factor"] == pytest.approx(10.0) and rows[1]["factor"] == pytest.approx(10.0)
    assert np.isnan(rows[2]["factor"])


@pytest.mark.slow  # about 20 s on 2 cores: run with -m slow
def test_train_simulate_and_compare(data, maps, tmp_path):
    cgs = cg_datasets(data, {"optimal": maps["optimal"]})
    cg = cgs["optimal"]
    train, test = cg.subset(slice(0, 400)), cg.subset(slice(400, 600))
    spec = ModelSpec(features=16, blocks=1, rbf=8, cutoff=1.0)
    trained = train_model(train, TrainConfig(epochs=1, batch_size=64, patience=None), spec)
    residual = holdout_residual(trained, test.positions, test.forces)
    # The prior alone already explains most of the mapped force (bond stretching).
    mean_sq = float(np.mean(np.sum(np.asarray(test.forces, np.float64) ** 2, axis=-1)))
    assert np.isfinite(residual) and 0 < residual < mean_sq

    x = simulate(trained, train, n_replicas=4, n_steps=200, key=jax.random.PRNGKey(0), save_every=20)
    assert x.shape[1:] == (5, 3) and 0 < len(x) <= 4 * 10 and np.all(np.isfinite(x))
    metrics = compare_2d(reference_ramachandran(data), ramachandran(x, data.kT))
    assert np.isfinite(metrics["kl"]) and metrics["kl"] >= 0
    assert np.isfinite(metrics["mse_kJ2_per_mol2"]) and metrics["mse_kJ2_per_mol2"] >= 0

    files = plot_fes({"all-atom": reference_ramachandran(data), "optimal CG": ramachandran(x, data.kT)},
                     tmp_path / "fes", dpi=40)
    result = {"sizes": [100, 400], "residuals": {"optimal": [2 * residual, residual]}}
    files += plot_residuals(result, tmp_path / "residuals", dpi=40)
    assert all(f.exists() and f.stat().st_size > 0 for f in files)


def test_bond_angles_match_hand_computed_geometry():
    from jaxcg.experiments.alanine import bond_angles

    x = np.array([[[1.0, 0, 0], [0, 0, 0], [0, 2.0, 0], [-1.0, 1.0, 0]]])
    np.testing.assert_allclose(bond_angles(x, np.array([[0, 1, 2], [0, 1, 3], [2, 1, 3]])),
                               [[np.pi / 2, 3 * np.pi / 4, np.pi / 4]], atol=1e-12)


@pytest.mark.slow  # about 20-35 s on 2 cores: run with -m slow
def test_ca_cb_level_beads_bonds_maps_and_surface(data):
    from jaxcg.experiments.alanine import LEVELS, run_alanine

    level = LEVELS["ca_cb"]
    atoms = data.topology.select(level.selection)
    assert [(data.topology.atom(int(a)).residue.name, data.topology.atom(int(a)).name) for a in atoms] == [
        ("ACE", "CH3"), ("ALA", "CA"), ("ALA", "CB"), ("NME", "C")]
    maps = backbone_maps(data, data.subset(slice(0, 400)), level)
    rows = {r["map"]: r for r in map_table(maps, data, data.subset(slice(400, 600)))}
    assert not rows["slice"]["valid"] and rows["basic"]["valid"] and rows["optimal"]["valid"]
    assert rows["optimal"]["mean_sq_force_per_bead"] < rows["basic"]["mean_sq_force_per_bead"]
    cg = cg_datasets(data, {"slice": maps["slice"]}, level)["slice"]
    assert sorted(map(tuple, cg.bonds.tolist())) == [(0, 1), (1, 2), (1, 3)]  # all to CA
    # The sliced beads are the atoms themselves: the CG surface equals the all-atom one.
    reference = reference_ramachandran(data, level=level)
    assert compare_2d(reference, ramachandran(cg.positions, data.kT, level=level))["kl"] == pytest.approx(0.0, abs=1e-9)
    result = run_alanine(data, sizes=(100, 200), config=TrainConfig(epochs=1, batch_size=64, patience=None),
                         spec=ModelSpec(features=8, blocks=1, rbf=8), test_fraction=0.3,
                         n_replicas=2, n_steps=100, maps=("basic", "optimal"), level="ca_cb")
    assert result["level"] == "ca_cb" and set(result["fes"]) == {"basic", "optimal"}
    assert all(np.isfinite(v).all() for v in result["residuals"].values())
    with pytest.raises(ValueError, match="level must be one of"):
        run_alanine(data, level="atoms")


def test_equal_steps_scale_epochs_with_the_set_size():
    from jaxcg.experiments.alanine import epochs_for

    config = TrainConfig(epochs=7, batch_size=100, val_fraction=0.1, patience=None)
    assert epochs_for(config, 1000, None) is config
    # 900 training frames -> 9 steps per epoch; 90 steps -> 10 epochs; 10x the frames -> 1 epoch
    assert epochs_for(config, 1000, 90).epochs == 10
    assert epochs_for(config, 10000, 90).epochs == 1
    assert epochs_for(config, 2000, 90).epochs == 5
