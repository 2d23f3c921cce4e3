"""Benchmark: force-matching throughput of 2 processes (jax.distributed, gloo) against 1 process.

System: the 10 CA beads of CLN025 (as in bench_train.py: CA coordinates plus 0.02 nm Gaussian
noise, random target forces; throughput only), written to an HDF5 frames file
(``jaxcg.distributed.write_frames``). Model: ``jaxcg.models.SchNet`` of 128 features, 2 blocks,
32 RBFs, cutoff 1.2 nm, ``max_pairs`` = the most pairs within the cutoff; Adam, float32.

Every contestant is a fresh set of processes running ``jaxcg.train.fit`` on the frames file
(batches streamed from disk, each process reading its rows), no validation, no checkpoints:

- ``1 process``: one process, one CPU device.
- ``1 process, in memory``: the same with the frames as arrays (copied to the device once).
- ``1 process, 2 devices``: one process, the CPU split into 2 XLA devices, batch sharded.
- ``2 processes``: two processes on localhost, one CPU device each, joined by
  ``jaxcg.distributed.initialize``; the gradient all-reduce goes over gloo (TCP).

Frames/s: global frames of an epoch over its wall-clock time, the best timed epoch (the first
epoch, compilation included, is not timed). Frames/CPU s: the same frames over the CPU time of all
processes in that epoch (all threads), the work each frame costs whatever else runs on the machine.

    python benchmarks/bench_distributed.py [--frames 4096] [--batch 128] [--epochs 4] [--rounds 2]

Prints a table, writes benchmarks/results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
N_FEATURES, N_BLOCKS, N_RBF, CUTOFF = 128, 2, 32, 1.2


def make_frames(path: Path, n_frames: int, seed: int = 0) -> None:
    sys.path.insert(0, str(HERE))
    from bench_train import cln025_ca

    from jaxcg.distributed import write_frames

    rng = np.random.default_rng(seed)
    ca = cln025_ca()

    def blocks():
        for start in range(0, n_frames, 1024):
            n = min(1024, n_frames - start)
            x = ca + rng.normal(0.0, 0.02, (n, *ca.shape))
            yield x.astype(np.float32), rng.normal(0.0, 50.0, x.shape).astype(np.float32)

    write_frames(path, blocks(), chunk_frames=64)


def worker(args: argparse.Namespace) -> None:
    """One process of a contestant: train, and (process 0) write the epoch times to --result."""
    from jaxcg import distributed

    if args.num_processes > 1:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    import jax

    from jaxcg.models import SchNet
    from jaxcg.train import TrainConfig, fit

    stamps: list[tuple[float, float]] = []  # (wall, this process's CPU) seconds at each epoch's end

    def progress(epoch, step, steps, metrics):
        if metrics is not None:
            stamps.append((time.perf_counter(), time.process_time()))

    with distributed.FrameFile(args.frames_file) as source:
        probe = source.positions[: min(source.n_frames, 4096)]
        model = SchNet(np.arange(source.n_beads), features=N_FEATURES, blocks=N_BLOCKS, rbf=N_RBF, cutoff=CUTOFF)
        model = SchNet(np.arange(source.n_beads), features=N_FEATURES, blocks=N_BLOCKS, rbf=N_RBF, cutoff=CUTOFF,
                       max_pairs=int(model.pair_counts(probe).max()))
        params = model.init(jax.random.key(0), jax.numpy.asarray(probe[0]))
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch, learning_rate=1e-4, schedule="constant",
                             val_fraction=0.0, patience=None)
        if args.in_memory:
            fit(model.energy, params, source.positions[()], source.forces[()], config,
                devices=jax.devices(), progress=progress)
        else:
            fit(model.energy, params, source, None, config, progress=progress)
        n_frames = source.n_frames
    wall, cpu = np.diff(np.asarray(stamps), axis=0).T
    Path(f"{args.result}.{jax.process_index()}").write_text(json.dumps({
        "devices": len(jax.devices()), "processes": jax.process_count(), "frames_per_epoch": n_frames,
        "steps_per_epoch": -(-n_frames // args.batch), "epoch_s": wall.tolist(), "epoch_cpu_s": cpu.tolist(),
    }))
    if args.num_processes > 1:
        distributed.shutdown()


def run_contestant(frames: Path, result: Path, args, processes: int, host_devices: int, in_memory=False) -> dict:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        coordinator = f"localhost:{s.getsockname()[1]}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={host_devices}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    commands = [[sys.executable, __file__, "--worker", "--frames-file", str(frames), "--result", str(result),
                 "--coordinator", coordinator, "--num-processes", str(processes), "--process-id", str(k),
                 "--batch", str(args.batch), "--epochs", str(args.epochs)] + (["--in-memory"] if in_memory else [])
                for k in range(processes)]
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands]
    try:
        outputs = [p.communicate(timeout=args.timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if any(p.returncode for p in procs):
        raise RuntimeError("contestant failed:\n" + "\n".join(o[-2000:] for o in outputs))
    parts = [json.loads(Path(f"{result}.{k}").read_text()) for k in range(processes)]
    wall = np.max([p["epoch_s"] for p in parts], axis=0)  # the processes step together
    cpu = np.sum([p["epoch_cpu_s"] for p in parts], axis=0)
    best = int(np.argmin(wall))
    frames = parts[0]["frames_per_epoch"]
    return {**{k: parts[0][k] for k in ("devices", "processes", "frames_per_epoch", "steps_per_epoch")},
            "epoch_s": wall.tolist(), "epoch_cpu_s": cpu.tolist(),
            "frames_per_s": frames / wall[best], "frames_per_cpu_s": frames / cpu[best]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4096, help="frames in the file")
    parser.add_argument("--batch", type=int, default=128, help="global batch (frames per step)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is not timed")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best counts")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per contestant")
    parser.add_argument("--out", default=str(HERE / "results" / "distributed.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--frames-file", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", help=argparse.SUPPRESS)
    parser.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return {}

    contestants = {  # name: (processes, host devices per process, in memory)
        "1 process": (1, 1, False),
        "1 process, in memory": (1, 1, True),
        "1 process, 2 devices": (1, 2, False),
        "2 processes": (2, 1, False),
    }
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames.h5"
        make_frames(frames, args.frames)
        for _ in range(args.rounds):
            for name, (processes, devices, in_memory) in contestants.items():
                got = run_contestant(frames, Path(tmp) / "result.json", args, processes, devices, in_memory)
                best = results.get(name)
                if best is None or got["frames_per_s"] > best["frames_per_s"]:
                    results[name] = got
    base = results["1 process"]["frames_per_s"]
    print(f"{'contestant':24} {'processes':>9} {'devices':>7} {'frames/s':>9} {'vs 1 process':>12} {'frames/CPU s':>12}")
    for name, r in results.items():
        r["vs_1_process"] = r["frames_per_s"] / base
        print(f"{name:24} {r['processes']:>9} {r['devices']:>7} {r['frames_per_s']:>9.0f} {r['vs_1_process']:>11.2f}x"
              f" {r['frames_per_cpu_s']:>12.0f}")
    import jax

    report = {
        "command": "python benchmarks/bench_distributed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "system": "CLN025 CA, 10 beads", "frames": args.frames, "batch": args.batch, "epochs": args.epochs,
        "rounds": args.rounds,
        "model": {"features": N_FEATURES, "blocks": N_BLOCKS, "rbf": N_RBF, "cutoff_nm": CUTOFF},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "load_avg_1m": os.getloadavg()[0]},
        "jax": jax.__version__, "date": time.strftime("%Y-%m-%d"), "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
