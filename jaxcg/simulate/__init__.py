"""CG molecular dynamics of many replicas at once with jax-md.

The pure core follows jax-md: a builder (``langevin``, ``brownian``, ``nve``) returns a
``Simulator`` of pure functions; ``Simulator.run_chunk(state) -> (state, ChunkRecord)`` advances all
R replicas by one jitted chunk of steps (``jax.vmap`` over replicas, ``lax.scan`` over steps).
Errors inside jit are data: a replica whose positions or forces turn NaN/inf, or whose largest
force exceeds ``force_bound``, is frozen at its last good state and its stop step recorded
(``state.alive``, ``state.stopped_at``); neighbour-list overflow is carried in
``ChunkRecord.neighbor_overflow`` and handled on the host by ``run``, which re-allocates the list
and redoes the chunk, so forces are never computed from a truncated list.

``run`` is the host loop: it writes frames (``TrajectoryWriter``: one DCD of all replicas plus the
CG topology as PDB), a CSV log per chunk and an npz checkpoint after each chunk from which
``resume_state`` continues bit for bit.

Parallel tempering (``replica_exchange``): K temperatures x M copies in one compiled chunk (one kT
per replica), Metropolis exchanges of configurations between neighbouring temperatures after each
chunk, acceptance per pair in ``TemperingState``; ``run_tempering`` writes one trajectory per
temperature and checkpoints that ``resume_tempering`` continues bit for bit.

Units: positions nm, time ps, energies kJ/mol, masses amu (g/mol), friction 1/ps, temperature K;
with these, momenta are amu nm/ps and kinetic energies kJ/mol.

Parameters are passed at call time, as in jax-md: keywords of ``init``/``run_chunk`` go to the
energy (``params=``), and ``kT=`` (kJ/mol) overrides the temperature; they are arguments of the
compiled chunk, so new parameters or a new temperature reuse it. Example with a
``jaxcg.models`` model::

    energy = lambda x, params: model.energy(params, x)
    sim = simulate.langevin(energy, data.masses, data.temperature, dt=0.002, friction=1.0,
                            steps_per_chunk=1000, save_every=100)
    state = sim.init(key, simulate.initial_positions(data, 512, start_key), params=params)
    state, record = sim.run_chunk(state, params=params)          # one jitted chunk
    bound = sim.bind(params=params)                              # for the host loop
    with simulate.TrajectoryWriter("out", data.topology, 512) as writer:
        state, report = simulate.run(bound, state, 100_000, writer=writer,
                                     log_path="out/log.csv", checkpoint_path="out/state.npz")
    simulate.save_report("out/report.json", report, sim.save_every)

``trajectory_observable`` is the pure, differentiable counterpart for gradients through dynamics:
the time average of an observable over one Langevin trajectory with its noise fixed by a key, as a
function of the parameters (``jax.grad``), with ``jax.checkpoint`` over blocks of steps so that
reverse-mode memory does not grow with the steps::

    grad = jax.grad(lambda p: simulate.trajectory_observable(
        energy, p, x0, key, 1000, 0.002, 1.0, kT, masses, observable))(params)

An energy with its parameters bound (``functools.partial(model.energy, params)``, any
``energy(x (N, 3)) -> kJ/mol``) works too, with no call-time keywords, at one compilation per
parameter set.

With a neighbour list (large systems), pass ``neighbor_fn`` and an energy that takes it. There is
one format, jax-md's ``OrderedSparse`` (each pair i < j once; ``jaxcg.neighbors``):
``simulate.neighbor_list(cutoff, skin, box)`` builds it, and for a SchNet
``displacement, neighbor_fn = model.neighbor_list()`` builds the same with the model's cutoff:
``energy = lambda x, neighbor, params: model.energy_neighbors(params, x, neighbor, displacement)``.
An energy of your own reads the pairs with ``jaxcg.neighbors.pairs(neighbor, n_beads)``, which
refuses a list of another format.
"""

from jaxcg.simulate._differentiable import trajectory_observable
from jaxcg.simulate._files import TrajectoryWriter, load_replicas
from jaxcg.simulate._integrators import (
    CHECKPOINT_VERSION,
    ChunkRecord,
    SimulationState,
    Simulator,
    brownian,
    initial_positions,
    langevin,
    neighbor_list,
    nve,
)
from jaxcg.simulate._run import (
    RunReport,
    StoppedReplica,
    resume_state,
    run,
    save_checkpoint,
    save_report,
    stopped_replicas,
    trim_log,
)
from jaxcg.simulate._tempering import (
    ReplicaExchange,
    TemperingState,
    replica_exchange,
    resume_tempering,
    run_tempering,
    save_tempering_checkpoint,
    save_tempering_report,
)

__all__ = [
    "CHECKPOINT_VERSION",
    "ChunkRecord",
    "ReplicaExchange",
    "RunReport",
    "SimulationState",
    "Simulator",
    "StoppedReplica",
    "TemperingState",
    "TrajectoryWriter",
    "brownian",
    "initial_positions",
    "langevin",
    "load_replicas",
    "neighbor_list",
    "nve",
    "replica_exchange",
    "resume_state",
    "resume_tempering",
    "run",
    "run_tempering",
    "save_checkpoint",
    "save_report",
    "save_tempering_checkpoint",
    "save_tempering_report",
    "stopped_replicas",
    "trajectory_observable",
    "trim_log",
]
