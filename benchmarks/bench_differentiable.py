"""Memory and time of the gradient of a trajectory observable, with and without jax.checkpoint.

    python benchmarks/bench_differentiable.py [--steps 100 1000 10000] [--beads 10]

For a chain of N beads (harmonic bonds and a soft pair repulsion, 3 parameters), the gradient of
the mean end-to-end distance over n Langevin steps with respect to the parameters
(``jaxcg.simulate.trajectory_observable``), compiled with ``checkpoint_every`` = None (every
step's intermediates kept), 1 (rematerialised per step) and "auto" (blocks of ceil(sqrt(n))).
Reports XLA's temporary buffer size of the compiled gradient (``memory_analysis``), the compile
time and the median time of a gradient, and the largest relative difference of each gradient component from the one without
checkpointing (float32).
Writes benchmarks/results/bench_differentiable.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "bench_differentiable.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--beads", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcg import simulate

    n = args.beads

    def energy(x, params):
        bonds = jnp.linalg.norm(x[1:] - x[:-1], axis=-1)
        d = jnp.linalg.norm(x[:, None] - x[None] + jnp.eye(n)[..., None], axis=-1)
        far = jnp.triu(jnp.ones((n, n)), 2)
        repulsion = jnp.sum(far * (params["sigma"] / d) ** 6)
        return 0.5 * params["k"] * jnp.sum((bonds - params["r0"]) ** 2) + repulsion

    x0 = jnp.asarray(np.stack([0.38 * np.arange(n), 0.05 * np.sin(np.arange(n)), np.zeros(n)], 1), jnp.float32)
    params = {"k": jnp.float32(1000.0), "r0": jnp.float32(0.38), "sigma": jnp.float32(0.4)}
    masses = jnp.full(n, 12.0, jnp.float32)

    rows = []
    print(f"{'steps':>6} {'checkpoint':>10} {'temp MiB':>9} {'compile s':>9} {'grad ms':>8} {'max rel Δgrad':>13}")
    for n_steps in args.steps:
        grads = {}
        for checkpoint in (None, 1, "auto"):
            def loss(p, n_steps=n_steps, checkpoint=checkpoint):
                return simulate.trajectory_observable(
                    energy, p, x0, jax.random.key(0), n_steps, 0.002, 1.0, 2.494, masses,
                    lambda x: jnp.linalg.norm(x[-1] - x[0]), checkpoint_every=checkpoint)

            start = time.perf_counter()
            compiled = jax.jit(jax.grad(loss)).lower(params).compile()
            compile_s = time.perf_counter() - start
            memory = compiled.memory_analysis()
            temp = getattr(memory, "temp_size_in_bytes", float("nan")) if memory is not None else float("nan")
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                grads[checkpoint] = jax.block_until_ready(compiled(params))
                times.append(time.perf_counter() - start)
            diff = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(
                jax.tree.leaves(grads[checkpoint]), jax.tree.leaves(grads[None]), strict=True))
            row = {"steps": n_steps, "checkpoint_every": str(checkpoint), "temp_bytes": temp,
                   "compile_seconds": compile_s, "grad_seconds": statistics.median(times), "max_rel_diff": diff,
                   "grad": {k: float(v) for k, v in grads[checkpoint].items()}}
            rows.append(row)
            print(f"{n_steps:>6} {str(checkpoint):>10} {temp / 2**20:>9.2f} {compile_s:>9.1f} "
                  f"{1e3 * row['grad_seconds']:>8.1f} {diff:>13.2e}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"beads": n, "backend": jax.default_backend(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
