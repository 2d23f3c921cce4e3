"""Benchmark: the cost of padding when one SchNet trains on several molecules.

Molecules (CG, from their structures; positions = structure + 0.02 nm Gaussian noise, random
target forces: throughput only): alanine dipeptide's 10 heavy atoms, CLN025's 10 CA beads and
the villin headpiece's 35 CA beads (OpenMM's ``app/data/test.pdb``). Model: 128 features, 2
blocks, 32 RBFs, cutoff 1.2 nm, float32; Adam; batch of B frames.

Contestants (one force-matching training step, jitted):

- ``per_molecule``: each molecule's plain ``SchNet`` (``TransferableSchNet.for_molecule``) on a
  batch of that molecule alone; three compiled steps, one per molecule. The figure is the
  frames/s of an even mix, i.e. B frames of each molecule in turn.
- ``padded_mixed``: ``TransferableSchNet`` on batches mixing the three molecules, every frame
  padded to 35 beads; one compiled step for every molecule.

    python benchmarks/bench_molecules.py [--steps 10] [--rounds 3] [--batch 64]

Prints frames/s per contestant and writes benchmarks/results/molecules.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np

from jaxcg.data import CGData
from jaxcg.models import TransferableSchNet
from jaxcg.molecules import BeadVocabulary, pad_molecules
from jaxcg.train import Batch, TrainConfig, TrainState, make_optimizer, make_train_step

HERE = Path(__file__).resolve().parent
SIZES = {"features": 128, "blocks": 2, "rbf": 32, "cutoff": 1.2}


def structures() -> dict[str, md.Trajectory]:
    """name -> one-frame CG trajectory (one bead per selected atom)."""
    import openmm

    bundled = HERE.parent / "jaxcg" / "bundled"
    ala = md.load(str(bundled / "alanine-dipeptide.pdb"))
    cln = md.load(str(bundled / "cln025.pdb"))
    villin = md.load(os.path.join(os.path.dirname(openmm.__file__), "app", "data", "test.pdb"))
    return {
        "alanine_dipeptide": ala.atom_slice(ala.topology.select("element != H")),
        "cln025": cln.atom_slice(cln.topology.select("name CA")),
        "villin": villin.atom_slice(villin.topology.select("protein and name CA")),
    }


def molecule(traj: md.Trajectory, n_frames: int, seed: int) -> CGData:
    rng = np.random.default_rng(seed)
    x = (traj.xyz[0] + 0.02 * rng.standard_normal((n_frames, traj.n_atoms, 3))).astype(np.float32)
    f = (50.0 * rng.standard_normal(x.shape)).astype(np.float32)
    return CGData(x, f, np.zeros(traj.n_atoms, np.int32), np.zeros((0, 2), np.int64), 300.0, topology=traj.topology)


def time_steps(step, state, batches: list[Batch], steps: int, rounds: int) -> float:
    """Best seconds per step over ``rounds`` of ``steps`` steps cycling through ``batches``."""
    state, _ = step(state, batches[0])
    jax.block_until_ready(state)
    best = np.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for s in range(steps):
            state, metrics = step(state, batches[s % len(batches)])
        jax.block_until_ready(metrics["loss"])
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    trajs = structures()
    data = {name: molecule(t, 4 * args.batch, k) for k, (name, t) in enumerate(trajs.items())}
    vocabulary = BeadVocabulary.from_topologies([t.topology for t in trajs.values()])
    padded = pad_molecules(list(data.values()), vocabulary)
    model = TransferableSchNet(len(vocabulary), padded.n_beads, **SIZES)
    params = model.init(jax.random.key(0))
    optimizer = make_optimizer(TrainConfig(schedule="constant"), 1)

    def state_of(params):
        from jaxcg.optim import init_state

        opt = init_state(optimizer, params).opt_state
        return TrainState(params, opt, jax.random.PRNGKey(0), jnp.zeros((), jnp.int32), params,
                          jnp.asarray(np.inf, jnp.float32), jnp.zeros((), jnp.int32))

    rows = {}
    per_molecule = {}
    for name, cg in data.items():
        net = model.for_molecule(vocabulary.types(cg.topology))
        step = jax.jit(make_train_step(net.energy, optimizer))
        batches = [Batch(jnp.asarray(cg.positions[i:i + args.batch]), jnp.asarray(cg.forces[i:i + args.batch]),
                         jnp.ones(args.batch)) for i in range(0, 4 * args.batch, args.batch)]
        per_molecule[name] = time_steps(step, state_of(params), batches, args.steps, args.rounds)
        rows[f"per_molecule/{name}"] = args.batch / per_molecule[name]
    rows["per_molecule"] = len(data) * args.batch / sum(per_molecule.values())
    step = jax.jit(make_train_step(model.energy, optimizer))
    batches = [Batch(*(jnp.asarray(a[i:i + args.batch]) for a in (padded.positions, padded.forces, padded.weights,
                                                                  padded.types)))
               for i in range(0, padded.n_frames, args.batch)]
    rows["padded_mixed"] = args.batch / time_steps(step, state_of(params), batches, args.steps, args.rounds)

    print(f"{'contestant':28s} frames/s   (batch {args.batch}, N_max {padded.n_beads}, {jax.devices()[0].platform})")
    for name, value in rows.items():
        print(f"{name:28s} {value:9.1f}")
    print(f"padded_mixed / per_molecule: {rows['padded_mixed'] / rows['per_molecule']:.2f}")
    out = HERE / "results" / "molecules.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "frames_per_s": rows, "batch": args.batch, "steps": args.steps, "rounds": args.rounds,
        "n_max": padded.n_beads, "beads": {k: v.n_beads for k, v in data.items()}, "sizes": SIZES,
        "device": str(jax.devices()[0]), "machine": platform.processor() or platform.machine(),
        "jax": jax.__version__,
    }, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
