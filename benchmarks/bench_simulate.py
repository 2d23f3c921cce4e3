"""Benchmark: replica-steps per second of CG Langevin dynamics of a CLN025-size model.

Model: 10 CA beads (CLN025, types by residue name), jaxcg.models.SchNet (128 features, 2
interaction blocks, 32 RBFs, cutoff 1.2 nm) + harmonic bonds between consecutive beads. Three
implementations of the same model and BAOAB Langevin integrator run in one process:

- ``jaxcg``: ``jaxcg.simulate.langevin`` (jax-md BAOAB, vmap over replicas in blocks of 64 on
  CPU, lax.scan chunks, NaN/force-bound checks, frames every 10 steps copied to the host after
  each chunk). ``unblocked``: the same with every replica in one vmap (``replica_block=None``).
  ``table``: the same weights with filters tabulated on a 256-interval grid (cubic Hermite,
  ``SchNet(filter_table=256)`` + ``filter_tables``); its force error against the exact
  model is measured and printed first. These run on one XLA device. ``jaxcg_dev``,
  ``table_dev``: the same with the replicas split over every XLA device (``replica_devices``;
  on CPU the process is split into ``--host-devices`` devices, default one per core, as the
  ``jaxcg`` command does), at R they divide. ``t_nbr_dev``: ``table_dev`` over a jax-md
  neighbour list (``SchNet.energy_neighbors``, skin 0.1 nm: the pairs within 1.3 nm, about 30
  of 45, re-allocated and the chunk redone on overflow) instead of every pair.
- ``jax_plain``: a hand-written BAOAB in one jit(scan(vmap)) with no checks and no output (the
  plain JAX baseline: what jaxcg's checks, jax-md and host round trips cost on top).
- ``torch``: a plain PyTorch SchNet with the very same weights (energies checked to agree),
  batched over replicas, BAOAB in a Python loop with ``torch.autograd.grad`` forces (eager mode,
  denormals flushed as XLA does, best of 1 thread and torch's default thread count).

    python benchmarks/bench_simulate.py [--replicas 1 64 512] [--seconds 3] [--host-devices 2]

Writes benchmarks/results/simulate.json. On a GPU machine (jax[cuda12]) JAX runs there by
default: ``--replicas 1 64 512 4096`` (``pytest -m gpu tests/test_simulate.py`` runs that path;
torch runs on CPU unless a CUDA build is installed, so add ``--skip-torch`` there).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # split the CPU before JAX starts (--host-devices N, default one per core)
    from jaxcg.devices import use_host_devices

    _argv = sys.argv[1:]
    use_host_devices(int(_argv[_argv.index("--host-devices") + 1]) if "--host-devices" in _argv else None)

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
PDB = HERE.parent / "jaxcg" / "bundled" / "cln025.pdb"
TEMPERATURE, DT, FRICTION, SAVE_EVERY = 300.0, 0.002, 1.0, 10  # K, ps, 1/ps, steps
BOND_K = 2.0e4  # kJ/mol/nm²
MASS = 110.0  # amu, an average residue


def cln025_model(seed: int = 0, filter_table: int | None = None):
    """(energy_fn (N,3)->kJ/mol, params, numpy dict of the setup) of the benchmark model; with
    ``filter_table`` the same weights with tabulated filters, the grid frozen once."""
    import mdtraj as md

    from jaxcg.models import SchNet

    traj = md.load(str(PDB))
    ca = traj.topology.select("name CA")
    x0 = traj.xyz[0, ca].astype(np.float32)
    names = [traj.topology.atom(int(i)).residue.name for i in ca]
    vocabulary = sorted(set(names))
    types = np.array([vocabulary.index(n) for n in names], np.int32)
    bonds = np.stack([np.arange(9), np.arange(1, 10)], 1)
    r0 = np.linalg.norm(x0[1:] - x0[:-1], axis=1).astype(np.float32)
    model = SchNet(types, features=128, blocks=2, rbf=32, cutoff=1.2, bonds=bonds,
                   filter_table=filter_table)
    params = model.init(jax.random.key(seed), jnp.asarray(x0))
    # small output weights: an untrained net of this size otherwise dominates the bonds
    params["out_2"]["kernel"] = params["out_2"]["kernel"] * 0.01
    tables = None if filter_table is None else model.filter_tables(params)

    def energy(x, params=params):
        d = jnp.linalg.norm(x[1:] - x[:-1], axis=-1)
        return model.energy(params, x, tables=tables) + 0.5 * BOND_K * jnp.sum((d - r0) ** 2)

    setup = {"x0": x0, "types": types, "r0": r0, "model": model, "tables": tables}
    return energy, params, setup


def plain_schnet_energy(setup):
    """The plain-JAX baseline of the brief: a textbook dense SchNet of the same size (from
    bench_train.py, its own random weights) plus the same harmonic bonds, in the same loop."""
    from bench_train import plain_jax_energy, plain_jax_schnet

    params = plain_jax_schnet(jax.random.key(1), int(setup["types"].max()) + 1)
    params["out2"]["w"] = params["out2"]["w"] * 0.01  # as for jaxcg's net: bonds dominate
    types, r0 = jnp.asarray(setup["types"]), jnp.asarray(setup["r0"])

    def energy(x):
        d = jnp.linalg.norm(x[1:] - x[:-1], axis=-1)
        return plain_jax_energy(params, x, types) + 0.5 * BOND_K * jnp.sum((d - r0) ** 2)

    return energy


# ----------------------------------------------------------------------------- implementations


def neighbor_energy(params, setup, skin: float = 0.1):
    """(energy_fn(x, neighbor), neighbor_fn) of the same model over a jax-md neighbour list
    (``SchNet.energy_neighbors``, OrderedSparse, pairs within cutoff + skin nm)."""
    model, r0 = setup["model"], jnp.asarray(setup["r0"])
    _, neighbor_fn = model.neighbor_list(dr_threshold=skin)

    def energy(x, neighbor=None):
        d = jnp.linalg.norm(x[1:] - x[:-1], axis=-1)
        return model.energy_neighbors(params, x, neighbor, tables=setup["tables"]) + 0.5 * BOND_K * jnp.sum((d - r0) ** 2)

    return energy, neighbor_fn


def run_jaxcg(energy, x0, n_replicas, seconds, replica_block="auto", replica_devices=None, neighbor_fn=None):
    from jaxcg import simulate

    chunk = _chunk(n_replicas)
    sim = simulate.langevin(energy, np.full(10, MASS), TEMPERATURE, DT, FRICTION, chunk,
                            SAVE_EVERY, replica_block=replica_block, replica_devices=replica_devices,
                            neighbor_fn=neighbor_fn)
    state = sim.init(jax.random.key(0), jnp.broadcast_to(x0, (n_replicas, 10, 3)))
    for _ in range(3):  # compile, then warm up
        state, _ = simulate.run(sim, state, chunk)
    steps, elapsed = 0, 0.0
    while elapsed < seconds:
        tick = time.perf_counter()
        state, _ = simulate.run(sim, state, chunk)
        jax.block_until_ready(state)
        elapsed += time.perf_counter() - tick
        steps += chunk
    alive = int(np.asarray(state.alive).sum())
    return n_replicas * steps / elapsed, {"steps": steps, "alive": alive}


def run_jax_plain(energy, x0, n_replicas, seconds):
    kT = 0.0083144626 * TEMPERATURE
    c1 = float(np.exp(-FRICTION * DT))
    c2 = float(np.sqrt(kT * (1 - c1**2) * MASS))
    force = jax.vmap(jax.grad(lambda x: -energy(x)))
    chunk = _chunk(n_replicas)

    def step(carry, _):
        x, p, f, key = carry
        key, split = jax.random.split(key)
        p = p + 0.5 * DT * f
        x = x + 0.5 * DT * p / MASS
        p = c1 * p + c2 * jax.random.normal(split, p.shape)
        x = x + 0.5 * DT * p / MASS
        f = force(x)
        p = p + 0.5 * DT * f
        return (x, p, f, key), None

    run = jax.jit(lambda c: jax.lax.scan(step, c, None, length=chunk)[0])
    x = jnp.broadcast_to(x0, (n_replicas, 10, 3))
    carry = (x, jnp.zeros_like(x), force(x), jax.random.key(1))
    for _ in range(3):  # compile, then warm up
        carry = jax.block_until_ready(run(carry))
    steps, elapsed = 0, 0.0
    while elapsed < seconds:
        tick = time.perf_counter()
        carry = jax.block_until_ready(run(carry))
        elapsed += time.perf_counter() - tick
        steps += chunk
    return n_replicas * steps / elapsed, {"steps": steps}


def torch_schnet(params, setup):
    """A plain PyTorch SchNet with jaxcg's weights: forward (R, N, 3) nm -> (R,) kJ/mol."""
    import torch

    model = setup["model"]
    t = {k: torch.tensor(np.asarray(v)) for k, v in _flatten(params).items()}
    types = torch.tensor(setup["types"], dtype=torch.long)
    pi, pj = torch.tensor(model.pair_i), torch.tensor(model.pair_j)
    centers = torch.tensor(np.asarray(model.centers, np.float32))
    gamma, cutoff = float(model.gamma), float(model.cutoff)
    r0 = torch.tensor(setup["r0"])
    log2 = float(np.log(2.0))

    def ssp(v):
        return torch.nn.functional.softplus(v) - log2

    def linear(v, name, bias=True):
        out = v @ t[f"{name}/kernel"]
        return out + t[f"{name}/bias"] if bias else out

    def energy(x):
        d = x[:, pj] - x[:, pi]
        r = torch.sqrt((d * d).sum(-1))
        rbf = torch.exp(-gamma * (r[..., None] - centers) ** 2)
        env = 0.5 * (torch.cos(torch.pi * torch.clamp(r, max=cutoff) / cutoff) + 1.0)
        env = env * (r < cutoff)
        h = t["embedding/embedding"][types].expand(x.shape[0], -1, -1)
        for b in range(model.blocks):
            name = f"interaction_{b}"
            hidden = ssp(linear(rbf, f"{name}/filter_in"))
            w = linear(hidden, f"{name}/filter_out") * env[..., None]
            xh = linear(h, f"{name}/in2f", bias=False)
            m = torch.zeros_like(h)
            m = m.index_add(1, pi, w * xh[:, pj]).index_add(1, pj, w * xh[:, pi])
            h = h + linear(ssp(linear(m, f"{name}/f2out")), f"{name}/dense")
        net = linear(ssp(linear(h, "out_1")), "out_2").sum(dim=(1, 2))
        bond = torch.linalg.norm(x[:, 1:] - x[:, :-1], dim=-1)
        return net + 0.5 * BOND_K * ((bond - r0) ** 2).sum(-1)

    return energy


