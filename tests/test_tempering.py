"""Parallel tempering (jaxcg.simulate.replica_exchange): one kT per replica, the Metropolis exchange,
its acceptance against the analytic value for harmonic oscillators, Boltzmann sampling and barrier
crossing on a double well, exact resume, and `jaxcg simulate --temperatures`."""

from __future__ import annotations

import csv
import json

import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np
import pytest
from _double_well import DoubleWell
from scipy.special import betainc

from jaxcg import simulate
from jaxcg.analysis import kl_divergence
from jaxcg.units import kT_from_temperature

T_LOW = 300.0
KT_LOW = kT_from_temperature(T_LOW)
LADDER = (300.0, 500.0, 850.0, 1450.0, 2500.0)

# Double well along x (nm, kJ/mol): barrier 12 kT at 300 K, the left well 1 kT lower (tilt);
# harmonic in y and z. One bead per replica.
BARRIER, WELL_POS, TILT, K_YZ, MASS = 12.0 * KT_LOW, 0.1, KT_LOW / 0.2, 2000.0, 12.0
EDGES = np.linspace(-0.16, 0.16, 33)
#: Sampling noise of the 20 s test gives KL ~ 2e-3; without crossings it is > 1.
KL_BOUND = 6.0e-3


WELL = DoubleWell(BARRIER, WELL_POS, TILT, K_YZ, EDGES)
double_well_energy = WELL.energy
exact_bin_probabilities = WELL.exact_bin_probabilities


def _right_well_start(n: int) -> np.ndarray:
    x0 = np.zeros((n, 1, 3), np.float32)
    x0[:, 0, 0] = WELL_POS  # the upper (right) well
    return x0


def _double_well_sim(chunk: int = 100):
    return simulate.langevin(double_well_energy, np.full(1, MASS), T_LOW, 0.004, 10.0, chunk, 10)


def sample_lowest_temperature(n_chunks: int, n_copies: int = 8, seed: int = 0):
    ladder = simulate.replica_exchange(_double_well_sim(), LADDER, n_copies)
    state = ladder.init(jax.random.key(seed), _right_well_start(n_copies))
    samples = []
    for chunk in range(n_chunks):
        state, record, _ = ladder.run_chunk(state)
        if chunk >= n_chunks // 10:  # equilibration
            samples.append(np.asarray(record.positions)[:, :n_copies, 0, 0].ravel())
    return np.concatenate(samples), ladder.acceptance(state)


def test_one_kT_per_replica_equals_runs_at_each_temperature():
    """An (R,) kT steps each replica as a run at that scalar kT would (same keys)."""
    sim = _double_well_sim(20)
    kTs = jnp.asarray([kT_from_temperature(300.0), kT_from_temperature(900.0)], jnp.float32)
    x0 = jnp.asarray(_right_well_start(2))
    both, _ = sim.run_chunk(sim.init(jax.random.key(3), x0, kT=kTs), kT=kTs)
    for r in range(2):
        alone, _ = sim.run_chunk(sim.init(jax.random.key(3), x0, kT=kTs[r]), kT=kTs[r])
        np.testing.assert_allclose(both.integrator.position[r], alone.integrator.position[r], atol=1e-6)
        np.testing.assert_allclose(both.integrator.momentum[r], alone.integrator.momentum[r], atol=1e-5)
    hot = np.asarray(both.integrator.momentum[1]) ** 2
    assert not np.allclose(np.asarray(both.integrator.momentum[0]) ** 2, hot)
    with pytest.raises(ValueError, match=r"kT must be a scalar or one value per replica, shape \(2,\)"):
        sim.run_chunk(both, kT=jnp.ones(3))


