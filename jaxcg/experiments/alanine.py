"""Alanine dipeptide end to end: all-atom OpenMM data → CG beads → slice, basic and optimal
force maps → prior + SchNet trained on delta forces → CG Langevin → 2D free-energy surface.

Two CG levels (``LEVELS``):

- ``backbone``: the five backbone heavy atoms that define φ and ψ, C(ACE) N CA C N(NME), so
  φ = dihedral(beads 0-3) and ψ = dihedral(beads 1-4) are measured on the CG trajectory exactly
  as on the all-atom one; the surface is the Ramachandran plot.
- ``ca_cb``: four beads, CH3(ACE) CA CB CH3(NME), bonded to CA (a CA+CB model with the caps'
  methyls as neighbouring CAs). φ and ψ are gone; their imprint is left in the bond angles
  CH3(ACE)–CA–CB and CB–CA–CH3(NME), whose joint surface is compared (on the bundled data
  |corr(cos φ, ·)| = 0.75, 0.76 and |corr(cos ψ, ·)| = 0.46, 0.84).

The bundled data constrain every bond to hydrogen (HBonds), so the slice map is invalid (N–H and
CA–HA constraint forces are missing from the sliced forces); basic aggregation sums each bead's
constraint group; the optimal map is the valid map of least noise.

Hold-out force residual. Every model is scored on the same held-out frames against the same
target, the *optimal* map's forces f_opt. For any valid map the mapped force is the mean force
plus noise, f = −∇W(x) + ε with E[ε | x] = 0, so E‖f_opt − F_model‖² = E‖ε_opt‖² + E‖∇W + F_model‖²:
a constant (the optimal map's noise) plus the model's PMF error. Scoring each map's model
against its *own* forces would add that map's own noise instead, and the residuals of different
maps would not be comparable. With the common target the differences between maps are differences
in PMF error, which is what the data-efficiency factor compares.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxcg.analysis import FreeEnergy2D, compare_2d, dihedrals, fes_2d
from jaxcg.data import AtomisticData, CGData
from jaxcg.geometry import angles as bond_angles
from jaxcg.maps import (
    LinearMap,
    basic_aggregation_map,
    check_map,
    map_dataset,
    mean_squared_mapped_force,
    optimal_linear_map,
    slice_map,
)
from jaxcg.pipeline import DEFAULT_MODEL, ModelSpec, TrainedModel, train_cg_model
from jaxcg.train import TrainConfig

#: The five backbone heavy atoms that carry φ and ψ, in chain order.
BACKBONE = "(resname ACE and name C) or (resname ALA and (name N or name CA or name C)) or (resname NME and name N)"
MAP_NAMES = ("slice", "basic", "optimal")
#: φ = beads 0-1-2-3, ψ = beads 1-2-3-4 of the backbone CG model.
PHI_PSI = np.array([[0, 1, 2, 3], [1, 2, 3, 4]])
#: CH3(ACE), CA, CB, CH3(NME) (OpenMM names the NME methyl C, other tools CH3).
CA_CB = "(resname ACE and name CH3) or (resname ALA and (name CA or name CB)) or (resname NME and (name C or name CH3))"
#: Default training: fixed epochs, no early stopping (so every size gets the same budget).
DEFAULT_TRAIN = TrainConfig(epochs=30, batch_size=64, patience=None)
#: 36 × 36 bins of 10° over (−π, π].
FES_EDGES = np.linspace(-np.pi, np.pi, 37)


@dataclasses.dataclass(frozen=True)
class CGLevel:
    """A CG resolution of alanine dipeptide: which atoms become beads, the CG bonds, and the two
    collective variables (radians) whose free-energy surface is compared with the all-atom one.

    Attributes:
      name, selection: mdtraj selection of one atom per bead (beads in atom order).
      n_beads: beads the selection must find.
      bonds: (B, 2) CG bonds (the prior's bonded terms); None: consecutive beads.
      quadruplets / triplets: the two CVs, as dihedrals (2, 4) or bond angles (2, 3) of beads.
      edges: (bins + 1,) radians, for both CVs. labels: axis labels of the surface.
    """

    name: str
    selection: str
    n_beads: int
    bonds: np.ndarray | None
    quadruplets: np.ndarray | None
    triplets: np.ndarray | None
    edges: np.ndarray
    labels: tuple[str, str]

    def observables(self, positions: np.ndarray) -> np.ndarray:
        """(T, 2) radians for bead frames (T, n_beads, 3) nm."""
        if self.quadruplets is not None:
            return dihedrals(positions, self.quadruplets)
        return bond_angles(positions, self.triplets)


LEVELS = {
    "backbone": CGLevel("backbone", BACKBONE, 5, None, PHI_PSI, None, np.linspace(-np.pi, np.pi, 37),
                        ("phi / rad", "psi / rad")),
    "ca_cb": CGLevel("ca_cb", CA_CB, 4, np.array([[0, 1], [1, 2], [1, 3]]), None,
                     np.array([[0, 1, 2], [2, 1, 3]]), np.linspace(1.2, 2.8, 33),
                     ("CH3(ACE)-CA-CB / rad", "CB-CA-CH3(NME) / rad")),
}


def backbone_maps(data: AtomisticData, train: AtomisticData, level: CGLevel = LEVELS["backbone"]) -> dict[str, LinearMap]:
    """Slice, basic and optimal maps to the beads of ``level`` (default the five backbone
    beads; optimal fitted on ``train``)."""
    atoms = slice_map(data.topology, level.selection)
    if atoms.n_beads != level.n_beads:
        raise ValueError(f"data: the {level.name} selection found {atoms.n_beads} atoms, expected {level.n_beads} "
                         f"({level.selection})")
    return {
        "slice": atoms,
        "basic": basic_aggregation_map(atoms, data.constraints),
        "optimal": optimal_linear_map(train, atoms, data.constraints),
    }


def map_table(maps: dict[str, LinearMap], data: AtomisticData, test: AtomisticData) -> list[dict]:
    """Validity and mean squared mapped force E‖f‖² per bead on ``test`` ((kJ/mol/nm)²) of each
    map: the mean-force part is the same for every valid map, so differences are noise."""
    rows = []
    for name, linear_map in maps.items():
        report = check_map(linear_map, data.constraints, raise_on_error=False)
        noise = float(mean_squared_mapped_force(linear_map, test.forces)) / linear_map.n_beads
        rows.append({"map": name, "valid": bool(report.valid), "mean_sq_force_per_bead": noise})
    for row in rows:
        row["ratio_to_slice"] = row["mean_sq_force_per_bead"] / rows[0]["mean_sq_force_per_bead"]
    return rows


def cg_datasets(data: AtomisticData, maps: dict[str, LinearMap], level: CGLevel = LEVELS["backbone"]) -> dict[str, CGData]:
    """Every frame of ``data`` mapped by each map; one bead type per bead, the level's bonds."""
    types = np.arange(level.n_beads, dtype=np.int32)
    return {name: map_dataset(data, m, bead_types=types, bonds=level.bonds) for name, m in maps.items()}


def train_model(
    cg: CGData, config: TrainConfig, spec: ModelSpec = DEFAULT_MODEL, seed: int = 0
) -> TrainedModel:
    """The library's recipe (``jaxcg.pipeline.train_cg_model``): a Boltzmann-inversion prior fitted
    to ``cg`` and a SchNet trained on the delta forces; U = U_prior + U_net (kJ/mol)."""
    return train_cg_model(cg, spec, config, seed)


def holdout_residual(trained: TrainedModel, positions: np.ndarray, target: np.ndarray, chunk: int = 2048) -> float:
    """E_t Σ_i ‖target_ti − F_ti‖² / N, (kJ/mol/nm)² per bead, F = −∇U of the model.

    positions, target: (T, N, 3) nm and kJ/mol/nm (the optimal map's forces on held-out frames).
    """
    grad = jax.jit(jax.vmap(jax.grad(trained.model.energy, argnums=1), in_axes=(None, 0)))
    total = 0.0
    for s in range(0, len(positions), chunk):
        model_forces = -np.asarray(grad(trained.params, jnp.asarray(positions[s : s + chunk], jnp.float32)))
        total += float(np.sum((np.asarray(target[s : s + chunk], np.float64) - model_forces) ** 2))
    return total / (positions.shape[0] * positions.shape[1])


def size_to_reach(sizes: np.ndarray, residuals: np.ndarray, level: float) -> float:
    """Training-set size at which the ``residuals`` curve first falls to ``level``, by linear
    interpolation in log(size); NaN if it never does within ``sizes`` (inf-safe), the first
    size if it is already below."""
    sizes, residuals = np.asarray(sizes, float), np.asarray(residuals, float)
    if residuals[0] <= level:
        return float(sizes[0])
    for k in range(1, len(sizes)):
        if residuals[k] <= level:
            a, b = residuals[k - 1], residuals[k]
            t = (a - level) / (a - b)
            return float(np.exp(np.log(sizes[k - 1]) + t * (np.log(sizes[k]) - np.log(sizes[k - 1]))))
    return float("nan")


def data_efficiency(sizes: np.ndarray, basic: np.ndarray, optimal: np.ndarray) -> list[dict]:
    """For each training size n: the size basic needs to reach optimal's residual at n, and the
    factor n_basic / n (NaN where basic never gets there within ``sizes``)."""
    rows = []
    for n, level in zip(sizes, optimal, strict=True):
        needed = size_to_reach(sizes, basic, level)
        rows.append({"n_optimal": int(n), "optimal_residual": float(level), "n_basic": needed,
                     "factor": needed / float(n)})
    return rows


def simulate(
    trained: TrainedModel,
    cg: CGData,
    n_replicas: int,
    n_steps: int,
    key: jax.Array,
    dt: float = 0.002,
    friction: float = 1.0,
    save_every: int = 50,
    steps_per_chunk: int = 5000,
) -> np.ndarray:
    """Langevin dynamics of ``n_replicas`` replicas started from frames of ``cg``; returns the
    saved frames (F, N, 3) nm of all replicas pooled (frames after a replica was stopped dropped).
    dt: ps; friction: 1/ps; temperature and bead masses from ``cg``."""
    from jaxcg.evaluate import simulate_replicas
    from jaxcg.simulate import initial_positions

    k_start, k_init = jax.random.split(key)
    positions, alive, _ = simulate_replicas(
        trained.energy_fn(), initial_positions(cg, n_replicas, k_start), cg.masses, cg.temperature, n_steps,
        k_init, dt, friction, save_every, steps_per_chunk,
    )
    return positions[alive]


def ramachandran(positions: np.ndarray, kT: float, edges: np.ndarray | None = None,
                 level: CGLevel = LEVELS["backbone"]) -> FreeEnergy2D:
    """Free-energy surface (kJ/mol) of the level's two CVs (φ/ψ for the backbone level) from
    bead frames (T, n_beads, 3) nm; edges in radians (default the level's)."""
    edges = level.edges if edges is None else edges
    angles = level.observables(positions)
    return fes_2d(angles[:, 0], angles[:, 1], edges, edges, kT)


def reference_ramachandran(data: AtomisticData, edges: np.ndarray | None = None,
                           level: CGLevel = LEVELS["backbone"]) -> FreeEnergy2D:
    """The all-atom surface of the level's CVs over every frame of ``data`` (kJ/mol)."""
    atoms = data.topology.select(level.selection)
    return ramachandran(data.positions[:, atoms], data.kT, edges, level)


def epochs_for(config: TrainConfig, n_frames: int, equal_steps: int | None) -> TrainConfig:
    """``config`` with epochs = ⌈equal_steps / steps per epoch⌉ for a set of ``n_frames`` (the
    training part after the validation split), or unchanged for ``equal_steps=None``."""
    if equal_steps is None:
        return config
    steps_per_epoch = max(1, -(-int(round(n_frames * (1.0 - config.val_fraction))) // config.batch_size))
    return dataclasses.replace(config, epochs=max(1, -(-int(equal_steps) // steps_per_epoch)))


def run_alanine(
    data: AtomisticData,
    sizes: tuple[int, ...] = (500, 2000, 8000),
    config: TrainConfig = DEFAULT_TRAIN,
    spec: ModelSpec = DEFAULT_MODEL,
    test_fraction: float = 0.2,
    n_replicas: int = 16,
    n_steps: int = 20000,
    seed: int = 0,
    maps: tuple[str, ...] = MAP_NAMES,
    progress=None,
    level: str | CGLevel = "backbone",
    equal_steps: int | None = None,
    own_map_per_size: bool = True,
) -> dict:
    """The whole experiment; returns plain data (JSON-able except ``surfaces`` and ``models``).

    The last ``test_fraction`` of the trajectory is held out (contiguous, so correlated frames do
    not leak). The optimal map is fitted on the training part. For each map and each size n the
    model is trained on n frames drawn at random (seeded, nested: smaller sets are subsets of
    larger ones) from the training part, and scored on the held-out frames against the optimal
    map's forces (see the module docstring). The model of the largest size of each map is
    simulated (``n_replicas`` × ``n_steps`` steps of 2 fs, started from its training frames) and
    its surface of the level's CVs (Ramachandran for ``level="backbone"``; ``"ca_cb"`` for the
    CA+CB level, see ``LEVELS``) compared with the all-atom one over all frames.

    ``equal_steps``: train every size for about this many optimiser steps (epochs scaled by the
    size) instead of ``config.epochs`` epochs, so small sets are not also short of steps.
    ``own_map_per_size`` (default): the optimal map used to train on n frames is fitted on those
    n frames alone, so its data-efficiency figure counts every frame it used; False uses the map
    fitted on the whole training part for every size. The common test target is always the
    latter (any valid map's forces are an unbiased target, see the module docstring).
    """
    say = progress or (lambda *_: None)
    if isinstance(level, str):
        if level not in LEVELS:
            raise ValueError(f"level must be one of {sorted(LEVELS)}, got {level!r}")
        level = LEVELS[level]
    n_test = int(round(data.n_frames * test_fraction))
    train_part = np.arange(data.n_frames - n_test)
    test_part = np.arange(data.n_frames - n_test, data.n_frames)
    if max(sizes) > len(train_part):
        raise ValueError(f"sizes: largest {max(sizes)} exceeds the {len(train_part)} training frames")
    all_maps = backbone_maps(data, data.subset(train_part), level)
    table = map_table(all_maps, data, data.subset(test_part))
    chosen = {k: v for k, v in all_maps.items() if k in maps}
    cgs = cg_datasets(data, chosen | {"optimal": all_maps["optimal"]}, level)
    test_x = cgs["optimal"].positions[test_part]
    target = cgs["optimal"].forces[test_part]
    order = np.random.default_rng(seed).permutation(train_part)
    reference = reference_ramachandran(data, level=level)
    residuals: dict[str, list[float]] = {}
    fes: dict[str, dict] = {}
    surfaces: dict[str, FreeEnergy2D] = {"all-atom": reference}
    models: dict[str, TrainedModel] = {}
    for name in chosen:
        residuals[name] = []
        for n in sizes:
            frames = np.sort(order[:n])
            training_set = cgs[name].subset(frames)
            if name == "optimal" and own_map_per_size:
                # the map too is learned from these n frames only: no information from the others
                own = optimal_linear_map(data.subset(frames), all_maps["slice"], data.constraints)
                training_set = cg_datasets(data.subset(frames), {name: own}, level)[name]
            trained = train_model(training_set, epochs_for(config, n, equal_steps), spec, seed)
            residuals[name].append(holdout_residual(trained, test_x, target))
            say(f"{name} n={n}: residual {residuals[name][-1]:.1f} ({trained.seconds:.0f} s)")
        models[name] = trained
        if n_steps > 0:
            cg_train = cgs[name].subset(np.sort(order[: max(sizes)]))
            x = simulate(trained, cg_train, n_replicas, n_steps, jax.random.PRNGKey(seed))
            surface = ramachandran(x, data.kT, level=level)
            surfaces[f"{name} CG"] = surface
            metrics = compare_2d(reference, surface)
            fes[name] = {**metrics, "n_frames": int(len(x))}
            say(f"{name} CG: KL {metrics['kl']:.3f}, MSE {metrics['mse_kJ2_per_mol2']:.2f}")
    efficiency = (
        data_efficiency(np.asarray(sizes), np.asarray(residuals["basic"]), np.asarray(residuals["optimal"]))
        if {"basic", "optimal"} <= set(residuals) else []
    )
    return {
        "level": level.name,
        "seed": int(seed),
        "optimal_map_fitted_per_size": bool(own_map_per_size),
        "epochs_per_size": {int(n): epochs_for(config, n, equal_steps).epochs for n in sizes},
        "cv_labels": list(level.labels),
        "n_frames": data.n_frames,
        "n_test": n_test,
        "sizes": [int(n) for n in sizes],
        "maps": table,
        "residuals": residuals,
        "data_efficiency": efficiency,
        "fes": fes,
        "surfaces": surfaces,
        "models": models,
    }


def plot_residuals(result: dict, path, dpi: int = 90) -> list:
    """Hold-out residual vs training-set size (log x) per map, mean ± std over seeds when the
    result has them; writes PNG and SVG."""
    from jaxcg.analysis import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.4), dpi=dpi, layout="constrained")
    spread = result.get("residual_mean_std")
    for name, values in result["residuals"].items():
        if spread is not None:  # several seeds: mean ± standard deviation
            ax.errorbar(result["sizes"], spread[name]["mean"], yerr=spread[name]["std"], fmt="o-", capsize=3,
                        label=f"{name} ({len(result['per_seed'])} seeds)")
        else:
            ax.plot(result["sizes"], values, "o-", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("training frames")
    ax.set_ylabel("hold-out residual vs f_opt / (kJ/mol/nm)²")
    ax.legend(fontsize=8)
    return _save(fig, path, dpi)
