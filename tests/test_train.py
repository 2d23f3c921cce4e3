"""Force matching: recovery of a known potential, exact resume, no retracing, NaN batches,
data parallelism over 2 host devices, splits and metrics files."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcg.models import RBFPairPotential, batched_energy_and_forces
from jaxcg.train import TrainConfig, block_split, delta_forces, fit

NOISE = 2.0  # kJ/mol/nm, per force component


def _dimer_data(n_frames=1024, seed=0):
    """Two beads at distances in [0.3, 0.8] nm; forces of a known RBF potential plus noise."""
    rng = np.random.default_rng(seed)
    model = RBFPairPotential(n_beads=2, n_basis=5, r_min=0.3, r_max=0.8)
    true = {"coefficients": jnp.asarray(rng.normal(0.0, 20.0, 5), jnp.float32)}
    direction = rng.normal(size=(n_frames, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    r = rng.uniform(0.25, 0.85, (n_frames, 1))
    x0 = rng.normal(0.0, 1.0, (n_frames, 3))
    x = np.stack([x0, x0 + r * direction], axis=1).astype(np.float32)
    _, f = jax.jit(batched_energy_and_forces(model.energy))(true, jnp.asarray(x))
    f_true = np.asarray(f)
    noisy = (f_true + rng.normal(0.0, NOISE, f_true.shape)).astype(np.float32)
    return model, true, x, noisy, f_true


@pytest.fixture(scope="module")
def dimer():
    return _dimer_data()


FAST = TrainConfig(epochs=4, batch_size=64, learning_rate=0.5, schedule="constant", patience=None)


def _cfg(**changes):
    return dataclasses.replace(FAST, **changes)


def test_block_split_holds_out_whole_contiguous_blocks():
    train, val = block_split(100, 0.2, n_blocks=10, seed=3)
    assert len(val) == 20 and len(train) == 80
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    starts = val[np.flatnonzero(np.diff(val, prepend=-10) != 1)]
    assert len(starts) <= 2 and all(s % 10 == 0 for s in starts)
    with pytest.raises(ValueError, match="val_fraction must be in"):
        block_split(10, 1.0)


def test_training_recovers_known_potential_to_noise_floor(dimer, tmp_path):
    model, _, x, noisy, f_true = dimer
    config = TrainConfig(epochs=40, batch_size=128, learning_rate=3.0, schedule="cosine", patience=None, clip_norm=None)
    result = fit(model.energy, model.init(None, jnp.asarray(x[0])), x, noisy, config, out_dir=tmp_path)
    noise_floor = 3 * NOISE**2  # E ‖noise‖² per bead
    assert result.history[-1]["val_loss"] < 1.1 * noise_floor
    _, f_model = jax.jit(batched_energy_and_forces(model.energy))(result.params, jnp.asarray(x))
    error = np.mean(np.sum((np.asarray(f_model) - f_true) ** 2, axis=-1))
    assert error < 0.05 * noise_floor, error
    rows = json.loads((tmp_path / "metrics.json").read_text())
    assert len(rows) == 40 and {"epoch", "train_loss", "val_loss", "grad_norm", "best_loss"} <= set(rows[0])
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0].startswith("epoch,train_loss")


def test_epoch_loop_does_not_retrace(dimer):
    model, _, x, noisy, _ = dimer
    traces = []

    def counting_energy(params, y):
        traces.append(1)
        return model.energy(params, y)

    params = model.init(None, jnp.asarray(x[0]))
    fit(counting_energy, params, x, noisy, _cfg(epochs=2))
    two = len(traces)
    traces.clear()
    fit(counting_energy, params, x, noisy, _cfg(epochs=5))
    assert len(traces) == two  # one trace of the train step and one of the eval step, any epochs


def test_resume_after_kill_gives_identical_params(dimer, tmp_path):
    model, _, x, noisy, _ = dimer
    params = model.init(None, jnp.asarray(x[0]))
    config = _cfg(epochs=4, learning_rate=0.05)
    reference = fit(model.energy, params, x, noisy, config, out_dir=tmp_path / "a")

    class Killed(Exception):
        pass

    def kill(epoch, step, steps, metrics):
        if epoch == 2 and step == 3:
            raise Killed

    with pytest.raises(Killed):
        fit(model.energy, params, x, noisy, config, out_dir=tmp_path / "b", progress=kill)
    with pytest.raises(ValueError, match="holds checkpoints"):
        fit(model.energy, params, x, noisy, config, out_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="config differs"):
        fit(model.energy, params, x, noisy, _cfg(epochs=5), out_dir=tmp_path / "b", resume=True)
    resumed = fit(model.energy, params, x, noisy, config, out_dir=tmp_path / "b", resume=True)
    np.testing.assert_array_equal(resumed.state.params["coefficients"], reference.state.params["coefficients"])
    np.testing.assert_array_equal(resumed.params["coefficients"], reference.params["coefficients"])
    assert resumed.history == reference.history
    assert json.loads((tmp_path / "b" / "metrics.json").read_text()) == reference.history


def test_nan_batch_raises_naming_the_batch(dimer):
    model, _, x, noisy, _ = dimer
    bad = noisy.copy()
    bad[5, 1, 0] = np.nan
    config = _cfg(epochs=1, val_fraction=0.0)
    with pytest.raises(FloatingPointError, match=r"epoch 0, batch 0 .*frames \[5\] hold NaN"):
        fit(model.energy, model.init(None, jnp.asarray(x[0])), x, bad, config)


def test_pair_capacity_overflow_is_named_not_blamed_on_the_learning_rate():
    """A SchNet whose max_pairs is below the data's pair count: fit raises PairCapacityError naming
    the frames and the capacity needed (it used to see NaN and suggest a lower learning rate)."""
    from jaxcg.models import PriorPlusNet, SchNet
    from jaxcg.train import PairCapacityError

    rng = np.random.default_rng(2)
    x = rng.uniform(0.0, 0.9, (64, 5, 3)).astype(np.float32)
    f = rng.normal(0.0, 10.0, x.shape).astype(np.float32)
    loose = SchNet(np.arange(5) % 2, features=8, rbf=8, cutoff=0.6)
    counts = loose.pair_counts(x)
    capacity = int(np.median(counts))
    assert 1 <= capacity < counts.max()
    tight = SchNet(np.arange(5) % 2, features=8, rbf=8, cutoff=0.6, max_pairs=capacity)
    params = tight.init(jax.random.key(0), jnp.asarray(x[0]))
    config = _cfg(epochs=1, batch_size=16, learning_rate=1e-3, val_fraction=0.0)
    expected = rf"max_pairs={capacity} is too small: in epoch 0, .* max_pairs >= {int(counts.max())}"
    with pytest.raises(PairCapacityError, match=expected):
        fit(tight.energy, params, x, f, config)
    both = PriorPlusNet(RBFPairPotential(n_beads=5, n_basis=4, r_min=0.1, r_max=0.6), tight)
    both_params = both.init(jax.random.key(0), jnp.asarray(x[0]))
    with pytest.raises(PairCapacityError, match=expected):
        fit(both.energy, both_params, x, f, config)
    enough = SchNet(np.arange(5) % 2, features=8, rbf=8, cutoff=0.6, max_pairs=int(counts.max()))
    fit(enough.energy, params, x, f, config)  # no overflow: trains


def test_sharded_training_matches_single_device():
    if jax.local_device_count() < 2:
        pytest.skip("needs 2 devices (XLA_FLAGS=--xla_force_host_platform_device_count=2)")
    rng = np.random.default_rng(1)
    x = (np.cumsum(rng.normal(0.0, 0.2, (96, 3, 3)), axis=1)).astype(np.float32)
    f = rng.normal(0.0, 10.0, x.shape).astype(np.float32)
    model = RBFPairPotential(n_beads=3, n_basis=8, r_min=0.1, r_max=0.6)
    params = {"coefficients": jnp.asarray(rng.normal(0.0, 5.0, 8), jnp.float32)}
    config = _cfg(epochs=2, batch_size=32, learning_rate=1e-2, val_fraction=0.25, n_blocks=4)
    one = fit(model.energy, params, x, f, config, devices=jax.devices()[:1])
    two = fit(model.energy, params, x, f, config, devices=jax.devices()[:2])
    for a, b in zip(jax.tree.leaves(one.state.params), jax.tree.leaves(two.state.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(one.history[-1]["val_loss"], two.history[-1]["val_loss"], rtol=1e-5)
    with pytest.raises(ValueError, match="batch_size must be a positive multiple of the 2"):
        fit(model.energy, params, x, f, _cfg(batch_size=33), devices=jax.devices()[:2])
    # "auto" shards over every local device when they divide the batch, else uses one
    auto = fit(model.energy, params, x, f, config, devices="auto")
    for a, b in zip(jax.tree.leaves(auto.state.params), jax.tree.leaves(two.state.params), strict=True):
        np.testing.assert_array_equal(a, b)
    odd = _cfg(epochs=1, batch_size=33, learning_rate=1e-2, val_fraction=0.25, n_blocks=4)
    for a, b in zip(jax.tree.leaves(fit(model.energy, params, x, f, odd, devices="auto").state.params),
                    jax.tree.leaves(fit(model.energy, params, x, f, odd).state.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_and_delta_forces(dimer):
    model, true, x, noisy, _ = dimer
    params = model.init(None, jnp.asarray(x[0]))
    result = fit(model.energy, params, x, noisy, _cfg(epochs=10, learning_rate=0.0, patience=2))
    assert len(result.history) == 3  # epoch 0 sets the best, two more without improvement
    residual = delta_forces(model.energy, true, x[:10], noisy[:10])
    _, f = batched_energy_and_forces(model.energy)(true, jnp.asarray(x[:10]))
    np.testing.assert_allclose(residual, noisy[:10] - np.asarray(f), atol=1e-4)


def test_cli_train_writes_a_loadable_model(tmp_path):
    import runpy

    from jaxcg.cli import main

    rng = np.random.default_rng(0)
    x = (np.cumsum(rng.normal(0, 0.2, (128, 5, 3)), axis=1) + 0.3 * np.arange(5)[:, None]).astype(np.float32)
    data = tmp_path / "cg.npz"
    np.savez(data, positions=x, forces=rng.normal(0, 10, x.shape).astype(np.float32),
             bead_types=np.array([0, 1, 0, 1, 0]), bonds=np.stack([np.arange(4), np.arange(1, 5)], 1),
             temperature=300.0)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "2",
            "--features", "8", "--rbf", "8", "--blocks", "1", "--batch-size", "32"]
    assert main(args) == 0
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())) == 2
    energy_of = runpy.run_path(str(tmp_path / "run" / "energy.py"))["energy"]
    energy = energy_of()
    assert np.isfinite(float(jax.jit(energy)(jnp.asarray(x[0]))))
    tabulated = energy_of(filter_table=256)  # what `jaxcg simulate --filter-table 256` loads
    assert float(tabulated(jnp.asarray(x[0]))) == pytest.approx(float(energy(jnp.asarray(x[0]))), rel=1e-4, abs=1e-4)


@pytest.mark.gpu
def test_training_benchmark_on_gpu(tmp_path):
    """The training benchmark's JAX contestants on a GPU (``pytest -m gpu`` on a GPU machine):
    throughput, and the tabulated filters' accuracy there (float32 matmuls on GPU may use TF32)."""
    if jax.default_backend() != "gpu":
        pytest.skip("needs a GPU (jax[cuda12])")
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location("bench_train", folder / "bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.main(["--skip-torch", "--rounds", "2", "--steps", "20", "--out", str(tmp_path / "train_gpu.json")])
    results = report["results"]
    assert all(results[name]["frames_per_s"] > 0 for name in ("jaxcg", "jaxcg_table", "plain_jax"))
    assert results["jaxcg_table"]["relative_rms_force_error"] < 1e-3
