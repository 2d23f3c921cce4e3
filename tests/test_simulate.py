"""jaxcg.simulate: Boltzmann sampling, NVE energy conservation, stopping bad replicas, neighbour-list
overflow handling, exact resume and trajectory files."""

from __future__ import annotations

import csv
import json

import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np
import pytest
from _double_well import DoubleWell

from jaxcg import simulate
from jaxcg.analysis import kl_divergence
from jaxcg.data import CGData
from jaxcg.neighbors import pairs
from jaxcg.units import kT_from_temperature

TEMPERATURE = 300.0
KT = kT_from_temperature(TEMPERATURE)

# Tilted double well along x (kJ/mol, nm), harmonic in y and z; N independent beads.
WELL_HEIGHT, WELL_POS, TILT, K_YZ = 4.0, 0.1, 5.0, 2000.0
EDGES = np.linspace(-0.18, 0.18, 37)
#: Sampling noise gives KL ~ 1e-3 at the right temperature; a 25 % error in kT gives > 5e-3.
KL_BOUND = 3.0e-3


WELL = DoubleWell(WELL_HEIGHT, WELL_POS, TILT, K_YZ, EDGES)
double_well_energy = WELL.energy
exact_bin_probabilities = WELL.exact_bin_probabilities


def two_well_start(n_replicas: int, n_beads: int) -> jnp.ndarray:
    x0 = np.zeros((n_replicas, n_beads, 3), np.float32)
    x0[:, :, 0] = np.where(np.arange(n_replicas * n_beads).reshape(n_replicas, n_beads) % 2,
                           WELL_POS, -WELL_POS)
    return jnp.asarray(x0)


def sample_x(sim: simulate.Simulator, n_chunks: int, key_seed: int = 1) -> np.ndarray:
    state = sim.init(jax.random.key(key_seed), two_well_start(32, 4))
    state, _ = sim.run_chunk(state)  # equilibration
    samples = []
    for _ in range(n_chunks):
        state, record = sim.run_chunk(state)
        samples.append(np.asarray(record.positions)[..., 0].ravel())
    return np.concatenate(samples)


def kl_to_boltzmann(samples: np.ndarray) -> float:
    counts, _ = np.histogram(samples, EDGES)
    return kl_divergence(exact_bin_probabilities(KT), counts)


@pytest.mark.parametrize("integrator", ["langevin", "brownian"])
def test_boltzmann_distribution_of_double_well(integrator):
    build = simulate.langevin if integrator == "langevin" else simulate.brownian
    sim = build(double_well_energy, np.full(4, 12.0), TEMPERATURE, 0.004, 10.0, 1000, 10)
    assert kl_to_boltzmann(sample_x(sim, 4)) < KL_BOUND


@pytest.mark.slow
def test_wrong_temperature_fails_the_kl_bound():
    """The bound of the Boltzmann test has power: a 25 % error in kT breaks it."""
    sim = simulate.langevin(double_well_energy, np.full(4, 12.0), 1.25 * TEMPERATURE, 0.004,
                            10.0, 1000, 10)
    assert kl_to_boltzmann(sample_x(sim, 4)) > KL_BOUND


def test_langevin_kinetic_temperature_and_harmonic_variance():
    k = 1000.0
    sim = simulate.langevin(lambda r: 0.5 * k * jnp.sum(r**2), np.array([12.0, 30.0]),
                            TEMPERATURE, 0.002, 5.0, 500, 10)
    state = sim.init(jax.random.key(0), jnp.zeros((32, 2, 3)))
    state, _ = sim.run_chunk(state)
    positions, temps = [], []
    for _ in range(5):
        state, record = sim.run_chunk(state)
        positions.append(np.asarray(record.positions))
        temps.append(np.asarray(record.temperature))
    assert np.var(np.concatenate(positions)) == pytest.approx(KT / k, rel=0.05)
    assert np.mean(temps) == pytest.approx(TEMPERATURE, rel=0.03)


def chain_energy(r):
    """Anharmonic (Morse-bonded) 5-bead chain, kJ/mol."""
    d = jnp.linalg.norm(r[1:] - r[:-1], axis=-1)
    return jnp.sum(50.0 * (1.0 - jnp.exp(-20.0 * (d - 0.38))) ** 2)


