"""Training over processes (jaxcg.distributed): frames files, and 2 CPU processes on localhost that
end with the parameters of a one-process run over the same batches."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcg import distributed
from jaxcg.train import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _distributed_worker import model_and_config  # noqa: E402

WORKER = Path(__file__).resolve().parent / "_distributed_worker.py"
ROOT = Path(__file__).resolve().parents[1]


def _frames(n_frames=96, n_beads=4, seed=0):
    """Random-walk chains and noisy forces; uneven weights so that weighting counts."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(0.0, 0.15, (n_frames, n_beads, 3)), axis=1).astype(np.float32)
    f = rng.normal(0.0, 10.0, x.shape).astype(np.float32)
    w = rng.uniform(0.5, 1.5, n_frames)
    return x, f, w


@pytest.fixture(scope="module")
def frames_file(tmp_path_factory):
    x, f, w = _frames()
    path = tmp_path_factory.mktemp("frames") / "frames.h5"
    blocks = ((x[s : s + 40], f[s : s + 40], w[s : s + 40]) for s in range(0, len(x), 40))  # uneven blocks
    distributed.write_frames(path, blocks, chunk_frames=8)
    return path, (x, f, w)


def test_frame_file_reads_any_rows_in_order(frames_file):
    path, (x, f, w) = frames_file
    rows = np.array([5, 6, 7, 0, 0, 90, 31, 30])
    with distributed.FrameFile(path) as source:
        assert (source.n_frames, source.n_beads) == x.shape[:2]
        positions, forces, weights = source.read(rows)
    np.testing.assert_array_equal(positions, x[rows])
    np.testing.assert_array_equal(forces, f[rows])
    np.testing.assert_allclose(weights, w[rows], rtol=1e-7)
    with pytest.raises(Exception, match="already exist"):
        distributed.write_frames(path, [(x, f)])
    with pytest.raises(ValueError, match="either every block has weights or none"):
        distributed.write_frames(path.with_name("bad.h5"), [(x, f, w), (x, f)])


def test_initialize_refuses_partial_or_malformed_settings():
    with pytest.raises(ValueError, match="given together"):
        distributed.initialize("localhost:1234")
    with pytest.raises(ValueError, match="HOST:PORT"):
        distributed.initialize("localhost", 2, 0)
    with pytest.raises(ValueError, match=r"process_id must be an integer in \[0, 2\)"):
        distributed.initialize("localhost:1234", 2, 2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_streamed_fit_equals_in_memory_fit(frames_file, dtype):
    """One process, 2 host devices: the batches read from disk give the in-memory run's params,
    in the parameters' dtype."""
    if jax.local_device_count() < 2:
        pytest.skip("needs 2 host devices (tests/conftest.py)")
    path, (x, f, w) = frames_file
    model, params, config = model_and_config()
    with jax.enable_x64(dtype == "float64"):
        params = jax.tree.map(lambda p: jax.numpy.asarray(p, dtype), params)
        memory = fit(model.energy, params, x, f, config, weights=w, devices=jax.devices()[:2])
        with distributed.FrameFile(path) as source:
            streamed = fit(model.energy, params, source, None, config)
    for a, b in zip(jax.tree.leaves(memory.state.params), jax.tree.leaves(streamed.state.params), strict=True):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_array_equal(a, b)
    assert memory.history == streamed.history

def test_frame_file_takes_no_separate_forces_or_weights(frames_file):
    path, (x, f, w) = frames_file
    model, params, config = model_and_config()
    with distributed.FrameFile(path) as source, pytest.raises(ValueError, match="forces and weights must be None"):
        fit(model.energy, params, source, f, config)


def test_streamed_fit_names_a_nan_frame_read_from_disk(tmp_path):
    x, f, _ = _frames(n_frames=32)
    f[9, 1, 2] = np.nan
    path = distributed.write_frames(tmp_path / "nan.h5", [(x, f)])
    model, params, config = model_and_config()
    with distributed.FrameFile(path) as source, pytest.raises(FloatingPointError, match=r"frames \[9\] hold NaN"):
        fit(model.energy, params, source, None, config)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_processes(commands: list[list[str]], env: dict, timeout: float) -> None:
    """Run the commands together; on a failure or the timeout kill the others and report."""
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands]
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        outputs = [p.communicate()[0] for p in procs]
    bad = [(k, p.returncode) for k, p in enumerate(procs) if p.returncode != 0]
    if bad:
        report = "\n".join(f"--- process {k} (exit {rc}):\n{outputs[k][-3000:]}" for k, rc in bad)
        pytest.fail(f"processes {[k for k, _ in bad]} failed or passed the {timeout:.0f} s timeout:\n{report}")


def _launch(frames: Path, out_dir: Path, result: Path, *extra: str) -> None:
    """The worker in 2 processes of one CPU device each, on a free localhost port."""
    coordinator = f"localhost:{_free_port()}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    commands = [[sys.executable, str(WORKER), str(frames), str(out_dir), str(result), coordinator, "2", str(k), *extra]
                for k in range(2)]
    _run_processes(commands, env, timeout=240)


def test_two_processes_match_one_process(frames_file, tmp_path):
    """2 processes x 1 CPU device (gloo collectives) end with exactly the parameters of one
    process with 2 devices over the same batches: each device computes its half of the batch in
    the same program, and an all-reduce of two partial sums is a + b in either order. Against one
    device (a different summation order) they agree to float32 rounding."""
    path, (x, f, w) = frames_file
    model, params, config = model_and_config()
    result = tmp_path / "result.npz"
    _launch(path, tmp_path / "run", result)
    with np.load(result) as saved:
        assert int(saved["devices"]) == 2
        got = [saved[f"params_{k}"] for k in range(len(jax.tree.leaves(params)))]
        history = json.loads(str(saved["history"]))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == history
    assert len(history) == config.epochs and (tmp_path / "run" / "checkpoints").is_dir()

    one = fit(model.energy, params, x, f, config, weights=w, devices=jax.devices()[:1])
    for a, b in zip(jax.tree.leaves(one.state.params), got, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    assert not np.allclose(jax.tree.leaves(params)[0], got[0], atol=1e-3)  # it did train
    if jax.local_device_count() >= 2:
        two = fit(model.energy, params, x, f, config, weights=w, devices=jax.devices()[:2])
        for a, b in zip(jax.tree.leaves(two.state.params), got, strict=True):
            np.testing.assert_array_equal(a, b)
        assert two.history == history


@pytest.mark.slow
def test_two_processes_resume_after_a_kill_as_if_uninterrupted(frames_file, tmp_path):
    path, _ = frames_file
    _launch(path, tmp_path / "whole", tmp_path / "whole.npz")
    _launch(path, tmp_path / "parts", tmp_path / "parts.npz", "2")  # stops after 2 of 3 epochs
    assert len(json.loads((tmp_path / "parts" / "metrics.json").read_text())) == 2
    _launch(path, tmp_path / "parts", tmp_path / "parts.npz", "0", "1")
    with np.load(tmp_path / "whole.npz") as whole, np.load(tmp_path / "parts.npz") as parts:
        assert sorted(whole.files) == sorted(parts.files)
        for name in whole.files:
            np.testing.assert_array_equal(whole[name], parts[name])
