"""All-atom data: positions, forces, topology and temperature, with validation and loaders.

Units: positions in nm, forces in kJ/mol/nm, temperature in K, kT in kJ/mol.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mdtraj as md
import numpy as np

from jaxcg._files import reading, refuse_existing
from jaxcg._plausibility import check_force_scale, check_positions_scale, check_temperature
from jaxcg.units import force_unit_factor, kT_from_temperature

#: Version of the HDF5 dataset layout written by ``save_dataset``.
DATASET_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True, eq=False)
class AtomisticData:
    """All-atom frames with forces.

    Attributes:
      positions: (T, n, 3) float, nm.
      forces: (T, n, 3) float, kJ/mol/nm (total forces on each atom).
      topology: mdtraj Topology with n atoms.
      temperature: K; ``kT`` gives kJ/mol.
      constraints: (K, 2) int atom-index pairs held at fixed distance, or None.
      weights: (T,) non-negative per-frame weights, or None (uniform).
      metadata: free-form provenance (engine, seed, timestep, ...).

    Construction validates shapes, dtypes, finiteness and the temperature; use
    ``make_atomistic_data(..., nonfinite="drop")`` to drop bad frames instead of raising.
    """

    positions: np.ndarray
    forces: np.ndarray
    topology: md.Topology
    temperature: float
    constraints: np.ndarray | None = None
    weights: np.ndarray | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[1])

    @property
    def kT(self) -> float:
        """Thermal energy in kJ/mol."""
        return kT_from_temperature(self.temperature)

    def subset(self, frames: slice | np.ndarray) -> AtomisticData:
        """A new dataset holding only ``frames`` (a slice, index or boolean array)."""
        weights = None if self.weights is None else self.weights[frames]
        return dataclasses.replace(
            self, positions=self.positions[frames], forces=self.forces[frames], weights=weights
        )

    def chunks(self, chunk_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Iterate over (positions, forces) blocks of at most ``chunk_size`` frames."""
        _check_chunk_size(chunk_size)
        for start in range(0, self.n_frames, chunk_size):
            stop = start + chunk_size
            yield self.positions[start:stop], self.forces[start:stop]


def _check_chunk_size(chunk_size: int) -> None:
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")


def _check_frames_array(name: str, array: np.ndarray, n_atoms: int | None) -> None:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{name} must hold floats, got dtype {array.dtype}")
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{name} must have shape (T, n, 3), got {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} holds no frames (shape {array.shape})")
    if n_atoms is not None and array.shape[1] != n_atoms:
        raise ValueError(
            f"{name} has shape {array.shape} but the topology has {n_atoms} atoms"
        )


def _upcast_half(array: np.ndarray) -> np.ndarray:
    """float16 (too coarse for nm positions or forces) upcast to float32; other dtypes unchanged."""
    if np.issubdtype(array.dtype, np.floating) and np.finfo(array.dtype).bits < 32:
        return array.astype(np.float32)
    return array


def integer_pairs(pairs: np.ndarray, name: str, n_atoms: int | None = None) -> np.ndarray:
    """(K, 2) int64 index pairs; non-integer values (e.g. 3.7) and out-of-range indices refused."""
    array = np.asarray(pairs)
    if array.size and not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"{name} must hold integer atom indices, got dtype {array.dtype}")
    if array.size and np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            bad = array[~np.isfinite(array) | (array != np.round(array))]
            raise ValueError(f"{name} must hold integer atom indices, got non-integer values {bad[:5].tolist()}")
    if array.size % 2:
        raise ValueError(f"{name} must have shape (K, 2), got {array.shape}")
    array = array.astype(np.int64).reshape(-1, 2)
    if n_atoms is not None and array.size and (array.min() < 0 or array.max() >= n_atoms):
        raise ValueError(f"{name} index atoms {array.min()}..{array.max()} but there are {n_atoms} atoms")
    return array


def _nonfinite_frames(positions: np.ndarray, forces: np.ndarray) -> np.ndarray:
    """Indices of frames with NaN or inf in positions or forces."""
    bad = ~(np.isfinite(positions).all(axis=(1, 2)) & np.isfinite(forces).all(axis=(1, 2)))
    return np.flatnonzero(bad)


