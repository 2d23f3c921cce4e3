"""Several molecules, one model: a padded mixed batch gives exactly each molecule's own energies,
forces and loss; padding is inert; mixing molecules never recompiles; a model trained on two
molecules runs on a third it has never seen."""

import functools
import os

import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np
import pytest

from jaxcg.data import CGData
from jaxcg.models import SchNet, TransferableSchNet, batched_energy_and_forces
from jaxcg.molecules import PAD, BeadVocabulary, pad_molecules, pad_positions, pad_types
from jaxcg.train import Batch, TrainConfig, fit, force_matching_loss

SIZES = {"features": 8, "blocks": 1, "rbf": 8, "cutoff": 1.0}
NAMES = ("ala", "cln", "chig")


def _molecule(topology: md.Topology, x0: np.ndarray, n_frames: int, seed: int) -> CGData:
    """Frames scattered 0.02 nm around x0 (N, 3) nm, forces pulling back to x0 plus noise."""
    rng = np.random.default_rng(seed)
    x = x0 + 0.02 * rng.standard_normal((n_frames, *x0.shape))
    f = -500.0 * (x - x0) + 20.0 * rng.standard_normal(x.shape)
    return CGData(x.astype(np.float32), f.astype(np.float32), np.zeros(len(x0), np.int32),
                  np.zeros((0, 2), np.int64), 300.0, topology=topology)


@pytest.fixture(scope="module")
def molecules(shared_data):
    """Alanine dipeptide's 10 heavy atoms, CLN025's 10 CA beads (YYDPETGTWY), and chignolin's first
    nine residues (GYDPETGTW, a molecule never trained on) as 9 CA beads on CLN025's structure."""
    ala = md.load(str(shared_data / "alanine-dipeptide.pdb"))
    ala = ala.atom_slice(ala.topology.select("element != H"))
    cln = md.load(str(shared_data / "cln025.pdb"))
    cln = cln.atom_slice(cln.topology.select("name CA"))
    chig = cln.atom_slice(np.arange(9))
    chig.topology.residue(0).name = "GLY"  # Y1G
    return {
        "ala": _molecule(ala.topology, ala.xyz[0], 12, 0),
        "cln": _molecule(cln.topology, cln.xyz[0], 20, 1),
        "chig": _molecule(chig.topology, chig.xyz[0], 6, 2),
    }


@pytest.fixture(scope="module")
def vocabulary(molecules):
    """The bead types of the two training molecules, alanine dipeptide and CLN025."""
    return BeadVocabulary.from_topologies([molecules["ala"].topology, molecules["cln"].topology])


@pytest.fixture(scope="module")
def model_and_params(vocabulary):
    model = TransferableSchNet(len(vocabulary), n_beads=12, **SIZES)
    return model, model.init(jax.random.key(0))


@pytest.fixture(scope="module")
def mixed(molecules, vocabulary):
    """The three molecules' frames padded to 12 beads (one shape for every padded evaluation)."""
    return pad_molecules([molecules[name] for name in NAMES], vocabulary, n_beads=12)


@pytest.fixture(scope="module")
def schnets(molecules, model_and_params, vocabulary):
    """Each molecule's plain SchNet (built once, so its compiled functions are shared by the tests)."""
    model, _ = model_and_params
    return {name: model.for_molecule(vocabulary.types(part.topology)) for name, part in molecules.items()}


def test_vocabulary_rule_and_unknown_types(molecules, vocabulary):
    assert list(vocabulary.keys) == sorted(set(vocabulary.keys))
    assert ("TYR", "CA") in vocabulary.keys and ("ALA", "CB") in vocabulary.keys
    cln_types = vocabulary.types(molecules["cln"].topology)
    assert cln_types[0] == cln_types[1] == cln_types[9] == vocabulary.keys.index(("TYR", "CA"))
    assert BeadVocabulary.from_json(vocabulary.to_json()) == vocabulary
    # villin's headpiece has residues neither molecule holds: refused, the types named
    villin = md.load(os.path.join(os.path.dirname(__import__("openmm").__file__), "app", "data", "test.pdb"))
    villin_ca = villin.topology.subset(villin.topology.select("protein and name CA"))
    with pytest.raises(ValueError, match=r"LEU CA \(beads \[") as err:
        vocabulary.types(villin_ca)
    assert "ASP CA" not in str(err.value)  # a known type is not listed
    assert len(villin_ca.select("all")) == 35


