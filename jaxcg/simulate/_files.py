"""Trajectory files of many replicas: one DCD plus the CG topology as PDB."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mdtraj as md
import numpy as np

from jaxcg._files import reading, refuse_existing


class TrajectoryWriter:
    """Frames of R replicas to one DCD file, readable by mdtraj.

    Frame t of ``trajectory.dcd`` holds all replicas side by side (R * N atoms, replica r at atoms
    r*N..(r+1)*N-1); ``topology.pdb`` is one replica's CG topology and ``replicas.pdb`` the R-copy
    topology that matches the DCD. ``load_replicas`` gives one ``mdtraj.Trajectory`` per replica.
    DCD cannot be appended to, so the file stays open while the writer lives; ``resume`` rewrites
    the first ``n_frames`` frames of an existing file and continues after them. Without
    ``resume_frames``, an existing ``trajectory.dcd`` is refused (``OutputExistsError``) unless
    ``overwrite=True``.
    """

    def __init__(
        self, folder: str | os.PathLike, topology: md.Topology, n_replicas: int,
        reference_positions: np.ndarray | None = None, resume_frames: int | None = None,
        overwrite: bool = False,
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
            with reading(path, "CG trajectory"), DCDTrajectoryFile(str(path)) as handle:
                old = handle.read()[0][:resume_frames]
            if old.shape[0] != resume_frames:
                raise ValueError(
                    f"{str(path)!r} holds {old.shape[0]} frames, the checkpoint expects "
                    f"{resume_frames}"
                )
        else:
            refuse_existing([path], "CG trajectory", overwrite)
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
    for name in ("topology.pdb", "replicas.pdb", "trajectory.dcd"):
        if not (folder / name).exists():
            raise FileNotFoundError(f"{str(folder)!r} holds no {name}: not a folder written by `jaxcg simulate`")
    with reading(folder / "topology.pdb", "CG topology"):
        topology = md.load_topology(str(folder / "topology.pdb"))
    with reading(folder / "replicas.pdb", "replica topology"):
        replicas = md.load_topology(str(folder / "replicas.pdb"))
    with reading(folder / "trajectory.dcd", "CG trajectory"):
        traj = md.load_dcd(str(folder / "trajectory.dcd"), top=replicas)
    n = topology.n_atoms
    xyz = traj.xyz.reshape(traj.n_frames, -1, n, 3)
    cut = {}
    report = folder / "report.json"
    if trim_stopped and report.exists():
        with reading(report, "simulation report"):
            for item in json.loads(report.read_text()).get("stopped", []):
                cut[int(item["replica"])] = int(item["stopped_frame"])
    return [
        md.Trajectory(xyz[: cut.get(r, xyz.shape[0]), r], topology) for r in range(xyz.shape[1])
    ]
