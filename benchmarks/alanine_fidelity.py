"""Alanine dipeptide: does the CG model sample the all-atom free-energy surface?

Models are trained on the bundled data (20 ns, 20,000 frames, OpenMM amber14 vacuum, HBonds,
300 K) at the backbone level (C(ACE) N CA C N(NME)) with the library's default recipe
(``jaxcg.pipeline``: Boltzmann-inversion prior + SchNet on delta forces), one per force map and
seed; each is judged by simulation (``jaxcg.evaluate``): R replicas × n steps of 2 fs Langevin
dynamics started from training frames, the φ/ψ surface compared with an independent long all-atom
run (100 ns, OpenMM seed 1, generated here once and cached under benchmarks/data).

    python benchmarks/alanine_fidelity.py [--seeds 0 1 2] [--maps slice basic optimal]
        [--replicas 100] [--steps 50000] [--epochs 50] [--cli] [--resume]

Reports per model: KL(reference ‖ CG) over 36 × 36 bins of 10°, its sampling error (two halves
of the replicas), the drift (first vs second half of the run), time at φ > 0 and in bins the
reference never visits, basin populations, stopped replicas; the floor (the training data's own
KL to the long reference, and the long reference's halves to each other); with ``--cli`` the
documented command-line recipe (``jaxcg train`` with defaults, then ``jaxcg evaluate``).
Writes benchmarks/results/alanine_fidelity.json and alanine_fidelity_fes.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "data" / "alanine_reference_100ns.h5"
OUT = HERE / "results" / "alanine_fidelity"


def basin_populations(cv: np.ndarray) -> dict[str, float]:
    """Fractions of frames (T, 2) φ/ψ in rad in three regions: αR (φ < 0, −2 < ψ < 0.5), β/C7eq
    (φ < 0, the rest) and φ > 0 (αL, C7ax)."""
    phi, psi = cv[:, 0], cv[:, 1]
    alpha = (phi < 0) & (psi > -2.0) & (psi < 0.5)
    return {"alpha_R": float(np.mean(alpha)), "beta_C7eq": float(np.mean((phi < 0) & ~alpha)),
            "phi_positive": float(np.mean(phi > 0))}


def ensure_reference(ns: float) -> Path:
    from jaxcg.reference import generate

    if not REFERENCE.exists() or "--resume" in sys.argv:
        print(f"all-atom reference: {ns} ns of alanine dipeptide (OpenMM seed 1) -> {REFERENCE}", flush=True)
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        generate("alanine_dipeptide", REFERENCE, ns=ns, seed=1, resume=REFERENCE.exists())
    return REFERENCE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--maps", nargs="+", default=["slice", "basic", "optimal"])
    parser.add_argument("--replicas", type=int, default=100)
    parser.add_argument("--steps", type=int, default=50_000, help="steps of 2 fs per replica")
    parser.add_argument("--epochs", type=int, default=None, help="default: the library's")
    parser.add_argument("--save-every", type=int, default=50, help="steps between saved frames (0.1 ps)")
    parser.add_argument("--reference-ns", type=float, default=100.0)
    parser.add_argument("--cli", action="store_true", help="also run the documented CLI recipe")
    parser.add_argument("--resume", action="store_true", help="keep models already in the JSON")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)

    import dataclasses

    import jax

    from jaxcg import analysis, evaluate, pipeline
    from jaxcg.experiments.alanine import BACKBONE, LEVELS, backbone_maps, cg_datasets
    from jaxcg.reference import bundled_dataset

    out = Path(args.out)
    json_path = out.with_suffix(".json")
    results = json.loads(json_path.read_text()) if args.resume and json_path.exists() else {"models": {}}
    reference_data = __import__("jaxcg.data", fromlist=["load_dataset"]).load_dataset(ensure_reference(args.reference_ns))
    data = bundled_dataset("alanine_dipeptide_vacuum")
    level = LEVELS["backbone"]
    edges = (level.edges, level.edges)
    kT = data.kT
    ref_x = reference_data.positions[:, reference_data.topology.select(BACKBONE)]
    ref_cv = level.observables(ref_x)
    train_cv = level.observables(data.positions[:, data.topology.select(BACKBONE)])
    half = len(ref_cv) // 2

    def kl(a, b):
        return analysis.compare_2d(analysis.fes_2d(a[:, 0], a[:, 1], *edges, kT),
                                   analysis.fes_2d(b[:, 0], b[:, 1], *edges, kT))["kl"]

    results["floor"] = {
        "training_data_kl": kl(ref_cv, train_cv),
        "reference_halves_kl": kl(ref_cv[:half], ref_cv[half:]),
        "reference_frames": int(len(ref_cv)),
        "reference_populations": basin_populations(ref_cv),
        "training_populations": basin_populations(train_cv),
    }
    print(f"floor: training data KL {results['floor']['training_data_kl']:.4f}, reference halves "
          f"{results['floor']['reference_halves_kl']:.4f}", flush=True)
    maps = backbone_maps(data, data)
    cgs = cg_datasets(data, {m: maps[m] for m in args.maps})
    config = pipeline.DEFAULT_TRAIN if args.epochs is None else dataclasses.replace(pipeline.DEFAULT_TRAIN, epochs=args.epochs)
    results["settings"] = {"replicas": args.replicas, "steps": args.steps, "dt_ps": 0.002, "save_every": args.save_every,
                           "model": dataclasses.asdict(pipeline.DEFAULT_MODEL), "train": dataclasses.asdict(config)}
    surfaces = {"all-atom (100 ns)": analysis.fes_2d(ref_cv[:, 0], ref_cv[:, 1], *edges, kT)}
    for seed in args.seeds:
        for name in args.maps:
            key = f"{name}/seed{seed}"
            if key in results["models"]:
                continue
            start = time.perf_counter()
            trained = pipeline.train_cg_model(cgs[name], pipeline.DEFAULT_MODEL, config, seed=seed)
            train_s = time.perf_counter() - start
            report, surf, positions = evaluate.evaluate_model(
                trained.energy_fn(), ref_x, level.observables, edges, cgs[name].masses, data.temperature,
                args.replicas, args.steps, jax.random.key(1000 + seed), start_positions=cgs[name].positions,
                save_every=args.save_every,
            )
            cv = level.observables(positions.reshape(-1, *positions.shape[2:]))
            history = trained.result.history
            results["models"][key] = {
                **report.as_dict(), "map": name, "seed": seed, "train_seconds": train_s,
                "simulate_seconds": time.perf_counter() - start - train_s,
                "best_val_loss": min(r["val_loss"] for r in history), "epochs": len(history),
                "populations": basin_populations(cv),
            }
            if seed == args.seeds[0]:
                surfaces[f"{name} CG"] = surf["CG"]
            print(f"{key}: KL {report.kl:.4f} (halves {report.kl_replica_halves[0]:.4f}/"
                  f"{report.kl_replica_halves[1]:.4f}, time halves {report.kl_time_halves[0]:.4f}/"
                  f"{report.kl_time_halves[1]:.4f}), phi>0 {results['models'][key]['populations']['phi_positive']:.4f}, "
                  f"unvisited {report.unvisited_fraction:.4f}, stopped {len(report.stopped)}, "
                  f"val loss {results['models'][key]['best_val_loss']:.1f}, train {train_s:.0f} s", flush=True)
            analysis.save_metrics(json_path, results)
    summary = {}
    for name in args.maps:
        kls = [results["models"][f"{name}/seed{s}"]["kl"] for s in args.seeds if f"{name}/seed{s}" in results["models"]]
        summary[name] = {"kl_mean": float(np.mean(kls)), "kl_std": float(np.std(kls, ddof=1)) if len(kls) > 1 else 0.0,
                         "kl_per_seed": kls}
    results["summary"] = summary
    if args.cli:
        results["cli"] = run_cli_recipe(out.parent / "alanine_fidelity_cli")
    analysis.save_metrics(json_path, results)
    if len(surfaces) > 1:
        analysis.plot_fes(surfaces, str(out) + "_fes", size=(3.6 * len(surfaces), 3.4))
    print(json.dumps(summary, indent=1))


def run_cli_recipe(folder: Path) -> dict:
    """The README's recipe with defaults only: `jaxcg train` on the bundled file, `jaxcg evaluate`."""
    import jaxcg
    from jaxcg.experiments.alanine import BACKBONE

    bundled = Path(jaxcg.__file__).parent / "bundled" / "alanine_dipeptide_vacuum.h5"
    exe = Path(sys.executable).parent / "jaxcg"
    model, evaluation = folder / "model", folder / "evaluation"
    start = time.perf_counter()
    subprocess.run([str(exe), "train", "--data", str(bundled), "--selection", BACKBONE, "--out", str(model)], check=True)
    subprocess.run([str(exe), "evaluate", "--model", str(model), "--reference", str(REFERENCE), "--out",
                    str(evaluation)], check=True)
    report = json.loads((evaluation / "evaluation.json").read_text())["report"]
    frames = np.load(evaluation / "cg_frames.npz")["positions"]
    from jaxcg.experiments.alanine import LEVELS

    cv = LEVELS["backbone"].observables(frames.reshape(-1, *frames.shape[2:]))
    return {**report, "populations": basin_populations(cv), "seconds": time.perf_counter() - start,
            "commands": [f"jaxcg train --data {bundled.name} --selection '{BACKBONE}' --out model",
                         f"jaxcg evaluate --model model --reference {REFERENCE.name} --out evaluation"]}


if __name__ == "__main__":
    main()
