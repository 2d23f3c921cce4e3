"""Benchmark: jaxcg's optimal linear force map against the paper's QP approach, on CLN025.

The paper's reference code (aggforce) builds the reduced force matrix in numpy and solves one
quadratic program per bead with qpsolvers + OSQP (eps_abs 1e-7, max_iter 1000, polish with 10
refinement iterations). jaxcg solves one KKT system for all beads in JAX. Both run here, in one
process, on the same all-atom CLN025 forces (OpenMM, vacuum, HBonds constrained) mapped to its 10
CA atoms; the table gives both times, the ratio and both objectives E Σ_i ‖(G F)_i‖².

It also streams a 50,000-frame dataset from disk through ``optimal_linear_map`` and reports the
peak resident memory it added, against the 50,000 frames' in-memory size.

    python benchmarks/bench_maps.py [--frames 5000] [--repeats 5]

Writes benchmarks/results/maps.json. Generates benchmarks/data/cln025_vacuum_<frames>.h5 with
OpenMM on first use.

    python benchmarks/bench_maps.py --system villin [--frames 10000]

The villin headpiece (HP35, 582 protein atoms) in explicit solvent instead: CA (35 beads) and CA +
side-chain centroid (68 beads) maps, jaxcg's first call (everything it compiles or loads
included) and warm calls against the QP route on the same frames (and against aggforce itself
when it is installed: ``pip install --no-deps git+https://github.com/noegroup/aggforce``), objectives, G Mᵀ = I residuals,
the moment accumulation's rate against this machine's float32 matrix multiply measured in the
same run, peak memory of streamed runs over 1k-50k frames (in subprocesses), slice/basic/optimal
noise on held-out frames, and scaling tables over frames and beads. Writes
benchmarks/results/maps_villin.json; generates benchmarks/data/villin_explicit_2fs.h5 on first use
(``VILLIN_GENERATE``; hours on 2 cores) and uses as many of its frames as are complete.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cln025_data(n_frames: int):
    from jaxcg.data import load_dataset

    path = HERE / "data" / f"cln025_vacuum_{n_frames}.h5"
    if not path.exists():
        from jaxcg.reference import generate

        print(f"generating {path} with OpenMM ({n_frames} frames every 0.1 ps, vacuum, HBonds) ...", flush=True)
        generate("chignolin", path, n_frames=n_frames, solvent="vacuum", seed=1, save_every=50)
    return path, load_dataset(path)


def qp_reference_map(forces: np.ndarray, config: np.ndarray, constraints: np.ndarray) -> np.ndarray:
    """The paper code's method, re-implemented: one OSQP quadratic program per bead."""
    from qpsolvers import solve_qp

    from jaxcg.constraints import expansion_matrix

    n_atoms = forces.shape[1]
    expand = expansion_matrix(constraints, n_atoms)
    flat = np.swapaxes(forces.astype(np.float64), 1, 2).reshape(-1, n_atoms)
    reduced = flat @ expand
    qp_matrix = reduced.T @ reduced
    a = config @ expand
    rows = []
    for bead in range(config.shape[0]):
        target = np.zeros(config.shape[0])
        target[bead] = 1.0
        w = solve_qp(
            P=qp_matrix, q=np.zeros(qp_matrix.shape[0]), A=a, b=target, solver="osqp",
            eps_abs=1e-7, max_iter=1000, polish=True, polish_refine_iter=10,
        )
        if w is None:
            raise RuntimeError(f"OSQP found no solution for bead {bead}")
        rows.append(expand @ w)
    return np.stack(rows)


def aggforce_map(forces: np.ndarray, config: np.ndarray, constraints: np.ndarray) -> np.ndarray:
    """aggforce's own ``qp_linear_map`` (the paper's code; not on PyPI: install it from source,
    ``pip install --no-deps git+https://github.com/noegroup/aggforce``). Raises ImportError
    when it is absent."""
    from aggforce import LinearMap as AggforceLinearMap
    from aggforce.qp import qp_linear_map
    from aggforce.trajectory import ForcesTrajectory

    pairs = {frozenset((int(a), int(b))) for a, b in np.asarray(constraints).reshape(-1, 2)}
    mapped = qp_linear_map(ForcesTrajectory(forces=forces), AggforceLinearMap(config), constraints=pairs)
    return np.asarray(mapped.force_map.standard_matrix, np.float64)


def have_aggforce() -> bool:
    try:
        import aggforce.qp  # noqa: F401
    except ImportError:
        return False
    return True


def warm_up_qp() -> None:
    """Import qpsolvers and OSQP and solve a tiny QP, so that no timed QP pays for loading them."""
    from qpsolvers import solve_qp

    solve_qp(P=np.eye(2), q=np.zeros(2), A=np.ones((1, 2)), b=np.ones(1), solver="osqp", eps_abs=1e-7)


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, float(np.median(times)), times


