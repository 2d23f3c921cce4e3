"""Benchmark (issue 7): every force-map variant of jaxcg on three systems, side by side.

Systems (fit on the first 70% of frames, evaluated on the last 30%):

- alanine dipeptide (bundled, 22 atoms, 20k frames, HBonds constrained), 5 backbone beads
  C(ACE) N CA C N(NME);
- CLN025 (benchmarks/data/cln025_vacuum_5000.h5, 175 atoms, 5000 frames, HBonds), 10 CA beads;
- the flexible water dimer (bundled, 6 atoms, unconstrained), one bead per oxygen: the only system
  on which the configuration-dependent map applies (it refuses constrained data by design).

Rows: slice, basic aggregation, optimal linear (KKT), optax-linear (``fit_force_map`` over the
valid parametrisation, full support; CLN025 also with ``support_within_bonds(hops=2)``),
configuration-dependent (``fit_configurational_map`` started from the optimal map), noise-augmented
(``noise_augmented_map``, var nm²; its targets are forces of the *smoothed* PMF, and its noise is
measured on freshly noised held-out frames) and joint (``fit_joint``: map and potential together).

Columns:

- ``<|f|^2>/bead``: mean over held-out frames and beads of ‖f‖² of the map, (kJ/mol/nm)².
- ``residual``: a potential (peptides: a Boltzmann-inverted prior + a small SchNet trained on
  delta forces with ``jaxcg.train.fit``; water dimer: an RBF pair potential) is trained on the
  map's forces of the training frames, then evaluated on the held-out CG positions x = M r against
  the *optimal linear map's* held-out forces: mean over frames and beads of ‖f_opt − F_model(x)‖².
  All rows share that target, so they differ only in the model's error against the PMF mean force
  (the common floor is the optimal map's conditional variance E‖f_opt − E[f_opt|x]‖², which is
  smaller than its ``<|f|^2>/bead``: that one also contains the mean force itself). The joint row uses its own,
  jointly trained potential; the noise-augmented row's model (prior fitted on the noised beads y,
  trained on y) is evaluated at un-noised x, so its residual also holds the difference between the
  smoothed and the true PMF: large when var exceeds the bead bonds' own variance.
- ``build s``: wall time to build the map (compilation included), on this machine; for the joint
  row it includes training its potential (as many Adam steps as each separate potential gets).

    python benchmarks/bench_map_variants.py [--epochs 4] [--map-steps 1000] [--joint-steps N]
        [--config-steps 300] [--features 32] [--blocks 1] [--noise-var 1e-3] [--systems ...]

Prints one table per system and writes benchmarks/results/map_variants.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ALANINE_BEADS = "(resname ACE and name C) or (resname ALA and (name N or name CA or name C)) or (resname NME and name N)"
SYSTEMS = ("alanine_dipeptide", "cln025", "water_dimer")


def load_system(name: str):
    """(AtomisticData, bead selection, potential kind)."""
    from jaxcg.data import load_dataset
    from jaxcg.reference import bundled_dataset

    if name == "alanine_dipeptide":
        return bundled_dataset("alanine_dipeptide_vacuum"), ALANINE_BEADS, "schnet"
    if name == "cln025":
        return load_dataset(HERE / "data" / "cln025_vacuum_5000.h5"), "name CA", "schnet"
    if name == "water_dimer":
        return bundled_dataset("water_dimer_flexible"), "element O", "rbf"
    raise ValueError(f"unknown system {name!r}; expected one of {SYSTEMS}")


def timed(build):
    """(result, seconds) of ``build()``, waiting for every array in the result."""
    import jax

    t0 = time.perf_counter()
    out = build()
    jax.block_until_ready(jax.tree.leaves(out))
    return out, time.perf_counter() - t0


class Potential:
    """The trained CG potential of one system: a frozen prior plus a SchNet, or an RBF pair
    potential (no prior). ``energy(net_params, x)`` is the full U(x) in kJ/mol."""

    def __init__(self, kind: str, train_cg, args):
        import jax

        from jaxcg.models import RBFPairPotential, SchNet
        from jaxcg.priors import fit_prior

        self.kind = kind
        x0 = np.asarray(train_cg.positions[0], np.float32)
        if kind == "rbf":
            self.prior = None
            self.net = RBFPairPotential(n_beads=train_cg.n_beads, n_basis=32, r_min=0.2, r_max=1.2)
            self.learning_rate = args.rbf_lr
        else:
            self.prior = fit_prior(train_cg)
            self.net = SchNet(np.arange(train_cg.n_beads), features=args.features, blocks=args.blocks,
                              rbf=16, cutoff=1.2)
            self.learning_rate = args.lr
        self.init_params = self.net.init(jax.random.key(args.seed), jax.numpy.asarray(x0))
        self._prior_part: tuple | None = None  # ((id, shape) of positions, delta of zero forces)
        self._forces_fn = None

    def energy(self, params, x):
        u = self.net.energy(params, x)
        return u if self.prior is None else u + self.prior.energy(self.prior.params, x)

    def prior_energy(self, params, x):
        del params
        return self.prior.energy(self.prior.params, x)

    def train(self, positions: np.ndarray, forces: np.ndarray, args):
        """Net parameters force-matched to ``forces`` (delta forces when there is a prior)."""
        from jaxcg.train import TrainConfig, delta_forces, fit

        targets = forces
        if self.prior is not None:  # forces + ∇U_prior; the prior part computed (and compiled) once
            if self._prior_part is None or self._prior_part[0] != (id(positions.base), positions.shape):
                zeros = np.zeros_like(positions)
                self._prior_part = ((id(positions.base), positions.shape), delta_forces(self.prior_energy, None, positions, zeros))
            targets = forces + self._prior_part[1]
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch, learning_rate=self.learning_rate,
                             val_fraction=0.1, patience=None, seed=args.seed)
        return fit(self.net.energy, self.init_params, positions, targets, config).params

    def residual(self, params, x: np.ndarray, target: np.ndarray) -> float:
        """Mean over frames and beads of ‖target − F_U(x)‖², (kJ/mol/nm)²."""
        import jax

        from jaxcg.models import batched_energy_and_forces

        if self._forces_fn is None:
            self._forces_fn = jax.jit(batched_energy_and_forces(self.energy))
        forces_fn = self._forces_fn
        total = 0.0
        for s in range(0, len(x), 1024):
            _, f = forces_fn(params, jax.numpy.asarray(x[s : s + 1024], np.float32))
            total += float(np.sum((np.asarray(target[s : s + 1024], np.float64) - np.asarray(f, np.float64)) ** 2))
        return total / (x.shape[0] * x.shape[1])


def per_bead(forces: np.ndarray) -> float:
    """Mean over frames and beads of ‖f‖²."""
    forces = np.asarray(forces, np.float64)
    return float(np.mean(np.sum(forces**2, axis=-1)))


def run_system(name: str, args) -> dict:
    import jax

    from jaxcg import maps
    from jaxcg.joint import fit_joint, joint_map

    data, selection, kind = load_system(name)
    n_train = int(0.7 * data.n_frames)
    train, test = data.subset(slice(0, n_train)), data.subset(slice(n_train, None))
    constraints = data.constraints
    constrained = constraints is not None and len(constraints) > 0
    slice_map = maps.slice_map(data.topology, selection)
    n_beads = int(slice_map.config.shape[0])
    cg_kw = {"bead_types": np.arange(n_beads)}
    train_cg = maps.map_dataset(train, slice_map, **cg_kw)
    x_train = np.asarray(train_cg.positions, np.float32)
    x_test = np.asarray(maps.map_dataset(test, slice_map, **cg_kw).positions, np.float32)
    potential = Potential(kind, train_cg, args)
    rows: dict[str, dict] = {}
    stride = max(1, math.ceil(n_train / args.max_train_frames))  # frames for each potential's training

    def linear_row(label, linear_map, seconds):
        _, f_test = maps.apply_map(linear_map, test.positions, test.forces)
        _, f_train = maps.apply_map(linear_map, train.positions, train.forces)
        rows[label] = {"map": linear_map, "mean_sq_force_per_bead": per_bead(f_test), "build_s": seconds,
                       "train_forces": np.asarray(f_train, np.float32)}

    started = time.perf_counter()
    linear_row("slice", slice_map, 0.0)
    rows["slice"]["build_s"] = timed(lambda: maps.slice_map(data.topology, selection))[1]
    linear_row("basic", *timed(lambda: maps.basic_aggregation_map(slice_map, constraints)))
    linear_row("optimal linear", *timed(lambda: maps.optimal_linear_map(train, slice_map, constraints)))
    optimal = rows["optimal linear"]["map"]
    _, f_opt_test = maps.apply_map(optimal, test.positions, test.forces)
    f_opt_test = np.asarray(f_opt_test, np.float64)

    def optax_linear(support):
        par = maps.valid_map_parametrization(slice_map, constraints, support=support)
        return maps.fit_force_map(par, train, steps=args.map_steps, batch_size=256, key=jax.random.key(args.seed))[0]

    linear_row("optax-linear (full)", *timed(lambda: optax_linear(None)))
    if name == "cln025":
        support = maps.support_within_bonds(data.topology, slice_map, hops=2)
        linear_row("optax-linear (bonds<=2)", *timed(lambda: optax_linear(support)))

    # configuration-dependent map: unconstrained data only
    if constrained:
        rows["configuration-dependent"] = {"na": "n/a: constrained data"}
    else:
        def build_config():
            par = maps.valid_map_parametrization(slice_map, constraints, base=optimal)
            params, _ = maps.fit_configurational_map(par, train, jax.random.key(args.seed), steps=args.config_steps,
                                                     batch_size=64, hidden=(32, 32))
            return par, params

        (par_c, params_c), seconds = timed(build_config)
        coefficients = lambda r: maps.configurational_coefficients(par_c, params_c, r)  # noqa: E731
        mapped = jax.jit(jax.vmap(lambda r, f: maps.configurational_mapped_forces(coefficients, r, f, data.kT)))
        f_train = np.asarray(mapped(jax.numpy.asarray(train.positions), jax.numpy.asarray(train.forces)), np.float32)
        rows["configuration-dependent"] = {
            "mean_sq_force_per_bead": maps.mean_squared_configurational_force(par_c, params_c, test) / n_beads,
            "build_s": seconds, "train_forces": f_train}

    # noise-augmented map: targets of the smoothed PMF; fresh noise for the held-out frames
    noise_map, seconds = timed(lambda: maps.noise_augmented_map(
        train, slice_map, args.noise_var, jax.random.key(args.seed), constraints=constraints))
    _, f_noise_test = maps.apply_noise_augmented_map(
        noise_map, jax.numpy.asarray(test.positions), jax.numpy.asarray(test.forces), jax.random.key(args.seed + 1))
    y_train, f_noise_train = maps.apply_noise_augmented_map(
        noise_map, jax.numpy.asarray(train.positions), jax.numpy.asarray(train.forces), jax.random.key(args.seed + 2))
    y_train = np.asarray(y_train, np.float32)
    noised_cg = dataclasses.replace(train_cg, positions=y_train, forces=np.asarray(f_noise_train, np.float32))
    rows[f"noise-augmented (var {args.noise_var:g} nm²)"] = {
        "mean_sq_force_per_bead": per_bead(f_noise_test), "build_s": seconds,
        "train_forces": noised_cg.forces, "train_positions": y_train,
        "potential": Potential(kind, noised_cg, args)}  # its prior is fitted on the noised beads

    # joint map + potential; by default as many Adam steps as each separately trained potential gets
    fit_steps = args.epochs * math.ceil((1 - 0.1) * len(x_train[::stride]) / args.batch)
    joint_steps = fit_steps if args.joint_steps is None else args.joint_steps

    def build_joint():
        par = maps.valid_map_parametrization(slice_map, constraints)
        lr = potential.learning_rate
        params, _ = fit_joint(potential.energy, potential.init_params, par, train, jax.random.key(args.seed),
                              steps=joint_steps, batch_size=args.batch, learning_rate=lr)
        return par, params

    (par_j, params_j), seconds = timed(build_joint)
    joint = joint_map(par_j, params_j)
    _, f_joint_test = maps.apply_map(joint, test.positions, test.forces)
    rows["joint"] = {"mean_sq_force_per_bead": per_bead(f_joint_test), "build_s": seconds, "steps": joint_steps,
                     "residual": potential.residual(params_j.model, x_test, f_opt_test)}
    build_seconds = time.perf_counter() - started

    # a potential for every other map's forces, scored against the optimal map's held-out forces
    for label, row in rows.items():
        if "train_forces" not in row:
            continue
        positions = row.get("train_positions", x_train)
        model = row.get("potential", potential)
        t0 = time.perf_counter()
        net = model.train(positions[::stride], row["train_forces"][::stride], args)
        row["residual"] = model.residual(net, x_test, f_opt_test)
        row["train_s"] = time.perf_counter() - t0
        print(f"  {name}: trained potential for {label} in {row['train_s']:.1f} s", flush=True)

    result = {
        "atoms": data.n_atoms, "beads": n_beads, "frames": data.n_frames, "train_frames": n_train,
        "test_frames": data.n_frames - n_train,
        "potential_train_frames": len(x_train[::stride]), "potential_adam_steps": fit_steps, "constraint_pairs": 0 if constraints is None else len(constraints),
        "selection": selection, "potential": "RBF pair potential (32 Gaussians, 0.2-1.2 nm)" if kind == "rbf"
        else f"prior + SchNet ({args.features} features, {args.blocks} block(s), 16 RBFs, cutoff 1.2 nm)",
        "maps_seconds": build_seconds,
        "rows": {label: {k: v for k, v in row.items() if k not in ("map", "train_forces", "train_positions", "potential")}
                 for label, row in rows.items()},
    }
    return result


def print_table(name: str, result: dict) -> None:
    print(f"\n{name}: {result['atoms']} atoms -> {result['beads']} beads, {result['constraint_pairs']} constraint pairs, "
          f"fit on {result['train_frames']} frames, evaluated on {result['test_frames']} held-out frames; "
          f"potential: {result['potential']}")
    print("residual = mean over held-out frames and beads of |f_optimal-linear - F_model(M r)|^2 (kJ/mol/nm)^2:")
    print("every row is scored against the optimal linear map's held-out forces, so rows are comparable.")
    print(f"{'map':<30} {'<|f|^2>/bead':>14} {'residual':>12} {'build s':>9}")
    for label, row in result["rows"].items():
        if "na" in row:
            print(f"{label:<30} {row['na']:>37}")
            continue
        res = row.get("residual", float("nan"))
        print(f"{label:<30} {row['mean_sq_force_per_bead']:>14.1f} {res:>12.1f} {row['build_s']:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--epochs", type=int, default=4, help="epochs of each potential's training")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--max-train-frames", type=int, default=7000,
                        help="potentials train on every k-th training frame, k the smallest giving at most this many")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--lr", type=float, default=3e-3, help="SchNet learning rate")
    parser.add_argument("--rbf-lr", type=float, default=0.3, help="RBF pair-potential learning rate (kJ/mol per step)")
    parser.add_argument("--map-steps", type=int, default=1000, help="fit_force_map steps")
    parser.add_argument("--config-steps", type=int, default=300, help="fit_configurational_map steps")
    parser.add_argument("--joint-steps", type=int, default=None,
                        help="fit_joint steps (default: the steps of one separately trained potential)")
    parser.add_argument("--noise-var", type=float, default=1e-3, help="noise-augmented map variance, nm²")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results" / "map_variants.json"))
    args = parser.parse_args()

    import jax

    start = time.perf_counter()
    results = {}
    for name in args.systems:
        results[name] = run_system(name, args)
        print_table(name, results[name])
    seconds = time.perf_counter() - start
    report = {
        "settings": vars(args), "seconds": seconds, "jax": jax.__version__, "device": str(jax.devices()[0]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "load_avg_1m": os.getloadavg()[0]},
        "caption": "mean_sq_force_per_bead: held-out mean over frames and beads of |f|^2 of the map; residual: "
        "held-out mean over frames and beads of |f_optimal_linear - F_model(M r)|^2 of a potential trained on the "
        "map's training-frame forces (joint: its own potential), scored against the optimal linear map's forces so "
        "rows are comparable; units (kJ/mol/nm)^2. build_s: wall time to build the map, compilation included.",
        "systems": results,
    }
    from jaxcg.analysis import save_metrics

    out = save_metrics(args.out, report)
    print(f"\nwrote {out} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
