"""Saved CG models: round trip, a stored model from before format versioning, bad folders."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcg.data import CGData
from jaxcg.priors import fit_prior
from jaxcg.saved_model import MODEL_FORMAT_VERSION, build_model, load_energy, model_spec, save_model

STORED = Path(__file__).resolve().parent / "data" / "model_unversioned"


def small_cg(seed=0):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(scale=0.15, size=(200, 4, 3)), axis=1).astype(np.float32)
    return CGData(positions=x, forces=np.zeros_like(x), bead_types=np.array([0, 1, 1, 0]),
                  bonds=np.array([[0, 1], [1, 2], [2, 3]]), temperature=300.0)


def test_round_trip_with_prior_gives_the_same_energy(tmp_path):
    cg = small_cg()
    prior = fit_prior(cg)
    spec = model_spec(cg, prior, features=16, blocks=1, rbf=8, cutoff=1.0, exclusion_hops=0)
    model, net, _ = build_model(spec)
    params = {"prior": prior.params, "net": net.init(jax.random.key(0), jnp.asarray(cg.positions[0]))}
    save_model(tmp_path, spec, params)
    energy = load_energy(tmp_path)
    for x in cg.positions[:5]:
        assert float(energy(jnp.asarray(x))) == pytest.approx(float(model.energy(params, jnp.asarray(x))), rel=1e-6)
    assert json.loads((tmp_path / "model.json").read_text())["format_version"] == MODEL_FORMAT_VERSION
    # tabulated filters at load time: the same model to the grid's accuracy
    tabulated = load_energy(tmp_path, filter_table=256)
    exact_forces = jax.vmap(jax.grad(energy))(jnp.asarray(cg.positions[:5]))
    table_forces = jax.vmap(jax.grad(tabulated))(jnp.asarray(cg.positions[:5]))
    error = float(jnp.linalg.norm(table_forces - exact_forces) / jnp.linalg.norm(exact_forces))
    assert 0.0 < error < 1e-4, error


def test_stored_model_from_before_versioning_still_loads():
    spec = json.loads((STORED / "model.json").read_text())
    assert "format_version" not in spec  # the fixture really is the old layout
    energy = load_energy(STORED)
    x = jnp.asarray(np.load(STORED / "positions.npy"))
    energies = jax.vmap(energy)(x)
    forces = jax.vmap(jax.grad(energy))(x)
    assert np.all(np.isfinite(np.asarray(energies))) and np.all(np.isfinite(np.asarray(forces)))
    assert float(jnp.std(energies)) > 0  # a real network, not a constant


def test_unknown_version_and_missing_files_are_refused(tmp_path):
    spec = json.loads((STORED / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**spec, "format_version": 99}))
    (tmp_path / "model.npz").write_bytes((STORED / "model.npz").read_bytes())
    with pytest.raises(ValueError, match="format_version 99 is not supported"):
        load_energy(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a jaxcg model folder"):
        load_energy(tmp_path / "nothing")
