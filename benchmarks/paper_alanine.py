"""Alanine dipeptide end to end: force-map data efficiency and Ramachandran FES of CG models.

Bundled data (OpenMM amber14, vacuum, HBonds constrained, 300 K, 20,000 frames at 1 ps) mapped to
the five backbone heavy atoms C N CA C N with the slice, basic and optimal force maps. For each
map a Boltzmann-inversion prior plus a SchNet trained on delta forces, on nested random training
subsets of increasing size; each model scored on the held-out last 20 % against the optimal map's
forces (a common target: residual = optimal noise + PMF error). The largest model of each map is
simulated with Langevin dynamics and its φ/ψ surface compared with the all-atom one (KL, MSE).

    python benchmarks/paper_alanine.py [--sizes 1000 4000 16000] [--epochs 10] [--replicas 32]
                                       [--steps 20000] [--seed 0] [--level backbone|ca_cb]

Writes benchmarks/results/paper_alanine.json, paper_alanine_fes.png, paper_alanine_residuals.png
(``--level ca_cb``: the CA+CB level, CH3(ACE) CA CB CH3(NME), files paper_alanine_ca_cb*, surface
of the bond angles CH3(ACE)-CA-CB and CB-CA-CH3(NME) instead of φ/ψ).
The README's figures: ``--extra-seeds 1 2 3 4 --equal-steps 1200`` (27 min on 2 CPU cores; the
CA+CB level 9 min). By default the optimal map for n training frames is fitted on those n frames
alone; with ``--equal-steps`` every size gets the same number of optimiser steps, otherwise the
same epochs (so smaller sets also get fewer steps).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--replicas", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20000, help="Langevin steps of 2 fs per replica")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run that is also simulated")
    parser.add_argument("--extra-seeds", type=int, nargs="*", default=[],
                        help="more seeds (new training subsets and initialisations), trained and "
                        "scored but not simulated; the data-efficiency factors are reported per seed")
    parser.add_argument("--equal-steps", type=int, default=None,
                        help="train every size for about this many optimiser steps instead of --epochs")
    parser.add_argument("--maps", nargs="+", default=["slice", "basic", "optimal"])
    parser.add_argument("--level", choices=["backbone", "ca_cb"], default="backbone")
    parser.add_argument("--out", default=None, help="output prefix (default results/paper_alanine[_LEVEL])")
    args = parser.parse_args()
    if args.out is None:
        args.out = str(HERE / "results" / ("paper_alanine" if args.level == "backbone" else f"paper_alanine_{args.level}"))

    from jaxcg.analysis import plot_fes, save_metrics
    from jaxcg.experiments.alanine import plot_residuals, run_alanine
    from jaxcg.reference import bundled_dataset
    from jaxcg.train import TrainConfig

    start = time.perf_counter()
    data = bundled_dataset("alanine_dipeptide_vacuum")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=None, seed=args.seed)
    result = run_alanine(data, sizes=tuple(args.sizes), config=config, n_replicas=args.replicas,
                         n_steps=args.steps, seed=args.seed, maps=tuple(args.maps),
                         progress=lambda line: print(line, flush=True), level=args.level,
                         equal_steps=args.equal_steps)
    surfaces, _ = result.pop("surfaces"), result.pop("models")
    runs = [result]
    for seed in args.extra_seeds:
        extra = run_alanine(data, sizes=tuple(args.sizes), config=dataclasses.replace(config, seed=seed),
                            n_steps=0, seed=seed, maps=tuple(args.maps), level=args.level,
                            progress=lambda line, seed=seed: print(f"seed {seed}: {line}", flush=True),
                            equal_steps=args.equal_steps)
        extra.pop("surfaces"), extra.pop("models")
        runs.append(extra)
    if len(runs) > 1:
        result["per_seed"] = [{"seed": r["seed"], "residuals": r["residuals"],
                               "data_efficiency": r["data_efficiency"]} for r in runs]
        result["residual_mean_std"] = {
            name: {"mean": np.mean([r["residuals"][name] for r in runs], 0).tolist(),
                   "std": np.std([r["residuals"][name] for r in runs], 0, ddof=1).tolist()}
            for name in result["residuals"]}
    result["settings"] = vars(args) | {"seconds": time.perf_counter() - start}

    print(f"\nmaps (E|f|^2 per bead on the {result['n_test']} held-out frames, (kJ/mol/nm)^2)")
    print(f"{'map':<9}{'valid':>7}{'<|f|^2>/bead':>16}{'vs slice':>10}")
    for row in result["maps"]:
        print(f"{row['map']:<9}{'yes' if row['valid'] else 'NO':>7}{row['mean_sq_force_per_bead']:>16.4g}"
              f"{row['ratio_to_slice']:>10.3f}")
    print("\nhold-out residual vs optimal-map forces, (kJ/mol/nm)^2 per bead")
    print(f"{'n_train':>8}" + "".join(f"{m:>12}" for m in result["residuals"]))
    for i, n in enumerate(result["sizes"]):
        print(f"{n:>8}" + "".join(f"{v[i]:>12.5g}" for v in result["residuals"].values()))
    print("\ndata efficiency: frames basic needs to reach optimal's residual")
    for row in result["data_efficiency"]:
        print(f"  optimal n={row['n_optimal']:>6}: basic n={row['n_basic']:>9.0f}  factor {row['factor']:.2f}")
    if len(runs) > 1:
        print(f"\nover {len(runs)} seeds: residual mean ± std, and basic/optimal factor per seed")
        for i, n in enumerate(result["sizes"]):
            cells = "".join(f"{m['mean'][i]:>12.5g} ± {m['std'][i]:<8.3g}" for m in result["residual_mean_std"].values())
            factors = [r["data_efficiency"][i]["factor"] for r in runs if r["data_efficiency"]]
            print(f"{n:>8}{cells}  factors {', '.join(f'{f:.2f}' for f in factors)}")
    print(f"\nFES of ({', '.join(result['cv_labels'])}) of the CG simulations vs all-atom")
    for name, m in result["fes"].items():
        print(f"  {name:<9} KL {m['kl']:.3f} nats   MSE {m['mse_kJ2_per_mol2']:.2f} (kJ/mol)^2   {m['n_frames']} frames")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_metrics(out.with_suffix(".json"), result)
    xlabel, ylabel = result["cv_labels"]
    figures = plot_fes(surfaces, f"{out}_fes", xlabel=xlabel, ylabel=ylabel, size=(3.2 * len(surfaces), 3.0),
                       dpi=70, vmax=30.0)
    figures += plot_residuals(result, f"{out}_residuals", dpi=80)
    for svg in [f for f in figures if f.suffix == ".svg"]:  # keep the results folder small: PNG only
        svg.unlink()
    figures = [f for f in figures if f.suffix == ".png"]
    print(f"\nwrote {out.with_suffix('.json')}, {', '.join(str(f) for f in figures)} "
          f"in {result['settings']['seconds']:.0f} s")


if __name__ == "__main__":
    main()
