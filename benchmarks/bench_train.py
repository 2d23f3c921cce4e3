"""Benchmark: force-matching training throughput of jaxcg's SchNet against torchmd-net.

System: the 10 CA beads of CLN025 (../shared/data/cln025.pdb, or the bundled copy), positions =
the CA coordinates plus Gaussian noise (0.02 nm), random target forces (throughput only). Every
model has the same size: 128 features, 2 interaction blocks, 32 Gaussian RBFs, cosine cutoff
1.2 nm, shifted-softplus activations, sum pooling; Adam, batch 128 frames, float32.

Contestants, all in this process on this machine:

- ``jaxcg``: ``jaxcg.models.SchNet`` + ``jaxcg.train.make_train_step`` (each unordered pair's
  RBFs and filter computed once and used for both directions, static-index gathers and
  segment_sum, one RBF expansion shared by the blocks), jitted; with
  ``max_pairs`` = the most pairs within the cutoff in any frame (filters only for those, as
  torchmd-net's radius graph does). ``jaxcg_all_pairs``: the same without ``max_pairs``.
  ``jaxcg_table``: the same with filters tabulated on a 256-interval grid rebuilt from the
  weights every step (``SchNet(filter_table=256)``, cubic Hermite); its force and loss-gradient
  errors against the exact model (same weights) are in the JSON.
- ``plain_jax``: a straightforward SchNet in jax.numpy (dense N×N pairs with a self mask, one
  filter per ordered pair and block) trained with jit + vmap(grad) and the same Adam.
- ``torchmd_net``: torchmd-net's ``graph-network`` (TorchMD_GN, 2 layers, 128 channels, 32 gauss
  RBFs, ssp, no neighbour embedding) with ``derivative=True`` and torch.optim.Adam; if torchmd-net
  cannot be imported, a plain PyTorch SchNet of the same size (the JSON says which).

- ``jaxcg_2dev``, ``jaxcg_table_2dev`` (``--host-devices``, default: one per core): the same
  steps with the batch sharded over that many XLA CPU devices (``jaxcg.train.fit``'s default
  when the CPU is split with ``jaxcg.devices.use_host_devices``, as the ``jaxcg`` command does).
  The other jaxcg contestants run on one of them.

    python benchmarks/bench_train.py [--steps 10] [--rounds 5] [--batch 128] [--threads 2] [--skip-torch]
                                     [--torch-fallback] [--host-devices 2]

Prints frames/s and the ratios, writes benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
N_FEATURES, N_BLOCKS, N_RBF, CUTOFF = 128, 2, 32, 1.2


def cln025_ca() -> np.ndarray:
    """(10, 3) nm CA coordinates of CLN025."""
    import mdtraj as md

    for path in (HERE.parent.parent / "shared" / "data" / "cln025.pdb", HERE.parent / "jaxcg" / "bundled" / "cln025.pdb"):
        if path.exists():
            traj = md.load(str(path))
            return traj.xyz[0, traj.topology.select("name CA")].astype(np.float32)
    raise FileNotFoundError("cln025.pdb not found in ../shared/data or jaxcg/bundled")


def synthetic_batches(n_batches: int, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ca = cln025_ca()
    x = ca + rng.normal(0.0, 0.02, (n_batches, batch, *ca.shape))
    f = rng.normal(0.0, 50.0, x.shape)
    return x.astype(np.float32), f.astype(np.float32)


def warm_up(run_step) -> float:
    """One step (compilation included); seconds."""
    t0 = time.perf_counter()
    run_step(0)
    return time.perf_counter() - t0


def time_round(run_step, n_steps: int, batch: int) -> dict[str, float]:
    """Time ``n_steps`` steps: frames/s by wall clock and by process CPU time (all threads)."""
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n_steps):
        run_step(i + 1)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"frames_per_s": n_steps * batch / elapsed, "s_per_step": elapsed / n_steps,
            "frames_per_cpu_s": n_steps * batch / cpu}


# ----------------------------------------------------------------------------- JAX


def bench_jaxcg(xs, fs, n_devices=1, compact=True, filter_table=None):
    """jaxcg's train step; with ``n_devices`` > 1 the batch is sharded over that many devices
    (data parallelism as in ``jaxcg.train.fit``), parameters replicated. ``compact``: filters
    only for pairs within the cutoff (``max_pairs`` = the most such pairs in any frame, like
    torchmd-net's radius graph); otherwise every pair, zeroed beyond the cutoff."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from jaxcg.models import SchNet
    from jaxcg.train import Batch, TrainState, _init_optimizer, make_train_step

    types = np.arange(10) % 10
    model = SchNet(types, features=N_FEATURES, blocks=N_BLOCKS, rbf=N_RBF, cutoff=CUTOFF)
    if compact:
        max_pairs = int(model.pair_counts(xs.reshape(-1, *xs.shape[2:])).max())
        model = SchNet(types, features=N_FEATURES, blocks=N_BLOCKS, rbf=N_RBF, cutoff=CUTOFF,
                       max_pairs=max_pairs, filter_table=filter_table)
    params = model.init(jax.random.key(0), jnp.asarray(xs[0, 0]))
    optimizer = optax.adam(1e-4)
    state = TrainState(params, _init_optimizer(optimizer, params), jax.random.PRNGKey(0), jnp.zeros((), jnp.int32), params, jnp.zeros(()), jnp.zeros((), jnp.int32))
    mesh = Mesh(np.asarray(jax.devices()[:n_devices]), ("data",))
    replicated, sharded = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
    step = jax.jit(make_train_step(model.energy, optimizer), in_shardings=(replicated, sharded), out_shardings=replicated)
    batches = [
        jax.device_put(Batch(jnp.asarray(x), jnp.asarray(f), jnp.ones(len(x), jnp.float32)), sharded)
        for x, f in zip(xs, fs, strict=True)
    ]
    holder = {"state": jax.device_put(state, replicated)}

    def run(i):
        holder["state"], metrics = step(holder["state"], batches[i % len(batches)])
        metrics["loss"].block_until_ready()

    meta = {"pairs_evaluated": model.max_pairs or len(model.pair_i)}
    if filter_table is not None:
        meta.update(filter_table=filter_table, **table_accuracy(model, params, xs[0]))
    return run, meta


def table_accuracy(model, params, x):
    """Forces and force-matching-loss gradients of the tabulated-filter model against the exact
    one with the same (initial) weights on one batch x: (B, N, 3) nm."""
    import jax
    import jax.numpy as jnp

    from jaxcg.models import SchNet, batched_energy_and_forces

    exact = SchNet(model.bead_types, features=N_FEATURES, blocks=N_BLOCKS, rbf=N_RBF, cutoff=CUTOFF)
    x = jnp.asarray(x)
    target = jnp.zeros_like(x)

    def forces(m):
        return batched_energy_and_forces(m.energy)(params, x)[1]

    def loss_grad(m):
        return jax.grad(lambda p: jnp.mean((batched_energy_and_forces(m.energy)(p, x)[1] - target) ** 2))(params)

    f_exact, f_table = forces(exact), forces(model)
    g_exact, g_table = loss_grad(exact), loss_grad(model)
    diff = sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(jax.tree.leaves(g_exact), jax.tree.leaves(g_table), strict=True))
    norm = sum(float(jnp.sum(a**2)) for a in jax.tree.leaves(g_exact))
    return {"relative_rms_force_error": float(jnp.linalg.norm(f_table - f_exact) / jnp.linalg.norm(f_exact)),
            "relative_loss_gradient_error": (diff / norm) ** 0.5,
            "filter_max_relative_error": model.filter_table_error(params)}