def test_nve_conserves_energy():
    n = 5
    masses = np.full(n, 12.0)
    sim = simulate.nve(chain_energy, masses, TEMPERATURE, 0.0005, 1500, 10)
    x0 = jnp.asarray(np.stack([np.arange(n) * 0.38, np.zeros(n), np.zeros(n)], 1)[None] * 1.0,
                     dtype=jnp.float32).repeat(4, 0)
    state = sim.init(jax.random.key(3), x0)
    state, record = sim.run_chunk(state)
    kinetic = 1.5 * n * np.asarray(record.temperature) * KT / TEMPERATURE
    totals = np.asarray(record.potential_energy) + kinetic
    drift = np.abs(totals - totals[:1]).max()
    assert drift < 0.01 * KT, drift
    # a 20x larger step breaks the bound (the test can fail)
    coarse = simulate.nve(chain_energy, masses, TEMPERATURE, 0.01, 100, 10)
    state = coarse.init(jax.random.key(3), x0)
    state, record = coarse.run_chunk(state)
    totals = np.asarray(record.potential_energy) + 1.5 * n * np.asarray(record.temperature) * KT / TEMPERATURE
    assert np.abs(totals - totals[:1]).max() > 0.01 * KT


def runaway_energy(r):
    """A well at 0 with a 62.5 kJ/mol barrier at 0.5 nm, unbounded below beyond it."""
    return jnp.sum(0.5 * 1000.0 * r**2 - 1000.0 * r**4)


def test_bad_replicas_are_stopped_and_the_others_continue(tmp_path):
    sim = simulate.langevin(runaway_energy, np.full(3, 12.0), TEMPERATURE, 0.002, 1.0, 50, 5,
                            force_bound=1.0e4)
    x0 = np.zeros((4, 3, 3), np.float32)
    x0[1, 0] = 0.8  # beyond the barrier: runs away, forces grow past the bound
    x0[3, 2, 1] = np.nan  # a NaN starting frame
    state = sim.init(jax.random.key(0), jnp.asarray(x0))
    topology = md.Topology()
    chain = topology.add_chain()
    for _ in range(3):
        topology.add_atom("CA", md.element.carbon, topology.add_residue("ALA", chain))
    with simulate.TrajectoryWriter(tmp_path, topology, 4) as writer:
        state, report = simulate.run(sim, state, 200, writer=writer,
                                     log_path=tmp_path / "log.csv")
    simulate.save_report(tmp_path / "report.json", report, sim.save_every)
    stopped = {s.replica: s.step for s in report.stopped}
    assert set(stopped) == {1, 3}
    assert stopped[3] == 0
    assert 0 < stopped[1] < 200
    assert report.steps == 200
    assert np.asarray(state.alive).tolist() == [True, False, True, False]
    assert np.all(np.isfinite(np.asarray(state.integrator.position)[[0, 1, 2]]))
    # the bad replica is frozen at its last good state, within the force bound
    force = np.asarray(state.integrator.force)[1]
    assert np.all(np.isfinite(force)) and np.abs(force).max() < 1.0e4
    replicas = simulate.load_replicas(tmp_path)
    assert [t.n_frames for t in replicas] == [40, (stopped[1] - 1) // 5, 40, 0]
    assert np.all(np.isfinite(replicas[1].xyz))
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert len(rows) == 4 and rows[-1]["alive"] == "2"
    assert json.loads((tmp_path / "report.json").read_text())["stopped"][0]["replica"] == 1


# ----------------------------------------------------------------------------- neighbour lists


def _pair_energy(d):
    """Soft attraction with a repulsive core, zero beyond 0.5 nm (kJ/mol, nm)."""
    inside = d < 0.5
    safe = jnp.where(inside, d, 0.5)
    return jnp.where(inside, 5.0 * ((0.3 / safe) ** 6 - 1.0) * (0.5 - safe) ** 2 / 0.04, 0.0)


def dense_energy(r):
    i, j = np.triu_indices(r.shape[0], 1)
    return jnp.sum(_pair_energy(jnp.linalg.norm(r[i] - r[j], axis=-1)))


def make_neighbor_energy(displacement):
    def energy(r, neighbor):
        i, j, valid = pairs(neighbor, r.shape[0])
        dr = jax.vmap(displacement)(r[i], r[j])
        d = jnp.sqrt(jnp.sum(dr**2, axis=-1) + 1e-12)
        return jnp.sum(jnp.where(valid, _pair_energy(d), 0.0))

    return energy


def test_neighbor_overflow_is_detected_and_reallocated(tmp_path):
    n = 12
    displacement, shift, neighbor_fn = simulate.neighbor_list(cutoff=0.5, skin=0.1)
    energy = make_neighbor_energy(displacement)
    sim = simulate.langevin(energy, np.full(n, 20.0), TEMPERATURE, 0.002, 5.0, 20, 10,
                            shift_fn=shift, neighbor_fn=neighbor_fn)
    lattice = np.stack(np.meshgrid(np.arange(3), np.arange(2), np.arange(2)), -1).reshape(-1, 3)
    compact = jnp.asarray(lattice[None] * 0.35, dtype=jnp.float32).repeat(2, 0)
    spread = compact * 10.0
    state = sim.init(jax.random.key(0), compact)
    # a list sized for isolated beads, too small for the cluster: every update overflows
    small = sim.allocate_neighbors(spread)
    assert small.max_occupancy < state.neighbor.max_occupancy
    state = state._replace(neighbor=small)
    _, record = sim.run_chunk(state)
    assert np.asarray(record.neighbor_overflow).all()
    state, report = simulate.run(sim, state, 40)
    assert report.neighbor_reallocations >= 1 and report.stopped == []
    assert state.neighbor.max_occupancy > small.max_occupancy
    dense_forces = jax.vmap(jax.grad(lambda r: -dense_energy(r)))(state.integrator.position)
    np.testing.assert_allclose(state.integrator.force, dense_forces, rtol=1e-4, atol=1e-3)
    # the checkpoint keeps the list's capacity and contents
    simulate.save_checkpoint(tmp_path / "state.npz", state)
    restored, _ = simulate.resume_state(sim, tmp_path / "state.npz")
    assert restored.neighbor.max_occupancy == state.neighbor.max_occupancy
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored),
                    strict=True):
        np.testing.assert_array_equal(_key_data(a), _key_data(b))


