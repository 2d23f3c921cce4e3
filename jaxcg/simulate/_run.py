"""The host loop over jitted chunks: neighbour-list re-allocation, logs, checkpoints, reports."""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcg._files import reading
from jaxcg._leaves import read_leaves, write_leaves
from jaxcg.simulate._files import TrajectoryWriter
from jaxcg.simulate._integrators import CHECKPOINT_VERSION, SimulationState, Simulator


class StoppedReplica(NamedTuple):
    """A replica stopped for NaN/inf or a force above the bound: its index and the step."""

    replica: int
    step: int


class RunReport(NamedTuple):
    """Summary of ``run``: steps done, replicas stopped, neighbour re-allocations, wall time (s),
    and whether the run ended early because every replica had stopped."""

    steps: int
    stopped: list[StoppedReplica]
    neighbor_reallocations: int
    wall_time: float
    all_stopped: bool = False


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
    When every replica has stopped, the run ends after that chunk (``RunReport.all_stopped``).
    """
    if int(n_steps) < 0:
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps}")
    n_chunks = -(-int(n_steps) // simulator.steps_per_chunk)
    started, reallocations = time.perf_counter(), 0
    for chunk in range(n_chunks):
        tick = time.perf_counter()
        (state, record), redone = chunk_with_room(
            simulator.run_chunk, lambda start, failed, attempt: _reallocated(simulator, start, failed, attempt),
            state, max_reallocations,
        )
        reallocations += redone
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
        if info["alive"] == 0:
            break
    report = RunReport(
        int(state.step), stopped_replicas(state), reallocations, time.perf_counter() - started,
        all_stopped=not bool(np.asarray(state.alive).any()),
    )
    return state, report


def chunk_with_room(run_chunk: Callable, regrow: Callable, state: Any, max_reallocations: int) -> tuple[tuple, int]:
    """``run_chunk(state) -> (new_state, record, ...)``, redone from ``state`` with a larger
    neighbour list (``regrow(state, failed_state, attempt) -> state``) while
    ``record.neighbor_overflow`` is set, so forces never come from a truncated list.

    Returns:
      (the outputs of the chunk that did not overflow, the number of re-allocations).

    Raises:
      RuntimeError: the list still overflows after ``max_reallocations`` re-allocations.
    """
    for attempt in range(max_reallocations + 1):
        outputs = run_chunk(state)
        overflow = np.asarray(outputs[1].neighbor_overflow)
        if not overflow.any():
            return outputs, attempt
        if attempt == max_reallocations:
            raise RuntimeError(
                f"neighbour list still overflows after {max_reallocations} re-allocations "
                f"(replicas {np.flatnonzero(overflow)[:5].tolist()})"
            )
        state = regrow(state, outputs[0], attempt)
    raise AssertionError("unreachable")


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


def trim_log(path: str | os.PathLike, step: int) -> None:
    """Drop the rows of a ``run`` CSV log after ``step`` (rows a killed run logged past its last
    checkpoint), so a resumed run does not log them twice."""
    path = Path(path)
    if not path.exists():
        return
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept = [row for row in rows if float(row.get("step") or 0) <= step]
    if len(kept) == len(rows):
        return
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, path)


def _append_log(path: Path, info: dict[str, float]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(info))
        if new:
            writer.writeheader()
        writer.writerow(info)


def save_checkpoint(
    path: str | os.PathLike, state: SimulationState, frames_written: int = 0,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write ``state`` (integrator arrays incl. RNG keys, neighbour list, step) to an npz file,
    with the arrays of ``extra`` under their names (not starting with ``leaf_``).

    Written to a temporary file first and renamed, so a crash never leaves half a checkpoint.
    """
    path = Path(path)
    leaves = [_key_data(leaf) for leaf in jax.tree_util.tree_leaves(state)]
    occupancy = -1 if state.neighbor is None else state.neighbor.max_occupancy
    extra = dict(extra or {})
    clash = sorted(set(extra) & {"version", "frames_written", "max_occupancy", "n_leaves"})
    if clash:
        raise ValueError(f"extra must not use the checkpoint's own names, got {clash}")
    return write_leaves(path, leaves, {**extra, "version": CHECKPOINT_VERSION, "frames_written": frames_written,
                                      "max_occupancy": occupancy, "n_leaves": len(leaves)})


def resume_state(
    simulator: Simulator, path: str | os.PathLike
) -> tuple[SimulationState, int]:
    """The state saved by ``save_checkpoint`` (for ``simulator``) and the frames written by then."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    with reading(path, "simulation checkpoint"), np.load(path) as archive:
        version = int(archive["version"])
        if version != CHECKPOINT_VERSION:
            raise ValueError(
                f"checkpoint {str(path)!r} has version {version}, expected {CHECKPOINT_VERSION}"
            )
        n_leaves = int(archive["n_leaves"])
        leaves = read_leaves(archive)
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
