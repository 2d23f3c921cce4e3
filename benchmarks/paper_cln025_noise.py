"""Mapped-force noise of slice, basic and optimal CA maps of chignolin (CLN025) in vacuum.

All-atom OpenMM frames with HBonds constraints (benchmarks/data/cln025_vacuum_5000.h5, generated
if missing). One bead per CA. The optimal map is fitted on the first half of the frames; every map
is scored on the second half by its mean squared mapped force per bead, E‖f‖² / N ((kJ/mol/nm)²).
The mean-force part of E‖f‖² is the same for every valid map, so the differences are noise.

    python benchmarks/paper_cln025_noise.py [--data PATH] [--frames 5000]

Writes benchmarks/results/paper_cln025_noise.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def noise_table(data, train_fraction: float = 0.5) -> list[dict]:
    """One row per CA map: validity, E‖f‖² per bead on the held-out half, ratio to slice."""
    from jaxcg.maps import (
        basic_aggregation_map,
        check_map,
        mean_squared_mapped_force,
        optimal_linear_map,
        slice_map,
    )

    n_train = int(data.n_frames * train_fraction)
    train, test = data.subset(slice(0, n_train)), data.subset(slice(n_train, None))
    ca = slice_map(data.topology, "name CA")
    maps = {
        "slice": ca,
        "basic": basic_aggregation_map(ca, data.constraints),
        "optimal": optimal_linear_map(train, ca, data.constraints),
    }
    rows = []
    for name, linear_map in maps.items():
        report = check_map(linear_map, data.constraints, raise_on_error=False)
        rows.append({
            "map": name,
            "valid": bool(report.valid),
            "mean_sq_force_per_bead": float(mean_squared_mapped_force(linear_map, test.forces)) / linear_map.n_beads,
            "train_mean_sq_force_per_bead": float(mean_squared_mapped_force(linear_map, train.forces)) / linear_map.n_beads,
            "atoms_with_weight": int((abs(linear_map.force) > 1e-6).sum()),
        })
    for row in rows:
        row["ratio_to_slice"] = row["mean_sq_force_per_bead"] / rows[0]["mean_sq_force_per_bead"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(HERE / "data" / "cln025_vacuum_5000.h5"))
    parser.add_argument("--frames", type=int, default=5000, help="frames to generate if --data is missing")
    parser.add_argument("--out", default=str(HERE / "results" / "paper_cln025_noise.json"))
    args = parser.parse_args()

    from jaxcg.analysis import save_metrics
    from jaxcg.data import load_dataset

    start = time.perf_counter()
    path = Path(args.data)
    if not path.exists():
        from jaxcg.reference import generate

        generate("chignolin", path, n_frames=args.frames, solvent="vacuum", save_every=50)
    data = load_dataset(path)
    rows = noise_table(data)
    n_constraints = 0 if data.constraints is None else len(data.constraints)
    print(f"CLN025 vacuum: {data.n_frames} frames, {data.n_atoms} atoms, {n_constraints} constraints; "
          f"optimal fitted on the first half, scored on the second")
    print(f"{'map':<9}{'valid':>7}{'<|f|^2>/bead test':>20}{'train':>14}{'vs slice':>10}{'atoms in G':>12}")
    for r in rows:
        print(f"{r['map']:<9}{'yes' if r['valid'] else 'NO':>7}{r['mean_sq_force_per_bead']:>20.5g}"
              f"{r['train_mean_sq_force_per_bead']:>14.5g}{r['ratio_to_slice']:>10.3f}{r['atoms_with_weight']:>12}")
    shown = path.resolve().relative_to(HERE.parent) if path.resolve().is_relative_to(HERE.parent) else path
    result = {"data": str(shown), "n_frames": data.n_frames, "n_atoms": data.n_atoms, "n_constraints": n_constraints,
              "temperature_K": data.temperature, "maps": rows, "seconds": time.perf_counter() - start}
    out = save_metrics(args.out, result)
    print(f"wrote {out} in {result['seconds']:.1f} s")


if __name__ == "__main__":
    main()
