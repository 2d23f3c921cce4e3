"""Chunked, resumable Langevin runs that write the jaxcg dataset format as they go.

The output is one HDF5 file in the layout of ``jaxcg.data.save_dataset`` whose ``positions`` and
``forces`` datasets grow by one chunk of frames at a time. After every chunk the file is closed
with an updated ``content_hash``, the number of completed frames and steps, and the OpenMM
checkpoint (positions, velocities, integrator RNG state) in the extra dataset ``checkpoint``, so
a run killed part way leaves every completed chunk readable by ``jaxcg.data.load_dataset`` and
``resume=True`` continues from the last chunk, frame for frame as an uninterrupted run with the
same seed would (checked on the Reference and CPU platforms for vacuum systems).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jaxcg._files import refuse_changed_settings
from jaxcg.data import content_hash, write_dataset_layout
from jaxcg.reference._systems import ReferenceSystem

#: ``progress(frames_done, frames_total, ns_per_day)``; raising inside it stops the run.
ProgressFn = Callable[[int, int, float], None]

#: Settings that must agree between a run and its resumption.
_RESUME_KEYS = (
    "system",
    "solvent",
    "rigid",
    "seed",
    "timestep_ps",
    "save_every_steps",
    "temperature_K",
    "friction_per_ps",
    "platform",
    "n_atoms",
    "n_frames_target",
)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How to integrate and record.

    Attributes:
      n_frames: frames to record (total, counting frames already in a resumed file).
      save_every: integration steps between recorded frames.
      temperature: K. friction: Langevin friction, 1/ps.
      seed: non-negative integer; OpenMM gets ``seed + 1`` (its seed 0 means "random").
      platform: OpenMM platform name ("Reference", "CPU", ...).
      equilibration_steps: steps run after energy minimisation and before the first frame.
      chunk_frames: frames per chunk written (and checkpointed) at once.
    """

    n_frames: int
    save_every: int
    temperature: float
    seed: int
    platform: str
    friction: float = 1.0
    equilibration_steps: int = 5000
    chunk_frames: int = 1000


