"""Issue 15, inputs: models know their bead count, a dtype policy for maps and data, plausibility
warnings (kT-like temperatures, Å-like positions, force units by the virial theorem), refused
hyperparameters, map validity where maps are consumed, degenerate analysis input."""

from __future__ import annotations

import argparse
import warnings

import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np
import pytest

from jaxcg import analysis, maps
from jaxcg._plausibility import UnitWarning, virial_ratio
from jaxcg.cli import main
from jaxcg.data import CGData, load_forces, make_atomistic_data
from jaxcg.models import RBFPairPotential
from jaxcg.reference import bundled_dataset
from jaxcg.saved_model import build_model, load_energy, model_spec, save_model
from jaxcg.train import TrainConfig, fit


@pytest.fixture(scope="module")
def water():
    return bundled_dataset("water_dimer_flexible")


@pytest.fixture(scope="module")
def alanine():
    return bundled_dataset("alanine_dipeptide_vacuum")


def _no_unit_warning(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnitWarning)
        return function(*args, **kwargs)


# ----------------------------------------------------------------------------- bead count


def _two_bead_cg():
    x = np.array([[[0.0, 0, 0], [0.3, 0, 0]]] * 3, np.float32)
    return CGData(x, np.zeros_like(x), np.array([0, 1]), np.zeros((0, 2), int), 300.0)


@pytest.mark.parametrize("n_beads", [1, 3])
def test_models_refuse_another_bead_count(tmp_path, n_beads):
    cg = _two_bead_cg()
    spec = model_spec(cg, None, features=4, blocks=1, rbf=4, cutoff=1.0, exclusion_hops=0)
    _, net, _ = build_model(spec)
    save_model(tmp_path, spec, net.init(jax.random.key(0), jnp.asarray(cg.positions[0])))
    energy = load_energy(tmp_path)
    assert energy.n_beads == 2
    x = jnp.zeros((n_beads, 3)).at[:, 0].set(jnp.arange(n_beads, dtype=jnp.float32) * 0.3)
    with pytest.raises(ValueError, match=rf"x must have shape \(2, 3\).*got \({n_beads}, 3\)"):
        energy(x)
    with pytest.raises(ValueError, match=r"x must have shape \(2, 3\)"):
        jax.jit(jax.grad(energy))(x)
    rbf = RBFPairPotential(n_beads=2)
    with pytest.raises(ValueError, match=r"x must have shape \(2, 3\)"):
        rbf.energy(rbf.init(None, jnp.zeros((2, 3))), x)
    xs = np.repeat(np.asarray(x)[None], 8, axis=0)
    with pytest.raises(ValueError, match=f"positions has {n_beads} beads .* but the model has 2"):
        fit(net.energy, net.init(jax.random.key(0), jnp.asarray(cg.positions[0])), xs, np.zeros_like(xs),
            TrainConfig(epochs=1, batch_size=4))


def test_cli_simulate_refuses_start_with_another_bead_count(tmp_path, capsys):
    cg = _two_bead_cg()
    spec = model_spec(cg, None, features=4, blocks=1, rbf=4, cutoff=1.0, exclusion_hops=0)
    _, net, _ = build_model(spec)
    save_model(tmp_path / "model", spec, net.init(jax.random.key(0), jnp.asarray(cg.positions[0])))
    (tmp_path / "energy.py").write_text(
        "from jaxcg.saved_model import load_energy\n\n\n"
        f"def energy():\n    return load_energy({str(tmp_path / 'model')!r})\n"
    )
    topology = md.Topology()
    chain = topology.add_chain()
    for _ in range(3):
        topology.add_atom("CA", md.element.carbon, topology.add_residue("GLY", chain))
    frames = np.zeros((4, 3, 3), np.float32)
    frames[:, :, 0] = [0.0, 0.38, 0.76]
    md.Trajectory(frames, topology).save_pdb(str(tmp_path / "start.pdb"))
    code = main(["simulate", "--energy", f"{tmp_path / 'energy.py'}:energy", "--start", str(tmp_path / "start.pdb"),
                 "--steps", "10", "--chunk", "10", "--save-every", "10", "--out", str(tmp_path / "sim")])
    assert code == 2
    assert "--start" in capsys.readouterr().err
    assert not (tmp_path / "sim" / "trajectory.dcd").exists()


# ----------------------------------------------------------------------------- dtype policy


