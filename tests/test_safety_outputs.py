"""Issue 15, outputs and faults: no silent overwrite, --resume refuses changed settings (naming every
differing key), files named with their role when unreadable, a damaged newest training checkpoint
falls back to the previous one, SIGINT ends cleanly with 130, a run whose replicas all stopped ends
early with a non-zero exit."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np
import pytest

from jaxcg import simulate
from jaxcg._files import OutputExistsError, SettingsMismatchError
from jaxcg.cli import main
from jaxcg.data import CGData, load_dataset, make_atomistic_data, save_dataset
from jaxcg.models import RBFPairPotential, batched_energy_and_forces
from jaxcg.saved_model import build_model, load_energy, model_spec, save_model
from jaxcg.train import CheckpointWarning, TrainConfig, fit

ENERGY_FILE = '''
import jax.numpy as jnp


def chain():
    def energy(x):
        d = jnp.linalg.norm(x[1:] - x[:-1], axis=-1)
        return 0.5 * 5000.0 * jnp.sum((d - 0.38) ** 2)

    return energy


def explode():
    def energy(x):
        return 1.0e9 * jnp.sum(x ** 2)

    return energy
'''
N_BEADS = 5


@pytest.fixture
def sim_inputs(tmp_path):
    """energy.py, a 5-bead CG topology and 30 reference frames (chain, 0.38 nm bonds)."""
    (tmp_path / "energy.py").write_text(ENERGY_FILE)
    topology = md.Topology()
    chain = topology.add_chain()
    for _ in range(N_BEADS):
        topology.add_atom("CA", md.element.carbon, topology.add_residue("GLY", chain))
    rng = np.random.default_rng(0)
    steps = rng.normal(size=(30, N_BEADS - 1, 3))
    steps = steps / np.linalg.norm(steps, axis=-1, keepdims=True) * 0.38
    frames = np.concatenate([np.zeros((30, 1, 3)), np.cumsum(steps, axis=1)], axis=1).astype(np.float32)
    traj = md.Trajectory(frames, topology)
    traj[0].save_pdb(str(tmp_path / "cg.pdb"))
    traj.save_dcd(str(tmp_path / "ref.dcd"))
    return tmp_path


def _simulate_args(folder: Path, *extra: str, energy: str = "chain", out: str = "sim") -> list[str]:
    return ["simulate", "--energy", f"{folder / 'energy.py'}:{energy}", "--start", str(folder / "ref.dcd"),
            "--top", str(folder / "cg.pdb"), "--replicas", "3", "--chunk", "50", "--save-every", "10",
            "--out", str(folder / out), *extra]


# ----------------------------------------------------------------------------- simulate


def test_simulate_refuses_a_finished_run_and_overwrite_starts_clean(sim_inputs, capsys):
    folder = sim_inputs
    assert main(_simulate_args(folder, "--steps", "100")) == 0
    dcd, log = (folder / "sim" / "trajectory.dcd").read_bytes(), (folder / "sim" / "log.csv").read_text()
    capsys.readouterr()
    assert main(_simulate_args(folder, "--steps", "50")) == 2
    assert "already exist" in capsys.readouterr().err
    assert (folder / "sim" / "trajectory.dcd").read_bytes() == dcd  # not truncated
    assert (folder / "sim" / "log.csv").read_text() == log  # nothing appended
    assert main(_simulate_args(folder, "--steps", "50", "--overwrite")) == 0
    rows = (folder / "sim" / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 1  # header + one chunk of the new run, none of the old one
    assert [t.n_frames for t in simulate.load_replicas(folder / "sim")] == [5, 5, 5]


def test_simulate_resume_names_every_changed_setting(sim_inputs, capsys):
    folder = sim_inputs
    assert main(_simulate_args(folder, "--steps", "50")) == 0
    capsys.readouterr()
    changed = ["--steps", "100", "--resume", "--dt", "0.001", "--temperature", "310", "--replicas", "4"]
    args = _simulate_args(folder, *changed, energy="explode")
    assert main(args) == 2
    err = capsys.readouterr().err
    for key in ("dt", "temperature", "replicas", "energy"):
        assert f"{key}: stored" in err, (key, err)
    assert main(_simulate_args(folder, "--steps", "100", "--resume")) == 0
    assert [t.n_frames for t in simulate.load_replicas(folder / "sim")] == [10, 10, 10]


def test_trajectory_writer_refuses_an_existing_trajectory(sim_inputs):
    topology = md.load_topology(str(sim_inputs / "cg.pdb"))
    with simulate.TrajectoryWriter(sim_inputs / "w", topology, 2) as writer:
        writer.write(np.zeros((1, 2, N_BEADS, 3), np.float32))
    with pytest.raises(OutputExistsError, match="trajectory.dcd"):
        simulate.TrajectoryWriter(sim_inputs / "w", topology, 2)
    with simulate.TrajectoryWriter(sim_inputs / "w", topology, 2, overwrite=True):
        pass


def test_all_replicas_stopped_ends_early_with_nonzero_exit(sim_inputs, capsys):
    folder = sim_inputs
    assert main(_simulate_args(folder, "--steps", "500", energy="explode")) == 3
    err = capsys.readouterr().err
    assert "all 3 replicas stopped" in err
    report = json.loads((folder / "sim" / "report.json").read_text())
    assert report["steps"] == 50 and len(report["stopped"]) == 3  # one chunk, not 500 steps
    rows = (folder / "sim" / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 2  # no NaN rows for the chunks that were never run


def test_sigint_during_simulate_ends_with_130_and_resumes(sim_inputs, capsys, monkeypatch):
    folder = sim_inputs
    original = simulate.run

    def interrupted_run(*args, callback=None, **kwargs):
        def stop_after_first_chunk(done, info):
            if done >= 50:
                raise KeyboardInterrupt
        return original(*args, callback=stop_after_first_chunk, **kwargs)

    monkeypatch.setattr(simulate, "run", interrupted_run)
    assert main(_simulate_args(folder, "--steps", "150")) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "jaxcg simulate: interrupted; continue with --resume"
    assert "Traceback" not in err
    # outputs of the completed chunk were flushed and closed: readable, and --resume continues
    assert [t.n_frames for t in simulate.load_replicas(folder / "sim")] == [5, 5, 5]
    monkeypatch.setattr(simulate, "run", original)
    assert main(_simulate_args(folder, "--steps", "150", "--resume")) == 0
    assert [t.n_frames for t in simulate.load_replicas(folder / "sim")] == [15, 15, 15]


def test_resume_trims_log_rows_written_after_the_checkpoint(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,alive\n50,3\n100,3\n150,3\n")
    simulate.trim_log(log, 100)
    assert log.read_text().splitlines() == ["step,alive", "50,3", "100,3"]


def test_simulate_start_and_checkpoint_files_are_named_when_bad(sim_inputs, capsys):
    folder = sim_inputs
    np.savez(folder / "start.npz", coords=np.zeros((2, N_BEADS, 3)))
    args = _simulate_args(folder, "--steps", "50")
    args[args.index("--start") + 1] = str(folder / "start.npz")
    assert main(args) == 2
    assert "has no array 'positions' (it has ['coords'])" in capsys.readouterr().err
    (folder / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    args[args.index("--start") + 1] = str(folder / "broken.npz")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--start file (npz)" in err and "broken.npz" in err
    assert main(_simulate_args(folder, "--steps", "50")) == 0
    state = folder / "sim" / "state.npz"
    state.write_bytes(state.read_bytes()[:200])  # truncated checkpoint
    assert main(_simulate_args(folder, "--steps", "100", "--resume")) == 2
    err = capsys.readouterr().err
    assert "simulation checkpoint" in err and "state.npz" in err


# ----------------------------------------------------------------------------- datasets, models


def _tiny_data(n_frames=4):
    topology = md.Topology()
    residue = topology.add_residue("HOH", topology.add_chain())
    for name in ("O", "H1"):
        topology.add_atom(name, md.element.get_by_symbol(name[0]), residue)
    x = np.random.default_rng(0).normal(0.0, 0.05, (n_frames, 2, 3)).astype(np.float32)
    return make_atomistic_data(x, np.zeros_like(x), topology, 300.0)


def test_save_dataset_and_save_model_refuse_to_overwrite(tmp_path):
    path = save_dataset(tmp_path / "d.h5", _tiny_data())
    with pytest.raises(OutputExistsError, match="d.h5"):
        save_dataset(path, _tiny_data(2))
    assert load_dataset(path).n_frames == 4
    save_dataset(path, _tiny_data(2), overwrite=True)
    assert load_dataset(path).n_frames == 2

    cg = CGData(np.zeros((3, 2, 3), np.float32) + np.array([[0, 0, 0], [0.3, 0, 0]], np.float32),
                np.zeros((3, 2, 3), np.float32), np.array([0, 1]), np.zeros((0, 2), int), 300.0)
    spec = model_spec(cg, None, features=4, blocks=1, rbf=4, cutoff=1.0, exclusion_hops=0)
    _, net, _ = build_model(spec)
    params = net.init(jax.random.key(0), jnp.asarray(cg.positions[0]))
    save_model(tmp_path / "m", spec, params)
    with pytest.raises(OutputExistsError, match="model"):
        save_model(tmp_path / "m", spec, params)
    save_model(tmp_path / "m", spec, params, overwrite=True)


def test_truncated_dataset_and_model_files_are_named(tmp_path):
    path = save_dataset(tmp_path / "d.h5", _tiny_data())
    (tmp_path / "cut.h5").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"dataset '.*cut.h5' is unreadable, truncated or corrupt"):
        load_dataset(tmp_path / "cut.h5")

    cg = CGData(np.zeros((3, 2, 3), np.float32) + np.array([[0, 0, 0], [0.3, 0, 0]], np.float32),
                np.zeros((3, 2, 3), np.float32), np.array([0, 1]), np.zeros((0, 2), int), 300.0)
    spec = model_spec(cg, None, features=4, blocks=1, rbf=4, cutoff=1.0, exclusion_hops=0)
    _, net, _ = build_model(spec)
    save_model(tmp_path / "m", spec, net.init(jax.random.key(0), jnp.asarray(cg.positions[0])))
    npz = tmp_path / "m" / "model.npz"
    npz.write_bytes(npz.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"model parameters '.*model.npz' is unreadable"):
        load_energy(tmp_path / "m")
    (tmp_path / "m" / "model.json").write_text('{"bead_types": [0, 1], "feat')
    with pytest.raises(ValueError, match=r"model description '.*model.json'"):
        load_energy(tmp_path / "m")


# ----------------------------------------------------------------------------- reference


def test_reference_refuses_existing_output_and_names_every_changed_setting(tmp_path, capsys):
    pytest.importorskip("openmm")
    from jaxcg.reference import generate

    quick = {"equilibration_ps": 0.2, "save_every": 20, "platform": "Reference"}
    path = generate("water_dimer", tmp_path / "a.h5", n_frames=3, seed=1, **quick)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="a.h5"):
        generate("water_dimer", path, n_frames=2, seed=1, **quick)
    assert path.read_bytes() == before
    with pytest.raises(SettingsMismatchError) as err:
        generate("water_dimer", path, n_frames=2, seed=2, temperature=310.0, resume=True, **quick)
    for key in ("seed", "temperature_K", "n_frames_target"):
        assert f"{key}: stored" in str(err.value)
    assert load_dataset(path).n_frames == 3 and load_dataset(path).metadata["n_frames_target"] == 3
    generate("water_dimer", path, n_frames=2, seed=1, overwrite=True, **quick)
    assert load_dataset(path).n_frames == 2
    # the command line: refused before anything is simulated, file untouched
    assert main(["reference", "water_dimer", "--frames", "5", "--out", str(path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert load_dataset(path).n_frames == 2


# ----------------------------------------------------------------------------- training


def _dimer(n_frames=256):
    rng = np.random.default_rng(0)
    model = RBFPairPotential(n_beads=2, n_basis=5, r_min=0.3, r_max=0.8)
    true = {"coefficients": jnp.asarray(rng.normal(0.0, 20.0, 5), jnp.float32)}
    r = rng.uniform(0.25, 0.85, (n_frames, 1))
    direction = rng.normal(size=(n_frames, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    x0 = rng.normal(0.0, 1.0, (n_frames, 3))
    x = np.stack([x0, x0 + r * direction], axis=1).astype(np.float32)
    _, f = jax.jit(batched_energy_and_forces(model.energy))(true, jnp.asarray(x))
    return model, x, np.asarray(f)


CONFIG = TrainConfig(epochs=4, batch_size=64, learning_rate=0.05, schedule="constant", patience=None)


def test_fit_resume_names_every_changed_key_and_overwrite_starts_anew(tmp_path):
    model, x, f = _dimer()
    params = model.init(None, jnp.asarray(x[0]))
    fit(model.energy, params, x, f, CONFIG, out_dir=tmp_path)
    with pytest.raises(ValueError, match="holds checkpoints"):
        fit(model.energy, params, x, f, CONFIG, out_dir=tmp_path)
    changed = dataclasses.replace(CONFIG, epochs=6, learning_rate=0.1)
    with pytest.raises(SettingsMismatchError) as err:
        fit(model.energy, params, x, f, changed, out_dir=tmp_path, resume=True)
    assert "epochs: stored 4, asked 6" in str(err.value) and "learning_rate: stored 0.05, asked 0.1" in str(err.value)
    result = fit(model.energy, params, x, f, dataclasses.replace(CONFIG, epochs=2), out_dir=tmp_path, overwrite=True)
    assert len(result.history) == 2
    assert len(json.loads((tmp_path / "metrics.json").read_text())) == 2


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    model, x, f = _dimer()
    params = model.init(None, jnp.asarray(x[0]))
    reference = fit(model.energy, params, x, f, CONFIG, out_dir=tmp_path / "a")
    fit(model.energy, params, x, f, CONFIG, out_dir=tmp_path / "b")
    newest = tmp_path / "b" / "checkpoints" / "4"
    assert newest.is_dir()
    for file in newest.rglob("*"):
        if file.is_file():
            file.write_bytes(b"\x00garbage")
    with pytest.warns(CheckpointWarning, match="resuming from the intact checkpoint of epoch 3"):
        resumed = fit(model.energy, params, x, f, CONFIG, out_dir=tmp_path / "b", resume=True)
    np.testing.assert_array_equal(resumed.state.params["coefficients"], reference.state.params["coefficients"])
    assert resumed.history == reference.history
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "3")
    for file in newest.rglob("*"):
        if file.is_file():
            file.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="no checkpoint .* can be read"):
        fit(model.energy, params, x, f, CONFIG, out_dir=tmp_path / "b", resume=True)


def _cg_npz(path: Path, n_frames: int = 64) -> Path:
    _, x, f = _dimer(n_frames)
    np.savez(path, positions=x, forces=f, bead_types=np.array([0, 1]), bonds=np.array([[0, 1]]), temperature=300.0)
    return path


def test_cli_train_refuses_finished_output_bad_hyperparameters_and_sigint(tmp_path, capsys, monkeypatch):
    data = _cg_npz(tmp_path / "cg.npz")
    base = ["train", "--data", str(data), "--out", str(tmp_path / "out"), "--batch-size", "32", "--features", "4",
            "--blocks", "1", "--rbf", "4", "--epochs", "1", "--no-prior", "--devices", "1"]
    assert main(base) == 0
    model = (tmp_path / "out" / "model.npz").read_bytes()
    capsys.readouterr()
    assert main(base) == 2
    assert "already exist" in capsys.readouterr().err
    assert main([*base, "--resume", "--features", "8", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "features: stored 4, asked 8" in err and "lr: stored 0.001, asked 0.01" in err
    assert (tmp_path / "out" / "model.npz").read_bytes() == model
    for bad, word in ((["--lr", "-0.001"], "learning_rate"), (["--epochs", "0"], "epochs")):
        assert main([*base, "--overwrite", *bad]) == 2
        assert word in capsys.readouterr().err
    assert (tmp_path / "out" / "model.npz").read_bytes() == model

    import jaxcg.train

    def interrupted_fit(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jaxcg.train, "fit", interrupted_fit)
    assert main([*base, "--overwrite"]) == 130
    assert capsys.readouterr().err.strip().endswith("jaxcg train: interrupted; continue with --resume")


def test_out_that_is_a_file_is_refused_before_any_work(sim_inputs, capsys):
    (sim_inputs / "taken").write_text("not a folder")
    args = _simulate_args(sim_inputs, "--steps", "50", out="taken")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "is not a folder" in err
    assert (sim_inputs / "taken").read_text() == "not a folder"


@pytest.mark.slow
def test_real_sigint_to_jaxcg_simulate(sim_inputs):
    """SIGINT from outside (as Ctrl-C sends it) while the simulation runs: one clean line, 130."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "jaxcg.cli", *_simulate_args(sim_inputs, "--steps", "10000000")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not (sim_inputs / "sim" / "state.npz").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "jaxcg simulate: interrupted; continue with --resume"
    assert "Traceback" not in err
    assert all(t.n_frames > 0 for t in simulate.load_replicas(sim_inputs / "sim"))


def test_corrupt_trajectory_and_topology_files_are_named(tmp_path):
    from jaxcg.data import iter_dataset_chunks, load_atomistic, load_topology

    (tmp_path / "bad.pdb").write_text("ATOM  garbage\nEND\n" * 3)
    (tmp_path / "bad.dcd").write_bytes(b"\x00" * 64)
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(ValueError, match=r"topology file '.*bad.pdb'"):
        load_topology(tmp_path / "bad.pdb")
    water = _tiny_data()
    np.save(tmp_path / "f.npy", np.zeros((4, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"trajectory file '.*bad.dcd'"):
        load_atomistic(water.topology, tmp_path / "bad.dcd", tmp_path / "f.npy", 300.0)
    with pytest.raises(ValueError, match=r"dataset '.*bad.h5' is unreadable"):
        next(iter_dataset_chunks(tmp_path / "bad.h5"))
