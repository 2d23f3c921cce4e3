"""Integrators: jax-md Langevin, Brownian and NVE for many replicas, with per-replica stops."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# jax-md is not clean under strict dtype promotion (it mixes int32 and float32): import and trace
# its code under standard promotion whatever the caller's setting.
with jax.numpy_dtype_promotion("standard"):
    from jax_md import partition, space
    from jax_md import simulate as jmd_simulate

from jaxcg.neighbors import (
    neighbor_list,  # noqa: F401  (re-exported by jaxcg.simulate)
    with_capacity,
)
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

    Call-time arguments, jax-md's convention: every keyword given to ``init``, ``run_chunk`` or
    ``set_neighbors`` other than ``kT`` is passed on to ``energy_fn`` (e.g. ``params=``, a PyTree
    of model parameters), and ``kT`` (kJ/mol; a scalar, or an (R,) array with one value per
    replica as replica exchange uses) replaces the builder's temperature for that call
    (Langevin and Brownian; for NVE only in ``init``, where it draws the momenta). They are
    arguments of the jitted chunk, not constants in it: one compiled chunk serves every value of
    the same structure, shapes and dtypes (a new parameter set or temperature does not recompile).

    Attributes:
      init: ``init(key, positions (R, N, 3) nm, neighbor=None, **kwargs) -> SimulationState``.
      run_chunk: ``run_chunk(state, **kwargs) -> (state, ChunkRecord)``, ``steps_per_chunk``
        steps in one jitted call (on one device, or split over ``replica_devices``).
      allocate_neighbors: ``allocate_neighbors(positions (R, N, 3), min_occupancy=0, exact=False)``
        -> a NeighborList batched over replicas, or None when no neighbour list is used.
      set_neighbors: ``set_neighbors(state, neighbor, **kwargs) -> state`` installs a
        (re-allocated) neighbour list and recomputes the forces kept in the state with it, or None.
      steps_per_chunk: steps per call of ``run_chunk``.
      save_every: steps between saved frames.
      dt: timestep in ps.
      dtype: the float dtype of positions, momenta, masses and kT in the state (the builder's
        ``dtype``).
    """

    init: Callable[..., SimulationState]
    run_chunk: Callable[[SimulationState], tuple[SimulationState, ChunkRecord]]
    allocate_neighbors: Callable[..., Any] | None
    set_neighbors: Callable[[SimulationState, Any], SimulationState] | None
    steps_per_chunk: int
    save_every: int
    dt: float
    dtype: Any = jnp.float32

    def bind(self, **kwargs: Any) -> Simulator:
        """This simulator with call-time keywords fixed (``params=...``, ``kT=...``), for callers
        that use the plain signatures (``run``, ``resume_state``). The compiled chunk is shared:
        ``sim.bind(params=a)`` and ``sim.bind(params=b)`` run the same executable."""
        return self._replace(
            init=functools.partial(self.init, **kwargs),
            run_chunk=functools.partial(self.run_chunk, **kwargs),
            set_neighbors=None if self.set_neighbors is None else functools.partial(self.set_neighbors, **kwargs),
        )


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
    replica_block: int | str | None = "auto",
    replica_devices: Sequence[jax.Device] | str | None = "auto",
    dtype: Any = jnp.float32,
) -> Simulator:
    """Langevin (BAOAB, jax-md ``nvt_langevin``) dynamics of R replicas.

    Args:
      energy_fn: ``energy_fn(positions (N, 3) nm, **kwargs) -> kJ/mol``; kwargs are
        ``neighbor=nbrs`` with a neighbour list, and the keywords given to ``init``/``run_chunk``
        (e.g. ``energy_fn = lambda x, params: model.energy(params, x)`` with
        ``run_chunk(state, params=params)``), none for an energy with its parameters bound.
      masses: (N,) amu. temperature: K. dt: ps. friction: 1/ps.
      steps_per_chunk: steps per jitted chunk; a multiple of ``save_every``.
      shift_fn: jax-md shift function (default ``space.free()``).
      neighbor_fn: jax-md ``partition.neighbor_list`` functions (see ``neighbor_list``), or None.
      force_bound: kJ/mol/nm; a replica whose largest force component exceeds it is stopped.
      replica_block: step the replicas in blocks of this many (vmap within a block, a loop over
        blocks), None for all at once. Blocks keep a step's working set in the CPU's caches
        (``benchmarks/bench_simulate.py`` measures it); "auto" picks 64 on one CPU device, 16 per
        device when the replicas are split over CPU devices, None on accelerators. Results do not
        depend on it.
      replica_devices: split the replicas over these devices (``shard_map``; each device steps
        its share, in blocks), None for the default device only. "auto" uses every local device
        when there are several and they divide R (e.g. the host devices of
        ``jaxcg.devices.use_host_devices`` on a multi-core CPU), else the default device.
        Results do not depend on it.
      dtype: float dtype of the state (positions, momenta, masses, kT): float32 (default), or
        float64 with 64-bit JAX enabled (``jax.config.update("jax_enable_x64", True)``); the
        energy should compute in the same dtype.
    """
    return _stochastic(
        jmd_simulate.nvt_langevin, True, energy_fn, masses, temperature, dt, friction, steps_per_chunk,
        save_every, shift_fn, neighbor_fn, force_bound, replica_block, replica_devices, dtype,
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
    replica_block: int | str | None = "auto",
    replica_devices: Sequence[jax.Device] | str | None = "auto",
    dtype: Any = jnp.float32,
) -> Simulator:
    """Overdamped Brownian (jax-md ``brownian``) dynamics of R replicas.

    The diffusion coefficient of bead i is kT / (masses[i] * friction) nm²/ps. Positions are
    checked every step; forces (which jax-md's Brownian state does not keep) at saved frames.
    Arguments as for ``langevin``.
    """
    return _stochastic(
        jmd_simulate.brownian, False, energy_fn, masses, temperature, dt, friction, steps_per_chunk,
        save_every, shift_fn, neighbor_fn, force_bound, replica_block, replica_devices, dtype,
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
    replica_block: int | str | None = "auto",
    replica_devices: Sequence[jax.Device] | str | None = "auto",
    dtype: Any = jnp.float32,
) -> Simulator:
    """Velocity-Verlet (jax-md ``nve``) dynamics; ``temperature`` (K) draws the initial momenta.
    Other arguments as for ``langevin``."""
    _check_positive(temperature=temperature, dt=dt, force_bound=force_bound)
    shift = space.free()[1] if shift_fn is None else shift_fn
    kT = kT_from_temperature(temperature)
    nve_init, step_fn = jmd_simulate.nve(energy_fn, shift, dt)

    def init_fn(key, positions, mass, kT=kT, **kwargs):
        return nve_init(key, positions, kT, mass=mass, **kwargs)

    return _make_simulator(
        energy_fn, init_fn, step_fn, masses, steps_per_chunk, save_every, dt, neighbor_fn,
        force_bound, has_momentum=True, thermostat=False, replica_block=replica_block,
        replica_devices=replica_devices, dtype=dtype,
    )


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


