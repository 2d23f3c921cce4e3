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

Units: positions nm, time ps, energies kJ/mol, masses amu (g/mol), friction 1/ps, temperature K;
with these, momenta are amu nm/ps and kinetic energies kJ/mol.

Example with a ``jaxcg.models`` model (any ``energy(x (N, 3)) -> kJ/mol`` works)::

    energy = functools.partial(model.energy, params)
    sim = simulate.langevin(energy, data.masses, data.temperature, dt=0.002, friction=1.0,
                            steps_per_chunk=1000, save_every=100)
    state = sim.init(key, simulate.initial_positions(data, 512, start_key))
    with simulate.TrajectoryWriter("out", data.topology, 512) as writer:
        state, report = simulate.run(sim, state, 100_000, writer=writer,
                                     log_path="out/log.csv", checkpoint_path="out/state.npz")
    simulate.save_report("out/report.json", report, sim.save_every)

With a neighbour list (large systems), pass ``neighbor_fn`` (e.g. from ``neighbor_list`` or
``SchNet.neighbor_list``) and an energy that takes it:
``energy = lambda x, neighbor: model.energy_neighbors(params, x, neighbor, displacement)``.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np

# jax-md is not clean under strict dtype promotion (it mixes int32 and float32): import and trace
# its code under standard promotion whatever the caller's setting.
with jax.numpy_dtype_promotion("standard"):
    from jax_md import partition, space
    from jax_md import simulate as jmd_simulate

from jaxcg.units import BOLTZMANN_KJ_PER_MOL_K, kT_from_temperature

Array = jax.Array