# ----------------------------------------------------------------------------- resume


def test_resume_continues_identically(tmp_path):
    sim = simulate.langevin(double_well_energy, np.full(4, 12.0), TEMPERATURE, 0.004, 10.0, 50,
                            10)
    start = sim.init(jax.random.key(5), two_well_start(3, 4))
    straight, _ = simulate.run(sim, start, 200)

    topology = md.load_topology(str(_cg_topology_file(tmp_path, 4)))
    with simulate.TrajectoryWriter(tmp_path / "run", topology, 3) as writer:
        simulate.run(sim, start, 100, writer=writer, checkpoint_path=tmp_path / "state.npz")
    resumed, frames = simulate.resume_state(sim, tmp_path / "state.npz")
    assert frames == 10 and int(resumed.step) == 100
    with simulate.TrajectoryWriter(tmp_path / "run", topology, 3, resume_frames=frames) as writer:
        resumed, _ = simulate.run(sim, resumed, 100, writer=writer)
    for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed),
                    strict=True):
        np.testing.assert_array_equal(_key_data(a), _key_data(b))
    replicas = simulate.load_replicas(tmp_path / "run")
    assert [t.n_frames for t in replicas] == [20, 20, 20]
    np.testing.assert_allclose(replicas[2].xyz[-1], np.asarray(straight.integrator.position)[2],
                               atol=1e-5)


def _key_data(leaf) -> np.ndarray:
    """The array of a state leaf; typed PRNG keys as their integer data."""
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(leaf))
    return np.asarray(leaf)


def _cg_topology_file(folder, n_beads):
    topology = md.Topology()
    chain = topology.add_chain()
    for _ in range(n_beads):
        topology.add_atom("CA", md.element.carbon, topology.add_residue("GLY", chain))
    path = folder / "cg.pdb"
    md.Trajectory(np.zeros((1, n_beads, 3), np.float32), topology).save_pdb(str(path))
    return path


