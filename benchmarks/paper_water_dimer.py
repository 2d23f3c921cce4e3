"""The paper's first experiment: PMF error of CG water dimers vs training-set size, per force map.

For the bundled flexible and rigid TIP3P dimers (OpenMM, 300 K): O-only CG map with slice, basic
and optimal force maps; an RBF pair potential (32 Gaussians, 0.2–1.2 nm) is force-matched with
Adam to each map's forces on random training subsets of increasing size, over several seeds; the
learned PMF is compared with the all-atom O–O PMF (RMSE over 0.25–0.8 nm, both relative to their
minimum). Expected (Krämer et al. 2023): under constraints slice fails; basic and optimal converge
to the reference; optimal needs fewer frames on the flexible dimer.

    python benchmarks/paper_water_dimer.py [--seeds 10] [--sizes 100 300 1000 3000 10000 20000]

Writes benchmarks/results/paper_water_dimer.json and .png/.svg.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000, 3000, 10000, 20000])
    parser.add_argument("--steps", type=int, default=20000, help="Adam steps per potential")
    parser.add_argument("--out", default=str(HERE / "results" / "paper_water_dimer"))
    parser.add_argument("--replot", action="store_true", help="only redraw the figure from the JSON")
    args = parser.parse_args()
    if args.replot:
        out = Path(args.out)
        figure(json.loads(out.with_suffix(".json").read_text()), out)
        return

    from jaxcg.experiments.water_dimer import MAP_NAMES, reference_pmf, run_water_dimer
    from jaxcg.reference import bundled_dataset

    results: dict = {"sizes": args.sizes, "seeds": args.seeds, "steps": args.steps, "systems": {}}
    start = time.perf_counter()
    for system in ("water_dimer_flexible", "water_dimer_rigid"):
        data = bundled_dataset(system)
        reference = reference_pmf(data)
        table = {name: np.full((len(args.sizes), args.seeds), np.nan) for name in MAP_NAMES}
        noise = {name: np.full((len(args.sizes), args.seeds), np.nan) for name in MAP_NAMES}
        for i, size in enumerate(args.sizes):
            for seed in range(args.seeds):
                for r in run_water_dimer(data, n_train=min(size, data.n_frames), seed=seed, steps=args.steps, reference=reference):
                    table[r.name][i, seed] = r.rmse
                    noise[r.name][i, seed] = r.mean_sq_force / 2
            print(f"{system:>22} n={size:>6}: " + "  ".join(
                f"{name} {np.nanmean(table[name][i]):6.2f}±{np.nanstd(table[name][i]):.2f}" for name in MAP_NAMES
            ), flush=True)
        results["systems"][system] = {
            "pmf_rmse_kJ_per_mol": {k: v.tolist() for k, v in table.items()},
            "mean_sq_force_per_bead": {k: np.nanmean(v, axis=1).tolist() for k, v in noise.items()},
        }
    results["seconds"] = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    figure(results, out)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')} ({results['seconds']:.0f} s)")


def figure(results: dict, out: Path) -> None:
    from jaxcg.analysis import _pyplot, _save

    plt = _pyplot()
    sizes = np.asarray(results["sizes"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110, layout="constrained", sharey=True)
    styles = {"slice": ("o:", "tab:red"), "basic": ("s--", "tab:blue"), "optimal": ("^-", "tab:green")}
    for ax, (system, entry) in zip(axes, results["systems"].items(), strict=True):
        curves = entry["pmf_rmse_kJ_per_mol"]
        for name, values in curves.items():
            values = np.asarray(values)
            twin = next((other for other in curves if other != name and np.array_equal(curves[other], values)), None)
            if twin is not None and list(curves).index(twin) < list(curves).index(name):
                continue  # identical maps (no constraint groups to merge): drawn once
            label = f"{name} map" if twin is None else f"{name} = {twin} map"
            style, color = styles[name]
            median = np.median(values, axis=1)
            low, high = np.percentile(values, 25, axis=1), np.percentile(values, 75, axis=1)
            ax.errorbar(sizes, median, yerr=[median - low, high - median], fmt=style, color=color,
                        capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training frames")
        ax.set_title(f"{system.replace('_', ' ')} (median, quartiles over {results['seeds']} seeds)")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    axes[0].set_ylabel("PMF RMSE (0.25–0.8 nm) / kJ/mol")
    _save(fig, out, 110)


if __name__ == "__main__":
    main()