def streamed_peak_memory(source: Path, n_frames: int, chunk_size: int, config, constraints) -> dict:
    """Write a ``n_frames`` dataset by tiling ``source`` on disk, then stream it into the map."""
    import h5py

    from jaxcg.data import iter_dataset_chunks
    from jaxcg.maps import optimal_linear_map

    big = HERE / "data" / f"cln025_vacuum_tiled_{n_frames}.h5"
    with h5py.File(source, "r") as src:
        n_src, n_atoms = src["forces"].shape[:2]
        if not big.exists():
            with h5py.File(big, "w") as dst:
                for name in ("positions", "forces"):
                    out = dst.create_dataset(name, shape=(n_frames, n_atoms, 3), dtype="f4")
                    for start in range(0, n_frames, n_src):
                        stop = min(start + n_src, n_frames)
                        out[start:stop] = src[name][: stop - start]
    before = peak_rss_mb()
    start = time.perf_counter()
    optimal_linear_map(iter_dataset_chunks(big, chunk_size=chunk_size), config, constraints)
    elapsed = time.perf_counter() - start
    after = peak_rss_mb()
    return {
        "frames": n_frames,
        "chunk_size": chunk_size,
        "peak_rss_before_mb": before,
        "peak_rss_after_mb": after,
        "peak_rss_added_mb": after - before,
        "in_memory_size_of_positions_and_forces_mb": 2 * n_frames * n_atoms * 3 * 4 / 2**20,
        "seconds": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=["cln025", "villin"], default="cln025")
    parser.add_argument("--frames", type=int, default=None, help="default 5000 (cln025), 10000 (villin)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stream-frames", type=int, default=50_000)
    parser.add_argument("--out", default=None, help="default benchmarks/results/maps[_villin].json")
    parser.add_argument("--stream-only", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warm_up_qp()
    if args.system == "villin":
        from bench_maps_villin import villin_main

        villin_main(args)
        return
    args.frames = args.frames or 5000
    args.out = args.out or str(HERE / "results" / "maps.json")

    import jax

    from jaxcg.constraints import constraints_from_topology
    from jaxcg.maps import check_map, mean_squared_mapped_force, optimal_linear_map, slice_map

    path, data = cln025_data(args.frames)
    constraints = data.constraints if data.constraints is not None else constraints_from_topology(data.topology)
    ca = slice_map(data.topology, "name CA")
    config = np.asarray(ca.config, dtype=np.float64)

    # streaming first, so the peak it adds is not hidden by the in-memory runs below; a tiny map
    # first so that JAX's own start-up (runtime, compilation) is not counted as streaming memory
    optimal_linear_map(data.forces[:16], ca, constraints)
    optimal_linear_map(data.forces[:2048], ca, constraints)
    stream = streamed_peak_memory(path, args.stream_frames, 2048, config, constraints)

    start = time.perf_counter()
    optimal_linear_map(data, ca, constraints)
    cold = time.perf_counter() - start
    ours, ours_time, ours_times = timed(lambda: optimal_linear_map(data, ca, constraints), args.repeats)
    optimal_linear_map(data, ca, constraints, precision="float32")
    fast, fast_time, _ = timed(lambda: optimal_linear_map(data, ca, constraints, precision="float32"), args.repeats)
    from jaxcg.constraints import expansion_matrix
    from jaxcg.maps import force_second_moment, solve_optimal_force_map

    expand = expansion_matrix(constraints, data.n_atoms)
    moment, moment_time, _ = timed(lambda: force_second_moment(data, expansion=expand), args.repeats)
    _, solve_time, _ = timed(
        lambda: solve_optimal_force_map(moment.mean, config, constraints, reduced=True), args.repeats
    )
    ref_force, ref_time, ref_times = timed(
        lambda: qp_reference_map(data.forces, config, constraints), max(1, args.repeats // 2)
    )
    check_map(ours, constraints, tolerance=1e-5)
    ref_report = check_map(type(ours)(config=ours.config, force=ref_force.astype(np.float32)), constraints, raise_on_error=False)
    forces64 = data.forces.astype(np.float64)
    with jax.enable_x64(True):
        ours_obj = float(mean_squared_mapped_force(np.asarray(ours.force, np.float64), forces64))
        fast_obj = float(mean_squared_mapped_force(np.asarray(fast.force, np.float64), forces64))
        ref_obj = float(mean_squared_mapped_force(ref_force, forces64))
        slice_obj = float(mean_squared_mapped_force(config, forces64))

    result = {
        "system": "CLN025 vacuum, HBonds constrained, 10 CA beads",
        "frames": data.n_frames,
        "atoms": data.n_atoms,
        "constraint_pairs": int(len(constraints)),
        "machine": f"{platform.processor() or platform.machine()}, jax {jax.__version__} on {jax.default_backend()}",
        "jaxcg_seconds_median": ours_time,
        "jaxcg_seconds_first_call_with_compile": cold,
        "jaxcg_seconds_all": ours_times,
        "qp_osqp_seconds_median": ref_time,
        "qp_osqp_seconds_all": ref_times,
        "jaxcg_float32_moment_seconds_median": fast_time,
        "jaxcg_moment_seconds_median": moment_time,
        "jaxcg_kkt_solve_seconds_median": solve_time,
        "speedup": ref_time / ours_time,
        "speedup_float32_moment": ref_time / fast_time,
        "objective_jaxcg_float32_moment": fast_obj,
        "speedup_including_compile": ref_time / cold,
        "objective_jaxcg": ours_obj,
        "objective_qp_osqp": ref_obj,
        "objective_slice": slice_obj,
        "objective_relative_difference": (ours_obj - ref_obj) / ref_obj,
        "max_abs_coefficient_difference": float(np.abs(np.asarray(ours.force) - ref_force).max()),
        "qp_osqp_consistency_violation": ref_report.consistency,
        "streaming": stream,
    }
    # the QP approach solves one program per bead: how both scale with the number of beads
    scaling = []
    for selection in ("name CA", "name CA or name CB", "backbone"):
        beads = slice_map(data.topology, selection)
        optimal_linear_map(data, beads, constraints)
        mapped, t_ours, _ = timed(lambda b=beads: optimal_linear_map(data, b, constraints), args.repeats)
        g_ref, t_ref, _ = timed(
            lambda b=beads: qp_reference_map(data.forces, np.asarray(b.config, np.float64), constraints), 1
        )
        with jax.enable_x64(True):
            obj_ours = float(mean_squared_mapped_force(np.asarray(mapped.force, np.float64), forces64))
            obj_ref = float(mean_squared_mapped_force(g_ref, forces64))
        scaling.append({
            "selection": selection, "beads": beads.n_beads, "jaxcg_seconds": t_ours, "qp_osqp_seconds": t_ref,
            "speedup": t_ref / t_ours, "objective_jaxcg": obj_ours, "objective_qp_osqp": obj_ref,
        })
    result["bead_scaling"] = scaling

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    print(f"\nOptimal linear force map, {result['system']}, {data.n_frames} frames ({result['machine']})")
    print(f"{'method':<34}{'time (s)':>12}{'objective (kJ/mol/nm)^2':>26}")
    print(f"{'jaxcg KKT (warm, median)':<34}{ours_time:>12.4f}{ours_obj:>26.6f}")
    print(f"{'jaxcg KKT, float32 moment':<34}{fast_time:>12.4f}{fast_obj:>26.6f}")
    print(f"{'  of which: force moment (f64)':<34}{moment_time:>12.4f}")
    print(f"{'  of which: KKT solve, all beads':<34}{solve_time:>12.4f}")
    print(f"{'jaxcg KKT (first call of the process)':<34}{cold:>12.4f}{'':>26}")
    print(f"{'qpsolvers + OSQP, one QP per bead':<34}{ref_time:>12.4f}{ref_obj:>26.6f}")
    print(f"{'slice map (for scale)':<34}{'':>12}{slice_obj:>26.6f}")
    print(f"speedup: {result['speedup']:.1f}x warm ({result['speedup_float32_moment']:.1f}x with the float32 moment), "
          f"{result['speedup_including_compile']:.1f}x including compile; "
          f"objective difference (jaxcg - OSQP)/OSQP = {result['objective_relative_difference']:.2e}")
    print(f"streamed {stream['frames']} frames in chunks of {stream['chunk_size']}: peak RSS +{stream['peak_rss_added_mb']:.1f} MB "
          f"(the frames would take {stream['in_memory_size_of_positions_and_forces_mb']:.0f} MB in memory), {stream['seconds']:.2f} s")
    print(f"\n{'CG map':<22}{'beads':>6}{'jaxcg (s)':>11}{'OSQP (s)':>10}{'speedup':>9}{'objective jaxcg':>18}{'objective OSQP':>18}")
    for row in scaling:
        print(f"{row['selection']:<22}{row['beads']:>6}{row['jaxcg_seconds']:>11.4f}{row['qp_osqp_seconds']:>10.3f}"
              f"{row['speedup']:>8.1f}x{row['objective_jaxcg']:>18.6f}{row['objective_qp_osqp']:>18.6f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