def run_torch(energy, x0, n_replicas, seconds):
    import torch

    kT = 0.0083144626 * TEMPERATURE
    c1 = float(np.exp(-FRICTION * DT))
    c2 = float(np.sqrt(kT * (1 - c1**2) * MASS))
    gen = torch.Generator().manual_seed(0)

    def force(x):
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(x).sum(), x)
        return -grad

    x = torch.tensor(np.broadcast_to(x0, (n_replicas, 10, 3)).copy())
    p = torch.zeros_like(x)
    f = force(x)

    def step(x, p, f):
        p = p + 0.5 * DT * f
        x = x + 0.5 * DT * p / MASS
        p = c1 * p + c2 * torch.randn(p.shape, generator=gen)
        x = x + 0.5 * DT * p / MASS
        f = force(x)
        return x, p + 0.5 * DT * f, f

    for _ in range(3):
        x, p, f = step(x, p, f)
    steps, tick = 0, time.perf_counter()
    while time.perf_counter() - tick < seconds:
        x, p, f = step(x, p, f)
        steps += 1
    return n_replicas * steps / (time.perf_counter() - tick), {"steps": steps}


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def _chunk(n_replicas: int) -> int:
    return 500 if n_replicas <= 8 else (50 if n_replicas <= 128 else 10)


