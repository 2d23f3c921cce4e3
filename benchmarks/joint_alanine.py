"""Alanine dipeptide: joint map + SchNet training against "optimal map, then train".

The bundled data (20,000 frames, amber14 vacuum, HBonds) at the five backbone beads; frames
0-14,000 train, 14,000-20,000 are held out. Both runs train the same SchNet from the same
initial weights with the same optimiser, batches and steps (``jaxcg.joint.fit_joint``):

- sequential: the optimal linear map (KKT, on the training frames) fixed, the potential trained;
- joint: map parameters θ (the valid-map parametrisation, starting at basic aggregation) and the
  potential trained together.

Reported per step budget: the held-out residual E‖G* F − F_U‖² per bead against the optimal
map's forces (the same target for both, so the difference is the potentials' PMF error), their
ratio, and the held-out noise of the joint map against the optimal map's.

    python benchmarks/joint_alanine.py [--steps 1000 2000 3000] [--features 32]

Writes benchmarks/results/joint_alanine.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxcg.experiments.alanine import LEVELS
from jaxcg.joint import fit_joint, fixed_map_residual, joint_map
from jaxcg.maps import (
    mean_squared_mapped_force,
    optimal_linear_map,
    slice_map,
    valid_map_parametrization,
)
from jaxcg.models import SchNet
from jaxcg.reference import bundled_dataset

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 2000, 3000])
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "joint_alanine.json")
    args = parser.parse_args()

    data = bundled_dataset("alanine_dipeptide_vacuum")
    train, test = data.subset(slice(0, 14000)), data.subset(slice(14000, None))
    backbone = slice_map(data.topology, LEVELS["backbone"].selection)
    optimal = optimal_linear_map(train, backbone, data.constraints)
    net = SchNet(np.arange(5), features=args.features, rbf=16, cutoff=1.0)
    params0 = net.init(jax.random.key(0), jnp.zeros((5, 3)))
    x, f = jnp.asarray(test.positions), jnp.asarray(test.forces)
    optimal_noise = float(mean_squared_mapped_force(optimal, test.forces)) / 5
    rows = []
    print(f"{'steps':>6} {'sequential':>12} {'joint':>12} {'ratio':>7} {'map noise/opt':>14} {'s seq':>7} {'s joint':>8}")
    for steps in args.steps:
        row = {"steps": steps}
        for name, base, train_map in (("sequential", optimal, False), ("joint", None, True)):
            parametrization = valid_map_parametrization(backbone, data.constraints, base=base)
            start = time.perf_counter()
            params, _ = fit_joint(net.energy, params0, parametrization, train, jax.random.key(1), steps=steps,
                                  learning_rate=3e-3, map_learning_rate=1e-2, train_map=train_map)
            row[f"{name}_seconds"] = time.perf_counter() - start
            row[f"{name}_residual"] = float(fixed_map_residual(net.energy, optimal, params.model, x, f))
            if train_map:
                fitted = joint_map(parametrization, params)
                row["joint_map_noise"] = float(mean_squared_mapped_force(fitted, test.forces)) / 5
        row["ratio"] = row["joint_residual"] / row["sequential_residual"]
        row["joint_map_noise_over_optimal"] = row["joint_map_noise"] / optimal_noise
        rows.append(row)
        print(f"{steps:>6} {row['sequential_residual']:>12.4g} {row['joint_residual']:>12.4g} {row['ratio']:>7.4f} "
              f"{row['joint_map_noise_over_optimal']:>14.5f} {row['sequential_seconds']:>7.1f} {row['joint_seconds']:>8.1f}",
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "units": "(kJ/mol/nm)^2 per bead", "optimal_map_noise": optimal_noise, "features": args.features,
        "machine": platform.platform(), "jax": jax.__version__, "rows": rows,
    }, indent=1))


if __name__ == "__main__":
    main()
