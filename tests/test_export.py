"""jaxcg export: a trained potential as a jax.export artefact, loaded with plain JAX (no jaxcg) and
by the simulator, equal to the model it came from to float32 precision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np
import pytest

from jaxcg import simulate
from jaxcg.export import load_exported, read_metadata
from jaxcg.saved_model import load_energy

N_BEADS = 5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny model trained by `jaxcg train` (1 epoch) and exported by `jaxcg export`."""
    from jaxcg.cli import main

    tmp = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    x = (np.cumsum(rng.normal(0, 0.2, (64, N_BEADS, 3)), axis=1) + 0.3 * np.arange(N_BEADS)[:, None]).astype(np.float32)
    np.savez(tmp / "cg.npz", positions=x, forces=rng.normal(0, 10, x.shape).astype(np.float32),
             bead_types=np.array([0, 1, 0, 1, 0]), bonds=np.stack([np.arange(4), np.arange(1, 5)], 1),
             temperature=300.0)
    assert main(["train", "--data", str(tmp / "cg.npz"), "--out", str(tmp / "run"), "--epochs", "1",
                 "--features", "8", "--rbf", "8", "--blocks", "1", "--batch-size", "32"]) == 0
    assert main(["export", str(tmp / "run"), "--out", str(tmp / "model.jaxexport")]) == 0
    return tmp, x


def _random_configurations(x, n, seed):
    rng = np.random.default_rng(seed)
    return (x[rng.integers(0, len(x), n)] + rng.normal(0, 0.02, (n, N_BEADS, 3))).astype(np.float32)


PLAIN_JAX = textwrap.dedent("""
    import sys
    import jax, numpy as np
    exported = jax.export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
    inputs = np.load(sys.argv[2])
    out = {}
    for name in inputs.files:
        energy, forces = exported.call(inputs[name])
        out[name + "_energy"], out[name + "_forces"] = np.asarray(energy), np.asarray(forces)
    assert not any(m.startswith("jaxcg") for m in sys.modules), "jaxcg was imported"
    np.savez(sys.argv[3], shape=str(exported.in_avals[0].shape), **out)
""")


def test_plain_jax_loads_the_artefact_and_gives_the_models_energies_and_forces(exported, tmp_path):
    folder, x = exported
    inputs = {f"b{n}": _random_configurations(x, n, n) for n in (1, 7)}
    np.savez(tmp_path / "inputs.npz", **inputs)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no jaxcg on the path
    subprocess.run([sys.executable, "-c", PLAIN_JAX, str(folder / "model.jaxexport"), str(tmp_path / "inputs.npz"),
                    str(tmp_path / "out.npz")], check=True, cwd=tmp_path, env=env)
    out = np.load(tmp_path / "out.npz")
    assert str(out["shape"]) == "(batch, 5, 3)"  # a symbolic batch dimension
    energy = load_energy(folder / "run")
    for name, positions in inputs.items():
        reference = np.asarray(jax.vmap(energy)(positions))
        forces = -np.asarray(jax.vmap(jax.grad(energy))(positions))
        assert out[f"{name}_energy"].shape == reference.shape
        np.testing.assert_allclose(out[f"{name}_energy"], reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())
        np.testing.assert_allclose(out[f"{name}_forces"], forces, rtol=1e-5, atol=1e-5 * np.abs(forces).max())


def test_metadata_names_units_beads_and_shapes(exported):
    folder, _ = exported
    metadata = read_metadata(folder / "model.jaxexport")
    assert metadata["units"]["length"] == "nm" and metadata["units"]["energy"] == "kJ/mol"
    assert metadata["n_beads"] == N_BEADS and metadata["bead_types"] == [0, 1, 0, 1, 0]
    assert metadata["temperature_K"] == 300.0
    assert metadata["inputs"]["positions"]["shape"] == ["batch", N_BEADS, 3]
    assert metadata["outputs"]["forces"]["unit"] == "kJ/mol/nm"
    assert set(metadata["platforms"]) == {"cpu", "cuda"}


def test_simulation_of_the_exported_potential_equals_the_models(exported):
    folder, x = exported
    original, loaded = load_energy(folder / "run"), load_exported(folder / "model.jaxexport")
    assert loaded.n_beads == N_BEADS
    start = _random_configurations(x, 4, 3)
    np.testing.assert_allclose(jax.jit(jax.grad(loaded))(start[0]), jax.grad(original)(start[0]),
                               rtol=1e-5, atol=1e-4)
    finals = []
    for energy in (original, loaded):
        sim = simulate.langevin(energy, np.full(N_BEADS, 50.0), 300.0, 0.002, 1.0, 50, 10)
        state, record = sim.run_chunk(sim.init(jax.random.key(0), start))
        assert bool(np.asarray(state.alive).all())
        finals.append((np.asarray(record.positions), np.asarray(record.potential_energy)))
    np.testing.assert_allclose(finals[1][0], finals[0][0], atol=1e-5)
    np.testing.assert_allclose(finals[1][1], finals[0][1], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match=r"x must have shape \(5, 3\)"):
        loaded(jnp.zeros((4, 3)))


def test_cli_simulate_runs_an_exported_potential_and_export_refuses_to_overwrite(exported, tmp_path, capsys):
    from jaxcg.cli import main

    folder, x = exported
    topology = md.Topology()
    chain = topology.add_chain()
    for _ in range(N_BEADS):
        topology.add_atom("B", md.element.carbon, topology.add_residue("B", chain))
    md.Trajectory(x[:1], topology).save_pdb(str(tmp_path / "cg.pdb"))
    np.savez(tmp_path / "start.npz", positions=x[:4])
    assert main(["simulate", "--energy", str(folder / "model.jaxexport"), "--start", str(tmp_path / "start.npz"),
                 "--top", str(tmp_path / "cg.pdb"), "--replicas", "2", "--steps", "20", "--chunk", "20",
                 "--save-every", "10", "--out", str(tmp_path / "sim")]) == 0
    assert [t.n_frames for t in simulate.load_replicas(tmp_path / "sim")] == [2, 2]
    assert main(["export", str(folder / "run"), "--out", str(folder / "model.jaxexport")]) == 2
    assert "already exist" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "none.jaxexport")]) == 2
    assert json.loads((folder / "model.jaxexport.json").read_text())["format"] == "jaxcg-exported-potential"