def _stochastic(
    jmd_builder, has_momentum, energy_fn, masses, temperature, dt, friction, steps_per_chunk, save_every,
    shift_fn, neighbor_fn, force_bound, replica_block, replica_devices, dtype,
) -> Simulator:
    """A Simulator from a jax-md thermostatted integrator builder (``nvt_langevin``, ``brownian``)."""
    _check_positive(temperature=temperature, dt=dt, friction=friction, force_bound=force_bound)
    shift = space.free()[1] if shift_fn is None else shift_fn
    init_fn, step_fn = jmd_builder(energy_fn, shift, dt, kT_from_temperature(temperature), gamma=friction)
    if not has_momentum:  # jax-md's Brownian init takes no energy keywords and no kT
        brownian_init = init_fn

        def init_fn(key, positions, mass, **kwargs):
            return brownian_init(key, positions, mass)

    return _make_simulator(
        energy_fn, init_fn, step_fn, masses, steps_per_chunk, save_every, dt, neighbor_fn,
        force_bound, has_momentum=has_momentum, thermostat=True, replica_block=replica_block,
        replica_devices=replica_devices, dtype=dtype,
    )


def _replica_devices(replica_devices: Sequence[jax.Device] | str | None, n_replicas: int) -> list[jax.Device] | None:
    """The devices to split ``n_replicas`` over, or None for the default device alone."""
    if replica_devices is None:
        return None
    if replica_devices == "auto":
        devices = jax.local_devices()
        return devices if 1 < len(devices) and n_replicas % len(devices) == 0 else None
    if isinstance(replica_devices, str):
        raise ValueError(f"replica_devices must be 'auto', None or a sequence of devices, got {replica_devices!r}")
    devices = list(replica_devices)
    if not devices or n_replicas % len(devices):
        raise ValueError(f"{n_replicas} replicas cannot be split evenly over {len(devices)} devices")
    return devices if len(devices) > 1 else None