def test_apply_map_refuses_integers_and_upcasts_float16(alanine):
    com = maps.com_map(alanine.topology, ["resid 0", "resid 1", "resid 2"])
    positions, forces = alanine.positions[:4], alanine.forces[:4]
    with pytest.raises(TypeError, match="positions must hold floats.*int64"):
        maps.apply_map(com, np.round(positions * 100).astype(np.int64), forces)
    with pytest.raises(TypeError, match="forces must hold floats"):
        maps.apply_map(com, positions, forces.astype(np.int32))
    x16, f16 = maps.apply_map(com, positions.astype(np.float16), forces.astype(np.float16))
    assert x16.dtype == jnp.float32 and f16.dtype == jnp.float32
    x32, _ = maps.apply_map(com, positions.astype(np.float16).astype(np.float32), forces)
    np.testing.assert_array_equal(np.asarray(x16), np.asarray(x32))


def test_data_upcasts_float16_and_refuses_float_constraint_indices(water):
    data = make_atomistic_data(water.positions[:10].astype(np.float16), water.forces[:10].astype(np.float16),
                               water.topology, 300.0)
    assert data.positions.dtype == np.float32 and data.forces.dtype == np.float32
    with pytest.raises(ValueError, match=r"constraints must hold integer atom indices.*3\.7"):
        make_atomistic_data(water.positions[:10], water.forces[:10], water.topology, 300.0,
                            constraints=np.array([[0.0, 1.0], [3.7, 4.0]]))
    whole = make_atomistic_data(water.positions[:10], water.forces[:10], water.topology, 300.0,
                                constraints=np.array([[0.0, 1.0]]))
    assert whole.constraints.dtype == np.int64 and whole.constraints.tolist() == [[0, 1]]


def test_duplicate_atoms_in_a_bead_are_refused(alanine):
    with pytest.raises(ValueError, match=r"atom\(s\) \[4\] given more than once"):
        maps.com_map(alanine.topology, [[4, 5, 4], [8, 9]])
    with pytest.raises(ValueError, match="given more than once"):
        maps.slice_map(alanine.topology, [1, 4, 4])
    with pytest.raises(TypeError, match="must be integers"):
        maps.slice_map(alanine.topology, [1.0, 4.5])


def test_npz_without_a_forces_array_is_refused(tmp_path, water):
    np.savez(tmp_path / "coords.npz", coords=water.positions[:5])
    with pytest.raises(KeyError, match=r"no array named as forces \(its arrays: \['coords'\]\)"):
        load_forces(tmp_path / "coords.npz")
    np.savez(tmp_path / "aa.npz", coords=water.positions[:5], aa_forces=water.forces[:5])
    np.testing.assert_array_equal(load_forces(tmp_path / "aa.npz"), water.forces[:5])


# ----------------------------------------------------------------------------- plausibility


def test_kT_like_temperature_warns_and_kelvin_does_not(water):
    with pytest.warns(UnitWarning, match="looks like kT"):
        make_atomistic_data(water.positions[:10], water.forces[:10], water.topology, 2.494)
    _no_unit_warning(make_atomistic_data, water.positions[:10], water.forces[:10], water.topology, 300.0)


@pytest.mark.parametrize(("factor", "hint"), [(1 / 4.184, "kcal/mol/nm"), (1 / 41.84, "kcal/mol/Å"),
                                              (1 / 10, "kJ/mol/Å")])
def test_forces_in_another_unit_warn(water, factor, hint):
    ratio, error = virial_ratio(water.positions, water.forces, 300.0)
    assert abs(ratio - 1.0) < 3 * error + 0.05  # the theorem holds on the unconstrained dimer
    _no_unit_warning(make_atomistic_data, water.positions, water.forces, water.topology, 300.0)
    with pytest.warns(UnitWarning, match=hint):
        make_atomistic_data(water.positions, water.forces * np.float32(factor), water.topology, 300.0)


def test_positions_in_angstrom_warn(water, alanine):
    with pytest.warns(UnitWarning) as record:
        make_atomistic_data(water.positions * np.float32(10), water.forces, water.topology, 300.0)
    messages = " | ".join(str(w.message) for w in record)
    assert "positions in Å" in messages  # the virial is 10x too large
    assert "look like Å" in messages  # and the nearest neighbours are ~1 "nm" apart
    with pytest.warns(UnitWarning, match="look like Å"):  # nearest neighbours ~1 "nm"
        make_atomistic_data(alanine.positions[:20] * np.float32(10), alanine.forces[:20], alanine.topology, 300.0,
                            constraints=alanine.constraints)


