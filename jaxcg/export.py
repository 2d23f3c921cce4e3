"""Trained potentials as ``jax.export`` artefacts, loadable with plain JAX (no jaxcg model code).

``export_potential(model_dir, out)`` writes ``out``: the serialized ``jax.export.Exported`` of
``energy_and_forces(x (B, N, 3) nm) -> (energy (B,) kJ/mol, forces (B, N, 3) kJ/mol/nm)`` of the
model saved by ``jaxcg train`` in ``model_dir`` (forces are minus the gradient of the energy; B is
symbolic, any batch size works), and ``out.json`` beside it with the metadata (units, bead types,
n_beads, temperature, input and output shapes). Anyone with JAX loads it::

    import jax, numpy as np
    exported = jax.export.deserialize(bytearray(open("cln025.jaxexport", "rb").read()))
    energy, forces = exported.call(np.zeros((7, 10, 3), np.float32))   # (7,), (7, 10, 3)

``load_exported(path)`` turns it back into ``energy(x (N, 3) nm) -> kJ/mol`` for ``jaxcg.simulate``
(``jax.grad`` gives the exported forces; ``jax.vmap`` calls the artefact once on the whole batch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcg._files import reading, refuse_existing

#: Version of the artefact + sidecar layout written by ``export_potential``.
EXPORT_FORMAT_VERSION = 1
_FORMAT = "jaxcg-exported-potential"


def metadata_path(path: str | os.PathLike) -> Path:
    """The sidecar JSON of the artefact ``path``: ``path`` with ``.json`` appended."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def export_potential(
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    platforms: Sequence[str] = ("cpu", "cuda"),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export the potential of the ``jaxcg train`` model in ``model_dir`` to ``out`` (+ ``out.json``).

    Args:
      model_dir: folder with ``model.json`` and ``model.npz`` (as written by ``jaxcg train``).
      out: the artefact to write (serialized ``jax.export.Exported``; e.g. ``model.jaxexport``).
      platforms: platforms to lower for (``jax.export`` names: "cpu", "cuda", "rocm", "tpu").
      overwrite: replace an existing ``out``; otherwise it is refused (``OutputExistsError``).

    Returns:
      the metadata written to ``out.json``.
    """
    from jaxcg.saved_model import load_energy

    model_dir, out = Path(model_dir), Path(out)
    platforms = tuple(platforms)
    if not platforms or not all(isinstance(p, str) and p for p in platforms):
        raise ValueError(f"platforms must be a non-empty sequence of platform names, got {platforms!r}")
    refuse_existing([out, metadata_path(out)], "exported potential", overwrite, resume_hint=False)
    energy = load_energy(model_dir)
    with reading(model_dir / "model.json", "model description"):
        spec = json.loads((model_dir / "model.json").read_text())
    n_beads = int(energy.n_beads)

    def energy_and_forces(x):
        value, gradient = jax.vmap(jax.value_and_grad(energy))(x)
        return value, -gradient

    (batch,) = jax.export.symbolic_shape("batch")
    with jax.numpy_dtype_promotion("standard"):
        exported = jax.export.export(jax.jit(energy_and_forces), platforms=platforms)(
            jax.ShapeDtypeStruct((batch, n_beads, 3), jnp.float32)
        )
    temperature = spec.get("temperature")
    metadata = {
        "format": _FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "function": "energy_and_forces(positions) -> (energy, forces); forces = -d energy / d positions",
        "inputs": {"positions": {"shape": ["batch", n_beads, 3], "dtype": "float32", "unit": "nm"}},
        "outputs": {
            "energy": {"shape": ["batch"], "dtype": "float32", "unit": "kJ/mol"},
            "forces": {"shape": ["batch", n_beads, 3], "dtype": "float32", "unit": "kJ/mol/nm"},
        },
        "units": {"length": "nm", "energy": "kJ/mol", "force": "kJ/mol/nm", "temperature": "K"},
        "n_beads": n_beads,
        "bead_types": list(spec["bead_types"]),
        "bonds": list(spec.get("bonds", [])),
        "temperature_K": temperature,
        "model": {key: spec.get(key) for key in ("features", "blocks", "rbf", "cutoff", "exclusion_hops")}
        | {"prior": spec.get("prior") is not None, "format_version": spec.get("format_version", 1)},
        "source": str(model_dir.resolve()),
        "platforms": list(exported.platforms),
        "jax_version": jax.__version__,
        "calling_convention_version": exported.calling_convention_version,
        "load": "jax.export.deserialize(bytearray(open(PATH, 'rb').read())).call(positions)",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(exported.serialize())
    os.replace(tmp, out)
    metadata_path(out).write_text(json.dumps(metadata, indent=1))
    return metadata


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar metadata of the artefact ``path`` (``path.json``)."""
    side = metadata_path(path)
    if not side.exists():
        raise FileNotFoundError(f"{str(side)!r} does not exist: the metadata written beside {str(path)!r}")
    with reading(side, "exported potential metadata"):
        metadata = json.loads(side.read_text())
        if metadata.get("format") != _FORMAT:
            raise ValueError(f"{str(side)!r} has format {metadata.get('format')!r}, expected {_FORMAT!r}")
    if metadata.get("format_version") != EXPORT_FORMAT_VERSION:
        raise ValueError(f"{str(side)!r} has format_version {metadata.get('format_version')!r}; this jaxcg reads "
                         f"{EXPORT_FORMAT_VERSION}")
    return metadata


