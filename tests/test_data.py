"""AtomisticData validation, loaders for every supported format, streaming, the dataset file."""

import h5py
import mdtraj as md
import numpy as np
import pytest

from jaxcg.data import (
    AtomisticData,
    iter_chunks,
    iter_dataset_chunks,
    load_atomistic,
    load_dataset,
    load_forces,
    make_atomistic_data,
    save_dataset,
)
from jaxcg.units import kT_from_temperature


@pytest.fixture(scope="module")
def peptide(shared_data):
    return md.load(str(shared_data / "alanine-dipeptide.pdb"))


def fake_frames(n_atoms, n_frames=50, seed=0):
    rng = np.random.default_rng(seed)
    positions = rng.normal(size=(n_frames, n_atoms, 3)).astype(np.float32)
    forces = rng.normal(size=(n_frames, n_atoms, 3)).astype(np.float32) * 100
    return positions, forces


def test_valid_data_and_kT(peptide):
    positions, forces = fake_frames(peptide.n_atoms)
    data = make_atomistic_data(positions, forces, peptide.topology, 300.0)
    assert data.n_frames == 50 and data.n_atoms == 22
    assert data.kT == pytest.approx(2.494338, rel=1e-6)
    assert kT_from_temperature(300.0) == pytest.approx(0.0083144626 * 300)
    sub = data.subset(slice(10, 20))
    assert sub.n_frames == 10
    blocks = list(data.chunks(16))
    assert [b[0].shape[0] for b in blocks] == [16, 16, 16, 2]


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda p, f: (p, f[:, :21]), r"forces has shape \(50, 21, 3\) but the topology has 22 atoms"),
        (lambda p, f: (p[:, :, :2], f), r"positions must have shape \(T, n, 3\)"),
        (lambda p, f: (p, f[:40]), r"forces has shape \(40, 22, 3\) but positions has shape"),
        (lambda p, f: (p.astype(np.int32), f), "positions must hold floats"),
        (lambda p, f: (p[:0], f[:0]), "holds no frames"),
    ],
)
def test_validation_errors_name_the_argument(peptide, mutate, match):
    positions, forces = mutate(*fake_frames(peptide.n_atoms))
    with pytest.raises((ValueError, TypeError), match=match):
        make_atomistic_data(positions, forces, peptide.topology, 300.0)


@pytest.mark.parametrize("temperature", [0.0, -5.0, float("nan")])
def test_temperature_must_be_positive(peptide, temperature):
    positions, forces = fake_frames(peptide.n_atoms)
    with pytest.raises(ValueError, match="temperature must be a positive"):
        make_atomistic_data(positions, forces, peptide.topology, temperature)