def plain_jax_schnet(key, n_types):
    """Parameters of the plain-JAX baseline SchNet (a dict of arrays)."""
    import jax

    def dense(k, n_in, n_out):
        return {"w": jax.random.normal(k, (n_in, n_out)) / np.sqrt(n_in), "b": jax.numpy.zeros(n_out)}

    keys = iter(jax.random.split(key, 32))
    blocks = [
        {"f1": dense(next(keys), N_RBF, N_FEATURES), "f2": dense(next(keys), N_FEATURES, N_FEATURES),
         "in2f": dense(next(keys), N_FEATURES, N_FEATURES), "f2out": dense(next(keys), N_FEATURES, N_FEATURES),
         "dense": dense(next(keys), N_FEATURES, N_FEATURES)}
        for _ in range(N_BLOCKS)
    ]
    return {"embed": jax.random.normal(next(keys), (n_types, N_FEATURES)), "blocks": blocks,
            "out1": dense(next(keys), N_FEATURES, N_FEATURES // 2), "out2": dense(next(keys), N_FEATURES // 2, 1)}


def plain_jax_energy(params, x, types):
    """Textbook SchNet: dense (N, N) distances, self pairs masked, a filter per ordered pair."""
    import jax
    import jax.numpy as jnp

    def lin(p, h):
        return h @ p["w"] + p["b"]

    def ssp(h):
        return jax.nn.softplus(h) - jnp.log(2.0)

    n = x.shape[0]
    d = x[:, None, :] - x[None, :, :]
    eye = jnp.eye(n, dtype=bool)
    r = jnp.sqrt(jnp.sum(d * d, -1) + eye)  # +1 on the diagonal keeps sqrt differentiable
    mu = jnp.linspace(0.0, CUTOFF, N_RBF)
    gamma = 0.5 / (mu[1] - mu[0]) ** 2
    rbf = jnp.exp(-gamma * (r[..., None] - mu) ** 2)
    envelope = jnp.where(eye | (r >= CUTOFF), 0.0, 0.5 * (jnp.cos(jnp.pi * r / CUTOFF) + 1.0))
    h = params["embed"][types]
    for block in params["blocks"]:
        w = lin(block["f2"], ssp(lin(block["f1"], rbf))) * envelope[..., None]
        m = jnp.einsum("ijf,jf->if", w, lin(block["in2f"], h))
        h = h + lin(block["dense"], ssp(lin(block["f2out"], m)))
    return jnp.sum(lin(params["out2"], ssp(lin(params["out1"], h))))


def bench_plain_jax(xs, fs):
    import jax
    import jax.numpy as jnp
    import optax

    types = jnp.arange(10)
    with jax.numpy_dtype_promotion("standard"):
        params = plain_jax_schnet(jax.random.key(0), 10)
        optimizer = optax.adam(1e-4)
        opt_state = optimizer.init(params)

    def loss(p, x, f):
        forces = -jax.vmap(jax.grad(plain_jax_energy, argnums=1), in_axes=(None, 0, None))(p, x, types)
        return jnp.mean(jnp.sum((forces - f) ** 2, -1))

    @jax.jit
    def step(p, s, x, f):
        with jax.numpy_dtype_promotion("standard"):
            value, grads = jax.value_and_grad(loss)(p, x, f)
            updates, s = optimizer.update(grads, s, p)
            return optax.apply_updates(p, updates), s, value

    batches = [(jnp.asarray(x), jnp.asarray(f)) for x, f in zip(xs, fs, strict=True)]
    holder = {"p": params, "s": opt_state}

    def run(i):
        x, f = batches[i % len(batches)]
        holder["p"], holder["s"], value = step(holder["p"], holder["s"], x, f)
        value.block_until_ready()

    return run, {"pairs_evaluated": xs.shape[2] ** 2}


# ----------------------------------------------------------------------------- PyTorch


def torch_model(force_fallback: bool = False):
    """torchmd-net's TorchMD_GN of the benchmark size, or a plain PyTorch SchNet fallback."""
    try:
        if force_fallback:
            raise ImportError("--torch-fallback given")
        from torchmdnet.models.model import TorchMD_Net
        from torchmdnet.models.output_modules import Scalar
        from torchmdnet.models.torchmd_gn import TorchMD_GN

        rep = TorchMD_GN(
            hidden_channels=N_FEATURES, num_filters=N_FEATURES, num_layers=N_BLOCKS, num_rbf=N_RBF,
            rbf_type="gauss", trainable_rbf=False, activation="ssp", neighbor_embedding=False,
            cutoff_lower=0.0, cutoff_upper=CUTOFF, max_z=16, max_num_neighbors=32,
        )
        model = TorchMD_Net(rep, Scalar(N_FEATURES, activation="ssp"), derivative=True)
        return model, "torchmd-net TorchMD_GN (graph-network)"
    except Exception as error:  # noqa: BLE001 - any import/build failure selects the fallback
        print(f"torchmd-net unavailable ({error!r}); using a plain PyTorch SchNet")
        return _torch_schnet(), f"plain PyTorch SchNet (torchmd-net not used: {error!r})"


def _torch_schnet():
    """A plain PyTorch SchNet of the benchmark size (dense pairs), forces by autograd."""
    import torch
    from torch import nn

    class TorchSchNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(16, N_FEATURES)
            self.blocks = nn.ModuleList(
                nn.ModuleDict({"f1": nn.Linear(N_RBF, N_FEATURES), "f2": nn.Linear(N_FEATURES, N_FEATURES),
                               "in2f": nn.Linear(N_FEATURES, N_FEATURES, bias=False),
                               "f2out": nn.Linear(N_FEATURES, N_FEATURES), "dense": nn.Linear(N_FEATURES, N_FEATURES)})
                for _ in range(N_BLOCKS)
            )
            self.out = nn.Sequential(nn.Linear(N_FEATURES, N_FEATURES // 2), nn.Softplus(), nn.Linear(N_FEATURES // 2, 1))
            self.register_buffer("mu", torch.linspace(0.0, CUTOFF, N_RBF))

        def forward(self, z, pos, batch):
            n_sys = int(batch.max()) + 1
            x = pos.view(n_sys, -1, 3)
            d = x[:, :, None, :] - x[:, None, :, :]
            r = torch.sqrt((d * d).sum(-1) + torch.eye(x.shape[1]))  # cdist has no double backward
            gamma = 0.5 / (self.mu[1] - self.mu[0]) ** 2
            rbf = torch.exp(-gamma * (r[..., None] - self.mu) ** 2)
            env = 0.5 * (torch.cos(torch.pi * r / CUTOFF) + 1) * (r < CUTOFF) * (1 - torch.eye(x.shape[1]))
            h = self.embed(z.view(n_sys, -1))
            for b in self.blocks:
                w = b["f2"](nn.functional.softplus(b["f1"](rbf))) * env[..., None]
                m = torch.einsum("bijf,bjf->bif", w, b["in2f"](h))
                h = h + b["dense"](nn.functional.softplus(b["f2out"](m)))
            energy = self.out(h).sum(dim=(1, 2))
            forces = -torch.autograd.grad(energy.sum(), pos, create_graph=True)[0]
            return energy, forces

    return TorchSchNet()


def bench_torch(xs, fs, force_fallback=False):
    import torch

    model, name = torch_model(force_fallback)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch_size, n_beads = xs.shape[1], xs.shape[2]
    z = torch.arange(n_beads).repeat(batch_size) + 1
    batch = torch.arange(batch_size).repeat_interleave(n_beads)
    data = [(torch.from_numpy(x.reshape(-1, 3)), torch.from_numpy(f.reshape(-1, 3))) for x, f in zip(xs, fs, strict=True)]

    def run(i):
        pos, target = data[i % len(data)]
        pos = pos.clone().requires_grad_(True)
        optimizer.zero_grad()
        _, forces = model(z, pos, batch)
        loss = ((forces - target) ** 2).sum(-1).mean()
        loss.backward()
        optimizer.step()

    return run, {"model": name, "torch": torch.__version__}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best counts")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--torch-fallback", action="store_true", help="plain PyTorch SchNet instead of torchmd-net")
    parser.add_argument("--out", default=str(HERE / "results" / "train.json"))
    parser.add_argument("--host-devices", type=int, default=os.cpu_count(),
                        help="CPU devices for jaxcg's data-parallel contestants (jaxcg_*dev; 1: none)")
    parser.add_argument("--filter-table", type=int, default=256,
                        help="grid intervals of the jaxcg_table contestant (0: skip it)")
    args = parser.parse_args(argv)
    from jaxcg.devices import use_host_devices

    use_host_devices(args.host_devices)  # before JAX starts; a no-op once it has

    import jax

    jax.config.update("jax_numpy_dtype_promotion", "strict")
    xs, fs = synthetic_batches(4, args.batch)
    contestants = {
        "jaxcg": bench_jaxcg(xs, fs),
        "jaxcg_all_pairs": bench_jaxcg(xs, fs, compact=False),
        **({"jaxcg_table": bench_jaxcg(xs, fs, filter_table=args.filter_table)} if args.filter_table else {}),
        "plain_jax": bench_plain_jax(xs, fs),
    }
    n_devices = min(args.host_devices, len(jax.devices()))  # on an accelerator: its count
    if n_devices > 1:
        contestants[f"jaxcg_{n_devices}dev"] = bench_jaxcg(xs, fs, n_devices=n_devices)
        if args.filter_table:
            contestants[f"jaxcg_table_{n_devices}dev"] = bench_jaxcg(
                xs, fs, n_devices=n_devices, filter_table=args.filter_table)
    if not args.skip_torch:
        import torch

        torch.set_num_threads(args.threads)
        contestants["torch"] = bench_torch(xs, fs, args.torch_fallback)
    results = {name: {**meta, "first_step_s": warm_up(run)} for name, (run, meta) in contestants.items()}
    # Interleaved rounds, best round per contestant: robust to other jobs on a shared machine.
    for _ in range(args.rounds):
        for name, (run, _) in contestants.items():
            row = time_round(run, args.steps, args.batch)
            if row["frames_per_s"] > results[name].get("frames_per_s", 0.0):
                results[name].update(row)
    print(f"{'contestant':<14} {'frames/s':>10} {'frames/cpu-s':>13} {'ms/step':>9} {'first step s':>13}")
    for name, row in results.items():
        print(
            f"{name:<14} {row['frames_per_s']:>10.0f} {row['frames_per_cpu_s']:>13.0f} "
            f"{1e3 * row['s_per_step']:>9.1f} {row['first_step_s']:>13.1f}"
        )
    ratios = {}
    for mine in [k for k in results if k.startswith("jaxcg")]:
        for other in ("plain_jax", "torch"):
            if other in results:
                for key in ("frames_per_s", "frames_per_cpu_s"):
                    ratios[f"{mine}_over_{other} ({key})"] = results[mine][key] / results[other][key]
    if "torch" in results:
        print(f"torch baseline: {results['torch']['model']}")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    report = {
        "system": "CLN025 CA, 10 beads",
        "model": {"features": N_FEATURES, "blocks": N_BLOCKS, "rbf": N_RBF, "cutoff_nm": CUTOFF},
        "batch": args.batch, "steps_per_round": args.steps, "rounds": args.rounds, "threads": args.threads,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "load_avg_1m": os.getloadavg()[0]},
        "jax": jax.__version__, "device": str(jax.devices()[0]),
        "results": results, "ratios": ratios,
    }
    from jaxcg.analysis import save_metrics

    out = save_metrics(args.out, report)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
