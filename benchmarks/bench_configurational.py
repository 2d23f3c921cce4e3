"""Configuration-dependent force map beyond the best linear map, on unconstrained peptides.

jaxcg's configuration-dependent maps need unconstrained data (the divergence correction on a
constraint manifold is not implemented), and the bundled data are HBond-constrained. So this
script makes its own flexible data with OpenMM (amber14, vacuum, no constraints, 0.5 fs steps,
300 K), maps it (alanine dipeptide: the 5 backbone beads that carry φ/ψ, frames every 0.5 ps;
CLN025: the 10 CA beads, frames every 0.25 ps), fits the optimal linear map and then the
configuration-dependent map G(r) (started from the linear optimum), and reports both maps' mean
squared mapped force on held-out frames.

    python benchmarks/bench_configurational.py [--system alanine|cln025] [--frames N] [--steps 1500]

Writes benchmarks/results/configurational_{system}.json; caches the data in benchmarks/data/.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BACKBONE = "(resname ACE and name C) or (resname ALA and (name N or name CA or name C)) or (resname NME and name N)"
#: system -> (input pdb, bead selection, default frames, steps of 0.5 fs between frames)
SYSTEMS = {
    "alanine": ("alanine-dipeptide.pdb", BACKBONE, 3000, 1000),
    "cln025": ("cln025.pdb", "name CA", 1500, 500),
}


def flexible_peptide(system_name: str, n_frames: int, save_every: int, seed: int = 0):
    """(positions, forces, topology) of a peptide without constraints, nm and kJ/mol/nm."""
    import mdtraj as md
    import openmm
    from openmm import app, unit

    from jaxcg.reference._systems import input_pdb

    path = HERE / "data" / f"{system_name}_flexible_{n_frames}_{save_every}.npz"
    pdb = app.PDBFile(str(input_pdb(SYSTEMS[system_name][0])))
    forcefield = app.ForceField("amber14-all.xml")
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.topology.setPeriodicBoxVectors(None)
    modeller.addHydrogens(forcefield)
    topology = md.Topology.from_openmm(modeller.topology)
    if path.exists():
        stored = np.load(path)
        return stored["positions"], stored["forces"], topology
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.0005 * unit.picoseconds)
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed + 1)
    integrator.step(20_000)  # 10 ps equilibration
    positions, forces = [], []
    for _ in range(n_frames):
        integrator.step(save_every)
        state = context.getState(getPositions=True, getForces=True)
        positions.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        forces.append(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    positions, forces = np.asarray(positions, np.float32), np.asarray(forces, np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, positions=positions, forces=forces)
    return positions, forces, topology


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=sorted(SYSTEMS), default="alanine")
    parser.add_argument("--frames", type=int, default=None, help="default: 3000 alanine, 1500 CLN025")
    parser.add_argument("--steps", type=int, default=1500, help="optax steps of the configurational map")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="peak Adam rate (cosine decay)")
    parser.add_argument("--out", default=None, help="default results/configurational_{system}.json")
    args = parser.parse_args()
    pdb_file, selection, default_frames, save_every = SYSTEMS[args.system]
    args.frames = args.frames or default_frames
    args.out = args.out or str(HERE / "results" / f"configurational_{args.system}.json")

    import jax
    import optax

    from jaxcg.data import make_atomistic_data
    from jaxcg.maps import (
        check_map,
        fit_configurational_map,
        mean_squared_configurational_force,
        mean_squared_mapped_force,
        optimal_linear_map,
        slice_map,
        valid_map_parametrization,
    )

    start = time.perf_counter()
    positions, forces, topology = flexible_peptide(args.system, args.frames, save_every)
    generated = time.perf_counter() - start
    data = make_atomistic_data(positions, forces, topology, 300.0,
                               metadata={"constraints": "none", "dt_ps": 0.0005, "frame_every_ps": save_every * 0.0005})
    n_train = int(0.7 * data.n_frames)
    train, test = data.subset(slice(0, n_train)), data.subset(slice(n_train, None))
    beads = slice_map(topology, selection)
    linear = optimal_linear_map(train, beads)
    check_map(linear)
    parametrization = valid_map_parametrization(beads, base=linear)
    tick = time.perf_counter()
    params, losses = fit_configurational_map(
        parametrization, train, jax.random.PRNGKey(0), steps=args.steps, batch_size=args.batch, hidden=(64, 64),
        optimizer=optax.adam(optax.cosine_decay_schedule(args.learning_rate, args.steps, alpha=1e-2)),
    )
    fit_seconds = time.perf_counter() - tick
    rows = {
        "slice": float(mean_squared_mapped_force(beads, test.forces)) / beads.n_beads,
        "optimal linear": float(mean_squared_mapped_force(linear, test.forces)) / beads.n_beads,
        "configuration-dependent": mean_squared_configurational_force(parametrization, params, test) / beads.n_beads,
    }
    result = {
        "system": f"{args.system}, amber14 vacuum, no constraints, 0.5 fs, frames every {save_every * 0.0005:g} ps",
        "frames": data.n_frames, "train_frames": n_train, "beads": beads.n_beads,
        "mean_sq_force_per_bead_heldout": rows,
        "configurational_over_linear": rows["configuration-dependent"] / rows["optimal linear"],
        "optax_steps": args.steps, "batch": args.batch, "learning_rate": args.learning_rate,
        "first_and_last_100_step_losses": [float(losses[:100].mean()), float(losses[-100:].mean())],
        "seconds_generate": generated, "seconds_fit": fit_seconds,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\n{result['system']}: {data.n_frames} frames ({n_train} fit), {beads.n_beads} beads ({selection})")
    print(f"{'map':<26}{'<|f|^2>/bead held-out (kJ/mol/nm)^2':>38}")
    for name, value in rows.items():
        print(f"{name:<26}{value:>38.6g}")
    print(f"configuration-dependent / optimal linear = {result['configurational_over_linear']:.4f} "
          f"({args.steps} steps, {fit_seconds:.0f} s); wrote {out}")


if __name__ == "__main__":
    main()