def test_initial_positions_are_drawn_from_the_data():
    positions = np.random.default_rng(0).normal(size=(7, 3, 3)).astype(np.float32)
    data = CGData(positions, np.zeros_like(positions), np.zeros(3, int), np.zeros((0, 2), int),
                  300.0)
    drawn = simulate.initial_positions(data, 5, jax.random.key(0))
    assert drawn.shape == (5, 3, 3)
    index = [int(np.flatnonzero((positions == d).all(axis=(1, 2)))[0]) for d in drawn]
    assert len(set(index)) == 5
    again = simulate.initial_positions(data, 5, jax.random.key(0))
    np.testing.assert_array_equal(drawn, again)
    assert simulate.initial_positions(data, 20, jax.random.key(1)).shape == (20, 3, 3)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="friction"):
        simulate.langevin(double_well_energy, np.ones(4), 300.0, 0.002, -1.0, 10, 5)
    with pytest.raises(ValueError, match="save_every"):
        simulate.langevin(double_well_energy, np.ones(4), 300.0, 0.002, 1.0, 10, 3)
    sim = simulate.langevin(double_well_energy, np.ones(4), 300.0, 0.002, 1.0, 10, 5)
    with pytest.raises(ValueError, match=r"positions must have shape \(R, 4, 3\)"):
        sim.init(jax.random.key(0), jnp.zeros((2, 5, 3)))


# ----------------------------------------------------------------------------- command line

ENERGY_FILE = '''
import jax.numpy as jnp


def chain():
    def energy(x):
        d = jnp.linalg.norm(x[1:] - x[:-1], axis=-1)
        return 0.5 * 5000.0 * jnp.sum((d - 0.38) ** 2)

    return energy
'''


def test_cli_simulate_resume_and_analyze(tmp_path):
    from jaxcg.cli import main

    (tmp_path / "energy.py").write_text(ENERGY_FILE)
    n = 5
    rng = np.random.default_rng(0)
    frames = np.cumsum(rng.normal(size=(30, n, 3)), axis=1)
    frames = (frames / np.linalg.norm(frames, axis=-1, keepdims=True) * 0.38).astype(np.float32)
    frames = np.concatenate([np.zeros((30, 1, 3), np.float32), np.cumsum(frames[:, 1:], 1)], 1)
    topology = md.load_topology(str(_cg_topology_file(tmp_path, n)))
    md.Trajectory(frames, topology).save_dcd(str(tmp_path / "ref.dcd"))
    common = ["simulate", "--energy", f"{tmp_path / 'energy.py'}:chain", "--start",
              str(tmp_path / "ref.dcd"), "--top", str(tmp_path / "cg.pdb"), "--replicas", "3",
              "--chunk", "100", "--save-every", "10", "--out", str(tmp_path / "sim")]
    assert main([*common, "--steps", "100", "--filter-table", "64"]) == 2  # chain() takes no filter_table
    assert main([*common, "--steps", "100"]) == 0
    assert main([*common, "--steps", "200", "--resume"]) == 0
    replicas = simulate.load_replicas(tmp_path / "sim")
    assert [t.n_frames for t in replicas] == [20, 20, 20]
    assert json.loads((tmp_path / "sim" / "report.json").read_text())["steps"] == 200
    assert main(["analyze", "--reference", str(tmp_path / "ref.dcd"), "--reference-top",
                 str(tmp_path / "cg.pdb"), "--select", "all", "--simulation",
                 str(tmp_path / "sim"), "--distance", "0", "4", "--phi", "0", "1", "2", "3",
                 "--psi", "1", "2", "3", "4", "--folded", str(tmp_path / "cg.pdb"),
                 "--bins", "10", "--out", str(tmp_path / "analysis")]) == 0
    metrics = json.loads((tmp_path / "analysis" / "metrics.json").read_text())
    assert {"distance_0_4", "phi_psi", "folded_fraction"} <= set(metrics)
    for name in ("distance_0_4.png", "distance_0_4.svg", "fes_phi_psi.png"):
        assert (tmp_path / "analysis" / name).stat().st_size > 0


