"""Trained CG models on disk: ``model.json`` (architecture, prior, format version) + ``model.npz``.

The files ``jaxcg train`` writes; ``load_energy(folder)`` gives back ``energy(x (N, 3) nm) -> kJ/mol``
with the parameters bound, ready for ``jaxcg.simulate``. The format is versioned: a file with an
unknown ``format_version`` is refused with a clear error; files from before versioning (no
``format_version``) are read as version 1.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcg._files import reading, refuse_existing
from jaxcg._leaves import read_leaves, write_leaves
from jaxcg.data import CGData
from jaxcg.models import PriorPlusNet, SchNet
from jaxcg.priors import Prior, PriorParams, PriorTerms

#: Version of the model.json/model.npz layout written by ``save_model``.
MODEL_FORMAT_VERSION = 1
_TERM_WIDTHS = {"bonds": 2, "angles": 3, "dihedrals": 4, "pairs": 2}


def model_spec(
    cg: CGData, prior: Prior | None, features: int, blocks: int, rbf: int, cutoff: float, exclusion_hops: int
) -> dict[str, Any]:
    """JSON-able description of a prior + SchNet model for the CG molecule of ``cg``."""
    return {
        "format_version": MODEL_FORMAT_VERSION,
        "bead_types": np.asarray(cg.bead_types).tolist(), "bonds": np.asarray(cg.bonds).tolist(),
        "features": features, "blocks": blocks, "rbf": rbf, "cutoff": cutoff,
        "exclusion_hops": exclusion_hops, "temperature": cg.temperature,
        "prior": None if prior is None else {
            "terms": {k: np.asarray(v).tolist() for k, v in prior.terms._asdict().items()},
            "params": {k: np.asarray(v).tolist() for k, v in prior.params._asdict().items()},
        },
    }


def build_model(spec: dict[str, Any], filter_table: int | None = None) -> tuple[Any, SchNet, Prior | None]:
    """(model, net, prior) from a spec: PriorPlusNet when the spec has a prior, else the SchNet
    (with tabulated filters on ``filter_table`` grid intervals if given). ``n_types`` (optional):
    the size of the bead-type vocabulary, for a molecule of a model of several molecules."""
    version = spec.get("format_version", 1)
    if version != MODEL_FORMAT_VERSION:
        raise ValueError(f"model format_version {version} is not supported (this jaxcg reads {MODEL_FORMAT_VERSION})")
    if spec.get("transferable"):
        folders = [m["folder"] for m in spec.get("molecules", [])]
        raise ValueError(f"this is a model of several molecules: load one molecule's folder ({', '.join(folders)}), "
                         "or build jaxcg.models.TransferableSchNet from its vocabulary")
    net = SchNet(np.asarray(spec["bead_types"]), n_types=spec.get("n_types"), features=spec["features"],
                 blocks=spec["blocks"], rbf=spec["rbf"], cutoff=spec["cutoff"],
                 bonds=np.asarray(spec["bonds"]).reshape(-1, 2), exclusion_hops=spec["exclusion_hops"],
                 filter_table=filter_table)
    if spec["prior"] is None:
        return net, net, None
    terms = PriorTerms(**{k: np.asarray(v, np.int64).reshape(-1, _TERM_WIDTHS[k])
                          for k, v in spec["prior"]["terms"].items()})
    params = PriorParams(**{k: np.asarray(v, np.float32) for k, v in spec["prior"]["params"].items()})
    prior = Prior(terms, params)
    return PriorPlusNet(prior, net), net, prior


def save_model(
    folder: str | os.PathLike, spec: dict[str, Any], params: Any, extra: dict | None = None, overwrite: bool = False
) -> Path:
    """Write ``folder/model.json`` (spec + ``extra``) and ``folder/model.npz`` (parameter leaves).

    An existing model in ``folder`` is refused (``OutputExistsError``) unless ``overwrite=True``."""
    folder = Path(folder)
    refuse_existing([folder / "model.npz", folder / "model.json"], "model files", overwrite, resume_hint=False)
    folder.mkdir(parents=True, exist_ok=True)
    write_leaves(folder / "model.npz", jax.tree.leaves(params))
    (folder / "model.json").write_text(json.dumps({**spec, **(extra or {})}))
    return folder


def load_energy(folder: str | os.PathLike, filter_table: int | None = None) -> Callable[[jax.Array], jax.Array]:
    """energy(x (N, 3) nm) -> kJ/mol of the model saved in ``folder``, parameters bound.

    The model knows its bead count N (also ``energy.n_beads``): x of another shape raises a
    ValueError. A truncated or corrupt model.json/model.npz raises a ValueError naming the file.

    ``filter_table=K`` tabulates the SchNet's filters on K grid intervals once (cubic Hermite,
    see ``SchNet``): faster simulation, with a force error to check;
    ``SchNet.filter_table_error`` reports the filter error."""
    folder = Path(folder)
    for name in ("model.json", "model.npz"):
        if not (folder / name).exists():
            raise FileNotFoundError(f"{str(folder)!r} holds no {name}: not a jaxcg model folder")
    with reading(folder / "model.json", "model description"):
        spec = json.loads((folder / "model.json").read_text())
        model, net, _ = build_model(spec, filter_table)
    n_beads = len(spec["bead_types"])
    template = model.init(jax.random.key(0), jnp.zeros((n_beads, 3), jnp.float32))
    with reading(folder / "model.npz", "model parameters"), np.load(folder / "model.npz") as archive:
        leaves = [jnp.asarray(leaf) for leaf in read_leaves(archive)]
    structure = jax.tree.structure(template)
    if structure.num_leaves != len(leaves):
        raise ValueError(f"{str(folder / 'model.npz')!r} holds {len(leaves)} arrays; the model needs {structure.num_leaves}")
    params = jax.tree.unflatten(structure, leaves)
    if filter_table is None:
        energy = functools.partial(model.energy, params)
    else:
        tables = net.filter_tables(params if model is net else params["net"])
        energy = functools.partial(model.energy, params, tables=tables)
    energy.n_beads = n_beads  # read by jaxcg simulate to check --start
    return energy