def test_nonfinite_frames_raise_or_drop(peptide):
    positions, forces = fake_frames(peptide.n_atoms)
    forces[3, 2, 1] = np.nan
    positions[7, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 frame\(s\) hold NaN or inf .*\[3, 7\]"):
        make_atomistic_data(positions, forces, peptide.topology, 300.0)
    with pytest.warns(UserWarning, match="dropping 2 of 50 frames"):
        data = make_atomistic_data(positions, forces, peptide.topology, 300.0, nonfinite="drop")
    assert data.n_frames == 48 and np.isfinite(data.forces).all()


def test_constraint_and_weight_validation(peptide):
    positions, forces = fake_frames(peptide.n_atoms)
    with pytest.raises(ValueError, match="constraints index atoms"):
        make_atomistic_data(positions, forces, peptide.topology, 300.0, constraints=[[0, 22]])
    with pytest.raises(ValueError, match="weights must have shape"):
        make_atomistic_data(positions, forces, peptide.topology, 300.0, weights=np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        make_atomistic_data(positions, forces, peptide.topology, 300.0, weights=-np.ones(50))
    with pytest.raises(TypeError, match="mdtraj.Topology"):
        AtomisticData(positions, forces, "not a topology", 300.0)


def write_trr(path, positions, forces):
    from mdtraj.formats import TRRTrajectoryFile

    n = positions.shape[0]
    box = np.tile(np.eye(3, dtype=np.float32) * 3, (n, 1, 1))
    with TRRTrajectoryFile(str(path), "w") as handle:
        handle._write(positions, np.arange(n, dtype=np.float32), np.arange(n, dtype=np.int32), box,
                      np.zeros(n, np.float32), None, forces)


@pytest.mark.parametrize("fmt", ["npy", "npz", "h5", "trr"])
def test_force_loaders_round_trip(tmp_path, peptide, fmt):
    positions, forces = fake_frames(peptide.n_atoms)
    path = tmp_path / f"forces.{fmt}"
    if fmt == "npy":
        np.save(path, forces)
    elif fmt == "npz":
        np.savez(path, other=np.zeros(3), forces=forces)
    elif fmt == "h5":
        with h5py.File(path, "w") as handle:
            handle["forces"] = forces
    else:
        write_trr(path, positions, forces)
    np.testing.assert_allclose(load_forces(path), forces, rtol=1e-6)


def test_force_unit_conversion(tmp_path, peptide):
    _, forces = fake_frames(peptide.n_atoms)
    np.save(tmp_path / "f.npy", forces)
    converted = load_forces(tmp_path / "f.npy", force_units="kcal/mol/Å")
    np.testing.assert_allclose(converted, forces * 41.84, rtol=1e-6)
    with pytest.raises(ValueError, match="force_units must be one of"):
        load_forces(tmp_path / "f.npy", force_units="eV/A")
    with pytest.raises(ValueError, match="unknown format"):
        (tmp_path / "f.csv").write_text("1,2")
        load_forces(tmp_path / "f.csv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_forces(tmp_path / "missing.npy")
    np.savez(tmp_path / "two.npz", a=forces, b=forces)
    with pytest.raises(KeyError, match=r"no array named as forces \(its arrays: \['a', 'b'\]\)"):
        load_forces(tmp_path / "two.npz")


@pytest.mark.parametrize("fmt", ["dcd", "xtc", "trr", "gro"])
def test_load_atomistic_and_stream(tmp_path, peptide, fmt):
    positions, forces = fake_frames(peptide.n_atoms, n_frames=23)
    positions = np.abs(positions)  # xtc stores positive/negative fine, keep it simple
    traj = md.Trajectory(positions, peptide.topology)
    traj.save(str(tmp_path / f"traj.{fmt}"))
    peptide.save_pdb(str(tmp_path / "top.pdb"))
    np.save(tmp_path / "forces.npy", forces)
    data = load_atomistic(tmp_path / "top.pdb", tmp_path / f"traj.{fmt}", tmp_path / "forces.npy", 310.0)
    np.testing.assert_allclose(data.positions, positions, atol=2e-3)  # xtc precision 1e-3 nm
    np.testing.assert_allclose(data.forces, forces)
    blocks = list(iter_chunks(tmp_path / "top.pdb", tmp_path / f"traj.{fmt}", tmp_path / "forces.npy", chunk_size=10))
    assert [b[0].shape[0] for b in blocks] == [10, 10, 3]
    np.testing.assert_allclose(np.concatenate([b[1] for b in blocks]), forces)
    np.save(tmp_path / "short.npy", forces[:20])
    with pytest.raises(ValueError, match="more frames than forces"):
        list(iter_chunks(tmp_path / "top.pdb", tmp_path / f"traj.{fmt}", tmp_path / "short.npy", chunk_size=10))
    with pytest.raises(ValueError, match="but the topology has 22 atoms"):
        load_atomistic(tmp_path / "top.pdb", tmp_path / f"traj.{fmt}", forces[:, :5], 300.0)


def test_dataset_round_trip(tmp_path, peptide):
    positions, forces = fake_frames(peptide.n_atoms, n_frames=30)
    data = make_atomistic_data(
        positions, forces, peptide.topology, 300.0, constraints=[[0, 1], [4, 5]],
        weights=np.linspace(0.5, 1.5, 30), metadata={"engine": "test", "seed": 3},
    )
    path = save_dataset(tmp_path / "sub" / "d.h5", data)
    loaded = load_dataset(path, verify_hash=True)
    np.testing.assert_array_equal(loaded.positions, positions)
    np.testing.assert_array_equal(loaded.forces, forces)
    np.testing.assert_array_equal(loaded.constraints, [[0, 1], [4, 5]])
    np.testing.assert_allclose(loaded.weights, data.weights)
    assert loaded.temperature == 300.0 and loaded.metadata["engine"] == "test"
    assert [a.name for a in loaded.topology.atoms] == [a.name for a in peptide.topology.atoms]
    assert loaded.topology.n_bonds == peptide.topology.n_bonds
    blocks = list(iter_dataset_chunks(path, chunk_size=8))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), forces)
    with h5py.File(path, "r+") as handle:
        handle["forces"][0, 0, 0] += 1.0
    with pytest.raises(ValueError, match="content hash"):
        load_dataset(path, verify_hash=True)
