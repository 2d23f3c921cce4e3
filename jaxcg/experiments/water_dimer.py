"""The paper's first experiment: an O-only CG water dimer learned from slice, basic and optimal
force maps, compared with the reference PMF of the O–O distance.

The CG model is ``RBFPairPotential`` (Σ_k c_k φ_k(r) of the O–O distance r), trained by force
matching with Adam. Its energy *is* the PMF of r. The reference PMF comes from the all-atom O–O
distance histogram by Boltzmann inversion with the r² Jacobian, W(r) = −kT ln(p(r) / r²).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcg.analysis import FreeEnergy1D, pair_distances, pmf_1d
from jaxcg.data import AtomisticData
from jaxcg.maps import (
    LinearMap,
    apply_map,
    basic_aggregation_map,
    mean_squared_mapped_force,
    optimal_linear_map,
    slice_map,
)
from jaxcg.models import RBFPairPotential, force_fn
from jaxcg.optim import fit_loss

#: Window (nm) over which PMFs are compared, as in the paper.
PMF_WINDOW = (0.25, 0.8)
#: Bin edges (nm) of the O–O distance histograms.
PMF_EDGES = np.linspace(0.2, 1.0, 81)
MAP_NAMES = ("slice", "basic", "optimal")


@dataclasses.dataclass(frozen=True)
class MapResult:
    """One map's outcome: its noise, the learned PMF and its error against the reference."""

    name: str
    mean_sq_force: float  # E Σ_beads ‖f‖², (kJ/mol/nm)², on the training frames
    pmf: FreeEnergy1D  # learned U(r) on the reference bins, kJ/mol, minimum 0 in the window
    rmse: float  # kJ/mol over PMF_WINDOW, both profiles relative to their minimum
    n_train: int


def oxygen_maps(data: AtomisticData, train: AtomisticData) -> dict[str, LinearMap]:
    """Slice, basic and optimal force maps to one bead per oxygen (optimal fitted on ``train``)."""
    oxygens = slice_map(data.topology, "element O")
    return {
        "slice": oxygens,
        "basic": basic_aggregation_map(oxygens, data.constraints),
        "optimal": optimal_linear_map(train, oxygens, data.constraints),
    }


def reference_pmf(data: AtomisticData, edges: np.ndarray = PMF_EDGES) -> FreeEnergy1D:
    """PMF of the O–O distance from all frames of ``data`` (kJ/mol, minimum 0)."""
    oxygens = data.topology.select("element O")
    r = pair_distances(data.positions, np.array([oxygens]))
    return pmf_1d(r, edges, data.kT, jacobian="r2")


def _relative_to_window_minimum(profile: np.ndarray, centers: np.ndarray) -> np.ndarray:
    inside = (centers >= PMF_WINDOW[0]) & (centers <= PMF_WINDOW[1]) & np.isfinite(profile)
    return profile - np.min(profile[inside])


def pmf_rmse(reference: FreeEnergy1D, learned: FreeEnergy1D) -> float:
    """RMSE (kJ/mol) over PMF_WINDOW of two profiles on the same bins, each relative to its minimum."""
    centers = reference.centers
    ref = _relative_to_window_minimum(reference.free_energy, centers)
    model = _relative_to_window_minimum(learned.free_energy, centers)
    inside = (centers >= PMF_WINDOW[0]) & (centers <= PMF_WINDOW[1]) & np.isfinite(ref)
    return float(np.sqrt(np.mean((ref[inside] - model[inside]) ** 2)))


def learned_pmf(model: RBFPairPotential, params, edges: np.ndarray = PMF_EDGES) -> FreeEnergy1D:
    """The pair potential U(r) on the bin centres (kJ/mol, minimum 0 inside PMF_WINDOW)."""
    centers = 0.5 * (edges[1:] + edges[:-1])
    x = jnp.zeros((centers.size, 2, 3), jnp.float32).at[:, 1, 0].set(jnp.asarray(centers, jnp.float32))
    energies = np.asarray(jax.vmap(model.energy, in_axes=(None, 0))(params, x), np.float64)
    return FreeEnergy1D(centers, edges, _relative_to_window_minimum(energies, centers), np.full(centers.size, np.nan))


