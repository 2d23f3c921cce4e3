"""All-atom reference data with forces, generated with OpenMM.

``generate`` simulates one of the built-in systems (Langevin, 300 K by default) and writes a
jaxcg dataset file (see ``jaxcg.data.load_dataset``) chunk by chunk, resumable after a kill.
``bundled_dataset`` loads the small datasets shipped with the package (no OpenMM needed).

Units: positions nm, forces kJ/mol/nm, time ps (``ns`` arguments in ns), temperature K.
"""

from __future__ import annotations

import os
from pathlib import Path

from jaxcg._files import refuse_existing
from jaxcg._plausibility import check_temperature
from jaxcg.reference._bundled import BUNDLED, bundled_dataset, bundled_dataset_path
from jaxcg.reference._run import ProgressFn, RunSettings, check_output_path, openmm_seed, run
from jaxcg.reference._systems import SYSTEMS, build_system, default_platform, default_solvent

__all__ = ["BUNDLED", "SYSTEMS", "bundled_dataset", "bundled_dataset_path", "generate"]

#: Default time between saved frames, ps.
DEFAULT_SAVE_INTERVAL = {"water_dimer": 0.5, "alanine_dipeptide": 1.0, "chignolin": 1.0, "villin": 1.0}


def _positive(name: str, value: float | None, integer: bool = False) -> None:
    if value is None:
        return
    kind = "integer" if integer else "number"
    bad_type = isinstance(value, bool) or (integer and int(value) != value)
    if bad_type or not value > 0:
        raise ValueError(f"{name} must be a positive {kind}, got {value!r}")


def generate(
    system: str,
    out: str | os.PathLike,
    n_frames: int | None = None,
    ns: float | None = None,
    save_every: int | None = None,
    temperature: float = 300.0,
    seed: int = 0,
    solvent: str | None = None,
    rigid: bool = False,
    platform: str | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    *,
    overwrite: bool = False,
    friction: float = 1.0,
    equilibration_ps: float = 10.0,
    chunk_frames: int = 1000,
) -> Path:
    """Simulate a built-in system with OpenMM and write positions and forces to ``out``.

    The system is energy-minimised, given Maxwell-Boltzmann velocities, equilibrated for
    ``equilibration_ps`` and then integrated with a LangevinMiddleIntegrator, saving the solute
    positions (T, n, 3) nm and total forces (T, n, 3) kJ/mol/nm every ``save_every`` steps.

    Args:
      system: "water_dimer" (6 atoms; flexible, timestep 1 fs, or ``rigid=True``, 2 fs),
        "alanine_dipeptide" (22 atoms), "chignolin" (175 atoms) or "villin" (HP35, 582 protein
        atoms; 8,867 with solvent); the peptides use amber14 with HBonds constraints and a
        2 fs timestep.
      out: output HDF5 file (checked for writability before anything is simulated).
      n_frames: frames to record; or ``ns``: simulated time in ns (give exactly one).
      save_every: steps between frames (default 0.5 ps for the water dimer, 1 ps otherwise).
      temperature: K. seed: integer >= 0; same seed, same frames.
      solvent: "vacuum" (all), "implicit" (GBn2) or "explicit" (TIP3P, PME) for the peptides;
        None (default) means "vacuum", except for villin: "explicit" (``default_solvent``).
      rigid: rigid TIP3P waters (water dimer only).
      platform: OpenMM platform; default the faster one measured for this system
        (``default_platform``). A resumed run keeps the platform of its file.
      resume: continue ``out`` from its last completed chunk; every setting (system, solvent,
        seed, temperature, frames target, ...) must match the file's, and all differing ones are
        named in the error.
      overwrite: replace an existing ``out``; without it (and without ``resume``) an existing
        ``out`` is refused (``OutputExistsError``) and left untouched.
      progress: ``callback(frames_done, frames_total, ns_per_day)`` after every frame; an
        exception raised in it stops the run, keeping the chunks already written.
      friction: Langevin friction, 1/ps. chunk_frames: frames written and checkpointed at once.

    Returns:
      The path of the written file.
    """
    solvent = default_solvent(system) if solvent is None else solvent
    if solvent not in SYSTEMS[system]:
        raise ValueError(
            f"solvent for {system} must be one of {list(SYSTEMS[system])}, got {solvent!r}"
        )
    if rigid and system != "water_dimer":
        raise ValueError(f"rigid=True applies only to water_dimer, got system {system!r}")
    if (n_frames is None) == (ns is None):
        raise ValueError(
            f"give exactly one of n_frames and ns, got n_frames={n_frames!r}, ns={ns!r}"
        )
    _positive("n_frames", n_frames, integer=True)
    _positive("ns", ns)
    _positive("save_every", save_every, integer=True)
    _positive("temperature", temperature)
    _positive("chunk_frames", chunk_frames, integer=True)
    if not equilibration_ps >= 0:
        raise ValueError(f"equilibration_ps must be >= 0, got {equilibration_ps!r}")
    openmm_seed(seed)
    check_temperature(temperature)
    path = check_output_path(out)
    if not resume:
        refuse_existing([path], "reference dataset", overwrite)
    if resume and path.exists():
        platform = platform or _stored_platform(path)

    import openmm

    ref = build_system(system, solvent=solvent, rigid=rigid)
    if save_every is None:
        save_every = max(1, round(DEFAULT_SAVE_INTERVAL[system] / ref.timestep))
    if n_frames is None:
        n_frames = round(ns * 1000.0 / (save_every * ref.timestep))
        if n_frames < 1:
            raise ValueError(
                f"ns={ns!r} is shorter than one save interval ({save_every * ref.timestep} ps)"
            )
    settings = RunSettings(
        n_frames=int(n_frames),
        save_every=int(save_every),
        temperature=float(temperature),
        seed=int(seed),
        platform=platform or default_platform(system, solvent),
        friction=float(friction),
        equilibration_steps=round(equilibration_ps / ref.timestep),
        chunk_frames=int(chunk_frames),
    )
    metadata = {
        "engine": "OpenMM",
        "openmm_version": openmm.__version__,
        "generator": "jaxcg.reference.generate",
        "system": system,
        "solvent": solvent,
        "rigid": bool(rigid),
        "description": ref.description,
        "n_atoms": ref.n_atoms,
        "platform": settings.platform,
        "integrator": "LangevinMiddleIntegrator",
        "seed": settings.seed,
        "openmm_seed": openmm_seed(settings.seed),
        "timestep_ps": ref.timestep,
        "save_every_steps": settings.save_every,
        "save_interval_ps": settings.save_every * ref.timestep,
        "temperature_K": settings.temperature,
        "friction_per_ps": settings.friction,
        "equilibration_steps": settings.equilibration_steps,
        "minimized": True,
        "chunk_frames": settings.chunk_frames,
        "n_frames_target": settings.n_frames,
        "forces": "total force-field forces on the saved atoms (OpenMM getForces), kJ/mol/nm; "
        "constraint forces not included",
    }
    return run(ref, path, settings, metadata, resume=resume, progress=progress)


def _stored_platform(path: Path) -> str | None:
    import json

    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return json.loads(handle.attrs["metadata"]).get("platform")
    except (OSError, KeyError, ValueError):
        return None