def check_output_path(out: str | os.PathLike) -> Path:
    """``out`` as a Path, or a ValueError if a file cannot be written there."""
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"out must be a file path, got the directory {str(path)!r}")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(
            f"out {str(path)!r} is not writable: {str(ancestor)!r} exists but is not a directory"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(
            f"out {str(path)!r} is not writable: no write permission on {str(ancestor)!r}"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"out {str(path)!r} exists and is not writable")
    return path


def openmm_seed(seed: int) -> int:
    """OpenMM random seed for a jaxcg seed (OpenMM treats 0 as "pick a random seed")."""
    if (
        isinstance(seed, bool)
        or not isinstance(seed, int | np.integer)
        or not 0 <= seed < 2**31 - 2
    ):
        raise ValueError(f"seed must be an integer in [0, 2**31 - 2), got {seed!r}")
    return int(seed) + 1


def make_context(ref: ReferenceSystem, settings: RunSettings) -> tuple[Any, Any]:
    """OpenMM ``(context, integrator)``: LangevinMiddleIntegrator with the seeded RNG."""
    import openmm
    import openmm.unit as unit

    names = [
        openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
    ]
    if settings.platform not in names:
        raise ValueError(f"platform must be one of {names}, got {settings.platform!r}")
    integrator = openmm.LangevinMiddleIntegrator(
        settings.temperature * unit.kelvin,
        settings.friction / unit.picosecond,
        ref.timestep * unit.picosecond,
    )
    integrator.setRandomNumberSeed(openmm_seed(settings.seed))
    platform = openmm.Platform.getPlatformByName(settings.platform)
    context = openmm.Context(ref.system, integrator, platform)
    return context, integrator


def _equilibrate(
    context: Any, integrator: Any, ref: ReferenceSystem, settings: RunSettings
) -> None:
    import openmm

    context.setPositions(ref.positions)
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(settings.temperature, openmm_seed(settings.seed))
    if settings.equilibration_steps > 0:
        integrator.step(settings.equilibration_steps)


def _create_file(path: Path, ref: ReferenceSystem, settings: RunSettings, metadata: dict) -> None:
    import h5py

    empty = np.zeros((0, ref.n_atoms, 3), np.float32)
    with h5py.File(path, "w") as handle:
        write_dataset_layout(handle, empty, empty, ref.solute_constraints(), ref.solute_pdb(), settings.temperature,
                             metadata, chunk_frames=min(settings.chunk_frames, 256))
        handle.attrs["completed_frames"] = 0
        handle.attrs["completed_steps"] = 0


def _store_checkpoint(handle: Any, checkpoint: bytes, frames: int, steps: int) -> None:
    """Replace the checkpoint; its attrs say how many frames and steps it comes after.

    Written as "checkpoint.new" and then moved over "checkpoint", so a kill at any moment
    leaves one complete checkpoint that matches frames already on disk.
    """
    handle.create_dataset("checkpoint.new", data=np.frombuffer(checkpoint, dtype=np.uint8))
    handle["checkpoint.new"].attrs["frames"] = int(frames)
    handle["checkpoint.new"].attrs["steps"] = int(steps)
    if "checkpoint" in handle:
        del handle["checkpoint"]
    handle.move("checkpoint.new", "checkpoint")


def _append_chunk(
    path: Path, positions: np.ndarray, forces: np.ndarray, checkpoint: bytes, steps: int
) -> None:
    """Append frames, then update hash, checkpoint and counters, and close the file."""
    import h5py

    with h5py.File(path, "a") as handle:
        done = int(handle.attrs["completed_frames"])
        total = done + positions.shape[0]
        for name, block in (("positions", positions), ("forces", forces)):
            handle[name].resize(total, axis=0)
            handle[name][done:total] = block
        handle.attrs["content_hash"] = content_hash(handle["positions"][()], handle["forces"][()])
        _store_checkpoint(handle, checkpoint, total, steps)
        handle.attrs["completed_frames"] = total
        handle.attrs["completed_steps"] = int(steps)


def _read_resume_state(path: Path, metadata: dict) -> tuple[int, int, bytes | None]:
    """(completed frames, completed steps, checkpoint) of an existing run; checks it matches.

    The checkpoint is the authority: frames written after it (a chunk cut off mid-write) are
    dropped and the content hash and counters are brought back in line with it.
    """
    import h5py

    try:
        handle = h5py.File(path, "a")
    except OSError as err:
        raise ValueError(f"cannot resume {str(path)!r}: not a readable HDF5 file ({err})") from err
    with handle:
        if "completed_frames" not in handle.attrs:
            raise ValueError(f"cannot resume {str(path)!r}: it was not written by jaxcg.reference")
        stored = json.loads(handle.attrs["metadata"])
        refuse_changed_settings(path, stored, metadata, _RESUME_KEYS)
        name = next((n for n in ("checkpoint", "checkpoint.new") if n in handle), None)
        if name is None:
            return 0, 0, None
        done = int(handle[name].attrs["frames"])
        steps = int(handle[name].attrs["steps"])
        if min(handle["positions"].shape[0], handle["forces"].shape[0]) < done:
            raise ValueError(f"cannot resume {str(path)!r}: its checkpoint is ahead of its frames")
        for array in ("positions", "forces"):
            handle[array].resize(done, axis=0)
        handle.attrs["content_hash"] = content_hash(handle["positions"][()], handle["forces"][()])
        handle.attrs["completed_frames"] = done
        handle.attrs["completed_steps"] = steps
        return done, steps, handle[name][()].tobytes()


def run(
    ref: ReferenceSystem,
    out: str | os.PathLike,
    settings: RunSettings,
    metadata: dict[str, Any],
    resume: bool = False,
    progress: ProgressFn | None = None,
) -> Path:
    """Simulate ``ref`` and write ``settings.n_frames`` frames to ``out`` chunk by chunk.

    Frames are the solute positions (nm) and total force-field forces (kJ/mol/nm, OpenMM
    ``getForces``; constraint forces are not included) every ``settings.save_every`` steps,
    after energy minimisation and ``settings.equilibration_steps`` steps of equilibration.

    Args:
      ref: the system. out: HDF5 file to write. metadata: provenance stored as JSON (must hold
        the ``_RESUME_KEYS`` and "n_frames_target").
      resume: continue an existing ``out`` from its last checkpoint (a fresh run if absent).
      progress: called after every frame with (frames_done, frames_total, ns_per_day).
    """
    import openmm.unit as unit

    path = check_output_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    context, integrator = make_context(ref, settings)
    done, steps, checkpoint = 0, 0, None
    if resume and path.exists():
        done, steps, checkpoint = _read_resume_state(path, metadata)
    if checkpoint is None:
        done, steps = 0, 0
        _equilibrate(context, integrator, ref, settings)
        _create_file(path, ref, settings, metadata)
        _append_chunk(
            path,
            np.zeros((0, ref.n_atoms, 3), np.float32),
            np.zeros((0, ref.n_atoms, 3), np.float32),
            context.createCheckpoint(),
            steps,
        )
    else:
        context.loadCheckpoint(checkpoint)
    total = settings.n_frames
    solute = ref.solute
    chunk = settings.chunk_frames
    start_time, start_steps = time.perf_counter(), steps
    if progress is not None:
        progress(done, total, 0.0)
    while done < total:
        size = min(chunk, total - done)
        positions = np.empty((size, ref.n_atoms, 3), np.float32)
        forces = np.empty((size, ref.n_atoms, 3), np.float32)
        for k in range(size):
            integrator.step(settings.save_every)
            steps += settings.save_every
            state = context.getState(getPositions=True, getForces=True)
            positions[k] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[solute]
            forces[k] = state.getForces(asNumpy=True).value_in_unit(
                unit.kilojoule_per_mole / unit.nanometer
            )[solute]
            if progress is not None:
                elapsed = max(time.perf_counter() - start_time, 1e-9)
                ns_per_day = (steps - start_steps) * ref.timestep / elapsed * 86.4
                progress(done + k + 1, total, ns_per_day)
        _append_chunk(path, positions, forces, context.createCheckpoint(), steps)
        done += size
    return path