def _flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(_flatten(value, name + "/") if isinstance(value, dict) else {name: value})
    return out


def table_force_error(setup, params, table_setup, table_params, x0, n_frames: int = 256) -> dict:
    """Error of the SchNet's forces (the bonds left out: they would hide it) with tabulated
    filters against the exact ones, same weights, on structures perturbed by 0.05 nm: relative
    RMS over all components, and the largest error relative to the RMS force."""
    xs = jnp.asarray(x0[None] + np.random.default_rng(1).normal(0, 0.05, (n_frames, 10, 3)).astype(np.float32))

    def net_forces(model, p, tables):
        return np.asarray(jax.jit(jax.vmap(jax.grad(lambda x: -model.energy(p, x, tables=tables))))(xs))

    exact = net_forces(setup["model"], params, None)
    table = net_forces(table_setup["model"], table_params, table_setup["tables"])
    rms = float(np.sqrt(np.mean(exact**2)))
    return {"relative_rms_force_error": float(np.sqrt(np.mean((table - exact) ** 2))) / rms,
            "max_force_error_over_rms_force": float(np.abs(table - exact).max()) / rms,
            "filter_max_relative_error": table_setup["model"].filter_table_error(table_params),
            "frames": n_frames, "perturbation_nm": 0.05}


def check_same_model(energy, torch_energy, x0) -> float:
    """Largest |ΔU| (kJ/mol) between the JAX and torch models on perturbed structures."""
    import torch

    xs = x0[None] + np.random.default_rng(0).normal(0, 0.02, (4, 10, 3)).astype(np.float32)
    u_jax = np.asarray(jax.vmap(energy)(jnp.asarray(xs)))
    u_torch = torch_energy(torch.tensor(xs)).detach().numpy()
    return float(np.abs(u_jax - u_torch).max())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 64, 512])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per entry")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--filter-table", type=int, default=256,
                        help="grid intervals of the tabulated-filter variant (0: skip it)")
    parser.add_argument("--out", default=str(HERE / "results" / "simulate.json"))
    parser.add_argument("--host-devices", type=int, default=os.cpu_count(),
                        help="split the CPU into this many XLA devices (read when run as a script)")
    args = parser.parse_args(argv)
    n_devices = len(jax.devices())

    energy, params, setup = cln025_model()
    x0 = setup["x0"]
    table_energy, table_error = None, None
    if args.filter_table:
        table_energy, table_params, table_setup = cln025_model(filter_table=args.filter_table)
        table_error = table_force_error(setup, params, table_setup, table_params, x0)
        table_nbrs = neighbor_energy(table_params, table_setup)
        print(f"tabulated filters (K = {args.filter_table}): relative RMS force error "
              f"{table_error['relative_rms_force_error']:.1e}, max {table_error['max_force_error_over_rms_force']:.1e} "
              "of the RMS force", flush=True)
    rows, agreement = [], None
    torch_energy = None
    if not args.skip_torch:
        import torch

        # XLA flushes denormals on CPU; without this torch slows down by up to 2x here
        torch.set_flush_denormal(True)
        default_threads = torch.get_num_threads()
        torch_energy = torch_schnet(params, setup)
        agreement = check_same_model(energy, torch_energy, x0)
    plain_model = plain_schnet_energy(setup)
    print(f"{'R':>6} {'jaxcg':>10} {'unblocked':>10} {'table':>10} {'jaxcg_dev':>10} {'table_dev':>10} "
          f"{'jax plain':>10} {'plain SchNet':>12} {'torch':>10} {'jaxcg/plain':>11} {'table/plain':>11} "
          f"{'jaxcg/torch':>11} {'table/torch':>11} {'t_dev/torch':>11} {'t_nbr_dev':>10} {'/torch':>7}  "
          f"(replica-steps/s; {n_devices} devices)",
          flush=True)
    for n_rep in args.replicas:
        best = {"jaxcg": 0.0, "jaxcg_unblocked": 0.0, "jaxcg_table": 0.0, "jaxcg_devices": 0.0,
                "jaxcg_table_devices": 0.0, "jaxcg_table_nbrs_devices": 0.0, "jax_plain": 0.0,
                "jax_plain_dense_schnet": 0.0, "torch": 0.0}
        split = n_devices > 1 and n_rep % n_devices == 0
        for _ in range(args.repeats):  # interleaved, best of: the machine may be shared
            rate, jaxcg_info = run_jaxcg(energy, x0, n_rep, args.seconds)
            best["jaxcg"] = max(best["jaxcg"], rate)
            best["jaxcg_unblocked"] = max(best["jaxcg_unblocked"],
                                          run_jaxcg(energy, x0, n_rep, args.seconds, replica_block=None)[0])
            if table_energy is not None:
                best["jaxcg_table"] = max(best["jaxcg_table"], run_jaxcg(table_energy, x0, n_rep, args.seconds)[0])
            if split:
                best["jaxcg_devices"] = max(best["jaxcg_devices"],
                                            run_jaxcg(energy, x0, n_rep, args.seconds, replica_devices="auto")[0])
                if table_energy is not None:
                    best["jaxcg_table_devices"] = max(best["jaxcg_table_devices"], run_jaxcg(
                        table_energy, x0, n_rep, args.seconds, replica_devices="auto")[0])
                    best["jaxcg_table_nbrs_devices"] = max(best["jaxcg_table_nbrs_devices"], run_jaxcg(
                        table_nbrs[0], x0, n_rep, args.seconds, replica_devices="auto", neighbor_fn=table_nbrs[1])[0])
            best["jax_plain"] = max(best["jax_plain"], run_jax_plain(energy, x0, n_rep, args.seconds)[0])
            best["jax_plain_dense_schnet"] = max(best["jax_plain_dense_schnet"],
                                                 run_jax_plain(plain_model, x0, n_rep, args.seconds)[0])
            if torch_energy is not None:
                import torch

                for threads in sorted({1, default_threads}):  # small R may prefer 1 thread
                    torch.set_num_threads(threads)
                    best["torch"] = max(best["torch"], run_torch(torch_energy, x0, n_rep, args.seconds)[0])
                torch.set_num_threads(default_threads)
        row = {"replicas": n_rep, **{k: (v or None) for k, v in best.items()}, "jaxcg_alive": jaxcg_info["alive"]}
        plain = best["jax_plain_dense_schnet"]
        for name in ("jaxcg", "jaxcg_table", "jaxcg_devices", "jaxcg_table_devices", "jaxcg_table_nbrs_devices"):
            row[f"{name}_over_plain_dense_schnet"] = best[name] / plain if best[name] else None
            row[f"{name}_over_torch"] = best[name] / best["torch"] if best[name] and best["torch"] else None
        rows.append(row)

        def cell(value, width, ratio=False):
            if not value:
                return f"{'-':>{width}}"
            return f"{value:{width - 1}.1f}x" if ratio else f"{value:{width}.0f}"

        print(f"{n_rep:6d} {cell(best['jaxcg'], 10)} {cell(best['jaxcg_unblocked'], 10)} "
              f"{cell(best['jaxcg_table'], 10)} {cell(best['jaxcg_devices'], 10)} "
              f"{cell(best['jaxcg_table_devices'], 10)} {cell(best['jax_plain'], 10)} {cell(plain, 12)} "
              f"{cell(best['torch'], 10)} {cell(row['jaxcg_over_plain_dense_schnet'], 11, True)} "
              f"{cell(row['jaxcg_table_over_plain_dense_schnet'], 11, True)} "
              f"{cell(row['jaxcg_over_torch'], 11, True)} {cell(row['jaxcg_table_over_torch'], 11, True)} "
              f"{cell(row['jaxcg_table_devices_over_torch'], 11, True)} {cell(best['jaxcg_table_nbrs_devices'], 10)} "
              f"{cell(row['jaxcg_table_nbrs_devices_over_torch'], 7, True)}", flush=True)
    result = {
        "benchmark": "CLN025-size SchNet(128, 2 blocks, 32 RBF, 1.2 nm) + harmonic bonds, BAOAB",
        "unit": "replica-steps per second",
        "dt_ps": DT, "friction_per_ps": FRICTION, "temperature_K": TEMPERATURE,
        "jax_backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "machine": platform.platform(), "processor": platform.processor(),
        "torch_vs_jax_max_energy_difference_kJ_per_mol": agreement,
        "timed_seconds_per_entry": args.seconds, "repeats_best_of": args.repeats,
        "torch_threads": _torch_threads(), "rows": rows,
        "filter_table_intervals": args.filter_table or None, "filter_table_accuracy": table_error,
    }
    from jaxcg.analysis import save_metrics

    out = save_metrics(args.out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