def _validate(data: AtomisticData) -> None:
    if not isinstance(data.topology, md.Topology):
        raise TypeError(f"topology must be an mdtraj.Topology, got {type(data.topology).__name__}")
    n_atoms = data.topology.n_atoms
    _check_frames_array("positions", data.positions, n_atoms)
    _check_frames_array("forces", data.forces, n_atoms)
    if data.positions.shape != data.forces.shape:
        raise ValueError(
            f"forces has shape {data.forces.shape} but positions has shape {data.positions.shape}"
        )
    bad = _nonfinite_frames(data.positions, data.forces)
    if bad.size:
        raise ValueError(
            f"{bad.size} frame(s) hold NaN or inf in positions or forces (first: {bad[:5].tolist()}); "
            "pass nonfinite='drop' to make_atomistic_data to drop them"
        )
    temperature = data.temperature
    if not np.isscalar(temperature) or not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number of kelvin, got {temperature!r}")
    if data.constraints is not None:
        c = data.constraints
        if c.ndim != 2 or (c.size and c.shape[1] != 2) or not np.issubdtype(c.dtype, np.integer):
            raise ValueError(f"constraints must be an integer array of shape (K, 2), got {c.shape} {c.dtype}")
        if c.size and (c.min() < 0 or c.max() >= n_atoms):
            raise ValueError(
                f"constraints index atoms {c.min()}..{c.max()} but the topology has {n_atoms} atoms"
            )
    if data.weights is not None:
        w = data.weights
        if w.shape != (data.positions.shape[0],):
            raise ValueError(f"weights must have shape ({data.positions.shape[0]},), got {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")


def make_atomistic_data(
    positions: np.ndarray,
    forces: np.ndarray,
    topology: md.Topology,
    temperature: float,
    constraints: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    metadata: dict[str, Any] | None = None,
    nonfinite: str = "raise",
) -> AtomisticData:
    """Build a validated ``AtomisticData``.

    Args:
      positions: (T, n, 3) nm. forces: (T, n, 3) kJ/mol/nm. temperature: K.
      constraints: (K, 2) int pairs or None. weights: (T,) or None.
      nonfinite: "raise" (default) or "drop": frames holding NaN/inf are dropped with a warning.

    Dtype policy: positions and forces must hold floats (integers raise a TypeError); float16
    is upcast to float32. Constraint indices must be whole numbers (floats such as 3.7 raise).
    Plausibility (``UnitWarning``): a temperature below 10 K (looks like kT), positions whose
    nearest-neighbour distances look like Å, and, without constraints, forces whose virial
    -<Σ (x - x̄)·F> differs from (3n - 3) kT by a unit-like factor (kcal/mol, Å).
    """
    if nonfinite not in ("raise", "drop"):
        raise ValueError(f"nonfinite must be 'raise' or 'drop', got {nonfinite!r}")
    positions = _upcast_half(np.asarray(positions))
    forces = _upcast_half(np.asarray(forces))
    _check_frames_array("positions", positions, topology.n_atoms)
    _check_frames_array("forces", forces, topology.n_atoms)
    check_temperature(temperature)
    if positions.shape != forces.shape:
        raise ValueError(
            f"forces has shape {forces.shape} but positions has shape {positions.shape}"
        )
    weights = None if weights is None else np.asarray(weights, dtype=np.float64)
    if nonfinite == "drop":
        bad = _nonfinite_frames(positions, forces)
        if bad.size:
            warnings.warn(
                f"dropping {bad.size} of {positions.shape[0]} frames with NaN/inf "
                f"(first: {bad[:5].tolist()})",
                stacklevel=2,
            )
            keep = np.ones(positions.shape[0], dtype=bool)
            keep[bad] = False
            positions, forces = positions[keep], forces[keep]
            weights = None if weights is None else weights[keep]
    if constraints is not None:
        constraints = integer_pairs(constraints, "constraints", topology.n_atoms)
    if constraints is None or constraints.size == 0:
        check_force_scale(positions, forces, float(temperature), name="forces")
    check_positions_scale(positions)
    return AtomisticData(
        positions=positions,
        forces=forces,
        topology=topology,
        temperature=float(temperature),
        constraints=constraints,
        weights=weights,
        metadata=dict(metadata or {}),
    )