def _standard_promotion(fn: Callable) -> Callable:
    """``fn`` run (and traced) under standard dtype promotion, which jax-md needs."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.numpy_dtype_promotion("standard"):
            return fn(*args, **kwargs)

    return wrapped

EnergyFn = Callable[..., Array]

#: Version of the checkpoint layout written by ``save_checkpoint``.
CHECKPOINT_VERSION = 1


class SimulationState(NamedTuple):
    """State of R replicas (a PyTree; every leaf has a leading replica axis except ``step``).

    Attributes:
      integrator: the jax-md integrator state (``NVTLangevinState``, ``BrownianState`` or
        ``NVEState``) batched over replicas: position (R, N, 3) nm, momentum (R, N, 3) amu nm/ps,
        force (R, N, 3) kJ/mol/nm, mass (R, N, 1) amu, rng (R, 2).
      neighbor: a jax-md ``NeighborList`` batched over replicas, or None.
      alive: (R,) bool, False once a replica was stopped.
      stopped_at: (R,) int32, the step at which the replica was stopped (0: its starting frame was
        bad), -1 while alive. A stopped replica stays frozen at its last good state.
      step: () int32, steps done.
    """

    integrator: Any
    neighbor: Any
    alive: Array
    stopped_at: Array
    step: Array


class ChunkRecord(NamedTuple):
    """What one chunk of F saved frames produced.

    Attributes:
      positions: (F, R, N, 3) nm, the frames saved every ``save_every`` steps.
      potential_energy: (F, R) kJ/mol at those frames.
      temperature: (F, R) K, kinetic temperature (NaN for Brownian dynamics).
      neighbor_overflow: (R,) bool, True where the neighbour list overflowed in this chunk.
    """

    positions: Array
    potential_energy: Array
    temperature: Array
    neighbor_overflow: Array


class Simulator(NamedTuple):
    """Pure functions of a replica simulation (built by ``langevin``, ``brownian`` or ``nve``).

    Attributes:
      init: ``init(key, positions (R, N, 3) nm, neighbor=None) -> SimulationState``.
      run_chunk: jitted ``run_chunk(state) -> (state, ChunkRecord)``, ``steps_per_chunk`` steps.
      allocate_neighbors: ``allocate_neighbors(positions (R, N, 3), min_occupancy=0, exact=False)``
        -> a NeighborList batched over replicas, or None when no neighbour list is used.
      set_neighbors: ``set_neighbors(state, neighbor) -> state`` installs a (re-allocated)
        neighbour list and recomputes the forces kept in the state with it, or None.
      steps_per_chunk: steps per call of ``run_chunk``.
      save_every: steps between saved frames.
      dt: timestep in ps.
    """

    init: Callable[..., SimulationState]
    run_chunk: Callable[[SimulationState], tuple[SimulationState, ChunkRecord]]
    allocate_neighbors: Callable[..., Any] | None
    set_neighbors: Callable[[SimulationState, Any], SimulationState] | None
    steps_per_chunk: int
    save_every: int
    dt: float


# ----------------------------------------------------------------------------- builders


def langevin(
    energy_fn: EnergyFn,
    masses: np.ndarray,
    temperature: float,
    dt: float,
    friction: float,
    steps_per_chunk: int,
    save_every: int,
    *,
    shift_fn: Callable | None = None,
    neighbor_fn: partition.NeighborListFns | None = None,
    force_bound: float = 1.0e4,
) -> Simulator:
    """Langevin (BAOAB, jax-md ``nvt_langevin``) dynamics of R replicas.

    Args:
      energy_fn: ``energy_fn(positions (N, 3) nm) -> kJ/mol``, or with a neighbour list
        ``energy_fn(positions, neighbor=nbrs)``.
      masses: (N,) amu. temperature: K. dt: ps. friction: 1/ps.
      steps_per_chunk: steps per jitted chunk; a multiple of ``save_every``.
      shift_fn: jax-md shift function (default ``space.free()``).
      neighbor_fn: jax-md ``partition.neighbor_list`` functions (see ``neighbor_list``), or None.
      force_bound: kJ/mol/nm; a replica whose largest force component exceeds it is stopped.
    """
    _check_positive(temperature=temperature, dt=dt, friction=friction, force_bound=force_bound)
    shift = space.free()[1] if shift_fn is None else shift_fn
    init_fn, step_fn = jmd_simulate.nvt_langevin(
        energy_fn, shift, dt, kT_from_temperature(temperature), gamma=friction
    )
    return _make_simulator(
        energy_fn, init_fn, step_fn, masses, steps_per_chunk, save_every, dt, neighbor_fn,
        force_bound, has_momentum=True,
    )


def brownian(
    energy_fn: EnergyFn,
    masses: np.ndarray,
    temperature: float,
    dt: float,
    friction: float,
    steps_per_chunk: int,
    save_every: int,
    *,
    shift_fn: Callable | None = None,
    neighbor_fn: partition.NeighborListFns | None = None,
    force_bound: float = 1.0e4,
) -> Simulator:
    """Overdamped Brownian (jax-md ``brownian``) dynamics of R replicas.

    The diffusion coefficient of bead i is kT / (masses[i] * friction) nm²/ps. Positions are
    checked every step; forces (which jax-md's Brownian state does not keep) at saved frames.
    Arguments as for ``langevin``.
    """
    _check_positive(temperature=temperature, dt=dt, friction=friction, force_bound=force_bound)
    shift = space.free()[1] if shift_fn is None else shift_fn
    init_fn, step_fn = jmd_simulate.brownian(
        energy_fn, shift, dt, kT_from_temperature(temperature), gamma=friction
    )
    return _make_simulator(
        energy_fn, init_fn, step_fn, masses, steps_per_chunk, save_every, dt, neighbor_fn,
        force_bound, has_momentum=False,
    )


def nve(
    energy_fn: EnergyFn,
    masses: np.ndarray,
    temperature: float,
    dt: float,
    steps_per_chunk: int,
    save_every: int,
    *,
    shift_fn: Callable | None = None,
    neighbor_fn: partition.NeighborListFns | None = None,
    force_bound: float = 1.0e4,
) -> Simulator:
    """Velocity-Verlet (jax-md ``nve``) dynamics; ``temperature`` (K) draws the initial momenta."""
    _check_positive(temperature=temperature, dt=dt, force_bound=force_bound)
    shift = space.free()[1] if shift_fn is None else shift_fn
    kT = kT_from_temperature(temperature)
    nve_init, step_fn = jmd_simulate.nve(energy_fn, shift, dt)

    def init_fn(key, positions, mass, **kwargs):
        return nve_init(key, positions, kT, mass=mass, **kwargs)

    return _make_simulator(
        energy_fn, init_fn, step_fn, masses, steps_per_chunk, save_every, dt, neighbor_fn,
        force_bound, has_momentum=True,
    )


@_standard_promotion
def neighbor_list(
    cutoff: float,
    skin: float = 0.2,
    box: float | np.ndarray | None = None,
    capacity_multiplier: float = 1.25,
) -> tuple[Callable, Callable, partition.NeighborListFns]:
    """Displacement, shift and jax-md neighbour-list functions for free space or a periodic box.

    Args:
      cutoff: nm, the model's interaction cutoff. skin: nm, the list holds pairs within
        cutoff + skin and is rebuilt once a bead moved more than skin / 2.
      box: None for free space, else the periodic box side(s) in nm (scalar or (3,)).
      capacity_multiplier: spare room allocated on top of the current occupancy.
    """
    _check_positive(cutoff=cutoff, skin=skin)
    if box is None:
        displacement, shift = space.free()
        nbr_box, disable_cell_list = 1.0, True
    else:
        displacement, shift = space.periodic(jnp.asarray(box, dtype=jnp.float32))
        nbr_box, disable_cell_list = jnp.asarray(box, dtype=jnp.float32), False
    neighbor_fn = partition.neighbor_list(
        displacement, nbr_box, cutoff, dr_threshold=skin, capacity_multiplier=capacity_multiplier,
        disable_cell_list=disable_cell_list, format=partition.NeighborListFormat.Dense,
    )
    return displacement, shift, neighbor_fn


def initial_positions(data: Any, n_replicas: int, key: Array) -> np.ndarray:
    """Starting frames (R, N, 3) nm drawn from the training data ``data``: a ``CGData`` or
    positions (T, N, 3) nm. Without replacement where ``n_replicas <= T``, else with.
    """
    if int(n_replicas) < 1:
        raise ValueError(f"n_replicas must be a positive integer, got {n_replicas}")
    positions = np.asarray(getattr(data, "positions", data))
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise ValueError(f"data positions must have shape (T, N, 3), got {positions.shape}")
    replace = n_replicas > positions.shape[0]
    index = jax.random.choice(key, positions.shape[0], (int(n_replicas),), replace=replace)
    return positions[np.asarray(index)].astype(np.float32)


# ----------------------------------------------------------------------------- the jitted core


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _make_simulator(
    energy_fn, init_fn, step_fn, masses, steps_per_chunk, save_every, dt, neighbor_fn,
    force_bound, has_momentum,
) -> Simulator:
    masses = jnp.asarray(masses, dtype=jnp.float32)
    if masses.ndim != 1 or not bool(jnp.all(masses > 0)):
        raise ValueError(f"masses must be a (N,) array of positive amu, got shape {masses.shape}")
    if save_every < 1 or steps_per_chunk < 1 or steps_per_chunk % save_every:
        raise ValueError(
            f"steps_per_chunk ({steps_per_chunk}) must be a positive multiple of save_every "
            f"({save_every})"
        )
    n_beads = masses.shape[0]
    n_saves = steps_per_chunk // save_every
    use_nbrs = neighbor_fn is not None
    force_fn = jax.grad(lambda r, **kw: -energy_fn(r, **kw))

    def kwargs_of(nbrs):
        return {"neighbor": nbrs} if use_nbrs else {}

    def init(key: Array, positions: Array, neighbor: Any = None) -> SimulationState:
        positions = jnp.asarray(positions, dtype=jnp.float32)
        if positions.ndim != 3 or positions.shape[1:] != (n_beads, 3):
            raise ValueError(
                f"positions must have shape (R, {n_beads}, 3), got {positions.shape}"
            )
        if use_nbrs:
            neighbor = allocate(positions) if neighbor is None else _fitted(neighbor, positions)
        return init_all(key, positions, neighbor)

    @jax.jit
    def init_all(key: Array, positions: Array, neighbor: Any) -> SimulationState:
        keys = jax.random.split(key, positions.shape[0])
        states = jax.vmap(lambda k, r, nb: init_fn(k, r, mass=masses, **kwargs_of(nb)))(
            keys, positions, neighbor
        )
        ok = jax.vmap(lambda s, nb: healthy(s, nb, True))(states, neighbor)
        return SimulationState(
            states, neighbor, ok, jnp.where(ok, -1, 0).astype(jnp.int32), jnp.zeros((), jnp.int32)
        )

    refit_all = jax.jit(jax.vmap(lambda r, nb: nb.update(r)))

    def _fitted(neighbor, positions):
        """``neighbor`` updated to ``positions``, re-allocated larger if it overflows there."""
        updated = refit_all(positions, neighbor)
        if bool(jnp.any(updated.did_buffer_overflow != 0)):
            return allocate(positions, min_occupancy=neighbor.max_occupancy + 1)
        return updated

    forces_all = jax.jit(jax.vmap(lambda r, nb: force_fn(r, neighbor=nb)))

    def set_neighbors(sim: SimulationState, neighbor: Any) -> SimulationState:
        positions = sim.integrator.position
        neighbor = _fitted(neighbor, positions)
        integrator = sim.integrator
        if has_momentum:
            integrator = integrator.set(force=forces_all(positions, neighbor))
        return sim._replace(integrator=integrator, neighbor=neighbor)

    def healthy(state, nbrs, check_force):
        ok = jnp.all(jnp.isfinite(state.position))
        if check_force:
            force = state.force if has_momentum else force_fn(state.position, **kwargs_of(nbrs))
            ok &= jnp.all(jnp.isfinite(force)) & (jnp.max(jnp.abs(force)) < force_bound)
        return ok

    def replica_step(state, nbrs, check_force):
        if use_nbrs:
            nbrs = nbrs.update(state.position)
        new = step_fn(state, **kwargs_of(nbrs))
        ok = healthy(new, nbrs, check_force)
        overflow = (nbrs.did_buffer_overflow != 0) if use_nbrs else jnp.zeros((), bool)
        return new, nbrs, ok, overflow

    def select(mask, new, old):
        def pick(a, b):
            return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

        return jax.tree_util.tree_map(pick, new, old)

    def one_step(carry, check_force):
        sim, overflow = carry
        new, nbrs, ok, over = jax.vmap(lambda s, nb: replica_step(s, nb, check_force))(
            sim.integrator, sim.neighbor
        )
        step = sim.step + 1
        keep = sim.alive & ok
        stopped_at = jnp.where(sim.alive & ~ok, step, sim.stopped_at)
        integrator = select(keep, new, sim.integrator)
        neighbor = select(keep, nbrs, sim.neighbor) if use_nbrs else None
        sim = SimulationState(integrator, neighbor, keep, stopped_at, step)
        return (sim, overflow | (over & sim.alive)), None

    def observe(sim):
        def per_replica(state, nbrs):
            energy = energy_fn(state.position, **kwargs_of(nbrs))
            if has_momentum:
                ke2 = jnp.sum(state.momentum**2 / state.mass)
                temp = ke2 / (3 * n_beads * BOLTZMANN_KJ_PER_MOL_K)
            else:
                temp = jnp.full((), jnp.nan, energy.dtype)
            return energy, temp

        energy, temp = jax.vmap(per_replica)(sim.integrator, sim.neighbor)
        return sim.integrator.position, energy, temp

    def save_block(carry, _):
        # Langevin/NVE keep the force in the state and check it every step: one step body.
        # Brownian checks forces only at the saved step, which is traced separately.
        n_plain = save_every if has_momentum else save_every - 1
        if n_plain:
            carry, _ = jax.lax.scan(
                lambda c, _: one_step(c, has_momentum), carry, None, length=n_plain
            )
        if not has_momentum:
            carry, _ = one_step(carry, True)
        return carry, observe(carry[0])

    @jax.jit
    def run_chunk(sim: SimulationState) -> tuple[SimulationState, ChunkRecord]:
        overflow = jnp.zeros(sim.alive.shape, bool)
        (sim, overflow), (pos, energy, temp) = jax.lax.scan(
            save_block, (sim, overflow), None, length=n_saves
        )
        return sim, ChunkRecord(pos, energy, temp, overflow)

    update_all = jax.jit(jax.vmap(lambda r, nb: neighbor_fn.update(r, nb), in_axes=(0, None)))

    def allocate(positions: Array, min_occupancy: int = 0, exact: bool = False) -> Any:
        """A list for every replica, all of one capacity (at least ``min_occupancy``, exactly it
        with ``exact``) that fits every replica: sized on replica 0, grown until none overflows."""
        positions = jnp.asarray(positions, dtype=jnp.float32)
        template = neighbor_fn.allocate(positions[0])
        extra = int(min_occupancy) - template.max_occupancy
        if exact:
            template = neighbor_fn.allocate(positions[0], extra_capacity=extra)
            batched = update_all(positions, template)
            if template.max_occupancy != min_occupancy or bool(
                jnp.any(batched.did_buffer_overflow != 0)
            ):
                raise ValueError(
                    f"cannot allocate a neighbour list of capacity {min_occupancy} that fits "
                    f"these positions (got {template.max_occupancy})"
                )
            return batched
        extra = max(0, extra)
        while True:
            if extra:
                template = neighbor_fn.allocate(positions[0], extra_capacity=extra)
            batched = update_all(positions, template)
            if not bool(jnp.any(batched.did_buffer_overflow != 0)):
                return batched
            extra = max(2 * extra, template.max_occupancy // 2 + 1)

    return Simulator(
        _standard_promotion(init), _standard_promotion(run_chunk),
        _standard_promotion(allocate) if use_nbrs else None,
        _standard_promotion(set_neighbors) if use_nbrs else None, int(steps_per_chunk), int(save_every),
        float(dt),
    )


# ----------------------------------------------------------------------------- host loop and files


class StoppedReplica(NamedTuple):
    """A replica stopped for NaN/inf or a force above the bound: its index and the step."""

    replica: int
    step: int


class RunReport(NamedTuple):
    """Summary of ``run``: steps done, replicas stopped, neighbour re-allocations, wall time (s)."""

    steps: int
    stopped: list[StoppedReplica]
    neighbor_reallocations: int
    wall_time: float


def stopped_replicas(state: SimulationState) -> list[StoppedReplica]:
    """The replicas of ``state`` that were stopped, with the step at which each was stopped."""
    stopped_at = np.asarray(state.stopped_at)
    return [StoppedReplica(int(i), int(stopped_at[i])) for i in np.flatnonzero(stopped_at >= 0)]


def run(
    simulator: Simulator,
    state: SimulationState,
    n_steps: int,
    *,
    writer: TrajectoryWriter | None = None,
    log_path: str | os.PathLike | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    max_reallocations: int = 10,
) -> tuple[SimulationState, RunReport]:
    """Advance ``state`` by ``n_steps`` (rounded up to whole chunks) on the host, chunk by chunk.

    After each chunk: a neighbour-list overflow re-allocates the list (larger) and redoes the
    chunk from its start; then frames go to ``writer``, one CSV row to ``log_path`` (step, time
    ps, replicas alive, mean/std potential energy kJ/mol, mean temperature K, steps/s), and the
    state to ``checkpoint_path`` (npz). ``callback(steps_done_this_run, info)`` is called last.
    """
    if int(n_steps) < 0:
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps}")
    n_chunks = -(-int(n_steps) // simulator.steps_per_chunk)
    started, reallocations = time.perf_counter(), 0
    for chunk in range(n_chunks):
        tick = time.perf_counter()
        for attempt in range(max_reallocations + 1):
            new_state, record = simulator.run_chunk(state)
            overflow = np.asarray(record.neighbor_overflow)
            if not overflow.any():
                break
            if attempt == max_reallocations:
                raise RuntimeError(
                    f"neighbour list still overflows after {max_reallocations} re-allocations "
                    f"(replicas {np.flatnonzero(overflow)[:5].tolist()})"
                )
            state = _reallocated(simulator, state, new_state, attempt)
            reallocations += 1
        state = new_state
        positions = np.asarray(record.positions)
        elapsed = time.perf_counter() - tick
        step = int(state.step)
        if writer is not None:
            writer.write(positions)
        info = _chunk_info(record, state, step, simulator.dt, elapsed, simulator.steps_per_chunk)
        if log_path is not None:
            _append_log(Path(log_path), info)
        if checkpoint_path is not None:
            frames = writer.n_frames if writer is not None else 0
            save_checkpoint(checkpoint_path, state, frames_written=frames)
        if callback is not None:
            callback((chunk + 1) * simulator.steps_per_chunk, info)
    report = RunReport(
        int(state.step), stopped_replicas(state), reallocations, time.perf_counter() - started
    )
    return state, report


def _reallocated(simulator, state, failed_state, attempt) -> SimulationState:
    """``state`` with a larger neighbour list, sized from the chunk's start and failed end."""
    start, end = state.integrator.position, failed_state.integrator.position
    both = jnp.concatenate([start, jnp.where(jnp.isfinite(end), end, start)])
    grown = int(np.ceil(state.neighbor.max_occupancy * 1.5 ** (attempt + 1)))
    nbrs = simulator.allocate_neighbors(both, min_occupancy=grown)
    n_replicas = start.shape[0]
    return simulator.set_neighbors(state, jax.tree_util.tree_map(lambda a: a[:n_replicas], nbrs))


def _chunk_info(record, state, step, dt, elapsed, steps_per_chunk) -> dict[str, float]:
    alive = np.asarray(state.alive)
    energy = np.asarray(record.potential_energy)[:, alive]
    temp = np.asarray(record.temperature)[:, alive]
    finite = energy.size > 0
    return {
        "step": step,
        "time_ps": step * dt,
        "alive": int(alive.sum()),
        "potential_mean": float(energy.mean()) if finite else float("nan"),
        "potential_std": float(energy.std()) if finite else float("nan"),
        "temperature_mean": float(temp.mean()) if finite else float("nan"),
        "steps_per_s": steps_per_chunk / max(elapsed, 1e-12),
    }


def _append_log(path: Path, info: dict[str, float]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(info))
        if new:
            writer.writeheader()
        writer.writerow(info)


def save_checkpoint(
    path: str | os.PathLike, state: SimulationState, frames_written: int = 0
) -> Path:
    """Write ``state`` (integrator arrays incl. RNG keys, neighbour list, step) to an npz file.

    Written to a temporary file first and renamed, so a crash never leaves half a checkpoint.
    """
    path = Path(path)
    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"leaf_{i:03d}": np.asarray(_key_data(leaf)) for i, leaf in enumerate(leaves)}
    occupancy = -1 if state.neighbor is None else state.neighbor.max_occupancy
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp, **arrays, version=CHECKPOINT_VERSION, frames_written=frames_written,
        max_occupancy=occupancy, n_leaves=len(leaves),
    )
    os.replace(tmp, path)
    return path


