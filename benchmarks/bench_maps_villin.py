"""The villin part of bench_maps.py: optimal force maps at protein scale against per-bead QPs.

Run as ``python benchmarks/bench_maps.py --system villin [--frames 10000]`` (see bench_maps.py).
Everything is measured in one process, except the streamed peak memory, which runs in fresh
subprocesses (``--stream-only N``) so that each reports its own peak resident memory.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_maps import aggforce_map, have_aggforce, peak_rss_mb, qp_reference_map

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("VILLIN_DATA", HERE / "data" / "villin_explicit_2fs.h5"))
#: How the cached data are generated: explicit solvent, a frame every step (2 fs).
VILLIN_GENERATE = {
    "n_frames": 20_000, "save_every": 1, "solvent": "explicit", "seed": 1, "equilibration_ps": 1.0,
    "chunk_frames": 500,
}
STREAM_FRAMES = (1_000, 10_000, 50_000)
SCALING_FRAMES = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000)
if os.environ.get("VILLIN_QUICK"):  # a smoke test of the script, not a measurement
    STREAM_FRAMES, SCALING_FRAMES = (500, 1_000), (500, 1_000)


def villin_forces(n_frames: int):
    """(forces (n_frames, 582, 3) float32, data): frames of the cached run, tiled when it has fewer."""
    from jaxcg.data import load_dataset

    if not DATA.exists():
        from jaxcg.reference import generate

        print(f"generating {DATA} with OpenMM (explicit solvent; hours on 2 cores) ...", flush=True)
        generate("villin", DATA, **VILLIN_GENERATE)
    data = load_dataset(DATA)
    return tile(data.forces, n_frames), data


def tile(forces: np.ndarray, n_frames: int) -> np.ndarray:
    """The first ``n_frames`` frames, the run repeated end to end where it is shorter."""
    reps = -(-n_frames // forces.shape[0])
    return np.ascontiguousarray(np.concatenate([forces] * reps)[:n_frames]) if reps > 1 else forces[:n_frames]


def _median_time(fn, repeats: int) -> tuple[float, list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), times, result


def matmul_rate(repeats: int = 7, size: int = 1024) -> dict:
    """GFLOP/s of a square float32 matrix product with numpy (this BLAS) and with jax.jit."""
    import jax
    import jax.numpy as jnp

    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    flops = 2.0 * size**3
    numpy_time, _, _ = _median_time(lambda: a @ a, repeats)
    product = jax.jit(lambda x: x @ x)
    aj = jnp.asarray(a)
    product(aj).block_until_ready()
    jax_time, _, _ = _median_time(lambda: product(aj).block_until_ready(), repeats)
    return {"numpy_gflops": flops / numpy_time / 1e9, "jax_gflops": flops / jax_time / 1e9, "size": size}


class CompileLog:
    """Counts the XLA compilations JAX logs while active (``jax_log_compiles``)."""

    def __enter__(self):
        import logging

        import jax

        self.messages: list[str] = []
        outer = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                outer.messages.append(record.getMessage())

        self._handler, self._logger = _Handler(), logging.getLogger("jax")
        self._level = self._logger.level
        self._logger.addHandler(self._handler)
        self._logger.setLevel(logging.DEBUG)
        jax.config.update("jax_log_compiles", True)
        return self

    def __exit__(self, *exc) -> None:
        import jax

        jax.config.update("jax_log_compiles", False)
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._level)

    @property
    def compiles(self) -> int:
        return sum(m.startswith("Compiling") for m in self.messages)


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info

        blas = [f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads)" for i in threadpool_info()
                if i["user_api"] == "blas"]
        return ", ".join(blas)
    except ImportError:  # pragma: no cover
        return "unknown"


def tiled_file(n_frames: int) -> Path:
    """A dataset of ``n_frames`` frames (the cached run repeated), written 500 frames at a time."""
    import h5py

    big = DATA.parent / f"{DATA.stem}_tiled_{n_frames}.h5"
    if big.exists():
        return big
    with h5py.File(DATA, "r") as src, h5py.File(big, "w") as dst:
        n_src = int(src.attrs["completed_frames"])
        n_atoms = src["forces"].shape[1]
        for name in ("positions", "forces"):
            out = dst.create_dataset(name, shape=(n_frames, n_atoms, 3), dtype="f4", chunks=(500, n_atoms, 3))
            for offset in range(0, n_frames, n_src):
                for start in range(offset, min(offset + n_src, n_frames), 500):
                    stop = min(start + 500, offset + n_src, n_frames)
                    out[start:stop] = src[name][start - offset : stop - offset]
    return big


def high_water_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it does not carry over the
    parent's peak through fork and exec), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return peak_rss_mb()


def stream_only(n_frames: int) -> None:
    """Subprocess body: stream ``n_frames`` from disk into the CA map, print JSON with peak RSS."""
    import h5py

    from jaxcg.data import iter_dataset_chunks
    from jaxcg.maps import optimal_linear_map, slice_map

    big = tiled_file(n_frames)
    from jaxcg.data import _topology_from_pdb

    with h5py.File(DATA, "r") as handle:
        topology = _topology_from_pdb(handle.attrs["topology_pdb"])
        constraints = handle["constraints"][()]
    config = slice_map(topology, "name CA")
    n_atoms = topology.n_atoms
    import tracemalloc

    baseline = high_water_rss_mb()
    tracemalloc.start()  # numpy and h5py buffers are traced: the heap peak of the streamed map
    start = time.perf_counter()
    optimal_linear_map(iter_dataset_chunks(big, chunk_size=2048), config, constraints, precision="float32")
    seconds = time.perf_counter() - start
    heap_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(json.dumps({
        "frames": n_frames, "chunk_size": 2048, "seconds": seconds, "traced_heap_peak_mb": heap_peak,
        "peak_rss_before_mb": baseline, "peak_rss_after_mb": high_water_rss_mb(),
        "in_memory_size_of_positions_and_forces_mb": 2 * n_frames * n_atoms * 3 * 4 / 2**20,
    }))


def heap_peaks(forces: np.ndarray, cg, constraints: np.ndarray) -> dict:
    """Peak traced heap (numpy buffers) of one call of each route on in-memory forces, MB."""
    import tracemalloc

    from jaxcg.maps import optimal_linear_map

    config = np.asarray(cg.config, np.float64)
    calls = {
        "jaxcg_float32": lambda: optimal_linear_map(forces, cg, constraints, precision="float32"),
        "jaxcg_float64": lambda: optimal_linear_map(forces, cg, constraints, precision="float64"),
        "qp_osqp": lambda: qp_reference_map(forces, config, constraints),
    }
    peaks = {"frames": int(forces.shape[0]), "forces_mb": forces.nbytes / 2**20}
    for name, call in calls.items():
        tracemalloc.start()
        call()
        peaks[f"{name}_heap_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return peaks


def streamed_memory() -> list[dict]:
    rows = []
    for n in STREAM_FRAMES:
        tiled_file(n)
        out = subprocess.run(
            [sys.executable, str(HERE / "bench_maps.py"), "--system", "villin", "--stream-only", str(n)],
            capture_output=True, text=True, check=True, env=os.environ.copy(),
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        rows[-1]["peak_rss_added_mb"] = rows[-1]["peak_rss_after_mb"] - rows[-1]["peak_rss_before_mb"]
    return rows


def villin_main(args) -> None:
    if args.stream_only:
        stream_only(args.stream_only)
        return
    if os.environ.get("VILLIN_HEAP_ONLY"):  # add the in-memory heap peaks to an existing result
        out = Path(args.out or HERE / "results" / "maps_villin.json")
        forces, data = villin_forces(args.frames or 10_000)
        from jaxcg.maps import slice_map

        result = json.loads(out.read_text())
        result["heap_peak_in_memory_ca"] = heap_peaks(forces, slice_map(data.topology, "name CA"), data.constraints)
        out.write_text(json.dumps(result, indent=2))
        print(json.dumps(result["heap_peak_in_memory_ca"], indent=1))
        return
    n_frames = args.frames or 10_000
    out = Path(args.out or HERE / "results" / "maps_villin.json")
    start = time.perf_counter()
    forces, data = villin_forces(n_frames)
    load_seconds = time.perf_counter() - start
    topology, constraints, n_atoms = data.topology, data.constraints, data.n_atoms

    import jax

    from jaxcg.constraints import expansion_matrix
    from jaxcg.maps import (
        basic_aggregation_map,
        ca_sidechain_map,
        force_second_moment,
        objective,
        optimal_linear_map,
        slice_map,
        solve_optimal_force_map,
    )

    ca = slice_map(topology, "name CA")
    two = ca_sidechain_map(topology)
    use_aggforce = have_aggforce()  # imported here, outside every timing

    # 1. the first call of the process, as a user sees it (anything compiled or loaded lazily
    #    is included; the JAX runtime is already up: slice_map made JAX arrays), then warm calls;
    #    the default first (float32 moment, as the map is float32), then the float64 moment. A positive control checks that the
    #    compile log would have seen a compilation.
    with CompileLog() as log:
        start = time.perf_counter()
        optimal_linear_map(forces, ca, constraints, precision="float32")
        first_call = time.perf_counter() - start
        start = time.perf_counter()
        optimal_linear_map(forces, ca, constraints, precision="float64")
        first_call64 = time.perf_counter() - start
    compiles = log.compiles
    with CompileLog() as control:
        jax.jit(lambda v: v * 3.0)(np.ones(3, np.float32)).block_until_ready()
    if control.compiles < 1:
        raise RuntimeError("the compile log saw no compilation in its positive control")

    expand = expansion_matrix(constraints, n_atoms)
    m = expand.shape[1]
    # objective from the float64 moment over all atoms (independent of both solvers' internals)
    atom_moment = force_second_moment(forces).mean
    rate_before = matmul_rate()

    maps = {}
    for name, cg in (("CA", ca), ("CA + side-chain centroid", two)):
        config = np.asarray(cg.config, np.float64)
        row = {"beads": cg.n_beads}
        for precision in ("float32", "float64"):
            t, times, mapped = _median_time(
                lambda p=precision, c=cg: optimal_linear_map(forces, c, constraints, precision=p), args.repeats
            )
            g = np.asarray(mapped.force, np.float64)
            row[f"jaxcg_{precision}"] = {
                "seconds_median": t, "seconds_all": times, "objective": objective(g, atom_moment),
                "consistency_residual": float(np.abs(g @ config.T - np.eye(cg.n_beads)).max()),
            }
        moment_t, _, moment = _median_time(
            lambda: force_second_moment(forces, expansion=expand, precision="float32"), args.repeats
        )
        solve_t, _, _ = _median_time(
            lambda mo=moment, c=config: solve_optimal_force_map(mo.mean, c, constraints, reduced=True), args.repeats
        )
        qp_start = time.perf_counter()
        g_qp = qp_reference_map(forces, config, constraints)
        qp_t = time.perf_counter() - qp_start
        row["moment_float32_seconds"] = moment_t
        row["kkt_solve_seconds"] = solve_t
        row["qp_osqp"] = {
            "seconds": qp_t, "objective": objective(g_qp, atom_moment),
            "consistency_residual": float(np.abs(g_qp @ config.T - np.eye(cg.n_beads)).max()),
        }
        if use_aggforce:  # the paper's own code, on the same frames (float32 forces, as given)
            start = time.perf_counter()
            g_agg = aggforce_map(forces, config, constraints)
            row["aggforce"] = {
                "seconds": time.perf_counter() - start, "objective": objective(g_agg, atom_moment),
                "consistency_residual": float(np.abs(g_agg @ config.T - np.eye(cg.n_beads)).max()),
            }
        ref = row["qp_osqp"]["objective"]
        for precision in ("float32", "float64"):
            entry = row[f"jaxcg_{precision}"]
            entry["objective_relative_to_qp"] = (entry["objective"] - ref) / ref
            entry["speedup_warm"] = qp_t / entry["seconds_median"]
            if use_aggforce:
                agg = row["aggforce"]
                entry["objective_relative_to_aggforce"] = (entry["objective"] - agg["objective"]) / agg["objective"]
                entry["speedup_warm_vs_aggforce"] = agg["seconds"] / entry["seconds_median"]
        maps[name] = row
    rate_after = matmul_rate()

    # the jnp route (optimal_force_matrix: jittable, differentiable) on the same moment, for its
    # compile cost: the first call compiles, the later ones do not
    from jaxcg.maps import optimal_force_matrix

    with jax.enable_x64(True):
        jnp_args = (jax.numpy.asarray(moment.mean), jax.numpy.asarray(np.asarray(ca.config, np.float64)),
                    jax.numpy.asarray(expand))
        start = time.perf_counter()
        optimal_force_matrix(*jnp_args, reduced=True).block_until_ready()
        jnp_first = time.perf_counter() - start
        jnp_warm, _, _ = _median_time(
            lambda: optimal_force_matrix(*jnp_args, reduced=True).block_until_ready(), args.repeats)
    jnp_route = {"first_call_seconds": jnp_first, "warm_seconds": jnp_warm, "compile_seconds": jnp_first - jnp_warm,
                 "host_kkt_solve_seconds": maps["CA"]["kkt_solve_seconds"]}

    # 2. the moment's rate against the matrix multiply: trials interleaved, so that both see
    #    the same load on this shared machine; medians over the trials
    rows_count = 3 * n_frames
    x = np.random.default_rng(1).standard_normal((rows_count, m)).astype(np.float32)
    trials = {"moment": [], "bare_xtx": [], "numpy_gemm": [], "jax_gemm": []}
    for _ in range(max(args.repeats, 9)):
        trials["moment"].append(_median_time(
            lambda: force_second_moment(forces, expansion=expand, precision="float32"), 1)[0])
        trials["bare_xtx"].append(_median_time(lambda x=x: x.T @ x, 1)[0])
        gemm_now = matmul_rate(repeats=1)
        trials["numpy_gemm"].append(gemm_now["numpy_gflops"])
        trials["jax_gemm"].append(gemm_now["jax_gflops"])
    del x
    moment_s, bare_t = float(np.median(trials["moment"])), float(np.median(trials["bare_xtx"]))
    numpy_gemm, jax_gemm = float(np.median(trials["numpy_gemm"])), float(np.median(trials["jax_gemm"]))
    gemm = max(numpy_gemm, jax_gemm)
    equivalent = 2.0 * rows_count * m * m / 1e9
    rate = {
        "groups_m": m, "rows": rows_count, "moment_seconds": moment_s, "moment_seconds_min": min(trials["moment"]),
        "moment_gflops_gemm_equivalent": equivalent / moment_s,
        "moment_gflops_actual_syrk": equivalent / 2 / moment_s,
        "bare_numpy_xtx_seconds": bare_t,
        "square_gemm_gflops_numpy": numpy_gemm, "square_gemm_gflops_jax": jax_gemm,
        "square_gemm_gflops_around_maps": [rate_before, rate_after],
        "machine_float32_gemm_gflops": gemm, "trials": trials,
    }
    rate["fraction_of_gemm_rate"] = rate["moment_gflops_gemm_equivalent"] / gemm
    rate["fraction_of_gemm_rate_actual_flops"] = rate["moment_gflops_actual_syrk"] / gemm
    rate["fraction_of_bare_xtx"] = bare_t / moment_s

    # 3. noise of slice, basic and optimal maps on held-out frames (fit on the first half)
    half = n_frames // 2
    held_out = force_second_moment(forces[half:]).mean
    noise = {}
    for name, cg in (("CA", ca), ("CA + side-chain centroid", two)):
        optimal = optimal_linear_map(forces[:half], cg, constraints, precision="float64")
        basic = basic_aggregation_map(cg, constraints)
        g = np.asarray(optimal.force)
        noise[name] = {
            "slice_or_centroid_forces": objective(np.asarray(cg.force, np.float64), held_out),
            "basic": objective(basic, held_out),
            "optimal": objective(optimal, held_out),
            "optimal_nonzero_fraction": float(np.mean(np.abs(g) > 1e-6)),
            "optimal_atoms_above_1pct_of_row_max": float(np.mean(np.sum(np.abs(g) > 0.01 * np.abs(g).max(axis=1, keepdims=True), axis=1))),
        }

    # 4. scaling over frames (CA map) and over beads (10k frames)
    frame_scaling = []
    config = np.asarray(ca.config, np.float64)
    for frames in SCALING_FRAMES:
        f = tile(data.forces, frames)
        optimal_linear_map(f[:16], ca, constraints, precision="float32")
        t32, _, _ = _median_time(lambda f=f: optimal_linear_map(f, ca, constraints, precision="float32"), 3)
        t64, _, _ = _median_time(lambda f=f: optimal_linear_map(f, ca, constraints, precision="float64"), 3)
        start = time.perf_counter()
        qp_reference_map(f, config, constraints)
        frame_scaling.append({"frames": frames, "jaxcg_float32_seconds": t32, "jaxcg_float64_seconds": t64,
                              "qp_osqp_seconds": time.perf_counter() - start})
        frame_scaling[-1]["speedup_float32"] = frame_scaling[-1]["qp_osqp_seconds"] / t32
        if use_aggforce:
            start = time.perf_counter()
            aggforce_map(f, config, constraints)
            frame_scaling[-1]["aggforce_seconds"] = time.perf_counter() - start
            frame_scaling[-1]["speedup_float32_vs_aggforce"] = frame_scaling[-1]["aggforce_seconds"] / t32
        del f
    bead_scaling = []
    for selection in ("name CA", "ca_sidechain", "name N or name CA or name C", "backbone"):
        cg = two if selection == "ca_sidechain" else slice_map(topology, selection)
        t32, _, _ = _median_time(lambda c=cg: optimal_linear_map(forces, c, constraints, precision="float32"), 3)
        start = time.perf_counter()
        qp_reference_map(forces, np.asarray(cg.config, np.float64), constraints)
        t_qp = time.perf_counter() - start
        bead_scaling.append({"map": selection, "beads": cg.n_beads, "jaxcg_float32_seconds": t32,
                             "qp_osqp_seconds": t_qp, "speedup": t_qp / t32})
        if use_aggforce:
            start = time.perf_counter()
            aggforce_map(forces, np.asarray(cg.config, np.float64), constraints)
            bead_scaling[-1]["aggforce_seconds"] = time.perf_counter() - start
            bead_scaling[-1]["speedup_vs_aggforce"] = bead_scaling[-1]["aggforce_seconds"] / t32

    stream = streamed_memory()
    heap = heap_peaks(forces, ca, constraints)

    ca_row = maps["CA"]
    result = {
        "system": "villin HP35, amber14 + TIP3P (8,867 atoms), PME, HBonds, rigid water; 582 protein atoms saved",
        "frames": n_frames,
        "frames_generated": int(data.n_frames),
        "atoms": n_atoms,
        "constraint_pairs": int(len(constraints)),
        "constraint_groups": m,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; numpy {np.__version__} "
                   f"({blas_info()}); jax {jax.__version__}",
        "load_average_1min_at_end": os.getloadavg()[0],
        "load_seconds": load_seconds,
        "first_call_seconds_float32": first_call,
        "first_call_seconds_float64": first_call64,
        "xla_compilations_in_first_calls": compiles,
        "speedup_including_first_call_float32": ca_row["qp_osqp"]["seconds"] / first_call,
        "speedup_including_first_call_float64": ca_row["qp_osqp"]["seconds"] / first_call64,
        "aggforce": (f"aggforce {_aggforce_version()} (the paper's code, from source) on the same float32 frames"
                     if use_aggforce else "not installed: QP re-implementation only"),
        "speedup_including_first_call_vs_aggforce": (ca_row["aggforce"]["seconds"] / first_call
                                                     if use_aggforce else None),
        "maps": maps,
        "jnp_kkt_route_ca": jnp_route,
        "moment_rate": rate,
        "held_out_noise": noise,
        "frame_scaling_ca": frame_scaling,
        "bead_scaling": bead_scaling,
        "streaming": stream,
        "heap_peak_in_memory_ca": heap,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    report(result, out)


def _aggforce_version() -> str:
    from importlib.metadata import version

    return version("aggforce")


def _aggforce_column(row: dict, speedup_key: str) -> str:
    """The aggforce time and speedup of a scaling row, or nothing where aggforce did not run."""
    if "aggforce_seconds" not in row:
        return ""
    return f"   aggforce {row['aggforce_seconds']:.2f} s ({row[speedup_key]:.1f}x)"


def report(result: dict, out: Path) -> None:
    print(f"\nOptimal force maps, {result['system']}, {result['frames']} frames "
          f"({result['frames_generated']} generated); {result['machine']}")
    print(f"first call of the process (CA): {result['first_call_seconds_float32']:.3f} s float32 moment, "
          f"{result['first_call_seconds_float64']:.3f} s float64; XLA compilations in them: "
          f"{result['xla_compilations_in_first_calls']}")
    print(f"{'map':<26}{'beads':>6}{'jaxcg f32 (s)':>14}{'jaxcg f64 (s)':>14}{'QP (s)':>9}{'speedup f32':>12}"
          f"{'objective (jaxcg-QP)/QP':>26}{'|GMᵀ-I| jaxcg/QP':>22}")
    for name, row in result["maps"].items():
        j32, j64, qp = row["jaxcg_float32"], row["jaxcg_float64"], row["qp_osqp"]
        print(f"{name:<26}{row['beads']:>6}{j32['seconds_median']:>14.4f}{j64['seconds_median']:>14.4f}"
              f"{qp['seconds']:>9.2f}{j32['speedup_warm']:>11.1f}x{j32['objective_relative_to_qp']:>26.2e}"
              f"{j32['consistency_residual']:>11.1e}/{qp['consistency_residual']:.1e}")
    print(f"speedup including the first call (CA): {result['speedup_including_first_call_float32']:.1f}x "
          f"(float32 moment), {result['speedup_including_first_call_float64']:.1f}x (float64)")
    print(f"aggforce: {result['aggforce']}")
    for name, row in result["maps"].items():
        if "aggforce" in row:
            agg, j32 = row["aggforce"], row["jaxcg_float32"]
            print(f"  {name}: aggforce {agg['seconds']:.2f} s, jaxcg {j32['speedup_warm_vs_aggforce']:.1f}x faster warm; "
                  f"objective (jaxcg-aggforce)/aggforce {j32['objective_relative_to_aggforce']:.2e}; "
                  f"|GMᵀ-I| aggforce {agg['consistency_residual']:.1e}")
    if result["speedup_including_first_call_vs_aggforce"]:
        print(f"  first call (CA) vs aggforce: {result['speedup_including_first_call_vs_aggforce']:.1f}x")
    j = result["jnp_kkt_route_ca"]
    print(f"KKT solve (CA): host {j['host_kkt_solve_seconds']:.4f} s; the jnp route (jit) {j['first_call_seconds']:.2f} s "
          f"first call, {j['warm_seconds']:.4f} s warm: {j['compile_seconds']:.2f} s of compilation")
    r = result["moment_rate"]
    print(f"moment: {r['moment_seconds']:.4f} s for {r['rows']} x {r['groups_m']} rows: "
          f"{r['moment_gflops_gemm_equivalent']:.1f} GFLOP/s gemm-equivalent "
          f"({r['fraction_of_gemm_rate']:.0%} of the {r['machine_float32_gemm_gflops']:.1f} GFLOP/s square float32 "
          f"gemm; {r['fraction_of_gemm_rate_actual_flops']:.0%} counting syrk's flops; "
          f"{r['fraction_of_bare_xtx']:.0%} of a bare numpy X.T @ X of the same shape)")
    print(f"\n{'held-out noise':<26}{'slice/centroid':>16}{'basic':>14}{'optimal':>14}{'nonzero frac':>14}")
    for name, row in result["held_out_noise"].items():
        print(f"{name:<26}{row['slice_or_centroid_forces']:>16.0f}{row['basic']:>14.0f}{row['optimal']:>14.0f}"
              f"{row['optimal_nonzero_fraction']:>14.2f}")
    print(f"\n{'frames':>8}{'jaxcg f32 (s)':>15}{'jaxcg f64 (s)':>15}{'QP (s)':>9}{'speedup f32':>13}")
    for row in result["frame_scaling_ca"]:
        print(f"{row['frames']:>8}{row['jaxcg_float32_seconds']:>15.4f}{row['jaxcg_float64_seconds']:>15.4f}"
              f"{row['qp_osqp_seconds']:>9.2f}{row['speedup_float32']:>12.1f}x"
              + _aggforce_column(row, "speedup_float32_vs_aggforce"))
    print(f"\n{'map':<30}{'beads':>6}{'jaxcg f32 (s)':>15}{'QP (s)':>9}{'speedup':>9}")
    for row in result["bead_scaling"]:
        print(f"{row['map']:<30}{row['beads']:>6}{row['jaxcg_float32_seconds']:>15.4f}{row['qp_osqp_seconds']:>9.2f}"
              f"{row['speedup']:>8.1f}x"
              + _aggforce_column(row, "speedup_vs_aggforce"))
    print(f"\n{'streamed frames':>16}{'heap peak (MB)':>16}{'process peak RSS (MB)':>23}"
          f"{'frames in memory (MB)':>23}{'seconds':>9}")
    for row in result["streaming"]:
        print(f"{row['frames']:>16}{row['traced_heap_peak_mb']:>16.1f}{row['peak_rss_after_mb']:>23.0f}"
              f"{row['in_memory_size_of_positions_and_forces_mb']:>23.0f}{row['seconds']:>9.2f}")
    print(f"wrote {out}")