def _replica_block(replica_block: int | str | None, split: bool = False) -> int | None:
    """Replicas per vmapped block; ``split``: the replicas are spread over several devices."""
    if replica_block == "auto":
        if jax.default_backend() != "cpu":
            return None
        return 16 if split else 64
    if replica_block is None:
        return None
    if isinstance(replica_block, bool) or not isinstance(replica_block, int | np.integer) or replica_block < 1:
        raise ValueError(f"replica_block must be a positive int, None or 'auto', got {replica_block!r}")
    return int(replica_block)


def _float_dtype(dtype: Any) -> np.dtype:
    """``dtype`` as a numpy float dtype; float64 needs 64-bit JAX, else a clear error."""
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if dtype == np.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError("dtype float64 needs 64-bit JAX: jax.config.update('jax_enable_x64', True) "
                         "(or the jax.enable_x64 context) before building the simulator")
    return dtype


def _call_kwargs(kwargs: dict[str, Any], thermostat: bool, where: str, dtype: Any) -> tuple[dict, dict]:
    """Split call-time keywords into (energy keywords, integrator keywords {"kT": ...})."""
    energy_kwargs = dict(kwargs)
    for reserved in ("neighbor", "dt"):
        if reserved in energy_kwargs:
            raise ValueError(
                f"{where}: {reserved!r} cannot be given at call time (the simulator manages the "
                "neighbour list; dt is fixed when it is built)"
            )
    if "kT" not in energy_kwargs:
        return energy_kwargs, {}
    kT = energy_kwargs.pop("kT")
    if not thermostat:
        raise ValueError(f"{where}: kT cannot be given to NVE dynamics (no thermostat); give it to init")
    return energy_kwargs, {"kT": jnp.asarray(kT, dtype=dtype)}


def _per_replica(integrator_kwargs: dict, n_replicas: int, where: str) -> dict:
    """``integrator_kwargs`` with kT broadcast to one value per replica, (R,) kJ/mol: a scalar
    gives every replica that temperature, an (R,) array one each (replica exchange)."""
    if "kT" not in integrator_kwargs:
        return integrator_kwargs
    kT = integrator_kwargs["kT"]
    if kT.shape not in ((), (n_replicas,)):
        raise ValueError(
            f"{where}: kT must be a scalar or one value per replica, shape ({n_replicas},), got "
            f"shape {kT.shape}"
        )
    return {**integrator_kwargs, "kT": jnp.broadcast_to(kT, (n_replicas,))}


def _state_shardings(sim: SimulationState, sharding: SimulationState) -> SimulationState:
    """A sharding for every leaf of ``sim``: its field's sharding in ``sharding``."""
    return SimulationState(*(
        None if field is None else jax.tree.map(lambda _, s=s: s, field)
        for field, s in zip(sim, sharding, strict=True)
    ))