@functools.cache
def _per_molecule(schnet: SchNet):
    """jit((params, positions, forces) -> (U (T,), F (T, N, 3), loss)) of one unpadded molecule."""

    def run(params, x, f):
        u, forces = batched_energy_and_forces(schnet.energy)(params, x)
        return u, forces, force_matching_loss(schnet.energy, params, Batch(x, f, jnp.ones(x.shape[0])))

    return jax.jit(run)


_padded = jax.jit(
    lambda model, params, x, types: jax.vmap(jax.value_and_grad(model.energy, argnums=1), in_axes=(None, 0, 0))(
        params, x, types), static_argnums=0)


def test_padding_helpers():
    assert pad_types(np.array([3, 1]), 4).tolist() == [3, 1, PAD, PAD]
    assert pad_positions(np.ones((2, 3, 3)), 5).shape == (2, 5, 3)
    with pytest.raises(ValueError, match="N <= 2"):
        pad_types(np.arange(3), 2)


def test_pad_molecules_interleaves_in_time_order(molecules):
    data = pad_molecules([molecules["ala"], molecules["cln"]])
    assert data.positions.shape == (32, 10, 3) and data.types.shape == (32, 10)
    assert np.isin(data.molecule[:6], [0, 1]).all() and len(set(data.molecule[:6].tolist())) == 2
    for k, name in enumerate(("ala", "cln")):
        np.testing.assert_array_equal(data.positions[data.molecule == k], molecules[name].positions)
    with pytest.raises(ValueError, match="at least the largest molecule's 10"):
        pad_molecules([molecules["ala"]], n_beads=9)


