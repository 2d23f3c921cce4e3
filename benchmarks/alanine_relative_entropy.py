"""Alanine dipeptide: does relative-entropy refinement after force matching bring the slice and
basic maps' models toward the optimal map's φ/ψ surface?

Each model is trained as in benchmarks/alanine_fidelity.py (the library's recipe on the bundled
20 ns, five backbone beads; cached under benchmarks/data/alanine_re_models), judged by simulation
against the independent 100 ns reference (``jaxcg.evaluate``), then refined with
``jaxcg.relative_entropy.refine`` against the training frames' mapped positions (the same
configurations for every force map: the target of refinement does not depend on the force map),
and judged again with the same replicas, starting frames and noise seed.

    python benchmarks/alanine_relative_entropy.py [--maps slice basic optimal] [--seed 0]
        [--replicas 64] [--eval-steps 20000] [--iterations 100] [--chunk 200]
        [--refine dihedrals|prior|all] [--lr-prior 0.05] [--lr-net 1e-5] [--epochs 10]
        [--refined-eval-steps N]   # judge the dihedrals refined by the run with --eval-steps N again

Each map's before/after samples are cached under benchmarks/data/alanine_re_samples (one file per
map and settings), so maps can run in separate processes; the run that finds all of them judges
them against the reference and writes the table.

Prints a table of KL(reference ‖ CG) before and after, with sampling errors; writes
benchmarks/results/alanine_relative_entropy.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODELS = HERE / "data" / "alanine_re_models"
OUT = HERE / "results" / "alanine_relative_entropy.json"


def trained_model(cg, config, seed: int, folder: Path):
    """(model, params) of the recipe trained on ``cg``, loaded from ``folder`` if saved there."""
    import jax
    import jax.numpy as jnp

    from jaxcg import pipeline
    from jaxcg.saved_model import build_model, model_spec, save_model

    if not (folder / "model.npz").exists():
        start = time.perf_counter()
        trained = pipeline.train_cg_model(cg, pipeline.DEFAULT_MODEL, config, seed=seed)
        spec = model_spec(cg, trained.prior, **{k: getattr(pipeline.DEFAULT_MODEL, k) for k in
                                                ("features", "blocks", "rbf", "cutoff", "exclusion_hops")})
        save_model(folder, spec, trained.params, extra={"train_seconds": time.perf_counter() - start},
                   overwrite=True)
    spec = json.loads((folder / "model.json").read_text())
    model, _, _ = build_model(spec)
    template = model.init(jax.random.key(0), jnp.zeros((len(spec["bead_types"]), 3), jnp.float32))
    with np.load(folder / "model.npz") as archive:
        leaves = [jnp.asarray(archive[f"leaf_{i:04d}"]) for i in range(len(archive.files))]
    return model, jax.tree.unflatten(jax.tree.structure(template), leaves), spec.get("train_seconds")


def labels(params, refine: str):
    """"train" or "freeze" for every leaf: the prior's dihedral terms, the whole prior, or all."""
    import jax

    def label(path, _):
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        if refine == "all" or (refine == "prior" and names[0] == "prior"):
            return "train"
        return "train" if refine == "dihedrals" and names[0] == "prior" and "dihedral" in names[-1] else "freeze"

    return jax.tree_util.tree_map_with_path(label, params)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", nargs="+", default=["slice", "basic", "optimal"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="default: the library's")
    parser.add_argument("--replicas", type=int, default=64, help="replicas of the evaluation and of refinement")
    parser.add_argument("--eval-steps", type=int, default=20_000, help="steps of 2 fs per replica per evaluation")
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=200, help="steps per refinement iteration")
    parser.add_argument("--chunk-save-every", type=int, default=20, help="steps between CG frames in refinement")
    parser.add_argument("--batch-size", type=int, default=1024, help="reference frames per refinement step")
    parser.add_argument("--refine", choices=["dihedrals", "prior", "all"], default="dihedrals")
    parser.add_argument("--lr-prior", type=float, default=0.05, help="Adam learning rate of prior terms")
    parser.add_argument("--lr-net", type=float, default=1e-5, help="Adam learning rate of the SchNet")
    parser.add_argument("--eval-reference", choices=["long", "training"], default="long",
                        help="judge against the 100 ns run (default) or the training data (quick checks)")
    parser.add_argument("--train-only", action="store_true", help="train and cache the models, then stop")
    parser.add_argument("--refined-eval-steps", type=int, default=None,
                        help="judge again the dihedrals refined by the run with --eval-steps N (no new refinement)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    if args.refined_eval_steps is not None and args.refine != "dihedrals":
        parser.error("--refined-eval-steps re-reads refined dihedral terms: it needs --refine dihedrals")

    import jax
    import optax
    from alanine_fidelity import basin_populations, ensure_reference

    from jaxcg import analysis, evaluate, pipeline, simulate
    from jaxcg.data import load_dataset
    from jaxcg.experiments.alanine import BACKBONE, LEVELS, backbone_maps, cg_datasets
    from jaxcg.reference import bundled_dataset
    from jaxcg.relative_entropy import refine

    data = bundled_dataset("alanine_dipeptide_vacuum")
    level = LEVELS["backbone"]
    edges = (level.edges, level.edges)
    maps = backbone_maps(data, data)
    cgs = cg_datasets(data, {m: maps[m] for m in args.maps})
    config = pipeline.DEFAULT_TRAIN if args.epochs is None else dataclasses.replace(pipeline.DEFAULT_TRAIN, epochs=args.epochs)
    epochs = config.epochs
    models = {name: trained_model(cgs[name], config, args.seed, MODELS / f"{name}_seed{args.seed}_e{epochs}")
              for name in args.maps}
    if args.train_only:
        return
    kT, temperature = data.kT, data.temperature
    results: dict = {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "epochs": epochs, "models": {}}
    eval_key = jax.random.key(1000 + args.seed)
    start_index = np.random.default_rng(args.seed).choice(len(data.positions), args.replicas, replace=False)

    def sample(energy, cg):
        """φ/ψ (R, F, 2) of the evaluation run, alive (R, F), stopped: judged at the end."""
        positions, alive, stopped = evaluate.simulate_replicas(
            energy, cg.positions[start_index], cg.masses, temperature, args.eval_steps, eval_key,
            save_every=args.save_every)
        cv = level.observables(positions.reshape(-1, *positions.shape[2:])).reshape(*positions.shape[:2], 2)
        return cv, alive, stopped

    samples_dir = HERE / "data" / "alanine_re_samples"
    tag = (f"seed{args.seed}_e{epochs}_r{args.replicas}_s{args.eval_steps}_i{args.iterations}_c{args.chunk}_"
           f"{args.refine}_{args.lr_prior:g}_{args.lr_net:g}")
    for name in args.maps:
        path = samples_dir / f"{name}_{tag}.npz"
        if path.exists():
            continue
        cg = cgs[name]
        model, params, _ = models[name]
        t0 = time.perf_counter()
        before = sample(lambda x, p=params, m=model: m.energy(p, x), cg)
        evaluate_seconds = time.perf_counter() - t0

        def energy(x, params, model=model):
            return model.energy(params, x)

        tagged = jax.tree_util.tree_map_with_path(
            lambda path, lab: f"train_{getattr(path[0], 'key', path[0])}" if lab == "train" else lab,
            labels(params, args.refine))
        optimizer = optax.multi_transform({"freeze": optax.set_to_zero(), "train_prior": optax.adam(args.lr_prior),
                                           "train_net": optax.adam(args.lr_net)}, tagged)
        sim = simulate.langevin(energy, cg.masses, temperature, dt=0.002, friction=1.0,
                                steps_per_chunk=args.chunk, save_every=args.chunk_save_every)
        t0 = time.perf_counter()
        if args.refined_eval_steps is None:
            result = refine(energy, params, cg.positions, sim, cg.positions[start_index], optimizer, kT=kT,
                            iterations=args.iterations, batch_size=args.batch_size, key=jax.random.key(args.seed))
        else:  # the dihedral terms an earlier run refined (the only ones --refine dihedrals changes)
            earlier = np.load(samples_dir / f"{name}_{tag.replace(f'_s{args.eval_steps}_', f'_s{args.refined_eval_steps}_')}.npz")
            prior = params["prior"]._replace(dihedral_cos=jax.numpy.asarray(earlier["dihedral_cos_after"]),
                                             dihedral_sin=jax.numpy.asarray(earlier["dihedral_sin_after"]))
            history = {k[8:]: earlier[k] for k in earlier.files if k.startswith("history_")}
            result = type("Refined", (), {"params": {**params, "prior": prior}, "history": history})
        refine_seconds = time.perf_counter() - t0
        after = sample(lambda x, p=result.params, m=model: m.energy(p, x), cg)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, cv_before=before[0], alive_before=before[1], stopped_before=np.asarray(before[2]).reshape(-1, 2),
                 cv_after=after[0], alive_after=after[1], stopped_after=np.asarray(after[2]).reshape(-1, 2),
                 evaluate_seconds=evaluate_seconds, refine_seconds=refine_seconds,
                 **{f"history_{k}": v for k, v in result.history.items()},
                 dihedral_cos_before=np.asarray(params["prior"].dihedral_cos),
                 dihedral_cos_after=np.asarray(result.params["prior"].dihedral_cos),
                 dihedral_sin_before=np.asarray(params["prior"].dihedral_sin),
                 dihedral_sin_after=np.asarray(result.params["prior"].dihedral_sin))
        print(f"{name}: sampled before and after refinement (refine {refine_seconds:.0f} s)", flush=True)

    if not all((samples_dir / f"{name}_{tag}.npz").exists() for name in args.maps):
        return
    if args.eval_reference == "long":
        long = load_dataset(ensure_reference(100.0))
        ref_cv = level.observables(long.positions[:, long.topology.select(BACKBONE)])
    else:
        ref_cv = level.observables(data.positions[:, data.topology.select(BACKBONE)])
    frame_ps = 0.002 * args.save_every
    for name in args.maps:
        saved = np.load(samples_dir / f"{name}_{tag}.npz")
        row: dict = {"train_seconds": models[name][2], "evaluate_seconds": float(saved["evaluate_seconds"]),
                     "refine_seconds": float(saved["refine_seconds"]),
                     "refine_history": {k[8:]: saved[k].tolist() for k in saved.files if k.startswith("history_")}}
        for when in ("before", "after"):
            cv, alive = saved[f"cv_{when}"], saved[f"alive_{when}"]
            stopped = tuple(map(tuple, saved[f"stopped_{when}"].astype(int)))
            report, _ = evaluate.sampling_report(ref_cv, cv, alive, edges, kT, stopped, frame_ps)
            row[when] = {**report.as_dict(), "populations": basin_populations(cv[alive])}
        row["dihedral_change_kJ_per_mol"] = float(np.max(np.abs(np.concatenate([
            (saved["dihedral_cos_after"] - saved["dihedral_cos_before"]).ravel(),
            (saved["dihedral_sin_after"] - saved["dihedral_sin_before"]).ravel()]))))
        results["models"][name] = row
    results["reference_populations"] = basin_populations(ref_cv)
    analysis.save_metrics(Path(args.out), results)
    print(f"reference: alpha_R {results['reference_populations']['alpha_R']:.3f}")
    print("\n| map | KL before | KL after | sampling error before/after | drift before/after | αR before/after | stopped |")
    print("|---|---|---|---|---|---|---|")
    for name, row in results["models"].items():
        b, a = row["before"], row["after"]
        print(f"| {name} | {b['kl']:.4f} | {a['kl']:.4f} | {b['sampling_error']:.4f}/{a['sampling_error']:.4f} | "
              f"{b['drift']:+.4f}/{a['drift']:+.4f} | {b['populations']['alpha_R']:.3f}/{a['populations']['alpha_R']:.3f} | "
              f"{len(b['stopped'])}/{len(a['stopped'])} |")

if __name__ == "__main__":
    main()