def test_hyperparameters_are_validated():
    for change, word in (({"learning_rate": -1e-3}, "learning_rate"), ({"epochs": 0}, "epochs"),
                         ({"batch_size": 0}, "batch_size"), ({"patience": 0}, "patience"),
                         ({"val_fraction": 1.0}, "val_fraction")):
        with pytest.raises(ValueError, match=word):
            TrainConfig(**change)


# ----------------------------------------------------------------------------- maps where consumed


def test_configurational_rows_must_sum_to_one(alanine):
    atoms = maps.slice_map(alanine.topology, "name CA or name N or name C")
    doubled = np.asarray(atoms.config) * 2.0
    bad = maps.LinearMap(config=jnp.asarray(doubled), force=atoms.force)
    with pytest.raises(maps.MapValidityError, match="rows of the configurational map must sum to 1"):
        maps.map_dataset(alanine.subset(slice(0, 10)), bad)
    with pytest.raises(maps.MapValidityError, match="basic_aggregation_map"):
        maps.basic_aggregation_map(doubled, alanine.constraints)
    with pytest.raises(maps.MapValidityError, match="optimal_linear_map"):
        maps.optimal_linear_map(alanine.subset(slice(0, 10)), doubled)


def test_cli_train_refuses_slice_map_on_constrained_data(tmp_path, alanine, capsys):
    from jaxcg.cli import _train_load_cg
    from jaxcg.data import save_dataset

    path = save_dataset(tmp_path / "ala.h5", alanine.subset(slice(0, 50)))
    args = ["train", "--data", str(path), "--selection", "name CA or name N or name C", "--out", str(tmp_path / "o")]
    assert main([*args, "--map", "slice"]) == 2
    err = capsys.readouterr().err
    assert "--map slice is not a valid force map" in err and "constraint" in err and "--allow-invalid-map" in err
    namespace = argparse.Namespace(data=str(path), map="slice", selection="name CA or name N or name C",
                                   allow_invalid_map=True)
    n_beads = alanine.topology.select(namespace.selection).size
    assert _train_load_cg(namespace)[0].n_beads == n_beads
    namespace.map, namespace.allow_invalid_map = "basic", False
    assert _train_load_cg(namespace)[0].n_beads == n_beads


# ----------------------------------------------------------------------------- analysis


def test_degenerate_histograms_are_refused():
    edges = np.linspace(0.0, 1.0, 11)
    constant = np.full(100, 0.45)
    with pytest.raises(ValueError, match="reference histogram is degenerate"):
        analysis.compare_1d(constant, constant, edges, 2.494)
    spread = np.random.default_rng(0).uniform(0.0, 1.0, 500)
    with pytest.raises(ValueError, match="model histogram is degenerate"):
        analysis.compare_1d(spread, constant, edges, 2.494)
    metrics, _, _ = analysis.compare_1d(spread, spread, edges, 2.494)
    assert metrics["kl"] == 0.0  # identical, non-degenerate: a real zero


def test_cli_analyze_refuses_zero_temperature_and_too_few_frames(tmp_path, capsys):
    topology = md.Topology()
    chain = topology.add_chain()
    for _ in range(3):
        topology.add_atom("CA", md.element.carbon, topology.add_residue("GLY", chain))
    rng = np.random.default_rng(0)
    frames = (np.array([[0.0, 0, 0], [0.38, 0, 0], [0.76, 0, 0]]) + rng.normal(0, 0.03, (40, 3, 3))).astype(np.float32)
    md.Trajectory(frames, topology).save_dcd(str(tmp_path / "ref.dcd"))
    md.Trajectory(frames[:1], topology).save_pdb(str(tmp_path / "cg.pdb"))
    sim = tmp_path / "sim"
    from jaxcg.simulate import TrajectoryWriter

    with TrajectoryWriter(sim, topology, 1) as writer:
        writer.write(frames[:5, None])
    common = ["analyze", "--reference", str(tmp_path / "ref.dcd"), "--reference-top", str(tmp_path / "cg.pdb"),
              "--select", "all", "--simulation", str(sim), "--bins", "10", "--out", str(tmp_path / "a")]
    assert main([*common, "--temperature", "0"]) == 2
    assert "--temperature must be a positive number of kelvin, got 0.0" in capsys.readouterr().err
    assert main(common) == 2
    assert "--simulation has 5 frames" in capsys.readouterr().err
    assert main([*common, "--min-frames", "5"]) == 0