def load_exported(path: str | os.PathLike) -> Callable[[jax.Array], jax.Array]:
    """energy(x (N, 3) nm) -> kJ/mol of the artefact ``path`` written by ``export_potential``.

    ``jax.grad(energy)`` is minus the exported forces (first derivatives only: higher ones are zero); under ``jax.vmap``
    (replicas) the artefact is called once on the whole batch. ``energy.n_beads`` is N and
    ``energy.metadata`` the sidecar metadata. Works with ``jaxcg.simulate`` like any energy with
    its parameters bound.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"exported potential {str(path)!r} does not exist")
    metadata = read_metadata(path)
    with reading(path, "exported potential"):
        exported = jax.export.deserialize(bytearray(path.read_bytes()))
    n_beads = int(metadata["n_beads"])
    if tuple(exported.in_avals[0].shape[1:]) != (n_beads, 3):
        raise ValueError(f"{str(path)!r} takes positions of shape {exported.in_avals[0].shape}, its metadata says "
                         f"(batch, {n_beads}, 3)")

    @jax.custom_batching.custom_vmap
    def batched(x):  # (B, N, 3) -> (B,), (B, N, 3); nested vmaps flatten into one batch
        return exported.call(x.astype(jnp.float32))

    @batched.def_vmap
    def _batched_rule(axis_size, in_batched, x):
        if not in_batched[0]:
            x = jnp.broadcast_to(x, (axis_size, *x.shape))
        energy, forces = batched(x.reshape(-1, n_beads, 3))
        return (energy.reshape(axis_size, -1), forces.reshape(axis_size, -1, n_beads, 3)), (True, True)

    def energy_and_forces(x):  # (N, 3)
        energy, forces = batched(x[None])
        return energy[0], forces[0]

    def energy(x):
        # value E, gradient -F: the forces come from the artefact, not from differentiating it
        fixed = jax.lax.stop_gradient(x)
        value, forces = energy_and_forces(fixed)
        return value - jnp.sum(forces * (x - fixed))

    def checked(x):
        if tuple(np.shape(x)) != (n_beads, 3):
            raise ValueError(f"x must have shape ({n_beads}, 3) nm for the exported potential {str(path)!r}, "
                             f"got {tuple(np.shape(x))}")
        return energy(jnp.asarray(x, jnp.float32))

    checked.n_beads = n_beads
    checked.metadata = metadata
    return checked