def test_exchange_swaps_configurations_and_rescales_momenta():
    sim = _double_well_sim(10)
    ladder = simulate.replica_exchange(sim, (300.0, 600.0), n_per_temperature=2)
    x0 = np.arange(12, dtype=np.float32).reshape(4, 1, 3) * 0.01
    state = ladder.init(jax.random.key(0), x0)
    # copy 0: U(300 K) - U(600 K) = +100 kJ/mol, accepted with certainty; copy 1: -1000, never
    energy = jnp.asarray([100.0, 0.0, 0.0, 1000.0], jnp.float32)
    new, accepted = ladder.exchange(state, energy)
    np.testing.assert_array_equal(np.asarray(accepted), [[True, False]])
    old_x, new_x = np.asarray(state.sim.integrator.position), np.asarray(new.sim.integrator.position)
    np.testing.assert_array_equal(new_x[[0, 2]], old_x[[2, 0]])  # copy 0: swapped
    np.testing.assert_array_equal(new_x[[1, 3]], old_x[[1, 3]])  # copy 1: kept
    old_p, new_p = np.asarray(state.sim.integrator.momentum), np.asarray(new.sim.integrator.momentum)
    np.testing.assert_allclose(new_p[0], old_p[2] * np.sqrt(300.0 / 600.0), rtol=1e-6)
    np.testing.assert_allclose(new_p[2], old_p[0] * np.sqrt(600.0 / 300.0), rtol=1e-6)
    np.testing.assert_array_equal(new_p[[1, 3]], old_p[[1, 3]])
    np.testing.assert_array_equal(np.asarray(new.walker), [2, 1, 0, 3])
    assert (int(new.accepted[0]), int(new.attempted[0]), int(new.rounds)) == (1, 2, 1)
    # round 1 tries the odd pairs: with two temperatures there are none
    after, accepted = ladder.exchange(new, energy)
    assert not bool(np.asarray(accepted).any()) and int(after.attempted[0]) == 2
    # a stopped replica is never exchanged
    dead = new._replace(rounds=jnp.zeros((), jnp.int32),
                        sim=new.sim._replace(alive=jnp.asarray([True, True, False, True])))
    _, accepted = ladder.exchange(dead, energy)
    assert not bool(np.asarray(accepted).any())


def test_acceptance_of_two_harmonic_oscillators_matches_the_analytic_mean():
    """For U = k|x|²/2 in d = 3 dimensions at T1 < T2, the mean acceptance of
    min(1, exp((β1 − β2)(U1 − U2))) over Boltzmann samples is 2 I_{ρ/(1+ρ)}(d/2, d/2), ρ = T1/T2
    (regularised incomplete beta function)."""
    k, temps, n_copies = 1000.0, (300.0, 450.0), 64
    sim = simulate.langevin(lambda r: 0.5 * k * jnp.sum(r**2), np.full(1, MASS), 300.0, 0.004, 10.0, 100, 100)
    ladder = simulate.replica_exchange(sim, temps, n_copies)
    state = ladder.init(jax.random.key(0), np.zeros((n_copies, 1, 3), np.float32))
    state, _, _ = ladder.run_chunk(state)  # equilibration
    start = (int(state.accepted[0]), int(state.attempted[0]))
    for _ in range(150):
        state, _, _ = ladder.run_chunk(state)
    measured = (int(state.accepted[0]) - start[0]) / (int(state.attempted[0]) - start[1])
    rho = temps[0] / temps[1]
    analytic = 2.0 * betainc(1.5, 1.5, rho / (1.0 + rho))  # 0.747
    assert 0.0 < measured < 1.0
    assert measured == pytest.approx(analytic, abs=0.03)  # ~5 standard errors of 4,800 attempts


