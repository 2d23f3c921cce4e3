"""Villin headpiece (HP35) at protein scale: the reference system, the CA + side-chain map, the
streamed force moment and the optimal map against an independent solver."""

from __future__ import annotations

import mdtraj as md
import numpy as np
import pytest
from _qp_reference import optimal_force_map_reference

from jaxcg.constraints import constraint_groups, expansion_matrix
from jaxcg.data import iter_dataset_chunks, load_dataset
from jaxcg.maps import (
    basic_aggregation_map,
    ca_sidechain_groups,
    ca_sidechain_map,
    check_map,
    force_second_moment,
    objective,
    optimal_linear_map,
    slice_map,
)

openmm = pytest.importorskip("openmm")

from jaxcg.reference import generate  # noqa: E402
from jaxcg.reference._systems import build_system, default_solvent  # noqa: E402

N_PROTEIN = 582  # atoms of HP35 in OpenMM's test.pdb (with hydrogens)
N_WATERS = 2761
N_RESIDUES = 35
GLYCINES = 2  # GLY 11 and GLY 33


def _test_pdb() -> md.Topology:
    from pathlib import Path

    import openmm.app as app

    return md.load_topology(str(Path(app.__file__).resolve().parent / "data" / "test.pdb"))


@pytest.fixture(scope="module")
def vacuum_file(tmp_path_factory: pytest.TempPathFactory):
    """200 frames of villin in vacuum, 10 fs apart (a few seconds on 2 cores)."""
    out = tmp_path_factory.mktemp("villin") / "villin_vacuum.h5"
    return generate(
        "villin", out, n_frames=200, solvent="vacuum", seed=2, save_every=5, equilibration_ps=0.1,
        platform="CPU", chunk_frames=64,
    )


@pytest.fixture(scope="module")
def vacuum_data(vacuum_file):
    return load_dataset(vacuum_file)


def test_explicit_system_keeps_protein_atoms_and_their_solvent_forces():
    import openmm.unit as unit

    ref = build_system("villin")  # default solvent: explicit
    assert default_solvent("villin") == "explicit" and default_solvent("chignolin") == "vacuum"
    assert ref.system.getNumParticles() == 8867 == ref.topology.getNumAtoms()
    assert ref.n_atoms == N_PROTEIN
    names = {a.residue.name for k, a in enumerate(ref.topology.atoms()) if k in set(ref.solute.tolist())}
    assert "HOH" not in names and "Cl" not in names
    left_out = [a.residue.name for k, a in enumerate(ref.topology.atoms()) if k not in set(ref.solute.tolist())]
    assert sorted(set(left_out)) == ["Cl", "HOH"] and len(left_out) == 3 * N_WATERS + 2
    assert ref.system.usesPeriodicBoundaryConditions()
    # constraints: HBonds on the protein, 3 per rigid water; only the protein's are saved
    pairs = ref.solute_constraints()
    assert ref.system.getNumConstraints() == len(pairs) + 3 * N_WATERS
    elements = [a.element.symbol for a in ref.topology.atoms()]
    assert all("H" in (elements[i], elements[j]) for i, j in pairs)
    n_hydrogens = sum(e == "H" for e in elements[:N_PROTEIN])
    assert len(pairs) == n_hydrogens  # every protein hydrogen is bonded to a heavy atom
    groups = constraint_groups(pairs, N_PROTEIN)
    assert expansion_matrix(pairs, N_PROTEIN).shape[1] == N_PROTEIN - n_hydrogens
    assert max(len(g) for g in groups) == 4  # CH3 and NH3+
    # the saved forces include the solvent's: they differ from the protein alone in vacuum
    context = openmm.Context(ref.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(ref.positions)
    solvated = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
        unit.kilojoule_per_mole / unit.nanometer
    )[ref.solute]
    alone = build_system("villin", solvent="vacuum")
    np.testing.assert_allclose(alone.positions, ref.positions[ref.solute])
    context = openmm.Context(alone.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(alone.positions)
    vacuum = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
        unit.kilojoule_per_mole / unit.nanometer
    )
    difference = np.linalg.norm(solvated - vacuum, axis=1)
    assert np.median(difference) > 10.0  # kJ/mol/nm: water and ions act on every residue


def test_implicit_system_is_the_protein_alone():
    ref = build_system("villin", solvent="implicit")
    assert ref.system.getNumParticles() == N_PROTEIN == ref.n_atoms
    assert not ref.system.usesPeriodicBoundaryConditions()
    assert any("GB" in type(f).__name__ or "CustomGB" in type(f).__name__ for f in ref.system.getForces())
    with pytest.raises(ValueError, match="solvent for villin"):
        build_system("villin", solvent="dmso")