def train_pair_potential(
    positions: np.ndarray,
    forces: np.ndarray,
    seed: int = 0,
    steps: int = 20000,
    n_basis: int = 32,
    learning_rate: float = 0.5,
) -> tuple[RBFPairPotential, dict]:
    """Force-match an RBF pair potential to CG frames with Adam (full batch, cosine schedule).

    The model's forces are linear in its coefficients, F_model = D c, so the loss
    mean_t Σ_i ‖f_ti − (D c)_ti‖² / N is the quadratic cᵀ H c − 2 cᵀ b + const with H = DᵀD / (T N),
    b = Dᵀf / (T N), accumulated once. Adam then runs ``steps`` exact full-batch steps of that loss
    inside one ``lax.scan`` (``jaxcg.optim.fit_loss`` with H and b as its one frame); the loss is convex, so this reaches the optimum minibatch epochs reach,
    at a cost independent of T.

    Args:
      positions: (T, 2, 3) nm. forces: (T, 2, 3) kJ/mol/nm. seed: initialisation key.
    """
    model = RBFPairPotential(n_beads=2, n_basis=n_basis, r_min=0.2, r_max=1.2)
    x = jnp.asarray(positions, jnp.float32)
    f = jnp.asarray(forces, jnp.float32)
    params = model.init(jax.random.PRNGKey(seed), x[0])
    model_forces = force_fn(model.energy)
    design = jax.vmap(jax.jacfwd(lambda c, xi: model_forces({"coefficients": c}, xi)), in_axes=(None, 0))(
        params["coefficients"], x
    ).reshape(-1, n_basis)  # (T·2·3, K)
    scale = 1.0 / x.shape[0] / x.shape[1]
    hessian = design.T @ design * scale
    target = design.T @ f.reshape(-1) * scale
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=1e-3))

    def loss_fn(c, batch):  # batch.data: the one "frame" (H (1, K, K), b (1, K))
        h, b = batch.data
        return c @ h[0] @ c - 2.0 * c @ b[0]

    coefficients, _, _ = fit_loss(
        loss_fn, params["coefficients"], (hessian[None], target[None]), optimizer, steps=steps, batch_size=1,
        key=jax.random.PRNGKey(seed), chunk_steps=steps, name="train_pair_potential",
    )
    return model, {"coefficients": coefficients}


def run_water_dimer(
    data: AtomisticData,
    n_train: int | None = None,
    seed: int = 0,
    steps: int = 20000,
    maps: tuple[str, ...] = MAP_NAMES,
    reference: FreeEnergy1D | None = None,
) -> list[MapResult]:
    """Map, train and compare for each map on the first ``n_train`` frames after a seeded shuffle.

    The reference PMF uses all frames of ``data``; the force maps and the potentials see only the
    training frames.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(data.n_frames)
    n_train = data.n_frames if n_train is None else int(n_train)
    train = data.subset(np.sort(order[:n_train]))
    reference = reference_pmf(data) if reference is None else reference
    results = []
    for name, linear_map in oxygen_maps(data, train).items():
        if name not in maps:
            continue
        x, f = apply_map(linear_map, jnp.asarray(train.positions), jnp.asarray(train.forces))
        model, params = train_pair_potential(np.asarray(x), np.asarray(f), seed=seed, steps=steps)
        learned = learned_pmf(model, params)
        results.append(
            MapResult(
                name=name,
                mean_sq_force=float(mean_squared_mapped_force(linear_map, train.forces)),
                pmf=learned,
                rmse=pmf_rmse(reference, learned),
                n_train=n_train,
            )
        )
    return results


def plot_water_dimer_pmfs(
    panels: dict[str, tuple[FreeEnergy1D, list[MapResult]]], path, dpi: int = 110
) -> list:
    """One panel per dataset: reference PMF and the PMF learned from each map; PNG and SVG."""
    from jaxcg.analysis import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), dpi=dpi,
                             layout="constrained", squeeze=False)
    styles = {"slice": (":", "tab:red"), "basic": ("--", "tab:blue"), "optimal": ("-", "tab:green")}
    for ax, (title, (reference, results)) in zip(axes[0], panels.items(), strict=True):
        centers = reference.centers
        ref = _relative_to_window_minimum(reference.free_energy, centers)
        ax.plot(centers, ref, color="black", lw=2.5, alpha=0.6, label="reference (all-atom)")
        for result in results:
            style, color = styles.get(result.name, ("-", None))
            ax.plot(centers, result.pmf.free_energy, style, color=color,
                    label=f"{result.name} map (RMSE {result.rmse:.2f} kJ/mol)")
        ax.axvspan(*PMF_WINDOW, color="0.92", zorder=0)
        finite = ref[np.isfinite(ref)]
        ax.set_ylim(-2.0, max(15.0, float(np.nanmax(finite[: finite.size])) if finite.size else 15.0) + 2.0)
        ax.set_xlim(0.22, 0.95)
        ax.set_xlabel("O–O distance r / nm")
        ax.set_ylabel("PMF W(r) / kJ/mol")
        ax.set_title(title)
        ax.legend(fontsize=8)
    return _save(fig, path, dpi)
