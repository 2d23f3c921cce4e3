"""The default CG model recipe: a Boltzmann-inversion prior plus a SchNet trained on the delta
forces, with one set of defaults shared by the library, the ``jaxcg train`` command and the
experiments; ``train_transferable_model`` is the same recipe for one SchNet shared by several
molecules (a prior per molecule).

Defaults (``ModelSpec()``, ``DEFAULT_TRAIN``) were chosen on alanine dipeptide's backbone, judged
by the free-energy surface the model samples over a long run (``jaxcg.evaluate``), not by its
validation loss; see docs/results/alanine_fidelity.md for the measurement.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcg import train
from jaxcg.data import CGData
from jaxcg.models import PriorPlusNet, SchNet, TransferableSchNet
from jaxcg.molecules import BeadVocabulary, pad_molecules
from jaxcg.priors import Prior, fit_prior
from jaxcg.train import TrainConfig, TrainResult, delta_forces


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Size of the SchNet on top of the prior, and the prior's settings.

    Attributes:
      features: width of the atom-wise features. blocks: interaction blocks. rbf: radial basis
        functions of the filters. cutoff: nm, pairs further apart do not interact through the
        SchNet. exclusion_hops: pairs at most this many bonds apart are left out of the SchNet
        (0: none). prior: fit a Boltzmann-inversion prior and train on delta forces.
      n_harmonics: Fourier terms per dihedral of the prior.
    """

    features: int = 128
    blocks: int = 2
    rbf: int = 32
    cutoff: float = 1.2
    exclusion_hops: int = 0
    prior: bool = True
    n_harmonics: int = 4


