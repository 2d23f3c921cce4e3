"""Force matching over several processes with ``jax.distributed``: frames streamed from disk.

Each process runs the same script; ``initialize`` joins them into one JAX runtime (on CPU the
collectives go over gloo), after which ``jax.devices()`` lists every process's devices.
``jaxcg.train.fit`` given a ``FrameFile`` instead of arrays then trains data-parallel over all of
them:

- the minibatches are those of a one-process run with the same ``TrainConfig`` (the same block
  split, the same batches, the same shuffled order), so the parameters agree with it;
- each global batch is split into consecutive row blocks, one per process (one per device); a
  process reads only its rows of each batch from the HDF5 file, so every frame is read by one
  process once per epoch and no process holds more than a batch in memory: data larger than
  memory trains;
- the rows become one global array (``jax.make_array_from_process_local_data``) sharded over a
  ``Mesh`` of all devices, the parameters are replicated, and the jitted step's gradient is
  summed across processes by XLA's own all-reduce (no hand-written communication).

Frames files (``write_frames``): HDF5 datasets ``positions`` (T, N, 3) float32 nm, ``forces``
(T, N, 3) float32 kJ/mol/nm and optionally ``weights`` (T,), chunked along the frames; a jaxcg
all-atom dataset (``jaxcg.data.save_dataset``) has the same layout. Every process must see the
file (a shared file system on a cluster).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxcg._files import reading, refuse_existing

_ADDRESS = re.compile(r"^\[?[\w.:-]+\]?:\d+$")


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: int = 300,
) -> None:
    """Join this process to a multi-process JAX run (``jax.distributed.initialize``).

    Call it first, before any JAX computation, in every process. On CPU the collectives
    (the gradient all-reduce) use gloo over TCP (``jax_cpu_collectives_implementation``, unless
    set to "mpi" beforehand).

    Args:
      coordinator: ``"HOST:PORT"`` of process 0, reachable by every process; None with the
        other two None: detected from the cluster's environment (SLURM's ``srun``, Open MPI,
        ...), as ``jax.distributed.initialize()`` does.
      num_processes: number of processes of the run.
      process_id: this process's rank, 0 .. num_processes − 1.
      timeout_s: seconds to wait for every process to join before raising.
    """
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError(
            "coordinator, num_processes and process_id must be given together (or none, to detect "
            f"them from the cluster), got coordinator={coordinator!r}, num_processes={num_processes!r}, "
            f"process_id={process_id!r}"
        )
    if coordinator is not None:
        if not isinstance(coordinator, str) or not _ADDRESS.match(coordinator):
            raise ValueError(f"coordinator must be 'HOST:PORT', got {coordinator!r}")
        if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
            raise ValueError(f"num_processes must be a positive integer, got {num_processes!r}")
        if isinstance(process_id, bool) or not isinstance(process_id, int) or not 0 <= process_id < num_processes:
            raise ValueError(f"process_id must be an integer in [0, {num_processes}), got {process_id!r}")
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):  # a choice of "mpi" stays
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=int(timeout_s))


def shutdown() -> None:
    """Leave the multi-process run (``jax.distributed.shutdown``); waits for the other processes."""
    jax.distributed.shutdown()


# ----------------------------------------------------------------------------- frames on disk


def write_frames(
    path: str | os.PathLike,
    blocks: Iterable[tuple[np.ndarray, ...]],
    overwrite: bool = False,
    chunk_frames: int = 64,
) -> Path:
    """Write CG frames to an HDF5 frames file block by block (never all in memory).

    Args:
      path: the file to write; an existing one is refused unless ``overwrite``.
      blocks: (positions (t, N, 3) nm, forces (t, N, 3) kJ/mol/nm) or (positions, forces,
        weights (t,)) blocks, appended in order; all with weights or none.
      overwrite: replace an existing ``path``.
      chunk_frames: frames per HDF5 chunk (the unit read from disk; about a process's share of
        a batch reads well).

    Returns:
      ``path``, written atomically (a temporary file renamed at the end).
    """
    import h5py

    path = Path(path)
    refuse_existing([path], "frames file", overwrite, resume_hint=False)
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise ValueError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n_frames = 0
    with h5py.File(tmp, "w") as handle:
        for k, block in enumerate(blocks):
            if len(block) not in (2, 3):
                raise ValueError(f"block {k} must be (positions, forces) or (positions, forces, weights), got {len(block)} arrays")
            positions, forces = (np.asarray(a, np.float32) for a in block[:2])
            if positions.ndim != 3 or positions.shape[2] != 3 or forces.shape != positions.shape:
                raise ValueError(f"block {k}: positions and forces must both be (t, N, 3), got {positions.shape} and {forces.shape}")
            if k == 0:
                n_beads = positions.shape[1]
                chunks = (min(chunk_frames, max(len(positions), 1)), n_beads, 3)
                for name in ("positions", "forces"):
                    handle.create_dataset(name, shape=(0, n_beads, 3), maxshape=(None, n_beads, 3), dtype=np.float32, chunks=chunks)
                if len(block) == 3:
                    handle.create_dataset("weights", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(chunks[0],))
            elif positions.shape[1] != n_beads:
                raise ValueError(f"block {k} has {positions.shape[1]} beads, block 0 had {n_beads}")
            if (len(block) == 3) != ("weights" in handle):
                raise ValueError(f"block {k}: either every block has weights or none has")
            new = n_frames + len(positions)
            arrays = [("positions", positions), ("forces", forces)]
            if len(block) == 3:
                weights = np.asarray(block[2], np.float64)
                if weights.shape != (len(positions),):
                    raise ValueError(f"block {k}: weights must have shape ({len(positions)},), got {weights.shape}")
                arrays.append(("weights", weights))
            for name, array in arrays:
                handle[name].resize(new, axis=0)
                handle[name][n_frames:new] = array
            n_frames = new
        if n_frames == 0:
            raise ValueError("blocks held no frames")
    os.replace(tmp, path)
    return path


class FrameFile:
    """An HDF5 frames file read on demand (see ``write_frames``); a context manager.

    Attributes:
      path: the file.
      positions: (T, N, 3) h5py dataset, nm. forces: (T, N, 3) h5py dataset, kJ/mol/nm.
      weights: (T,) h5py dataset, or None (uniform).
    """

    def __init__(self, path: str | os.PathLike):
        import h5py

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"frames file {str(self.path)!r} does not exist")
        with reading(self.path, "frames file"):
            self._handle = h5py.File(self.path, "r")
        missing = {"positions", "forces"} - set(self._handle)
        if missing:
            self._handle.close()
            raise ValueError(f"frames file {str(self.path)!r} lacks datasets {sorted(missing)}")
        self.positions = self._handle["positions"]
        self.forces = self._handle["forces"]
        self.weights = self._handle["weights"] if "weights" in self._handle else None

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_beads(self) -> int:
        return int(self.positions.shape[1])

    def read(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions (B, N, 3) nm, forces (B, N, 3) kJ/mol/nm, weights (B,)) of frame indices
        (B,), in their order, repeats allowed, in the file's dtypes (``write_frames``: float32,
        float32, float64; weights 1.0 if the file has none); each contiguous run of frames is
        read as one slice."""
        frames = np.asarray(frames, np.int64)
        unique, inverse = np.unique(frames, return_inverse=True)
        runs = np.split(unique, np.flatnonzero(np.diff(unique) != 1) + 1)

        def take(dataset: Any) -> np.ndarray:
            parts = [dataset[int(run[0]) : int(run[-1]) + 1] for run in runs]
            return np.concatenate(parts)[inverse]

        weights = take(self.weights) if self.weights is not None else np.ones(len(frames))
        return take(self.positions), take(self.forces), weights

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> FrameFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- the feed of fit