@dataclasses.dataclass(frozen=True, eq=False)
class CGData:
    """Coarse-grained frames: mapped positions and forces, the training data of a CG model.

    Attributes:
      positions: (T, N, 3) float, nm (x = M r).
      forces: (T, N, 3) float, kJ/mol/nm (f = G F).
      bead_types: (N,) int, the type of each bead (the model's embedding index).
      bonds: (B, 2) int bead-index pairs of the bonded graph (e.g. consecutive CA beads).
      temperature: K; ``kT`` gives kJ/mol.
      topology: an mdtraj Topology of the beads (for writing CG trajectories), or None.
      weights: (T,) per-frame weights, or None.
      masses: (N,) bead masses in amu (g/mol), or None.
    """

    positions: np.ndarray
    forces: np.ndarray
    bead_types: np.ndarray
    bonds: np.ndarray
    temperature: float
    topology: md.Topology | None = None
    weights: np.ndarray | None = None
    masses: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check_frames_array("positions", np.asarray(self.positions), None)
        if np.shape(self.forces) != np.shape(self.positions):
            raise ValueError(
                f"forces has shape {np.shape(self.forces)} but positions has shape {np.shape(self.positions)}"
            )
        n_beads = np.shape(self.positions)[1]
        if np.shape(self.bead_types) != (n_beads,):
            raise ValueError(f"bead_types must have shape ({n_beads},), got {np.shape(self.bead_types)}")
        bonds = np.asarray(self.bonds)
        if bonds.size and (bonds.ndim != 2 or bonds.shape[1] != 2 or bonds.min() < 0 or bonds.max() >= n_beads):
            raise ValueError(f"bonds must be (B, 2) indices of the {n_beads} beads, got shape {bonds.shape}")
        if not np.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be a positive number of kelvin, got {self.temperature!r}")
        if self.topology is not None and self.topology.n_atoms != n_beads:
            raise ValueError(f"topology has {self.topology.n_atoms} atoms but there are {n_beads} beads")

    @property
    def n_frames(self) -> int:
        return int(np.shape(self.positions)[0])

    @property
    def n_beads(self) -> int:
        return int(np.shape(self.positions)[1])

    @property
    def kT(self) -> float:
        """Thermal energy in kJ/mol."""
        return kT_from_temperature(self.temperature)

    def subset(self, frames: slice | np.ndarray) -> CGData:
        """A new CGData holding only ``frames``."""
        weights = None if self.weights is None else self.weights[frames]
        return dataclasses.replace(
            self, positions=self.positions[frames], forces=self.forces[frames], weights=weights
        )


# ----------------------------------------------------------------------------- loaders


def load_topology(path: str | os.PathLike) -> md.Topology:
    """Topology from any file mdtraj reads (pdb, psf, prmtop, gro, h5, ...)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"topology file {str(path)!r} does not exist")
    with reading(path, "topology file"):
        return md.load_topology(str(path))


def _read_trr_forces(path: Path) -> np.ndarray:
    """Forces (T, n, 3) kJ/mol/nm stored in a GROMACS .trr file (written with nstfout)."""
    from mdtraj.formats import TRRTrajectoryFile

    with TRRTrajectoryFile(str(path)) as handle:
        n_frames = len(handle)
        # mdtraj's public read() skips forces; its reader takes (n_frames, atom_indices,
        # get_velocities, get_forces) and returns forces last.
        forces = handle._read(n_frames, None, 0, 1)[-1] if n_frames else None
    if forces is None:
        raise ValueError(f"{str(path)!r} holds no forces (write them with nstfout in GROMACS)")
    return np.asarray(forces)


def load_forces(
    path: str | os.PathLike, key: str | None = None, force_units: str = "kJ/mol/nm"
) -> np.ndarray:
    """Forces (T, n, 3) in kJ/mol/nm from .npy, .npz, .h5/.hdf5 or GROMACS .trr.

    Args:
      path: the file.
      key: array name inside .npz/.h5 (default: "forces", or the only array).
      force_units: unit of the stored numbers, e.g. "kcal/mol/A"; converted to kJ/mol/nm.
        GROMACS .trr files store kJ/mol/nm already.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"forces file {str(path)!r} does not exist")
    factor = force_unit_factor(force_units)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with reading(path, "forces file"):
            forces = np.load(path)
    elif suffix == ".npz":
        with reading(path, "forces file"), np.load(path) as archive:
            names = list(archive.keys())
        with np.load(path) as archive:
            forces = archive[_pick_key(names, key, path)]
    elif suffix in (".h5", ".hdf5"):
        import h5py

        with reading(path, "forces file"), h5py.File(path, "r") as handle:
            names = [k for k, v in handle.items() if isinstance(v, h5py.Dataset)]
        with h5py.File(path, "r") as handle:
            forces = handle[_pick_key(names, key, path)][()]
    elif suffix == ".trr":
        forces = _read_trr_forces(path)
    else:
        raise ValueError(f"forces file {str(path)!r}: unknown format {suffix!r} (npy, npz, h5, trr)")
    forces = np.asarray(forces)
    if not np.issubdtype(forces.dtype, np.floating):
        raise TypeError(f"forces in {str(path)!r} must be floats, got dtype {forces.dtype}")
    forces = _upcast_half(forces)
    return forces * forces.dtype.type(factor) if factor != 1.0 else forces