@pytest.mark.gpu
def test_benchmark_up_to_4096_replicas_on_gpu(tmp_path):
    """The benchmark's GPU path (R up to 4096); run with ``pytest -m gpu`` on a GPU machine."""
    if jax.default_backend() != "gpu":
        pytest.skip("needs a GPU (jax[cuda12])")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_simulate.py"
    spec = importlib.util.spec_from_file_location("bench_simulate", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--replicas", "1", "512", "4096", "--seconds", "2", "--repeats", "1",
                         "--skip-torch", "--out", str(tmp_path / "simulate_gpu.json")])
    assert [row["replicas"] for row in result["rows"]] == [1, 512, 4096]
    assert all(row["jaxcg"] > 0 and row["jaxcg_table"] > 0 for row in result["rows"])
    assert result["filter_table_accuracy"]["relative_rms_force_error"] < 1e-3


def test_replica_blocks_give_the_same_trajectories():
    """Stepping replicas in blocks (with a remainder block) changes nothing but speed."""
    x0 = jnp.asarray(np.stack([np.arange(5) * 0.38, np.zeros(5), np.zeros(5)], 1), jnp.float32)
    x0 = jnp.broadcast_to(x0, (10, 5, 3))
    positions = []
    for block in (None, 4):
        sim = simulate.langevin(chain_energy, np.full(5, 12.0), TEMPERATURE, 0.002, 1.0, 20, 5,
                                replica_block=block)
        state, record = sim.run_chunk(sim.init(jax.random.key(0), x0))
        positions.append(np.asarray(record.positions))
    np.testing.assert_allclose(positions[1], positions[0], rtol=0, atol=1e-6)
    assert np.abs(positions[0][-1] - positions[0][0]).max() > 1e-3  # it moved
    with pytest.raises(ValueError, match="replica_block must be"):
        simulate.langevin(chain_energy, np.full(5, 12.0), TEMPERATURE, 0.002, 1.0, 20, 5, replica_block=0)


def test_replicas_split_over_devices_give_the_same_trajectories():
    """Replicas sharded over the 2 host devices (conftest) match one device, neighbour lists and
    a stopped replica included; uneven splits are refused."""
    if len(jax.local_devices()) < 2:
        pytest.skip("needs 2 devices (XLA_FLAGS=--xla_force_host_platform_device_count=2)")
    x0 = np.stack([np.arange(5) * 0.38, np.zeros(5), np.zeros(5)], 1).astype(np.float32)
    x0 = np.broadcast_to(x0, (6, 5, 3)).copy()
    x0[3, 2, 0] = np.nan  # replica 3 starts bad: stopped at step 0 on its device
    _, shift, neighbor_fn = simulate.neighbor_list(cutoff=0.6, skin=0.2)

    def energy(r, neighbor=None):
        return chain_energy(r)

    records, states = [], []
    for devices in (None, jax.local_devices()[:2]):
        for nbrs in (None, neighbor_fn):
            sim = simulate.langevin(energy, np.full(5, 12.0), TEMPERATURE, 0.002, 1.0, 20, 5,
                                    shift_fn=shift, neighbor_fn=nbrs, replica_devices=devices)
            state, record = sim.run_chunk(sim.init(jax.random.key(0), jnp.asarray(x0)))
            records.append(np.asarray(record.positions))
            states.append(state)
    for other, state in zip(records[1:], states[1:], strict=True):
        np.testing.assert_allclose(other, records[0], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(state.stopped_at), np.asarray(states[0].stopped_at))
        assert int(state.step) == 20
    assert np.asarray(states[2].stopped_at).tolist() == [-1, -1, -1, 0, -1, -1]
    assert len(states[2].integrator.position.sharding.device_set) == 2  # it really was split
    assert np.abs(records[0][-1] - records[0][0])[[0, 1, 2, 4, 5]].max() > 1e-3  # they moved
    with pytest.raises(ValueError, match="cannot be split evenly"):
        sim = simulate.langevin(chain_energy, np.full(5, 12.0), TEMPERATURE, 0.002, 1.0, 20, 5,
                                replica_devices=jax.local_devices()[:2])
        sim.run_chunk(sim.init(jax.random.key(0), jnp.asarray(x0[:5])))
    with pytest.raises(ValueError, match="replica_devices must be"):
        simulate.langevin(chain_energy, np.full(5, 12.0), TEMPERATURE, 0.002, 1.0, 20, 5, replica_devices="all")
