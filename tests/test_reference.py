"""OpenMM reference-data generation: forces, constraints, resumption, bundled data, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from jaxcg.data import load_dataset
from jaxcg.reference import BUNDLED, bundled_dataset, bundled_dataset_path, generate

openmm = pytest.importorskip("openmm")

# Short runs: tiny equilibration, few steps between frames.
QUICK = {"equilibration_ps": 0.2, "save_every": 20}


def _oo_distance(positions: np.ndarray) -> np.ndarray:
    """(T,) O-O distance, nm, of water-dimer frames (oxygens are atoms 0 and 3)."""
    return np.linalg.norm(positions[:, 0] - positions[:, 3], axis=-1)


def _block_mean(values: np.ndarray, n_blocks: int = 20) -> tuple[float, float]:
    """Mean and its standard error from ``n_blocks`` block averages."""
    blocks = np.array_split(np.asarray(values, dtype=np.float64), n_blocks)
    means = np.array([b.mean() for b in blocks])
    return float(values.mean()), float(means.std(ddof=1) / np.sqrt(n_blocks))


@pytest.fixture(scope="module")
def flexible_file(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ref") / "flexible.h5"
    return generate("water_dimer", out, n_frames=6, seed=3, platform="Reference", **QUICK)


def test_forces_are_minus_energy_gradient(flexible_file):
    """Saved forces equal -dE/dr by central finite differences (float64 Reference energies)."""
    from jaxcg.reference._systems import water_dimer

    data = load_dataset(flexible_file, verify_hash=True)
    ref = water_dimer(rigid=False)
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(ref.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    h = 1e-5  # nm

    def energy(x: np.ndarray) -> float:
        context.setPositions(x)
        state = context.getState(getEnergy=True)
        return state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)

    for frame in (0, 2, 5):
        x0 = data.positions[frame].astype(np.float64)
        numeric = np.zeros_like(x0)
        for i in range(x0.shape[0]):
            for d in range(3):
                xp, xm = x0.copy(), x0.copy()
                xp[i, d] += h
                xm[i, d] -= h
                numeric[i, d] = -(energy(xp) - energy(xm)) / (2 * h)
        scale = np.abs(numeric).max()
        np.testing.assert_allclose(data.forces[frame], numeric, atol=1e-4 * scale + 0.05)
    # the forces are not trivially zero and the vacuum dimer feels no net force
    assert np.abs(data.forces).max() > 10.0
    np.testing.assert_allclose(data.forces.sum(axis=1), 0.0, atol=1e-2)


def test_rigid_water_constraints_hold(tmp_path):
    from jaxcg.reference._systems import water_dimer

    path = generate("water_dimer", tmp_path / "rigid.h5", n_frames=20, rigid=True, **QUICK)
    data = load_dataset(path)
    system = water_dimer(rigid=True).system
    lengths = {}
    for k in range(system.getNumConstraints()):
        i, j, r = system.getConstraintParameters(k)
        lengths[(i, j)] = r.value_in_unit(openmm.unit.nanometer)
    assert data.constraints is not None and data.constraints.shape == (6, 2)
    for i, j in data.constraints:
        r = np.linalg.norm(data.positions[:, i] - data.positions[:, j], axis=-1)
        np.testing.assert_allclose(r, lengths[(int(i), int(j))], atol=1e-6)
    assert data.metadata["timestep_ps"] == 0.002


class _Kill(Exception):
    pass


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, platform):
    kwargs = dict(n_frames=25, seed=7, platform=platform, chunk_frames=10, **QUICK)
    full = load_dataset(generate("water_dimer", tmp_path / "full.h5", **kwargs))

    def kill_at_frame_17(done: int, total: int, ns_per_day: float) -> None:
        if done == 17:
            raise _Kill

    part = tmp_path / "part.h5"
    with pytest.raises(_Kill):
        generate("water_dimer", part, progress=kill_at_frame_17, **kwargs)
    partial = load_dataset(part, verify_hash=True)  # the completed chunk is readable
    assert partial.n_frames == 10
    np.testing.assert_array_equal(partial.positions, full.positions[:10])
    with h5py.File(part, "a") as handle:  # a chunk cut off mid-write: 3 frames of positions only
        handle["positions"].resize(13, axis=0)

    seen = []
    resumed = load_dataset(
        generate(
            "water_dimer", part, resume=True, progress=lambda d, t, r: seen.append(d), **kwargs
        ),
        verify_hash=True,
    )
    assert seen[0] == 10 and seen[-1] == 25
    np.testing.assert_array_equal(resumed.positions, full.positions)
    np.testing.assert_array_equal(resumed.forces, full.forces)
    assert resumed.metadata["platform"] == platform


def test_resume_refuses_a_different_run(tmp_path):
    path = generate("water_dimer", tmp_path / "a.h5", n_frames=2, seed=1, **QUICK)
    with pytest.raises(ValueError, match="seed"):
        generate("water_dimer", path, n_frames=4, seed=2, resume=True, **QUICK)


def test_regenerated_water_dimer_matches_bundled_statistics(tmp_path):
    """A fresh short run (other seed) has the bundled file's mean O-O distance within errors."""
    bundled = bundled_dataset("water_dimer_flexible")
    path = generate("water_dimer", tmp_path / "w.h5", n_frames=2000, seed=11, equilibration_ps=5.0)
    fresh = load_dataset(path)
    assert fresh.metadata["save_interval_ps"] == bundled.metadata["save_interval_ps"]
    m_fresh, e_fresh = _block_mean(_oo_distance(fresh.positions))
    m_bundled, e_bundled = _block_mean(_oo_distance(bundled.positions))
    assert abs(m_fresh - m_bundled) < 4.0 * np.hypot(e_fresh, e_bundled) + 1e-3
    assert not np.array_equal(fresh.positions, bundled.positions[:2000])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"system": "argon", "n_frames": 1}, "system must be one of"),
        ({"system": "water_dimer", "ns": -1.0}, "ns must be a positive"),
        ({"system": "water_dimer", "n_frames": 0}, "n_frames must be a positive"),
        ({"system": "water_dimer", "n_frames": 1, "save_every": -5}, "save_every"),
        ({"system": "water_dimer", "n_frames": 1, "ns": 1.0}, "exactly one"),
        (
            {"system": "water_dimer", "n_frames": 1, "solvent": "explicit"},
            "solvent for water_dimer",
        ),
        ({"system": "alanine_dipeptide", "n_frames": 1, "solvent": "dmso"}, "solvent for"),
        ({"system": "alanine_dipeptide", "n_frames": 1, "rigid": True}, "rigid"),
        ({"system": "water_dimer", "n_frames": 1, "seed": -1}, "seed"),
        ({"system": "water_dimer", "n_frames": 1, "platform": "Abacus"}, "platform must be one of"),
    ],
)
def test_bad_arguments_give_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(out=tmp_path / "x.h5", **kwargs)