def resume_state(
    simulator: Simulator, path: str | os.PathLike
) -> tuple[SimulationState, int]:
    """The state saved by ``save_checkpoint`` (for ``simulator``) and the frames written by then."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    with np.load(path) as archive:
        version = int(archive["version"])
        if version != CHECKPOINT_VERSION:
            raise ValueError(
                f"checkpoint {str(path)!r} has version {version}, expected {CHECKPOINT_VERSION}"
            )
        n_leaves = int(archive["n_leaves"])
        leaves = [archive[f"leaf_{i:03d}"] for i in range(n_leaves)]
        frames, occupancy = int(archive["frames_written"]), int(archive["max_occupancy"])
    positions = jnp.asarray(leaves[0])
    neighbor = None
    if simulator.allocate_neighbors is not None:
        neighbor = simulator.allocate_neighbors(positions, min_occupancy=occupancy, exact=True)
    template = simulator.init(jax.random.key(0), positions, neighbor=neighbor)
    treedef = jax.tree_util.tree_structure(template)
    if treedef.num_leaves != n_leaves:
        raise ValueError(
            f"checkpoint {str(path)!r} holds {n_leaves} arrays but this simulator's state has "
            f"{treedef.num_leaves}; was it written by another integrator?"
        )
    like = jax.tree_util.tree_leaves(template)
    for stored, want in zip(leaves, like, strict=True):
        if stored.shape != _key_data(want).shape:
            raise ValueError(
                f"checkpoint {str(path)!r} has an array of shape {stored.shape} where the state "
                f"needs {want.shape}"
            )
    restored = [_like(s, w) for s, w in zip(leaves, like, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, restored), frames


def save_report(
    path: str | os.PathLike, report: RunReport, save_every: int, extra: dict | None = None
) -> Path:
    """Write ``report`` as JSON; each stopped replica gets ``stopped_frame``, the number of its
    frames saved before it was stopped (frames are saved at steps save_every, 2 save_every, ...)."""
    path = Path(path)
    stopped = [
        {"replica": s.replica, "step": s.step, "stopped_frame": max(s.step - 1, 0) // save_every}
        for s in report.stopped
    ]
    body = {
        "steps": report.steps, "stopped": stopped,
        "neighbor_reallocations": report.neighbor_reallocations,
        "wall_time_s": report.wall_time, **(extra or {}),
    }
    path.write_text(json.dumps(body, indent=2))
    return path


def _is_key(leaf: Any) -> bool:
    return jnp.issubdtype(getattr(leaf, "dtype", np.float32), jax.dtypes.prng_key)


def _key_data(leaf: Any) -> Any:
    return jax.random.key_data(leaf) if _is_key(leaf) else leaf


def _like(stored: np.ndarray, want: Any) -> Any:
    if _is_key(want):
        return jax.random.wrap_key_data(jnp.asarray(stored), impl=jax.random.key_impl(want))
    return jnp.asarray(stored, dtype=want.dtype)


class TrajectoryWriter:
    """Frames of R replicas to one DCD file, readable by mdtraj.

    Frame t of ``trajectory.dcd`` holds all replicas side by side (R * N atoms, replica r at atoms
    r*N..(r+1)*N-1); ``topology.pdb`` is one replica's CG topology and ``replicas.pdb`` the R-copy
    topology that matches the DCD. ``load_replicas`` gives one ``mdtraj.Trajectory`` per replica.
    DCD cannot be appended to, so the file stays open while the writer lives; ``resume`` rewrites
    the first ``n_frames`` frames of an existing file and continues after them.
    """

    def __init__(
        self, folder: str | os.PathLike, topology: md.Topology, n_replicas: int,
        reference_positions: np.ndarray | None = None, resume_frames: int | None = None,
    ) -> None:
        from mdtraj.formats import DCDTrajectoryFile

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.n_replicas, self.n_beads = int(n_replicas), topology.n_atoms
        path = self.folder / "trajectory.dcd"
        old = None
        if resume_frames is not None and resume_frames > 0:
            if not path.exists():
                raise FileNotFoundError(f"cannot resume: {str(path)!r} does not exist")
            with DCDTrajectoryFile(str(path)) as handle:
                old = handle.read()[0][:resume_frames]
            if old.shape[0] != resume_frames:
                raise ValueError(
                    f"{str(path)!r} holds {old.shape[0]} frames, the checkpoint expects "
                    f"{resume_frames}"
                )
        else:
            xyz = np.zeros((1, self.n_beads, 3), np.float32)
            if reference_positions is not None:
                xyz = np.asarray(reference_positions, np.float32).reshape(1, self.n_beads, 3)
            md.Trajectory(xyz, topology).save_pdb(str(self.folder / "topology.pdb"))
            replicas = _replicated_topology(topology, self.n_replicas)
            md.Trajectory(np.tile(xyz, (1, self.n_replicas, 1)), replicas).save_pdb(
                str(self.folder / "replicas.pdb")
            )
        self._handle = DCDTrajectoryFile(str(path), "w", force_overwrite=True)
        self.n_frames = 0
        if old is not None:
            self._handle.write(old)
            self.n_frames = old.shape[0]

    def write(self, positions: np.ndarray) -> None:
        """Append frames ``positions`` (F, R, N, 3) nm."""
        positions = np.asarray(positions, np.float32)
        if positions.shape[1:] != (self.n_replicas, self.n_beads, 3):
            raise ValueError(
                f"positions must have shape (F, {self.n_replicas}, {self.n_beads}, 3), "
                f"got {positions.shape}"
            )
        flat = positions.reshape(positions.shape[0], -1, 3) * 10.0  # DCD stores Angstrom
        self._handle.write(flat)
        self.n_frames += positions.shape[0]

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _replicated_topology(topology: md.Topology, n_replicas: int) -> md.Topology:
    out = md.Topology()
    for _ in range(n_replicas):
        chain = out.add_chain()
        for residue in topology.residues:
            res = out.add_residue(residue.name, chain, residue.resSeq)
            for atom in residue.atoms:
                out.add_atom(atom.name, atom.element, res)
    return out


def load_replicas(folder: str | os.PathLike, trim_stopped: bool = True) -> list[md.Trajectory]:
    """One ``mdtraj.Trajectory`` per replica from a folder written by ``TrajectoryWriter``.

    With ``trim_stopped``, frames saved after a replica was stopped (listed in ``report.json``
    next to the trajectory, frame index ``stopped_frame``) are dropped.
    """
    folder = Path(folder)
    topology = md.load_topology(str(folder / "topology.pdb"))
    replicas = md.load_topology(str(folder / "replicas.pdb"))
    traj = md.load_dcd(str(folder / "trajectory.dcd"), top=replicas)
    n = topology.n_atoms
    xyz = traj.xyz.reshape(traj.n_frames, -1, n, 3)
    cut = {}
    report = folder / "report.json"
    if trim_stopped and report.exists():
        for item in json.loads(report.read_text()).get("stopped", []):
            cut[int(item["replica"])] = int(item["stopped_frame"])
    return [
        md.Trajectory(xyz[: cut.get(r, xyz.shape[0]), r], topology) for r in range(xyz.shape[1])
    ]