def test_ca_sidechain_groups_are_ca_and_sidechain_heavy_atoms():
    top = _test_pdb().subset(range(N_PROTEIN))
    groups = ca_sidechain_groups(top)
    assert len(groups) == 2 * N_RESIDUES - GLYCINES
    bead = 0
    for residue in top.residues:
        # an independent definition: mdtraj's side-chain selection, heavy atoms only
        ca = top.select(f"resid {residue.index} and name CA")
        side = top.select(f"resid {residue.index} and sidechain and not element H and not name OXT")
        np.testing.assert_array_equal(groups[bead], ca)
        bead += 1
        if residue.name == "GLY":
            assert side.size == 0
            continue
        np.testing.assert_array_equal(groups[bead], side)
        bead += 1
    assert bead == len(groups)
    names = {top.residue(0).name: [top.atom(a).name for a in groups[1]]}
    assert names == {"LEU": ["CB", "CG", "CD1", "CD2"]}


def test_ca_sidechain_map_is_the_centroid_and_consistent(vacuum_data):
    data = vacuum_data
    cg = ca_sidechain_map(data.topology)
    assert cg.n_beads == 2 * N_RESIDUES - GLYCINES
    groups = ca_sidechain_groups(data.topology)
    x = np.einsum("Nn,tnd->tNd", np.asarray(cg.config, np.float64), data.positions[:3].astype(np.float64))
    want = np.stack([data.positions[:3, g].astype(np.float64).mean(axis=1) for g in groups], axis=1)
    np.testing.assert_allclose(x, want, atol=1e-6)
    for force in (basic_aggregation_map(cg, data.constraints), optimal_linear_map(data, cg)):
        g, m = np.asarray(force.force, np.float64), np.asarray(force.config, np.float64)
        np.testing.assert_allclose(g @ m.T, np.eye(cg.n_beads), atol=1e-5)
        check_map(force, data.constraints, tolerance=1e-5)


def test_streamed_moment_equals_in_memory_and_dense(vacuum_file, vacuum_data):
    data = vacuum_data
    expand = expansion_matrix(data.constraints, data.n_atoms)
    in_memory = force_second_moment(data, expansion=expand)
    streamed = force_second_moment(iter_dataset_chunks(vacuum_file, chunk_size=37), expansion=expand)
    rows = np.swapaxes(data.forces.astype(np.float64), 1, 2).reshape(-1, data.n_atoms) @ expand
    dense = rows.T @ rows
    assert streamed.n_frames == in_memory.n_frames == 200
    np.testing.assert_allclose(in_memory.total, dense, rtol=0, atol=1e-12 * np.abs(dense).max())
    np.testing.assert_allclose(streamed.total, dense, rtol=0, atol=1e-12 * np.abs(dense).max())
    fast = force_second_moment(iter_dataset_chunks(vacuum_file, chunk_size=37), expansion=expand, precision="float32")
    assert np.abs(fast.total - dense).max() <= 1e-6 * np.abs(dense).max()
    # the group sums by gathers equal the dense product for a general (overlapping) expansion too
    overlapping = expand.copy()
    overlapping[0, 1] = 1.0
    general = force_second_moment(data, expansion=overlapping).total
    rows = np.swapaxes(data.forces.astype(np.float64), 1, 2).reshape(-1, data.n_atoms) @ overlapping
    np.testing.assert_allclose(general, rows.T @ rows, rtol=0, atol=1e-12 * np.abs(dense).max())


@pytest.mark.parametrize("mapping", ["ca", "ca_sidechain"])
def test_optimal_map_equals_the_independent_solver(vacuum_data, mapping):
    """jaxcg's KKT map against the null-space solver of tests/_qp_reference.py (numpy/scipy)."""
    data = vacuum_data
    cg = slice_map(data.topology, "name CA") if mapping == "ca" else ca_sidechain_map(data.topology)
    config = np.asarray(cg.config, np.float64)
    groups = [list(g) for g in constraint_groups(data.constraints, data.n_atoms) if len(g) > 1]
    want = optimal_force_map_reference(data.forces, config, groups)
    for precision in ("float64", "float32"):
        got = optimal_linear_map(data, cg, precision=precision)
        moment = force_second_moment(data).mean
        ours, theirs = objective(got, moment), objective(want, moment)
        assert abs(ours - theirs) <= 1e-7 * theirs, (precision, ours, theirs)
        np.testing.assert_allclose(np.asarray(got.force, np.float64) @ config.T, np.eye(cg.n_beads), atol=1e-5)
        check_map(got, data.constraints, tolerance=1e-5)  # equal weights inside constraint groups
    basic = basic_aggregation_map(cg, data.constraints)
    assert objective(want, moment) < objective(basic, moment)


@pytest.mark.slow
def test_explicit_generation_writes_protein_frames(tmp_path):
    """A two-frame explicit-solvent run (minimisation of 8,867 atoms: about 2 minutes on 2 busy cores)."""
    out = generate("villin", tmp_path / "villin.h5", n_frames=2, save_every=1, equilibration_ps=0.0)
    data = load_dataset(out)
    assert data.positions.shape == (2, N_PROTEIN, 3)
    assert data.n_atoms == N_PROTEIN
    assert np.all(np.isfinite(data.forces))