def _pick_key(names: list[str], key: str | None, path: Path) -> str:
    if key is not None:
        if key not in names:
            raise KeyError(f"{str(path)!r} has no array {key!r}; it has {names}")
        return key
    if "forces" in names:
        return "forces"
    named = [n for n in names if "force" in n.lower()]
    if len(named) == 1:
        return named[0]
    if names == ["arr_0"]:  # np.savez(path, array): unnamed, not misnamed
        return names[0]
    if not named:
        raise KeyError(
            f"{str(path)!r} holds no array named as forces (its arrays: {names}); name the forces "
            "array with key= (forces_key=) if one of them holds forces in kJ/mol/nm"
        )
    raise KeyError(f"{str(path)!r} holds several force arrays {named}; name one with key=")


def load_atomistic(
    topology: str | os.PathLike | md.Topology,
    trajectory: str | os.PathLike | list[str | os.PathLike],
    forces: str | os.PathLike | np.ndarray,
    temperature: float,
    force_units: str = "kJ/mol/nm",
    forces_key: str | None = None,
    constraints: np.ndarray | None = None,
    nonfinite: str = "raise",
) -> AtomisticData:
    """Load positions from any mdtraj trajectory format and forces from a file or array.

    Args:
      topology: a Topology or a file mdtraj reads. trajectory: one or several trajectory files.
      forces: forces file (npy/npz/h5/trr) or an array (T, n, 3) in ``force_units``.
      temperature: K. constraints: (K, 2) atom pairs, or None.
    """
    top = topology if isinstance(topology, md.Topology) else load_topology(topology)
    paths = trajectory if isinstance(trajectory, list | tuple) else [trajectory]
    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"trajectory file {str(p)!r} does not exist")
    with reading(paths[0] if len(paths) == 1 else [str(p) for p in paths], "trajectory file"):
        traj = md.load([str(p) for p in paths], top=top)
    if isinstance(forces, np.ndarray):
        force_array = forces * force_unit_factor(force_units)
    else:
        force_array = load_forces(forces, key=forces_key, force_units=force_units)
    return make_atomistic_data(
        traj.xyz, force_array, top, temperature, constraints=constraints, nonfinite=nonfinite,
        metadata={"trajectory": [str(p) for p in paths], "forces": str(forces) if not isinstance(forces, np.ndarray) else "array"},
    )