def test_double_well_lowest_temperature_is_boltzmann_and_crosses_the_barrier():
    x, acceptance = sample_lowest_temperature(300)
    exact = exact_bin_probabilities(KT_LOW)
    counts, _ = np.histogram(x, EDGES)
    assert kl_divergence(exact, counts) < KL_BOUND
    # started in the upper well, the 300 K replicas spend the Boltzmann share (73 %) in the lower
    assert np.mean(x < 0) == pytest.approx(exact[: len(exact) // 2].sum(), abs=0.05)
    assert np.all((acceptance > 0.2) & (acceptance < 0.95)), acceptance
    # plain Langevin at 300 K, same steps and as many replicas as the whole ladder, never crosses
    sim = _double_well_sim()
    state = sim.init(jax.random.key(1), _right_well_start(8 * len(LADDER)))
    lowest = np.inf
    for _ in range(300):
        state, record = sim.run_chunk(state)
        lowest = min(lowest, float(np.asarray(record.positions)[..., 0].min()))
    assert lowest > 0.0
    plain = np.histogram(np.asarray(record.positions)[..., 0, 0].ravel(), EDGES)[0]
    assert kl_divergence(exact, plain) > 1.0


@pytest.mark.slow
def test_double_well_long_run_and_a_wrong_ladder_fail_the_tight_bound():
    """6x the samples: KL ~ 3e-4. The bound has power: samples at 330 K fail it."""
    x, _ = sample_lowest_temperature(1800, seed=2)
    exact = exact_bin_probabilities(KT_LOW)
    assert kl_divergence(exact, np.histogram(x, EDGES)[0]) < 1.0e-3
    warm = exact_bin_probabilities(kT_from_temperature(330.0))
    assert kl_divergence(warm, np.histogram(x, EDGES)[0]) > 1.0e-3


def _run(tmp_path, name, n_chunks, resume=False):
    ladder = simulate.replica_exchange(_double_well_sim(20), (300.0, 600.0, 1200.0), 2)
    folder = tmp_path / name
    checkpoint = folder / "state.npz"
    topology = md.Topology()
    topology.add_atom("B", md.element.carbon, topology.add_residue("B", topology.add_chain()))
    if resume:
        state, frames = simulate.resume_tempering(ladder, checkpoint)
    else:
        state, frames = ladder.init(jax.random.key(5), _right_well_start(2)), None
    writers = [simulate.TrajectoryWriter(folder / f"T{t:g}K", topology, 2, resume_frames=frames)
               for t in ladder.temperatures]
    try:
        state = simulate.run_tempering(ladder, state, n_chunks * 20,
                                       writers=writers, log_path=folder / "log.csv", checkpoint_path=checkpoint)
    finally:
        for writer in writers:
            writer.close()
    simulate.save_tempering_report(folder / "report.json", ladder, state)
    return ladder, state


def test_resume_continues_identically(tmp_path):
    _, straight = _run(tmp_path, "straight", 6)
    _run(tmp_path, "resumed", 3)
    ladder, resumed = _run(tmp_path, "resumed", 3, resume=True)
    for a, b in zip(jax.tree.leaves(jax.random.key_data(straight.key)), jax.tree.leaves(jax.random.key_data(resumed.key)),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(straight.sim.integrator.position, resumed.sim.integrator.position)
    np.testing.assert_array_equal(straight.sim.integrator.momentum, resumed.sim.integrator.momentum)
    np.testing.assert_array_equal(straight.walker, resumed.walker)
    np.testing.assert_array_equal(straight.accepted, resumed.accepted)
    assert int(resumed.rounds) == 6 and int(resumed.sim.step) == 120
    for t in ladder.temperatures:
        a = simulate.load_replicas(tmp_path / "straight" / f"T{t:g}K")
        b = simulate.load_replicas(tmp_path / "resumed" / f"T{t:g}K")
        assert len(a) == 2 and a[0].n_frames == 12
        np.testing.assert_array_equal(a[1].xyz, b[1].xyz)
    report = json.loads((tmp_path / "resumed" / "report.json").read_text())
    assert [p["temperatures_K"] for p in report["pairs"]] == [[300.0, 600.0], [600.0, 1200.0]]
    assert report["exchange_rounds"] == 6
    with (tmp_path / "resumed" / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and "acceptance_0_1" in rows[0]


def test_errors_name_the_argument():
    sim = _double_well_sim(10)
    with pytest.raises(ValueError, match="temperatures must hold at least 2"):
        simulate.replica_exchange(sim, [300.0])
    with pytest.raises(ValueError, match="strictly ascending"):
        simulate.replica_exchange(sim, [300.0, 300.0])
    with pytest.raises(ValueError, match="n_per_temperature"):
        simulate.replica_exchange(sim, [300.0, 400.0], 0)
    ladder = simulate.replica_exchange(sim, [300.0, 400.0], 2)
    with pytest.raises(ValueError, match=r"positions must have shape \(4, N, 3\) or \(2, N, 3\)"):
        ladder.init(jax.random.key(0), _right_well_start(3))
    nve = simulate.replica_exchange(simulate.nve(double_well_energy, np.full(1, MASS), 300.0, 0.002, 10, 10),
                                    [300.0, 400.0])
    with pytest.raises(ValueError, match="kT cannot be given to NVE dynamics"):
        nve.run_chunk(nve.init(jax.random.key(0), _right_well_start(1)))


ENERGY_FILE = f'''
import jax.numpy as jnp


def double_well():
    def energy(r):
        x = r[:, 0]
        return (jnp.sum({BARRIER!r} * ((x / {WELL_POS!r}) ** 2 - 1.0) ** 2 + {TILT!r} * x)
                + 0.5 * {K_YZ!r} * jnp.sum(r[:, 1:] ** 2))
    return energy
'''


def test_cli_simulate_temperatures_writes_one_folder_per_temperature_and_resumes(tmp_path):
    from jaxcg.cli import main

    (tmp_path / "energy.py").write_text(ENERGY_FILE)
    topology = md.Topology()
    topology.add_atom("B", md.element.carbon, topology.add_residue("B", topology.add_chain()))
    md.Trajectory(_right_well_start(1), topology).save_pdb(str(tmp_path / "cg.pdb"))
    np.savez(tmp_path / "start.npz", positions=_right_well_start(4), masses=np.full(1, MASS))
    common = ["simulate", "--energy", f"{tmp_path / 'energy.py'}:double_well", "--start", str(tmp_path / "start.npz"),
              "--top", str(tmp_path / "cg.pdb"), "--replicas", "2", "--temperatures", "300", "600", "1200",
              "--exchange-every", "50", "--save-every", "10", "--dt", "0.004", "--friction", "10",
              "--out", str(tmp_path / "pt")]
    assert main([*common, "--steps", "100"]) == 0
    assert main([*common, "--steps", "200", "--resume"]) == 0
    assert main([*common, "--steps", "200"]) == 2  # an existing run is not overwritten silently
    assert main([*common[:-2], "--exchange-every", "15", "--out", str(tmp_path / "bad"), "--steps", "100"]) == 2
    report = json.loads((tmp_path / "pt" / "report.json").read_text())
    assert report["temperatures_K"] == [300.0, 600.0, 1200.0] and report["exchange_rounds"] == 4
    assert [pair["attempted"] for pair in report["pairs"]] == [4, 4]  # 2 copies x 2 rounds each
    for t in ("T300K", "T600K", "T1200K"):
        replicas = simulate.load_replicas(tmp_path / "pt" / t)
        assert [r.n_frames for r in replicas] == [20, 20]
        assert json.loads((tmp_path / "pt" / t / "report.json").read_text())["steps"] == 200


def test_parameters_at_call_time_equal_bound_parameters():
    def energy(r, params):
        return params["k"] * jnp.sum(r**2)

    sim = simulate.langevin(energy, np.full(1, MASS), T_LOW, 0.004, 10.0, 10, 10)
    ladder = simulate.replica_exchange(sim, (300.0, 600.0), 2)
    params = {"k": jnp.asarray(500.0, jnp.float32)}
    state = ladder.init(jax.random.key(0), _right_well_start(2), params=params)
    called, _, _ = ladder.run_chunk(state, params=params)
    bound = ladder.bind(params=params)
    fixed, _, _ = bound.run_chunk(bound.init(jax.random.key(0), _right_well_start(2)))
    np.testing.assert_array_equal(called.sim.integrator.position, fixed.sim.integrator.position)
    assert int(called.rounds) == 1


def test_neighbor_lists_move_with_their_configurations_and_overflow_is_redone():
    from test_simulate import dense_energy, make_neighbor_energy

    n = 12
    displacement, shift, neighbor_fn = simulate.neighbor_list(cutoff=0.5, skin=0.1)
    sim = simulate.langevin(make_neighbor_energy(displacement), np.full(n, 20.0), 300.0, 0.002, 5.0, 20, 10,
                            shift_fn=shift, neighbor_fn=neighbor_fn)
    ladder = simulate.replica_exchange(sim, (300.0, 310.0, 320.0), 2)
    lattice = np.stack(np.meshgrid(np.arange(3), np.arange(2), np.arange(2)), -1).reshape(-1, 3)
    compact = np.repeat(lattice[None] * 0.35, 2, 0).astype(np.float32)
    state = ladder.init(jax.random.key(0), compact)
    small = sim.allocate_neighbors(jnp.asarray(compact * 10.0).repeat(3, 0))  # too small: overflows
    state = state._replace(sim=state.sim._replace(neighbor=small))
    state = simulate.run_tempering(ladder, state, 100)
    assert state.sim.neighbor.max_occupancy > small.max_occupancy
    assert int(state.accepted.sum()) > 0 and not np.array_equal(state.walker, np.arange(6))
    dense_forces = jax.vmap(jax.grad(lambda r: -dense_energy(r)))(state.sim.integrator.position)
    np.testing.assert_allclose(state.sim.integrator.force, dense_forces, rtol=1e-4, atol=1e-3)
