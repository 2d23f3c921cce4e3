"""OpenMM systems for reference data: water dimer, alanine dipeptide, chignolin, villin.

Each builder returns a ``ReferenceSystem``: the OpenMM ``System``, its ``Topology``, starting
positions (nm), the indices of the solute atoms that are saved, the timestep (ps) and a short
description. OpenMM is imported inside the builders (``pip install jaxcg[openmm]``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

#: Systems ``build_system`` knows, and the solvents each accepts.
SYSTEMS: dict[str, tuple[str, ...]] = {
    "water_dimer": ("vacuum",),
    "alanine_dipeptide": ("vacuum", "implicit", "explicit"),
    "chignolin": ("vacuum", "implicit", "explicit"),
    "villin": ("explicit", "implicit", "vacuum"),
}

#: O-O distance (nm) below which the water-dimer restraint is exactly zero.
WATER_RESTRAINT_R0 = 1.0
#: Force constant (kJ/mol/nm^2) of the water-dimer restraint beyond ``WATER_RESTRAINT_R0``.
WATER_RESTRAINT_K = 1000.0

_DATA_DIR = Path(__file__).resolve().parent.parent / "bundled"
_SHARED_DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclasses.dataclass(frozen=True)
class ReferenceSystem:
    """An OpenMM system ready to simulate.

    Attributes:
      name: system name, e.g. "alanine_dipeptide".
      system: ``openmm.System`` (forces, constraints, masses; periodic box for explicit solvent).
      topology: ``openmm.app.Topology`` of all atoms, solvent included.
      positions: (n_total, 3) float64 starting positions, nm.
      solute: (n,) int indices of the atoms that are saved (all atoms except solvent).
      timestep: integration timestep, ps.
      description: one-line summary of the force field and settings, stored in the metadata.
    """

    name: str
    system: Any
    topology: Any
    positions: np.ndarray
    solute: np.ndarray
    timestep: float
    description: str

    @property
    def n_atoms(self) -> int:
        """Number of saved (solute) atoms."""
        return int(self.solute.size)

    def solute_constraints(self) -> np.ndarray:
        """(K, 2) int64 constrained atom pairs among the solute, in solute numbering."""
        index = -np.ones(self.system.getNumParticles(), dtype=np.int64)
        index[self.solute] = np.arange(self.solute.size)
        pairs = []
        for k in range(self.system.getNumConstraints()):
            i, j, _ = self.system.getConstraintParameters(k)
            if index[i] >= 0 and index[j] >= 0:
                pairs.append((index[i], index[j]))
        return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)

    def solute_pdb(self) -> str:
        """PDB text of the solute (topology and starting positions), as stored in datasets."""
        import io

        import openmm.app as app
        import openmm.unit as unit

        modeller = app.Modeller(self.topology, self.positions * unit.nanometer)
        keep = set(self.solute.tolist())
        modeller.delete([a for a in modeller.topology.atoms() if a.index not in keep])
        modeller.topology.setPeriodicBoxVectors(None)
        with io.StringIO() as buf:
            app.PDBFile.writeFile(modeller.topology, modeller.positions, buf, keepIds=True)
            return buf.getvalue()


def _import_openmm() -> tuple[Any, Any, Any]:
    try:
        import openmm
        import openmm.app as app
        import openmm.unit as unit
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("jaxcg.reference needs OpenMM: pip install 'jaxcg[openmm]'") from err
    return openmm, app, unit


def input_pdb(filename: str) -> Path:
    """Path of a bundled input structure (``jaxcg/bundled/<filename>``, else ``shared/data``)."""
    for folder in (_DATA_DIR, _SHARED_DATA_DIR):
        path = folder / filename
        if path.exists():
            return path
    raise FileNotFoundError(f"input structure {filename!r} not found in {str(_DATA_DIR)!r}")


def _check_solvent(name: str, solvent: str) -> None:
    allowed = SYSTEMS[name]
    if solvent not in allowed:
        raise ValueError(f"solvent for {name} must be one of {list(allowed)}, got {solvent!r}")


def default_solvent(name: str) -> str:
    """The solvent a system gets when none is given: the first of ``SYSTEMS[name]`` ("vacuum"
    for the small systems, "explicit" for villin)."""
    if name not in SYSTEMS:
        raise ValueError(f"system must be one of {list(SYSTEMS)}, got {name!r}")
    return SYSTEMS[name][0]


def water_dimer(rigid: bool = False) -> ReferenceSystem:
    """Two TIP3P waters in vacuum with a flat-bottom restraint on the O-O distance.

    Starting geometry: water 0 of OpenMM's bundled ``tip3p.pdb`` and its nearest neighbour
    (hydrogen bonded, O-O 0.279 nm). Force field: OpenMM's ``tip3p.xml`` with NoCutoff Coulomb
    and Lennard-Jones. ``rigid=True`` constrains O-H, O-H and H-H in each water (rigidWater,
    3 constraints per water, timestep 2 fs); ``rigid=False`` keeps the harmonic O-H bonds
    (k = 462750.4 kJ/mol/nm^2, r0 = 0.09572 nm) and H-O-H angle (k = 836.8 kJ/mol/rad^2,
    theta0 = 104.52 deg) of the same file, timestep 1 fs (the O-H period is about 9 fs).

    Restraint: U = 0.5 * 1000 kJ/mol/nm^2 * (d - 1.0 nm)^2 for O-O distance d > 1.0 nm and
    exactly zero for d <= 1.0 nm, so the bound dimer (d < 0.9 nm) feels no restraint force; it
    keeps the dissociated waters from drifting apart in vacuum. Its force is part of the saved
    forces.
    """
    openmm, app, unit = _import_openmm()
    data = Path(app.__file__).resolve().parent / "data" / "tip3p.pdb"
    pdb = app.PDBFile(str(data))
    xyz = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    oxygens = xyz[0::3]
    partner = int(np.argsort(np.linalg.norm(oxygens - oxygens[0], axis=1))[1])
    residues = list(pdb.topology.residues())
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([r for k, r in enumerate(residues) if k not in (0, partner)])
    modeller.topology.setPeriodicBoxVectors(None)
    positions = modeller.getPositions().value_in_unit(unit.nanometer)
    forcefield = app.ForceField("tip3p.xml")
    system = forcefield.createSystem(
        modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=rigid
    )
    restraint = openmm.CustomBondForce("step(r - r0) * 0.5 * k * (r - r0)^2")
    restraint.addGlobalParameter("r0", WATER_RESTRAINT_R0)
    restraint.addGlobalParameter("k", WATER_RESTRAINT_K)
    restraint.addBond(0, 3, [])
    system.addForce(restraint)
    n = system.getNumParticles()
    kind = "rigid" if rigid else "flexible"
    return ReferenceSystem(
        name="water_dimer",
        system=system,
        topology=modeller.topology,
        positions=np.asarray(positions, dtype=np.float64),
        solute=np.arange(n),
        timestep=0.002 if rigid else 0.001,
        description=(
            f"{kind} TIP3P water dimer (tip3p.xml), vacuum, NoCutoff; flat-bottom O-O restraint "
            f"k={WATER_RESTRAINT_K} kJ/mol/nm^2 beyond {WATER_RESTRAINT_R0} nm"
        ),
    )


def _amber_peptide(name: str, pdb_file: str, solvent: str) -> ReferenceSystem:
    """Amber14 peptide in vacuum, GBn2 implicit solvent or a TIP3P box with PME."""
    _check_solvent(name, solvent)
    openmm, app, unit = _import_openmm()
    pdb = app.PDBFile(str(input_pdb(pdb_file)))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.topology.setPeriodicBoxVectors(None)
    files = ["amber14-all.xml"]
    if solvent == "implicit":
        files.append("implicit/gbn2.xml")
    elif solvent == "explicit":
        files.append("amber14/tip3p.xml")
    forcefield = app.ForceField(*files)
    modeller.addHydrogens(forcefield)
    n_solute = modeller.topology.getNumAtoms()
    if solvent == "explicit":
        modeller.addSolvent(forcefield, model="tip3p", padding=1.0 * unit.nanometer)
        system = forcefield.createSystem(
            modeller.topology,
            nonbondedMethod=app.PME,
            nonbondedCutoff=1.0 * unit.nanometer,
            constraints=app.HBonds,
        )
        details = "amber14 + TIP3P box (1 nm padding), PME with 1 nm cutoff, NVT"
    else:
        system = forcefield.createSystem(
            modeller.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds
        )
        details = "amber14 + GBn2 implicit solvent" if solvent == "implicit" else "amber14 vacuum"
        details += ", NoCutoff"
    positions = modeller.getPositions().value_in_unit(unit.nanometer)
    return ReferenceSystem(
        name=name,
        system=system,
        topology=modeller.topology,
        positions=np.asarray(positions, dtype=np.float64),
        solute=np.arange(n_solute),
        timestep=0.002,
        description=f"{name}: {details}, HBonds constraints",
    )


def alanine_dipeptide(solvent: str = "vacuum") -> ReferenceSystem:
    """Capped alanine dipeptide (22 atoms), amber14, HBonds constraints, timestep 2 fs.

    Args:
      solvent: "vacuum" (NoCutoff), "implicit" (GBn2, NoCutoff) or "explicit" (TIP3P box with
        1 nm padding, PME, 1 nm cutoff, NVT). Only the 22 peptide atoms are saved.
    """
    return _amber_peptide("alanine_dipeptide", "alanine-dipeptide.pdb", solvent)


def chignolin(solvent: str = "vacuum") -> ReferenceSystem:
    """Chignolin CLN025 (ACE-YYDPETGTWY-NME, 175 atoms), amber14, HBonds, timestep 2 fs.

    Args:
      solvent: "vacuum", "implicit" (GBn2) or "explicit" (TIP3P box, PME), as for
        ``alanine_dipeptide``. Only the peptide atoms are saved.
    """
    return _amber_peptide("chignolin", "cln025.pdb", solvent)


#: Residue names of OpenMM's ``test.pdb`` that are solvent (water and the two chloride ions).
_VILLIN_SOLVENT = ("HOH", "Cl")


def villin(solvent: str = "explicit") -> ReferenceSystem:
    """Villin headpiece HP35 (35 residues, 582 atoms) from OpenMM's own ``data/test.pdb``.

    The structure ships with OpenMM (no download): the protein with hydrogens, 2 Cl⁻ and 2,761
    TIP3P waters in a 4.92 × 4.60 × 3.89 nm box, 8,867 atoms. Only the 582 protein atoms are
    saved; in explicit solvent their forces include the solvent's.

    Args:
      solvent: "explicit" (default: the file's box as given, amber14 + TIP3P, PME with 1 nm
        cutoff, rigid water, NVT), "implicit" (water and ions removed, amber14 + GBn2,
        NoCutoff) or "vacuum" (amber14, NoCutoff). HBonds constraints, timestep 2 fs.
    """
    _check_solvent("villin", solvent)
    openmm, app, unit = _import_openmm()
    pdb = app.PDBFile(str(Path(app.__file__).resolve().parent / "data" / "test.pdb"))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    if solvent == "explicit":
        forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
        system = forcefield.createSystem(
            modeller.topology,
            nonbondedMethod=app.PME,
            nonbondedCutoff=1.0 * unit.nanometer,
            constraints=app.HBonds,
            rigidWater=True,
        )
        details = "amber14 + TIP3P (OpenMM test.pdb box, 2761 waters, 2 Cl-), PME with 1 nm cutoff, rigid water, NVT"
    else:
        modeller.delete([r for r in modeller.topology.residues() if r.name in _VILLIN_SOLVENT])
        modeller.topology.setPeriodicBoxVectors(None)
        files = ["amber14-all.xml"] + (["implicit/gbn2.xml"] if solvent == "implicit" else [])
        system = app.ForceField(*files).createSystem(
            modeller.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds
        )
        details = ("amber14 + GBn2 implicit solvent" if solvent == "implicit" else "amber14 vacuum") + ", NoCutoff"
    solute = np.array(
        [a.index for a in modeller.topology.atoms() if a.residue.name not in _VILLIN_SOLVENT], dtype=np.int64
    )
    positions = modeller.getPositions().value_in_unit(unit.nanometer)
    return ReferenceSystem(
        name="villin",
        system=system,
        topology=modeller.topology,
        positions=np.asarray(positions, dtype=np.float64),
        solute=solute,
        timestep=0.002,
        description=f"villin HP35: {details}, HBonds constraints",
    )


def build_system(name: str, solvent: str | None = None, rigid: bool = False) -> ReferenceSystem:
    """Dispatch to the builder of ``name`` ("water_dimer", "alanine_dipeptide", "chignolin",
    "villin"); ``solvent`` None means ``default_solvent(name)``."""
    solvent = default_solvent(name) if solvent is None else solvent
    _check_solvent(name, solvent)
    if rigid and name != "water_dimer":
        raise ValueError(f"rigid=True applies only to water_dimer, got system {name!r}")
    if name == "water_dimer":
        return water_dimer(rigid=rigid)
    if name == "alanine_dipeptide":
        return alanine_dipeptide(solvent)
    if name == "villin":
        return villin(solvent)
    return chignolin(solvent)


def default_platform(name: str, solvent: str) -> str:
    """The faster OpenMM platform for this system on a small CPU machine (see ``bench``).

    Measured on 2 cores with OpenMM 8.6.1 (us per step, Reference / CPU): water dimer 2.4 / 756
    (flexible) and 2.6 / 251 (rigid); alanine dipeptide vacuum 18 / 326, implicit 3309 / 687;
    chignolin vacuum 632 / 956 (a tie, 968 / 925, in a second, busier measurement), implicit
    20665 / 8298; villin (582 protein atoms) vacuum 2806 / 1052, implicit 146443 / 95200, and
    explicit (8,867 atoms) 47,000 on CPU. Reference wins for the small vacuum systems (no thread
    overhead), CPU for villin, for implicit solvent (Reference's CustomGBForce is slow) and for
    explicit solvent (PME on Reference is far slower still). Pass ``platform=`` to override.
    """
    return _DEFAULT_PLATFORMS.get((name, solvent), "CPU")


#: Filled from the platform measurements (Reference vs CPU, 2 cores).
_DEFAULT_PLATFORMS: dict[tuple[str, str], str] = {
    ("water_dimer", "vacuum"): "Reference",
    ("alanine_dipeptide", "vacuum"): "Reference",
    ("chignolin", "vacuum"): "Reference",
}