def iter_chunks(
    topology: str | os.PathLike | md.Topology,
    trajectory: str | os.PathLike,
    forces: str | os.PathLike,
    chunk_size: int = 1000,
    force_units: str = "kJ/mol/nm",
    forces_key: str | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream (positions (t, n, 3) nm, forces (t, n, 3) kJ/mol/nm) blocks of a large dataset.

    Positions come from ``mdtraj.iterload``; forces are read block by block (npy memory-mapped,
    HDF5 sliced), so neither is held whole in memory. Raises if the frame counts differ.
    """
    _check_chunk_size(chunk_size)
    top = topology if isinstance(topology, md.Topology) else load_topology(topology)
    factor = force_unit_factor(force_units)
    path = Path(forces)
    with _ForceReader(path, forces_key) as reader:
        if reader.shape[1] != top.n_atoms:
            raise ValueError(
                f"forces has shape {reader.shape} but the topology has {top.n_atoms} atoms"
            )
        start = 0
        for block in md.iterload(str(trajectory), top=top, chunk=chunk_size):
            # some formats (gro, pdb) ignore ``chunk`` and load whole: re-split
            for offset in range(0, block.n_frames, chunk_size):
                xyz = block.xyz[offset : offset + chunk_size]
                stop = start + xyz.shape[0]
                if stop > reader.shape[0]:
                    raise ValueError(
                        f"trajectory {str(trajectory)!r} has more frames than forces ({reader.shape[0]})"
                    )
                f = np.asarray(reader.read(start, stop)) * factor
                yield xyz, f.astype(xyz.dtype, copy=False)
                start = stop
        if start != reader.shape[0]:
            raise ValueError(
                f"trajectory {str(trajectory)!r} has {start} frames but forces has {reader.shape[0]}"
            )


class _ForceReader:
    """Block reader over a forces file without loading it whole."""

    def __init__(self, path: Path, key: str | None):
        self.path, self.key, self._handle = path, key, None
        if not path.exists():
            raise FileNotFoundError(f"forces file {str(path)!r} does not exist")

    def __enter__(self) -> _ForceReader:
        suffix = self.path.suffix.lower()
        if suffix == ".npy":
            self._array = np.load(self.path, mmap_mode="r")
        elif suffix in (".h5", ".hdf5"):
            import h5py

            self._handle = h5py.File(self.path, "r")
            names = [k for k, v in self._handle.items() if isinstance(v, h5py.Dataset)]
            self._array = self._handle[_pick_key(names, self.key, self.path)]
        else:
            self._array = load_forces(self.path, key=self.key)
        self.shape = tuple(self._array.shape)
        return self

    def read(self, start: int, stop: int) -> np.ndarray:
        return self._array[start:stop]

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()


# ----------------------------------------------------------------------------- dataset files


def _topology_to_pdb(topology: md.Topology, positions: np.ndarray) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        name = os.path.join(folder, "topology.pdb")
        md.Trajectory(positions[:1], topology).save_pdb(name)
        return Path(name).read_text()


def _topology_from_pdb(text: str) -> md.Topology:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        name = os.path.join(folder, "topology.pdb")
        Path(name).write_text(text)
        return md.load_topology(name)


def content_hash(positions: np.ndarray, forces: np.ndarray) -> str:
    """SHA-256 over the raw bytes of positions and forces (little-endian float32)."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(positions, dtype="<f4").tobytes())
    digest.update(np.ascontiguousarray(forces, dtype="<f4").tobytes())
    return digest.hexdigest()


def write_dataset_layout(
    handle: Any, positions: np.ndarray, forces: np.ndarray, constraints: np.ndarray, topology_pdb: str,
    temperature: float, metadata: dict, weights: np.ndarray | None = None, chunk_frames: int | None = None,
) -> None:
    """Write the jaxcg dataset layout into an open, empty HDF5 file ``handle`` (the one place
    that knows it; ``save_dataset`` and ``jaxcg.reference`` both use it).

    ``positions``/``forces``: (T, n, 3) nm and kJ/mol/nm, stored float32, gzip-compressed and
    extendable along frames (``maxshape=(None, n, 3)``, chunks of ``chunk_frames`` frames when
    given) so that a generator can append; constraints (K, 2) atom pairs; ``temperature`` in K;
    ``metadata`` stored as JSON. Sets ``format_version`` and the ``content_hash`` of the frames.
    """
    positions, forces = np.asarray(positions, np.float32), np.asarray(forces, np.float32)
    n_atoms = positions.shape[1]
    opts: dict[str, Any] = {"compression": "gzip", "compression_opts": 4, "shuffle": True,
                            "maxshape": (None, n_atoms, 3)}
    if chunk_frames is not None:
        opts["chunks"] = (max(1, int(chunk_frames)), n_atoms, 3)
    handle.create_dataset("positions", data=positions, **opts)
    handle.create_dataset("forces", data=forces, **opts)
    handle.create_dataset("constraints", data=np.asarray(constraints, dtype=np.int64).reshape(-1, 2))
    if weights is not None:
        handle.create_dataset("weights", data=np.asarray(weights, dtype=np.float64))
    handle.attrs["topology_pdb"] = topology_pdb
    handle.attrs["temperature"] = float(temperature)
    handle.attrs["format_version"] = DATASET_FORMAT_VERSION
    handle.attrs["content_hash"] = content_hash(positions, forces)
    handle.attrs["metadata"] = json.dumps(metadata, default=str)


def save_dataset(
    path: str | os.PathLike, data: AtomisticData, metadata: dict | None = None, overwrite: bool = False
) -> Path:
    """Write ``data`` to one HDF5 file (the jaxcg dataset format, see ``load_dataset``).

    An existing ``path`` is refused (``OutputExistsError``) unless ``overwrite=True``.

    Layout: datasets ``positions`` (T, n, 3) float32 nm, ``forces`` (T, n, 3) float32 kJ/mol/nm,
    ``constraints`` (K, 2) int64, optional ``weights`` (T,); attributes ``topology_pdb`` (PDB text),
    ``temperature`` (K), ``format_version``, ``content_hash`` and ``metadata`` (JSON).
    """
    import h5py

    path = Path(path)
    refuse_existing([path], "dataset", overwrite, resume_hint=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    positions = np.asarray(data.positions, dtype=np.float32)
    forces = np.asarray(data.forces, dtype=np.float32)
    meta = {**data.metadata, **(metadata or {})}
    tmp = path.with_name(path.name + ".tmp")
    constraints = np.zeros((0, 2), np.int64) if data.constraints is None else data.constraints
    with h5py.File(tmp, "w") as handle:
        write_dataset_layout(handle, positions, forces, constraints, _topology_to_pdb(data.topology, positions),
                             data.temperature, meta, weights=data.weights)
    os.replace(tmp, path)
    return path


def load_dataset(path: str | os.PathLike, verify_hash: bool = False) -> AtomisticData:
    """Read a jaxcg HDF5 dataset written by ``save_dataset`` into ``AtomisticData``."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {str(path)!r} does not exist")
    with reading(path, "dataset"), h5py.File(path, "r") as handle:
        version = int(handle.attrs.get("format_version", -1))
        if version != DATASET_FORMAT_VERSION:
            raise ValueError(
                f"dataset {str(path)!r} has format_version {version}, expected {DATASET_FORMAT_VERSION}"
            )
        positions = _upcast_half(handle["positions"][()])
        forces = _upcast_half(handle["forces"][()])
        constraints = handle["constraints"][()]
        weights = handle["weights"][()] if "weights" in handle else None
        topology = _topology_from_pdb(handle.attrs["topology_pdb"])
        temperature = float(handle.attrs["temperature"])
        stored_hash = str(handle.attrs["content_hash"])
        metadata = json.loads(handle.attrs["metadata"])
    if verify_hash and content_hash(positions, forces) != stored_hash:
        raise ValueError(f"dataset {str(path)!r}: content hash does not match its arrays")
    metadata["content_hash"] = stored_hash
    return AtomisticData(
        positions=positions,
        forces=forces,
        topology=topology,
        temperature=temperature,
        constraints=constraints if constraints.size else None,
        weights=weights,
        metadata=metadata,
    )


def iter_dataset_chunks(
    path: str | os.PathLike, chunk_size: int = 1000
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream (positions, forces) blocks from a jaxcg HDF5 dataset without loading it whole."""
    import h5py

    _check_chunk_size(chunk_size)
    with reading(path, "dataset"):
        handle = h5py.File(path, "r")
    with handle:
        n_frames = handle["positions"].shape[0]
        for start in range(0, n_frames, chunk_size):
            stop = min(start + chunk_size, n_frames)
            yield handle["positions"][start:stop], handle["forces"][start:stop]