def _process_rows(sharding: NamedSharding, batch_size: int) -> slice:
    """The consecutive rows of a (batch_size, ...) array sharded by ``sharding`` that live on
    this process's devices."""
    spans = sorted(
        (s[0].start or 0, batch_size if s[0].stop is None else s[0].stop)
        for s in sharding.addressable_devices_indices_map((batch_size,)).values()
    )
    start, stop = spans[0][0], spans[-1][1]
    if sum(b - a for a, b in dict.fromkeys(spans)) != stop - start:
        raise ValueError(f"this process's devices do not hold consecutive rows of the batch ({spans}); "
                         "build the device mesh in jax.devices() order")
    return slice(start, stop)


class _StreamFeed:
    """The batches of ``jaxcg.train.fit`` read from a ``FrameFile``, each process its own rows.

    Built by ``fit``; ``train_step(state, s)`` runs step ``s`` of the epoch begun with
    ``start_epoch(order)``, ``evaluate(params, b)`` validation batch ``b``.
    """

    def __init__(self, frames: FrameFile, dtype, step, evaluate, train_table, val_table, replicated, sharded):
        self.frames = frames
        self.dtype = dtype  # the parameters' float dtype, which the frames are cast to
        self.train_table = train_table  # ((S, B) indices, (S, B) mask)
        self.val_table = val_table
        self.batch_size = train_table[0].shape[1]
        self.rows = _process_rows(sharded, self.batch_size)
        self.sharded = sharded
        self.step_fn = jax.jit(lambda state, batch: step(state, self._constrain(batch)), out_shardings=replicated)
        self.eval_fn = jax.jit(lambda params, batch: evaluate(params, self._constrain(batch)), out_shardings=replicated)
        self.order = np.zeros(0, np.int64)

    def _constrain(self, batch):
        return jax.lax.with_sharding_constraint(batch, self.sharded)

    def _batch(self, table: tuple[np.ndarray, np.ndarray], b: int):
        """Global batch ``b`` of ``table``: this process reads its rows and contributes them."""
        from jaxcg.train import Batch

        index, mask = table[0][b, self.rows], table[1][b, self.rows]
        positions, forces, weights = self.frames.read(index)
        return Batch(*(
            jax.make_array_from_process_local_data(self.sharded, a, (self.batch_size, *a.shape[1:]))
            for a in (positions.astype(self.dtype), forces.astype(self.dtype), (weights * mask).astype(self.dtype))
        ))

    def start_epoch(self, order: jax.Array) -> None:
        self.order = np.asarray(order)

    def train_step(self, state, s: int):
        return self.step_fn(state, self._batch(self.train_table, int(self.order[s])))

    def evaluate(self, params, b: int):
        return self.eval_fn(params, self._batch(self.val_table, b))
