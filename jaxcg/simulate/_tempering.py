"""Parallel tempering (replica exchange): a temperature ladder of Langevin/Brownian replicas with
Metropolis exchanges of configurations between neighbouring temperatures after every chunk."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcg._files import reading
from jaxcg.simulate._files import TrajectoryWriter
from jaxcg.simulate._integrators import ChunkRecord, SimulationState, Simulator
from jaxcg.simulate._run import (
    _append_log,
    _reallocated,
    chunk_with_room,
    resume_state,
    save_checkpoint,
)
from jaxcg.units import kT_from_temperature

Array = jax.Array


class TemperingState(NamedTuple):
    """State of a replica-exchange run of K temperatures × M copies (a PyTree).

    Attributes:
      sim: the ``SimulationState`` of R = K·M replicas; replica k·M + m runs at temperature k
        (the ladder is fixed per replica; exchanges move configurations, not temperatures).
      walker: (R,) int32, which starting replica's configuration each replica now holds (for
        following a configuration up and down the ladder).
      key: PRNG key of the exchange decisions.
      rounds: () int32, exchange rounds done; round n tries the pairs (k, k+1) with k = n mod 2
        (even pairs, then odd pairs, alternately).
      accepted: (K-1,) int32, accepted exchanges between temperatures k and k+1, summed over copies.
      attempted: (K-1,) int32, attempted exchanges between temperatures k and k+1.
    """

    sim: SimulationState
    walker: Array
    key: Array
    rounds: Array
    accepted: Array
    attempted: Array


class ReplicaExchange(NamedTuple):
    """A temperature ladder over a thermostatted ``Simulator`` (built by ``replica_exchange``).

    Attributes:
      simulator: the Langevin or Brownian simulator stepping all R = K·M replicas in one chunk.
      temperatures: the ladder, K temperatures in K, ascending.
      n_per_temperature: M, copies per temperature.
      exchange: ``exchange(state, energy (R,) kJ/mol) -> (state, accepted (K-1, M) bool)``, one
        jitted round of Metropolis exchanges (used by ``run_chunk``).
    """

    simulator: Simulator
    temperatures: tuple[float, ...]
    n_per_temperature: int
    exchange: Callable[[TemperingState, Array], tuple[TemperingState, Array]]

    @property
    def kT(self) -> Array:
        """(R,) kJ/mol, the temperature of each replica (k·M + m at temperature k)."""
        kT = jnp.asarray([kT_from_temperature(t) for t in self.temperatures], self.simulator.dtype)
        return jnp.repeat(kT, self.n_per_temperature)

    def init(self, key: Array, positions: Array, **kwargs: Any) -> TemperingState:
        """Start all replicas: ``positions`` (K·M, N, 3) nm, or (M, N, 3) nm, copied to every
        temperature; momenta drawn at each replica's temperature. ``kwargs`` go to the energy."""
        positions = jnp.asarray(positions, self.simulator.dtype)
        n_temps, n_copies = len(self.temperatures), self.n_per_temperature
        if positions.ndim == 3 and positions.shape[0] == n_copies and n_temps > 1:
            positions = jnp.tile(positions, (n_temps, 1, 1))
        if positions.ndim != 3 or positions.shape[0] != n_temps * n_copies:
            raise ValueError(
                f"positions must have shape ({n_temps * n_copies}, N, 3) or ({n_copies}, N, 3) for "
                f"{n_temps} temperatures x {n_copies} copies, got {positions.shape}"
            )
        key_sim, key_exchange = jax.random.split(key)
        sim = self.simulator.init(key_sim, positions, kT=self.kT, **kwargs)
        n_pairs = n_temps - 1
        return TemperingState(
            sim, jnp.arange(n_temps * n_copies, dtype=jnp.int32), key_exchange,
            jnp.zeros((), jnp.int32), jnp.zeros(n_pairs, jnp.int32), jnp.zeros(n_pairs, jnp.int32),
        )

    def run_chunk(self, state: TemperingState, **kwargs: Any) -> tuple[TemperingState, ChunkRecord, Array]:
        """One chunk of every replica at its temperature, then one round of exchanges.

        Returns the new state, the chunk's ``ChunkRecord`` (frames saved before the exchange:
        replica k·M + m at temperature k) and the accepted exchanges (K-1, M) bool. Where the
        neighbour list overflowed (``record.neighbor_overflow``), no exchange is made and the
        caller redoes the chunk from ``state`` (as ``run_tempering`` does)."""
        sim, record = self.simulator.run_chunk(state.sim, kT=self.kT, **kwargs)
        if bool(np.asarray(record.neighbor_overflow).any()):
            return state._replace(sim=sim), record, jnp.zeros((len(self.temperatures) - 1, self.n_per_temperature), bool)
        new, accepted = self.exchange(state._replace(sim=sim), record.potential_energy[-1])
        return new, record, accepted

    def bind(self, **kwargs: Any) -> ReplicaExchange:
        """This ladder with energy keywords fixed (``params=...``), for ``run_tempering``."""
        return self._replace(simulator=self.simulator.bind(**kwargs))

    def acceptance(self, state: TemperingState) -> np.ndarray:
        """(K-1,) fraction of accepted exchanges between temperatures k and k+1 so far (NaN where
        none was attempted)."""
        attempted = np.asarray(state.attempted, np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(attempted > 0, np.asarray(state.accepted) / attempted, np.nan)


def replica_exchange(
    simulator: Simulator, temperatures: Sequence[float], n_per_temperature: int = 1
) -> ReplicaExchange:
    """Parallel tempering over ``simulator`` (from ``langevin`` or ``brownian``).

    R = K·M replicas (K ``temperatures`` in K, ascending, and M = ``n_per_temperature`` copies)
    run in one compiled chunk with one kT per replica (``Simulator.run_chunk(state, kT=(R,))``).
    After each chunk, copy m tries to exchange the configurations of neighbouring temperatures
    k and k+1 (k even after even rounds, odd after odd ones), accepted with probability
    min(1, exp((β_k − β_{k+1})(U_k − U_{k+1}))), β = 1/kT (mol/kJ), U the potential energies
    (kJ/mol) at the end of the chunk. An accepted exchange swaps positions, forces, neighbour
    lists and RNG keys, and rescales the momenta by sqrt(T_new / T_old), so each replica's
    momenta stay Maxwell–Boltzmann at its temperature. Pairs with a stopped replica are not tried.
    The simulator's own temperature is not used. Energy keywords (``params=``) go to ``init`` and
    ``run_chunk`` or are fixed by ``bind``.
    """
    temperatures = tuple(float(t) for t in temperatures)
    if len(temperatures) < 2:
        raise ValueError(f"temperatures must hold at least 2 values (K), got {list(temperatures)}")
    if not all(np.isfinite(t) and t > 0 for t in temperatures) or any(
        b <= a for a, b in zip(temperatures, temperatures[1:], strict=False)
    ):
        raise ValueError(f"temperatures must be positive and strictly ascending (K), got {list(temperatures)}")
    if isinstance(n_per_temperature, bool) or int(n_per_temperature) != n_per_temperature or n_per_temperature < 1:
        raise ValueError(f"n_per_temperature must be a positive integer, got {n_per_temperature!r}")
    n_temps, n_copies = len(temperatures), int(n_per_temperature)

    @jax.jit
    def exchange(state: TemperingState, energy: Array, kT: Array) -> tuple[TemperingState, Array]:
        key, draw = jax.random.split(state.key)
        beta = 1.0 / kT.reshape(n_temps, n_copies)[:, 0]
        u = energy.reshape(n_temps, n_copies)
        alive = state.sim.alive.reshape(n_temps, n_copies)
        log_ratio = (beta[:-1] - beta[1:])[:, None] * (u[:-1] - u[1:])  # (K-1, M)
        tried = (jnp.arange(n_temps - 1) % 2 == state.rounds % 2)[:, None] & alive[:-1] & alive[1:]
        tried &= jnp.isfinite(log_ratio)
        uniform = jax.random.uniform(draw, log_ratio.shape, log_ratio.dtype)
        accepted = tried & (jnp.log(uniform) < log_ratio)
        # temperature k takes the configuration of k+1 where pair k was accepted, k+1 that of k
        up = jnp.pad(accepted, ((0, 1), (0, 0))).astype(jnp.int32)
        down = jnp.pad(accepted, ((1, 0), (0, 0))).astype(jnp.int32)
        source_temp = jnp.arange(n_temps)[:, None] + up - down  # (K, M)
        source = (source_temp * n_copies + jnp.arange(n_copies)).reshape(-1)  # (R,)
        moved = jax.tree_util.tree_map(lambda a: a[source], (state.sim.integrator, state.sim.neighbor))
        integrator, neighbor = moved
        if hasattr(integrator, "momentum"):
            scale = jnp.sqrt(kT / kT[source])
            integrator = integrator.set(momentum=integrator.momentum * scale[:, None, None])
        sim = state.sim._replace(integrator=integrator, neighbor=neighbor)
        counts = jnp.sum(accepted, axis=1, dtype=jnp.int32), jnp.sum(tried, axis=1, dtype=jnp.int32)
        return TemperingState(
            sim, state.walker[source], key, state.rounds + 1, state.accepted + counts[0],
            state.attempted + counts[1],
        ), accepted

    ladder = ReplicaExchange(simulator, temperatures, n_copies, None)
    kT = ladder.kT
    return ladder._replace(exchange=lambda state, energy: _promoted(exchange, state, energy, kT))


def _promoted(fn, *args):
    with jax.numpy_dtype_promotion("standard"):
        return fn(*args)


# ----------------------------------------------------------------------------- host loop and files


def save_tempering_checkpoint(
    path: str | os.PathLike, state: TemperingState, frames_written: int = 0
) -> Path:
    """Write ``state`` to an npz file (the simulation state as ``save_checkpoint`` writes it, plus
    the walkers, the exchange key, rounds and counts), atomically."""
    return save_checkpoint(
        path, state.sim, frames_written=frames_written,
        extra={
            "rex_walker": np.asarray(state.walker), "rex_key": np.asarray(jax.random.key_data(state.key)),
            "rex_rounds": np.asarray(state.rounds), "rex_accepted": np.asarray(state.accepted),
            "rex_attempted": np.asarray(state.attempted),
        },
    )


def resume_tempering(ladder: ReplicaExchange, path: str | os.PathLike) -> tuple[TemperingState, int]:
    """The state saved by ``save_tempering_checkpoint`` for ``ladder``, and the frames written per
    temperature by then; the run continues bit for bit."""
    sim, frames = resume_state(ladder.simulator, path)
    n_replicas = len(ladder.temperatures) * ladder.n_per_temperature
    if sim.alive.shape[0] != n_replicas:
        raise ValueError(
            f"checkpoint {str(path)!r} holds {sim.alive.shape[0]} replicas; {len(ladder.temperatures)} "
            f"temperatures x {ladder.n_per_temperature} copies need {n_replicas}"
        )
    with reading(path, "replica-exchange checkpoint"), np.load(path) as archive:
        if "rex_walker" not in archive:
            raise ValueError(f"checkpoint {str(path)!r} was not written by a replica-exchange run")
        arrays = {name: archive[name] for name in archive.files if name.startswith("rex_")}
    if arrays["rex_accepted"].shape != (len(ladder.temperatures) - 1,):
        raise ValueError(
            f"checkpoint {str(path)!r} has {arrays['rex_accepted'].shape[0] + 1} temperatures, the "
            f"ladder {len(ladder.temperatures)}"
        )
    key = jax.random.wrap_key_data(jnp.asarray(arrays["rex_key"]))
    return TemperingState(
        sim, jnp.asarray(arrays["rex_walker"], jnp.int32), key, jnp.asarray(arrays["rex_rounds"], jnp.int32),
        jnp.asarray(arrays["rex_accepted"], jnp.int32), jnp.asarray(arrays["rex_attempted"], jnp.int32),
    ), frames


def run_tempering(
    ladder: ReplicaExchange,
    state: TemperingState,
    n_steps: int,
    *,
    writers: Sequence[TrajectoryWriter] | None = None,
    log_path: str | os.PathLike | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    max_reallocations: int = 10,
) -> TemperingState:
    """Advance ``state`` by ``n_steps`` (rounded up to whole chunks), one exchange round per chunk.

    After each chunk: a neighbour-list overflow re-allocates the list and redoes the chunk;
    frames of temperature k go to ``writers[k]`` (M replicas each); one CSV row to ``log_path``
    (step, time ps, replicas alive, mean potential energy per temperature kJ/mol, cumulative
    acceptance per pair); the state to ``checkpoint_path``. ``callback(steps_done_this_run,
    info)`` last. Ends early when every replica has stopped.
    """
    n_temps, n_copies = len(ladder.temperatures), ladder.n_per_temperature
    if writers is not None and len(writers) != n_temps:
        raise ValueError(f"writers must hold one TrajectoryWriter per temperature ({n_temps}), got {len(writers)}")
    if int(n_steps) < 0:
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps}")
    simulator = ladder.simulator
    n_chunks = -(-int(n_steps) // simulator.steps_per_chunk)
    for chunk in range(n_chunks):
        tick = time.perf_counter()
        (state, record, _), _ = chunk_with_room(
            ladder.run_chunk,
            lambda start, failed, attempt: start._replace(sim=_reallocated(simulator, start.sim, failed.sim, attempt)),
            state, max_reallocations,
        )
        positions = np.asarray(record.positions)
        if writers is not None:
            frames = positions.reshape(positions.shape[0], n_temps, n_copies, *positions.shape[2:])
            for k, writer in enumerate(writers):
                writer.write(frames[:, k])
        info = _tempering_info(ladder, state, record, time.perf_counter() - tick)
        if log_path is not None:
            _append_log(Path(log_path), info)
        if checkpoint_path is not None:
            written = writers[0].n_frames if writers is not None else 0
            save_tempering_checkpoint(checkpoint_path, state, frames_written=written)
        if callback is not None:
            callback((chunk + 1) * simulator.steps_per_chunk, info)
        if info["alive"] == 0:
            break
    return state


def _tempering_info(ladder, state, record, elapsed) -> dict[str, float]:
    n_temps, n_copies = len(ladder.temperatures), ladder.n_per_temperature
    step = int(state.sim.step)
    alive = np.asarray(state.sim.alive)
    energy = np.asarray(record.potential_energy).reshape(-1, n_temps, n_copies)
    live = alive.reshape(n_temps, n_copies)
    info: dict[str, float] = {
        "step": step, "time_ps": step * ladder.simulator.dt, "alive": int(alive.sum()),
    }
    for k, temperature in enumerate(ladder.temperatures):
        values = energy[:, k][:, live[k]]
        info[f"potential_mean_{temperature:g}K"] = float(values.mean()) if values.size else float("nan")
    for k, rate in enumerate(ladder.acceptance(state)):
        info[f"acceptance_{k}_{k + 1}"] = float(rate)
    info["steps_per_s"] = ladder.simulator.steps_per_chunk / max(elapsed, 1e-12)
    return info


def save_tempering_report(path: str | os.PathLike, ladder: ReplicaExchange, state: TemperingState,
                          extra: dict | None = None) -> Path:
    """Write the ladder (K), exchanges accepted/attempted and acceptance per neighbouring pair,
    and each temperature's stopped replicas, as JSON."""
    path = Path(path)
    stopped_at = np.asarray(state.sim.stopped_at).reshape(len(ladder.temperatures), ladder.n_per_temperature)
    body = {
        "temperatures_K": list(ladder.temperatures),
        "n_per_temperature": ladder.n_per_temperature,
        "steps": int(state.sim.step),
        "exchange_rounds": int(state.rounds),
        "pairs": [
            {"temperatures_K": [ladder.temperatures[k], ladder.temperatures[k + 1]],
             "accepted": int(a), "attempted": int(t), "acceptance": None if np.isnan(r) else float(r)}
            for k, (a, t, r) in enumerate(zip(np.asarray(state.accepted), np.asarray(state.attempted),
                                              ladder.acceptance(state), strict=True))
        ],
        "stopped": {
            f"{t:g}": [{"replica": int(m), "step": int(s[m])} for m in np.flatnonzero(s >= 0)]
            for t, s in zip(ladder.temperatures, stopped_at, strict=True)
        },
        **(extra or {}),
    }
    path.write_text(json.dumps(body, indent=2))
    return path