def _make_simulator(
    energy_fn, init_fn, step_fn, masses, steps_per_chunk, save_every, dt, neighbor_fn,
    force_bound, has_momentum, thermostat, replica_block="auto", replica_devices="auto", dtype=jnp.float32,
) -> Simulator:
    dtype = _float_dtype(dtype)
    masses = jnp.asarray(masses, dtype=dtype)
    if masses.ndim != 1 or not bool(jnp.all(masses > 0)):
        raise ValueError(f"masses must be a (N,) array of positive amu, got shape {masses.shape}")
    if save_every < 1 or steps_per_chunk < 1 or steps_per_chunk % save_every:
        raise ValueError(
            f"steps_per_chunk ({steps_per_chunk}) must be a positive multiple of save_every "
            f"({save_every})"
        )
    n_beads = masses.shape[0]
    n_saves = steps_per_chunk // save_every
    _replica_block(replica_block)  # checked now; resolved per device layout when traced
    if isinstance(replica_devices, str) and replica_devices != "auto":
        raise ValueError(f"replica_devices must be 'auto', None or a sequence of devices, got {replica_devices!r}")
    use_nbrs = neighbor_fn is not None
    force_fn = jax.grad(lambda r, **kw: -energy_fn(r, **kw))

    def kwargs_of(nbrs, energy_kwargs):
        return {"neighbor": nbrs, **energy_kwargs} if use_nbrs else dict(energy_kwargs)

    def init(key: Array, positions: Array, neighbor: Any = None, **kwargs: Any) -> SimulationState:
        energy_kwargs, integrator_kwargs = _call_kwargs(kwargs, True, "init", dtype)
        positions = jnp.asarray(positions, dtype=dtype)
        if positions.ndim != 3 or positions.shape[1:] != (n_beads, 3):
            raise ValueError(
                f"positions must have shape (R, {n_beads}, 3), got {positions.shape}"
            )
        if use_nbrs:
            neighbor = allocate(positions) if neighbor is None else _fitted(neighbor, positions)
        integrator_kwargs = _per_replica(integrator_kwargs, positions.shape[0], "init")
        return init_all(key, positions, neighbor, energy_kwargs, integrator_kwargs)

    @jax.jit
    def init_all(key: Array, positions: Array, neighbor: Any, energy_kwargs: dict, integrator_kwargs: dict) -> SimulationState:
        keys = jax.random.split(key, positions.shape[0])
        states = jax.vmap(
            lambda k, r, nb, ikw: init_fn(k, r, mass=masses, **kwargs_of(nb, energy_kwargs), **ikw)
        )(keys, positions, neighbor, integrator_kwargs)
        ok = jax.vmap(lambda s, nb: healthy(s, nb, True, energy_kwargs))(states, neighbor)
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

    forces_all = jax.jit(jax.vmap(lambda r, nb, kw: force_fn(r, neighbor=nb, **kw), in_axes=(0, 0, None)))

    def set_neighbors(sim: SimulationState, neighbor: Any, **kwargs: Any) -> SimulationState:
        energy_kwargs, _ = _call_kwargs(kwargs, thermostat, "set_neighbors", dtype)
        positions = sim.integrator.position
        neighbor = _fitted(neighbor, positions)
        integrator = sim.integrator
        if has_momentum:
            integrator = integrator.set(force=forces_all(positions, neighbor, energy_kwargs))
        return sim._replace(integrator=integrator, neighbor=neighbor)

    def healthy(state, nbrs, check_force, energy_kwargs):
        ok = jnp.all(jnp.isfinite(state.position))
        if check_force:
            force = state.force if has_momentum else force_fn(state.position, **kwargs_of(nbrs, energy_kwargs))
            ok &= jnp.all(jnp.isfinite(force)) & (jnp.max(jnp.abs(force)) < force_bound)
        return ok

    def replica_step(state, nbrs, check_force, energy_kwargs, integrator_kwargs):
        if use_nbrs:
            nbrs = nbrs.update(state.position)
        new = step_fn(state, **kwargs_of(nbrs, energy_kwargs), **integrator_kwargs)
        ok = healthy(new, nbrs, check_force, energy_kwargs)
        overflow = (nbrs.did_buffer_overflow != 0) if use_nbrs else jnp.zeros((), bool)
        return new, nbrs, ok, overflow

    def select(mask, new, old):
        def pick(a, b):
            return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

        return jax.tree_util.tree_map(pick, new, old)

    def one_step(carry, check_force, block, energy_kwargs, integrator_kwargs):
        sim, overflow = carry
        def step_one(replica):
            state, nbrs, ikw = replica
            return replica_step(state, nbrs, check_force, energy_kwargs, ikw)

        replicas = (sim.integrator, sim.neighbor, integrator_kwargs)  # kT: one per replica
        if block is None or sim.alive.shape[0] <= block:
            new, nbrs, ok, over = jax.vmap(step_one)(replicas)
        else:
            new, nbrs, ok, over = jax.lax.map(step_one, replicas, batch_size=block)
        step = sim.step + 1
        keep = sim.alive & ok
        stopped_at = jnp.where(sim.alive & ~ok, step, sim.stopped_at)
        integrator = select(keep, new, sim.integrator)
        neighbor = select(keep, nbrs, sim.neighbor) if use_nbrs else None
        sim = SimulationState(integrator, neighbor, keep, stopped_at, step)
        return (sim, overflow | (over & sim.alive)), None

    def observe(sim, energy_kwargs):
        def per_replica(state, nbrs):
            energy = energy_fn(state.position, **kwargs_of(nbrs, energy_kwargs))
            if has_momentum:
                ke2 = jnp.sum(state.momentum**2 / state.mass)
                temp = ke2 / (3 * n_beads * BOLTZMANN_KJ_PER_MOL_K)
            else:
                temp = jnp.full((), jnp.nan, energy.dtype)
            return energy, temp

        energy, temp = jax.vmap(per_replica)(sim.integrator, sim.neighbor)
        return sim.integrator.position, energy, temp

    def save_block(carry, _, block, energy_kwargs, integrator_kwargs):
        # Langevin/NVE keep the force in the state and check it every step: one step body.
        # Brownian checks forces only at the saved step, which is traced separately.
        step = functools.partial(
            one_step, block=block, energy_kwargs=energy_kwargs, integrator_kwargs=integrator_kwargs
        )
        n_plain = save_every if has_momentum else save_every - 1
        if n_plain:
            carry, _ = jax.lax.scan(lambda c, _: step(c, has_momentum), carry, None, length=n_plain)
        if not has_momentum:
            carry, _ = step(carry, True)
        return carry, observe(carry[0], energy_kwargs)

    def chunk(
        sim: SimulationState, energy_kwargs: dict, integrator_kwargs: dict, split: bool = False
    ) -> tuple[SimulationState, ChunkRecord]:
        overflow = sim.alive & False  # derived from a per-replica array: per device under shard_map
        block = _replica_block(replica_block, split)
        body = functools.partial(
            save_block, block=block, energy_kwargs=energy_kwargs, integrator_kwargs=integrator_kwargs
        )
        (sim, overflow), (pos, energy, temp) = jax.lax.scan(body, (sim, overflow), None, length=n_saves)
        return sim, ChunkRecord(pos, energy, temp, overflow)

    # The call-time keywords are arguments of the compiled chunk, not constants baked into it.
    chunk_on_one_device = jax.jit(chunk)
    chunk_on_devices: dict[tuple, Callable] = {}

    def run_chunk(sim: SimulationState, **kwargs: Any) -> tuple[SimulationState, ChunkRecord]:
        energy_kwargs, integrator_kwargs = _call_kwargs(kwargs, thermostat, "run_chunk", dtype)
        integrator_kwargs = _per_replica(integrator_kwargs, sim.alive.shape[0], "run_chunk")
        devices = _replica_devices(replica_devices, sim.alive.shape[0])
        if devices is None:
            return chunk_on_one_device(sim, energy_kwargs, integrator_kwargs)
        key = tuple(d.id for d in devices)
        if key not in chunk_on_devices:
            # Replicas are independent: each device runs the whole chunk on its share.
            mesh = Mesh(np.asarray(devices), ("replica",))
            each, along = PartitionSpec("replica"), PartitionSpec(None, "replica")
            state_spec = SimulationState(each, each if use_nbrs else None, each, each, PartitionSpec())
            record_spec = ChunkRecord(along, along, along, each)
            replicated = PartitionSpec()  # parameters: the same on every device; kT: per replica
            split_chunk = jax.jit(
                jax.shard_map(functools.partial(chunk, split=True), mesh=mesh,
                              in_specs=(state_spec, replicated, each),
                              out_specs=(state_spec, record_spec))
            )
            state_sharding = jax.tree.map(
                lambda spec: NamedSharding(mesh, spec), state_spec,
                is_leaf=lambda x: isinstance(x, PartitionSpec),
            )
            chunk_on_devices[key] = (split_chunk, state_sharding, NamedSharding(mesh, each))
        split_chunk, state_sharding, per_replica = chunk_on_devices[key]
        # a state committed to one device (e.g. computed by a jax.export artefact, whose outputs
        # are committed) is moved onto the mesh; a state already there is not copied
        sim = jax.device_put(sim, _state_shardings(sim, state_sharding))
        integrator_kwargs = jax.device_put(integrator_kwargs, per_replica)
        return split_chunk(sim, energy_kwargs, integrator_kwargs)

    update_all = jax.jit(jax.vmap(lambda r, nb: neighbor_fn.update(r, nb), in_axes=(0, None)))

    def allocate(positions: Array, min_occupancy: int = 0, exact: bool = False) -> Any:
        """A list for every replica, all of one capacity (at least ``min_occupancy``, exactly it
        with ``exact``) that fits every replica: sized on replica 0, grown until none overflows."""
        positions = jnp.asarray(positions, dtype=dtype)
        template = neighbor_fn.allocate(positions[0])
        if exact:
            template = with_capacity(template, int(min_occupancy), n_beads)
            batched = update_all(positions, template)
            if bool(jnp.any(batched.did_buffer_overflow != 0)):
                raise ValueError(
                    f"cannot allocate a neighbour list of capacity {min_occupancy} that fits these positions"
                )
            return batched
        capacity = max(template.max_occupancy, int(min_occupancy), 1)
        while True:
            template = with_capacity(template, capacity, n_beads)
            batched = update_all(positions, template)
            if not bool(jnp.any(batched.did_buffer_overflow != 0)):
                return batched
            capacity += max(capacity // 2, 1)

    return Simulator(
        _standard_promotion(init), _standard_promotion(run_chunk),
        _standard_promotion(allocate) if use_nbrs else None,
        _standard_promotion(set_neighbors) if use_nbrs else None, int(steps_per_chunk), int(save_every),
        float(dt), dtype,
    )


# ----------------------------------------------------------------------------- host loop and files