#: Model defaults of the recipe.
DEFAULT_MODEL = ModelSpec()
#: Training defaults of the recipe: Adam, cosine decay, best validation epoch kept.
DEFAULT_TRAIN = TrainConfig(epochs=50, batch_size=128, learning_rate=1e-3, schedule="cosine", patience=None)


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A trained CG model: ``model.energy(params, x (N, 3) nm) -> kJ/mol``.

    Attributes:
      model: ``PriorPlusNet`` (or the SchNet alone when ``spec.prior`` is False).
      params: its parameters (``{"prior": ..., "net": ...}`` with a prior).
      net: the SchNet. prior: the fitted ``Prior`` or None.
      result: the ``TrainResult`` of the SchNet (history, final state).
      seconds: wall time of prior fit + training.
    """

    model: Any
    params: Any
    net: SchNet
    prior: Prior | None
    result: TrainResult
    seconds: float

    def energy_fn(self) -> Callable[[jax.Array], jax.Array]:
        """``energy(x (N, 3) nm) -> kJ/mol`` with the parameters bound."""
        return lambda x: self.model.energy(self.params, x)


def train_cg_model(
    cg: CGData,
    spec: ModelSpec = ModelSpec(),
    config: TrainConfig = DEFAULT_TRAIN,
    seed: int = 0,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: Callable | None = None,
    devices: list | str | None = None,
    overwrite: bool = False,
) -> TrainedModel:
    """Fit the prior to ``cg`` (Boltzmann inversion), then the SchNet to the delta forces.

    Args:
      cg: CG data: positions (T, N, 3) nm, forces (T, N, 3) kJ/mol/nm, bead types, bonds, K.
      spec: model size and prior settings. config: training hyperparameters.
      seed: seed of the SchNet's initial parameters (shuffling and split use ``config.seed``).
      out_dir: folder for checkpoints and metrics (``jaxcg.train.fit``), or None.
      resume: continue from the checkpoints in ``out_dir``.
      progress: progress callback of ``jaxcg.train.fit``.
      devices: devices for data parallelism (``jaxcg.train.fit``).
      overwrite: replace an earlier run in ``out_dir``.

    Returns:
      TrainedModel with the best-validation SchNet parameters.
    """
    start = time.perf_counter()
    prior = fit_prior(cg, n_harmonics=spec.n_harmonics) if spec.prior else None
    net = SchNet(cg.bead_types, features=spec.features, blocks=spec.blocks, rbf=spec.rbf,
                 cutoff=spec.cutoff, bonds=np.asarray(cg.bonds).reshape(-1, 2),
                 exclusion_hops=spec.exclusion_hops)
    x = np.asarray(cg.positions, np.float32)
    targets = np.asarray(cg.forces, np.float32)
    if prior is not None:
        targets = delta_forces(prior.energy, prior.params, x, targets)
    params = net.init(jax.random.key(seed), jnp.asarray(x[0]))
    result = train.fit(net.energy, params, x, targets, config, weights=cg.weights, out_dir=out_dir,
                 resume=resume, progress=progress, devices=devices, overwrite=overwrite)
    if prior is None:
        return TrainedModel(net, result.params, net, None, result, time.perf_counter() - start)
    return TrainedModel(PriorPlusNet(prior, net), {"prior": prior.params, "net": result.params}, net, prior,
                        result, time.perf_counter() - start)


@dataclasses.dataclass(frozen=True)
class TrainedTransferable:
    """One SchNet trained on several molecules (``train_transferable_model``).

    Attributes:
      model: the ``TransferableSchNet`` (padded energy, ``for_molecule``).
      params: its parameters (the same for every molecule).
      vocabulary: the shared bead types.
      priors: each training molecule's fitted ``Prior`` (None without priors).
      topologies: each training molecule's CG topology.
      result: the ``TrainResult`` of the SchNet (history, final state).
      seconds: wall time of prior fits + training.
    """

    model: TransferableSchNet
    params: Any
    vocabulary: BeadVocabulary
    priors: list[Prior | None]
    topologies: list[Any]
    result: TrainResult
    seconds: float

    def molecule(self, k: int) -> tuple[Any, Any]:
        """(model, params) of training molecule ``k`` unpadded: ``PriorPlusNet(prior, SchNet)``
        with ``{"prior", "net"}`` params, or the SchNet alone without a prior."""
        net, params = self.for_molecule(self.topologies[k])
        if self.priors[k] is None:
            return net, params
        return PriorPlusNet(self.priors[k], net), {"prior": self.priors[k].params, "net": params}

    def for_molecule(self, topology: Any) -> tuple[SchNet, Any]:
        """(SchNet, params) of any molecule whose beads' (residue name, bead name) are in the
        vocabulary (a CG topology; others are a ``ValueError`` naming them): the network alone,
        without a prior, unpadded."""
        return self.model.for_molecule(self.vocabulary.types(topology)), self.params


def train_transferable_model(
    datasets: Sequence[CGData],
    spec: ModelSpec = ModelSpec(),
    config: TrainConfig = DEFAULT_TRAIN,
    seed: int = 0,
    vocabulary: BeadVocabulary | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: Callable | None = None,
    devices: list | str | None = None,
    overwrite: bool = False,
) -> TrainedTransferable:
    """The recipe of ``train_cg_model`` for several molecules: a prior fitted to each molecule
    (Boltzmann inversion, its own bonds), one ``TransferableSchNet`` trained on every molecule's
    delta forces at once, padded to the largest molecule.

    Args:
      datasets: one ``CGData`` per molecule, each with a CG topology (bead types from
        (residue name, bead name), ``jaxcg.molecules``).
      spec: model size and prior settings; ``exclusion_hops`` must be 0 (one pair list serves
        every molecule).
      config: training hyperparameters.
      seed: seed of the SchNet's initial parameters.
      vocabulary: the shared bead types (default: those of ``datasets``); give a larger one to
        leave room for molecules to come.
      out_dir: folder for checkpoints and metrics (``jaxcg.train.fit``), or None.
      resume: continue from the checkpoints in ``out_dir``.
      progress: progress callback of ``jaxcg.train.fit``.
      devices: devices for data parallelism (``jaxcg.train.fit``).
      overwrite: replace an earlier run in ``out_dir``.
    """
    if spec.exclusion_hops:
        raise ValueError(f"spec.exclusion_hops must be 0 for a model of several molecules, got {spec.exclusion_hops}")
    start = time.perf_counter()
    priors = [fit_prior(cg, n_harmonics=spec.n_harmonics) if spec.prior else None for cg in datasets]
    targets = [cg if prior is None else dataclasses.replace(
        cg, forces=delta_forces(prior.energy, prior.params, np.asarray(cg.positions, np.float32), cg.forces))
        for cg, prior in zip(datasets, priors, strict=True)]
    data = pad_molecules(targets, vocabulary)
    model = TransferableSchNet(len(data.vocabulary), data.n_beads, features=spec.features, blocks=spec.blocks,
                               rbf=spec.rbf, cutoff=spec.cutoff)
    params = model.init(jax.random.key(seed))
    result = train.fit(model.energy, params, data.positions, data.forces, config, weights=data.weights,
                       out_dir=out_dir, resume=resume, progress=progress, devices=devices, overwrite=overwrite,
                       bead_types=data.types)
    return TrainedTransferable(model, result.params, data.vocabulary, priors, [cg.topology for cg in datasets], result,
                               time.perf_counter() - start)
