"""OpenMM reference-data throughput (ns/day) for every system and solvent, on this machine.

Each system is built as ``jaxcg.reference.generate`` builds it, minimised, given velocities, and
integrated for about ``--seconds`` of wall time on each platform (Reference only where it is not
hopeless: the explicit-solvent PME boxes run on CPU only). Frames are not written, so the
numbers are the integrator's speed; ``generate`` adds a few percent for saving forces.

    python benchmarks/bench_reference.py [--seconds 3] [--systems villin] [--out benchmarks/results/reference.json]
"""

from __future__ import annotations

import argparse
import os
import platform as host
import time
from pathlib import Path

CASES = [
    ("water_dimer", "vacuum", False),
    ("water_dimer", "vacuum", True),
    ("alanine_dipeptide", "vacuum", False),
    ("alanine_dipeptide", "implicit", False),
    ("alanine_dipeptide", "explicit", False),
    ("chignolin", "vacuum", False),
    ("chignolin", "implicit", False),
    ("chignolin", "explicit", False),
    ("villin", "vacuum", False),
    ("villin", "implicit", False),
    ("villin", "explicit", False),
]


def measure(name: str, solvent: str, rigid: bool, platform: str, seconds: float) -> dict:
    """Steps per second and ns/day of one system on one OpenMM platform."""
    import openmm

    from jaxcg.reference._run import RunSettings, make_context
    from jaxcg.reference._systems import build_system

    ref = build_system(name, solvent=solvent, rigid=rigid)
    settings = RunSettings(n_frames=1, save_every=1, temperature=300.0, seed=0, platform=platform)
    context, integrator = make_context(ref, settings)
    context.setPositions(ref.positions)
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=200)
    context.setVelocitiesToTemperature(300.0, 1)
    integrator.step(10)
    n_steps = 10
    while True:
        start = time.perf_counter()
        integrator.step(n_steps)
        elapsed = time.perf_counter() - start
        if elapsed > seconds / 4 or n_steps > 10**8:
            break
        n_steps *= 4
    if elapsed < seconds:  # one more, longer measurement
        n_steps = max(n_steps, int(n_steps * seconds / elapsed))
        start = time.perf_counter()
        integrator.step(n_steps)
        elapsed = time.perf_counter() - start
    return {
        "system": name,
        "solvent": solvent,
        "rigid": rigid,
        "platform": platform,
        "n_atoms_total": ref.system.getNumParticles(),
        "n_atoms_saved": ref.n_atoms,
        "timestep_fs": ref.timestep * 1000,
        "us_per_step": elapsed / n_steps * 1e6,
        "ns_per_day": n_steps * ref.timestep / elapsed * 86.4,
    }


def main() -> None:
    import openmm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="wall time per measurement")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "reference.json"))
    parser.add_argument("--systems", nargs="+", default=None, help="only these systems (default: all)")
    args = parser.parse_args()
    rows = []
    header = f"{'system':<18} {'solvent':<9} {'variant':<9} {'atoms':>6} {'platform':<10} {'us/step':>10} {'ns/day':>10}"
    print(header)
    print("-" * len(header))
    for name, solvent, rigid in CASES:
        if args.systems and name not in args.systems:
            continue
        platforms = ["CPU"] if solvent == "explicit" else ["Reference", "CPU"]
        for plat in platforms:
            row = measure(name, solvent, rigid, plat, args.seconds)
            rows.append(row)
            variant = ("rigid" if rigid else "flexible") if name == "water_dimer" else "-"
            print(
                f"{name:<18} {solvent:<9} {variant:<9} {row['n_atoms_total']:>6} {plat:<10} "
                f"{row['us_per_step']:>10.1f} {row['ns_per_day']:>10.1f}",
                flush=True,
            )
    result = {
        "openmm_version": openmm.__version__,
        "machine": host.machine(),
        "processor": host.processor(),
        "cpu_count": os.cpu_count(),
        "seconds_per_case": args.seconds,
        "results": rows,
    }
    from jaxcg.analysis import save_metrics

    out = save_metrics(args.out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