def test_unwritable_output_is_refused_before_simulating(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="not writable"):
        generate("water_dimer", blocker / "out.h5", n_frames=1)
    with pytest.raises(ValueError, match="directory"):
        generate("water_dimer", tmp_path, n_frames=1)


@pytest.mark.parametrize(
    "name, n_atoms, n_constraints",
    [
        ("water_dimer_flexible", 6, 0),
        ("water_dimer_rigid", 6, 6),
        ("alanine_dipeptide_vacuum", 22, 12),
    ],
)
def test_bundled_datasets_load(name, n_atoms, n_constraints):
    data = load_dataset(bundled_dataset_path(name), verify_hash=True)
    assert data.n_atoms == n_atoms
    assert data.temperature == 300.0
    assert data.n_frames >= 1000
    if n_constraints == 0:
        assert data.constraints is None
    else:
        assert data.constraints.shape == (n_constraints, 2)
        if name.startswith("alanine"):  # HBonds: every pair holds one hydrogen
            atoms = list(data.topology.atoms)
            assert all(
                "H" in (atoms[i].element.symbol, atoms[j].element.symbol)
                for i, j in data.constraints
            )
    meta = data.metadata
    for key in (
        "platform",
        "openmm_version",
        "seed",
        "timestep_ps",
        "save_interval_ps",
        "temperature_K",
    ):
        assert key in meta


def test_bundled_loading_works_without_openmm():
    """With openmm unimportable (sys.modules entry None), the bundled data still loads.

    (mdtraj itself imports openmm when it is installed, so "not imported" cannot be asserted.)
    """
    code = (
        "import sys; sys.modules['openmm'] = None; "
        "from jaxcg.reference import bundled_dataset; "
        "d = bundled_dataset('water_dimer_rigid'); assert d.n_atoms == 6"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_bundled_unknown_name():
    with pytest.raises(ValueError, match="name must be one of"):
        bundled_dataset("argon")
    assert set(BUNDLED) == {"water_dimer_flexible", "water_dimer_rigid", "alanine_dipeptide_vacuum"}


def test_cli_reference_writes_a_dataset(tmp_path, capsys):
    from jaxcg.cli import main

    out = tmp_path / "cli.h5"
    assert (
        main(["reference", "water_dimer", "--frames", "3", "--save-every", "10", "--out", str(out)])
        == 0
    )
    data = load_dataset(out)
    assert data.n_frames == 3
    assert json.loads(json.dumps(data.metadata))["save_every_steps"] == 10
    assert main(["reference", "water_dimer", "--ns", "-1", "--out", str(out)]) == 2
    assert "ns must be a positive" in capsys.readouterr().err