def test_padded_mixed_batch_equals_each_molecule_exactly(molecules, model_and_params, schnets, mixed):
    """Energies, forces and loss of a batch mixing three molecules (one never in the vocabulary's
    training set) padded to 12 beads equal those of each unpadded molecule's plain SchNet."""
    model, params = model_and_params
    parts, data = [molecules[name] for name in NAMES], mixed
    u, grad = _padded(model, params, jnp.asarray(data.positions), jnp.asarray(data.types))
    losses = []
    for k, part in enumerate(parts):
        u_k, f_k, loss_k = _per_molecule(schnets[NAMES[k]])(
            params, jnp.asarray(part.positions), jnp.asarray(part.forces))
        rows = data.molecule == k
        n = part.n_beads
        np.testing.assert_allclose(u[rows], u_k, rtol=2e-6, atol=2e-5)
        np.testing.assert_allclose(-grad[rows][:, :n], f_k, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(grad[rows][:, n:], 0.0)  # padding beads feel no force
        losses.append(float(loss_k))
    mixed = Batch(jnp.asarray(data.positions), jnp.asarray(data.forces), jnp.asarray(data.weights),
                  jnp.asarray(data.types))
    counts = np.bincount(data.molecule)
    expected = np.sum(counts * np.array(losses)) / counts.sum()
    mixed_loss = jax.jit(lambda p, b: force_matching_loss(model.energy, p, b))(params, mixed)
    np.testing.assert_allclose(float(mixed_loss), expected, rtol=1e-5)


def test_moving_padding_beads_changes_nothing(model_and_params, mixed):
    model, params = model_and_params
    x, types = mixed.positions, mixed.types
    shift = np.random.default_rng(0).normal(0, 0.3, x.shape).astype(np.float32)
    moved = np.where(mixed.mask[..., None], x, x[:, :1] + shift)  # padding beads next to bead 0, scattered
    (u0, g0), (u1, g1) = (_padded(model, params, jnp.asarray(y), jnp.asarray(types)) for y in (x, moved))
    np.testing.assert_array_equal(u0, u1)
    np.testing.assert_array_equal(g0, g1)
    np.testing.assert_array_equal(np.asarray(g1)[~mixed.mask], 0.0)


def test_batches_of_different_molecules_share_one_compilation(model_and_params, mixed):
    model, params = model_and_params
    traces = []

    def counted(params, x, types):
        traces.append(1)
        return model.energy(params, x, types)

    loss = jax.jit(lambda p, b: force_matching_loss(counted, p, b))
    data = mixed
    for k in (0, 1, 2, None):  # one molecule per batch, then a mixed batch
        rows = np.flatnonzero(data.molecule == k)[:4] if k is not None else np.arange(4)
        batch = Batch(*(jnp.asarray(a[rows]) for a in (data.positions, data.forces, data.weights, data.types)))
        assert np.isfinite(float(loss(params, batch)))
    assert loss._cache_size() == 1 and len(traces) == 1


def test_trained_on_two_molecules_runs_on_each_and_on_a_third(molecules, model_and_params, schnets, mixed, vocabulary):
    model, params = model_and_params
    data = pad_molecules([molecules["ala"], molecules["cln"]], vocabulary, n_beads=12)
    config = TrainConfig(epochs=3, batch_size=8, learning_rate=3e-3, val_fraction=0.0, patience=None)
    result = fit(model.energy, params, data.positions, data.forces, config, weights=data.weights,
                 bead_types=data.types)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    trained = result.params
    cln_types = vocabulary.types(molecules["cln"].topology).tolist()
    u_pad, g_pad = _padded(model, trained, jnp.asarray(mixed.positions), jnp.asarray(mixed.types))
    for k, name in enumerate(NAMES):  # chignolin: never trained on
        part, schnet, rows = molecules[name], schnets[name], mixed.molecule == k
        assert isinstance(schnet, SchNet) and schnet.n_beads == part.n_beads
        u, f, _ = _per_molecule(schnet)(trained, jnp.asarray(part.positions), jnp.asarray(part.forces))
        assert np.isfinite(u).all() and np.isfinite(f).all()
        np.testing.assert_allclose(u, u_pad[rows], rtol=2e-6, atol=2e-5)
        np.testing.assert_allclose(f, -g_pad[rows][:, : part.n_beads], rtol=1e-5, atol=1e-4)
    assert schnet.bead_types.tolist() == [vocabulary.keys.index(("GLY", "CA"))] + cln_types[1:9]
    with pytest.raises(ValueError, match="bead_types must have shape"):
        fit(model.energy, params, data.positions, data.forces, config, bead_types=data.types[:, :5])


@pytest.mark.slow
def test_cli_trains_one_model_on_two_datasets(tmp_path):
    """`jaxcg train --data A.h5 --data B.h5`: the shared vocabulary in OUT/model.json, and each
    molecule a plain saved model (its prior + the shared SchNet) that `load_energy` reads."""
    from jaxcg.cli import main
    from jaxcg.data import save_dataset
    from jaxcg.reference import bundled_dataset
    from jaxcg.saved_model import load_energy

    paths = []
    for name in ("alanine_dipeptide_vacuum", "water_dimer_flexible"):
        paths.append(str(save_dataset(tmp_path / f"{name}.h5", bundled_dataset(name).subset(slice(0, 48)))))
    out = tmp_path / "run"
    assert main(["train", "--data", paths[0], "--data", paths[1], "--out", str(out), "--map", "basic",
                 "--selection", "name CA or name N or (resname HOH and element O)", "--epochs", "1",
                 "--features", "8", "--rbf", "8", "--blocks", "1", "--batch-size", "32", "--val-fraction", "0"]) == 0
    import json

    description = json.loads((out / "model.json").read_text())
    assert description["transferable"] and description["n_beads"] == 3
    assert BeadVocabulary.from_json(description["vocabulary"]).keys == (
        ("ALA", "CA"), ("ALA", "N"), ("HOH", "O"), ("NME", "N"))
    assert [m["folder"] for m in description["molecules"]] == ["molecule_0", "molecule_1"]
    for k, n_beads in enumerate((3, 2)):
        energy = load_energy(out / f"molecule_{k}")
        assert energy.n_beads == n_beads and np.isfinite(float(energy(jnp.zeros((n_beads, 3)) + jnp.arange(n_beads, dtype=jnp.float32)[:, None] * 0.3)))
    with pytest.raises(ValueError, match="several molecules: load one molecule's folder"):
        load_energy(out)
