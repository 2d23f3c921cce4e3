"""Evaluation of CG dynamics against the all-atom reference: PMFs, free-energy surfaces, TICA,
folded fractions, divergences between histograms, and matplotlib figures.

Everything here works on host numpy arrays (trajectories are analysed after the simulation):
positions (T, N, 3) nm, energies kJ/mol, angles in radians, kT in kJ/mol.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxcg import geometry

#: Probability given to bins that are empty in the model histogram, before renormalising.
KL_FLOOR = 1.0e-8


class FreeEnergy1D(NamedTuple):
    """A 1D free-energy profile. centers: (B,), edges: (B+1,), free_energy: (B,) kJ/mol (NaN
    where the histogram is empty, minimum 0), probability: (B,) normalised histogram."""

    centers: np.ndarray
    edges: np.ndarray
    free_energy: np.ndarray
    probability: np.ndarray


class FreeEnergy2D(NamedTuple):
    """A 2D free-energy surface. x_edges (Bx+1,), y_edges (By+1,), free_energy (Bx, By) kJ/mol
    (NaN where empty, minimum 0), probability (Bx, By) normalised histogram."""

    x_edges: np.ndarray
    y_edges: np.ndarray
    free_energy: np.ndarray
    probability: np.ndarray


# ----------------------------------------------------------------------------- features


def pair_distances(positions: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Distances (T, P) nm between bead pairs ``pairs`` (P, 2) in ``positions`` (T, N, 3) nm."""
    positions = _frames(positions, "positions")
    return geometry.distances(positions, _index_array(pairs, 2, positions.shape[1], "pairs"))


def dihedrals(positions: np.ndarray, quadruplets: np.ndarray) -> np.ndarray:
    """Dihedral angles (T, Q) in radians (-pi, pi] of bead quadruplets (Q, 4), IUPAC sign."""
    positions = _frames(positions, "positions")
    return geometry.dihedrals(positions, _index_array(quadruplets, 4, positions.shape[1], "quadruplets"))


def kabsch_rmsd(positions: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """RMSD (T,) nm of each frame of ``positions`` (T, N, 3) to ``reference`` (N, 3) after optimal
    superposition (translation and rotation, Kabsch)."""
    positions = _frames(positions, "positions").astype(np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if reference.shape != positions.shape[1:]:
        raise ValueError(
            f"reference has shape {reference.shape} but frames have shape {positions.shape[1:]}"
        )
    x = positions - positions.mean(axis=1, keepdims=True)
    y = reference - reference.mean(axis=0)
    cov = np.einsum("tni,nj->tij", x, y)
    u, s, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u @ vt))
    s[:, -1] *= sign
    msd = (np.sum(x**2, axis=(1, 2)) + np.sum(y**2) - 2 * s.sum(axis=1)) / x.shape[1]
    return np.sqrt(np.clip(msd, 0.0, None))


def folded_fraction(positions: np.ndarray, reference: np.ndarray, threshold: float) -> float:
    """Fraction of frames within ``threshold`` nm RMSD (Kabsch) of ``reference`` (N, 3) nm."""
    if not threshold > 0:
        raise ValueError(f"threshold must be a positive distance in nm, got {threshold!r}")
    return float(np.mean(kabsch_rmsd(positions, reference) < threshold))


def tica_projection(
    reference: np.ndarray | Sequence[np.ndarray],
    others: Sequence[np.ndarray],
    lagtime: int,
    dim: int = 2,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """TICA (deeptime) fitted on the reference features and applied to reference and others.

    Args:
      reference: features (T, D) or a list of trajectories' features, e.g. pair distances.
      others: feature arrays (T_k, D) to project with the reference's TICA (e.g. CG runs).
      lagtime: in frames of the reference. dim: number of TICA components kept.
    Returns:
      (reference projection (sum T, dim), [projection (T_k, dim) for each of others]).
    """
    try:
        from deeptime.decomposition import TICA
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("tica_projection needs deeptime: pip install 'jaxcg[analysis]'") from error
    trajs = [reference] if isinstance(reference, np.ndarray) else list(reference)
    trajs = [np.asarray(t, dtype=np.float64) for t in trajs]
    if min(t.shape[0] for t in trajs) <= lagtime:
        raise ValueError(f"lagtime ({lagtime}) must be shorter than every reference trajectory")
    model = TICA(lagtime=int(lagtime), dim=int(dim)).fit(trajs).fetch_model()
    ref = np.concatenate([model.transform(t) for t in trajs])
    return ref, [model.transform(np.asarray(o, dtype=np.float64)) for o in others]


# ----------------------------------------------------------------------------- free energies


def pmf_1d(
    values: np.ndarray,
    edges: np.ndarray,
    kT: float,
    weights: np.ndarray | None = None,
    jacobian: str | None = None,
) -> FreeEnergy1D:
    """Potential of mean force F(x) = -kT ln p(x) (kJ/mol, minimum 0) from samples ``values``.

    Args:
      values: samples (any shape, flattened). edges: (B+1,) bin edges in the values' unit.
      kT: kJ/mol. weights: per-sample weights (same shape as values) or None.
      jacobian: None, or "r2" for a pair distance: p(r) is divided by r² (the volume element
        4 pi r² dr), so a flat PMF means no interaction.
    """
    _check_positive_kT(kT)
    edges = np.asarray(edges, dtype=np.float64)
    counts, _ = np.histogram(np.ravel(values), bins=edges, weights=_ravel_or_none(weights))
    centers = 0.5 * (edges[1:] + edges[:-1])
    prob = _normalise(counts)
    density = prob / np.diff(edges)
    if jacobian == "r2":
        density = density / centers**2
    elif jacobian is not None:
        raise ValueError(f"jacobian must be None or 'r2', got {jacobian!r}")
    return FreeEnergy1D(centers, edges, _free_energy(density, kT), prob)


def fes_2d(
    x: np.ndarray,
    y: np.ndarray,
    x_edges: np.ndarray,
    y_edges: np.ndarray,
    kT: float,
    weights: np.ndarray | None = None,
) -> FreeEnergy2D:
    """Free-energy surface F(x, y) = -kT ln p(x, y) (kJ/mol, minimum 0), e.g. of phi/psi angles."""
    _check_positive_kT(kT)
    x, y = np.ravel(x), np.ravel(y)
    if x.shape != y.shape:
        raise ValueError(f"x has {x.size} samples but y has {y.size}")
    counts, xe, ye = np.histogram2d(x, y, bins=[x_edges, y_edges], weights=_ravel_or_none(weights))
    prob = _normalise(counts)
    area = np.outer(np.diff(xe), np.diff(ye))
    return FreeEnergy2D(xe, ye, _free_energy(prob / area, kT), prob)


def _free_energy(density: np.ndarray, kT: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        free = -kT * np.log(density)
    free[~np.isfinite(free)] = np.nan
    if np.all(np.isnan(free)):
        return free
    return free - np.nanmin(free)


# ----------------------------------------------------------------------------- metrics


def kl_divergence(p: np.ndarray, q: np.ndarray, floor: float = KL_FLOOR) -> float:
    """KL(p || q) = Σ p ln(p / q) in nats between histograms on the same bins.

    ``p`` (the reference) and ``q`` (the model) are counts or probabilities of any shape; each is
    normalised; bins empty in q but not in p get probability ``floor`` and q is renormalised;
    bins empty in p contribute 0 (so identical histograms give exactly 0).
    """
    p, q = _same_shape(p, q)
    if floor <= 0:
        raise ValueError(f"floor must be positive, got {floor!r}")
    p, q = _normalise(p), _normalise(q)
    q = _normalise(np.where((q == 0) & (p > 0), floor, q))
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def free_energy_mse(f_ref: np.ndarray, f_model: np.ndarray) -> float:
    """Mean squared difference (kJ/mol)² of two free energies over bins finite in both.

    Free energies are defined up to a constant: each is shifted to mean zero over the common
    bins first. Returns NaN if no bin is populated in both.
    """
    f_ref, f_model = _same_shape(f_ref, f_model)
    both = np.isfinite(f_ref) & np.isfinite(f_model)
    if not both.any():
        return float("nan")
    a = f_ref[both] - f_ref[both].mean()
    b = f_model[both] - f_model[both].mean()
    return float(np.mean((a - b) ** 2))


def wasserstein_1d(u: np.ndarray, v: np.ndarray) -> float:
    """Wasserstein-1 (earth mover's) distance between two 1D samples, in their unit.

    W1 = ∫ |F_u(x) - F_v(x)| dx with F the empirical CDFs.
    """
    u, v = np.sort(np.ravel(u).astype(np.float64)), np.sort(np.ravel(v).astype(np.float64))
    if u.size == 0 or v.size == 0:
        raise ValueError(f"both samples must be non-empty, got {u.size} and {v.size} values")
    grid = np.sort(np.concatenate([u, v]))
    cdf_u = np.searchsorted(u, grid[:-1], side="right") / u.size
    cdf_v = np.searchsorted(v, grid[:-1], side="right") / v.size
    return float(np.sum(np.abs(cdf_u - cdf_v) * np.diff(grid)))


def compare_1d(
    reference: np.ndarray, model: np.ndarray, edges: np.ndarray, kT: float,
    jacobian: str | None = None,
) -> tuple[dict[str, float], FreeEnergy1D, FreeEnergy1D]:
    """KL, free-energy MSE and W1 between reference and model samples of one 1D quantity.

    Raises ValueError for degenerate input (fewer than 2 populated bins in either histogram),
    where KL 0 and MSE 0 would report a perfect match that was never measured.
    """
    ref = pmf_1d(reference, edges, kT, jacobian=jacobian)
    cg = pmf_1d(model, edges, kT, jacobian=jacobian)
    _check_not_degenerate(ref.probability, "reference")
    _check_not_degenerate(cg.probability, "model")
    metrics = {
        "kl": kl_divergence(ref.probability, cg.probability),
        "mse_kJ2_per_mol2": free_energy_mse(ref.free_energy, cg.free_energy),
        "wasserstein1": wasserstein_1d(reference, model),
    }
    return metrics, ref, cg


def compare_2d(ref: FreeEnergy2D, model: FreeEnergy2D) -> dict[str, float]:
    """KL and free-energy MSE between two surfaces on the same bins (degenerate input, fewer
    than 2 populated bins in either, raises ValueError)."""
    _check_not_degenerate(ref.probability, "reference")
    _check_not_degenerate(model.probability, "model")
    return {
        "kl": kl_divergence(ref.probability, model.probability),
        "mse_kJ2_per_mol2": free_energy_mse(ref.free_energy, model.free_energy),
    }


# ----------------------------------------------------------------------------- figures


def plot_pmfs(
    profiles: Mapping[str, FreeEnergy1D],
    path: str | os.PathLike,
    xlabel: str = "distance / nm",
    title: str | None = None,
    size: tuple[float, float] = (5.0, 3.5),
    dpi: int = 100,
) -> list[Path]:
    """Overlay 1D PMFs (one line per label); writes ``path`` with suffix .png and .svg."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=size, dpi=dpi, layout="constrained")
    for label, profile in profiles.items():
        ax.plot(profile.centers, profile.free_energy, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("free energy / kJ/mol")
    if title:
        ax.set_title(title)
    ax.legend()
    return _save(fig, path, dpi)


def plot_fes(
    surfaces: Mapping[str, FreeEnergy2D],
    path: str | os.PathLike,
    xlabel: str = "phi / rad",
    ylabel: str = "psi / rad",
    vmax: float | None = None,
    size: tuple[float, float] = (12.0, 3.6),
    dpi: int = 100,
) -> list[Path]:
    """Free-energy surfaces side by side and, for two surfaces, their difference (second minus
    first, each shifted to mean zero over common bins); writes .png and .svg."""
    plt = _pyplot()
    items = list(surfaces.items())
    n_panels = len(items) + (1 if len(items) == 2 else 0)
    fig, axes = plt.subplots(1, n_panels, figsize=size, dpi=dpi, layout="constrained",
                             squeeze=False)
    finite = [s.free_energy[np.isfinite(s.free_energy)] for _, s in items]
    top = vmax if vmax is not None else max((f.max() for f in finite if f.size), default=1.0)
    for ax, (label, surface) in zip(axes[0], items, strict=False):
        mesh = ax.pcolormesh(surface.x_edges, surface.y_edges, surface.free_energy.T,
                             vmin=0.0, vmax=top, cmap="viridis")
        ax.set_title(label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        fig.colorbar(mesh, ax=ax, label="free energy / kJ/mol")
    if len(items) == 2:
        (la, a), (lb, b) = items
        diff = _centred_difference(a.free_energy, b.free_energy)
        bound = np.nanmax(np.abs(diff)) if np.isfinite(diff).any() else 1.0
        ax = axes[0][-1]
        mesh = ax.pcolormesh(a.x_edges, a.y_edges, diff.T, cmap="RdBu_r", vmin=-bound, vmax=bound)
        ax.set_title(f"{lb} - {la}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        fig.colorbar(mesh, ax=ax, label="difference / kJ/mol")
    return _save(fig, path, dpi)


def plot_prior_profiles(profiles, path: str | os.PathLike, columns: int = 4, dpi: int = 90) -> list[Path]:
    """One panel per fitted prior term (``jaxcg.priors.TermProfile``: kind, beads, grid, energy,
    empirical, populated): the fitted term over its whole range (line, kJ/mol) beside the data's
    −kT log(p/J) (dots), with the bins that hold no data shaded, so a well where the data never go
    is seen at a glance. Writes .png and .svg."""
    plt = _pyplot()
    profiles = list(profiles)
    if not profiles:
        raise ValueError("profiles is empty: nothing to plot (a prior fitted by fit_prior has one per bonded term)")
    rows = -(-len(profiles) // columns)
    fig, axes = plt.subplots(rows, min(columns, len(profiles)), figsize=(3.0 * min(columns, len(profiles)), 2.4 * rows),
                             dpi=dpi, layout="constrained", squeeze=False)
    for ax, profile in zip(axes.ravel(), profiles, strict=False):
        width = profile.grid[1] - profile.grid[0] if len(profile.grid) > 1 else 1.0
        for x in profile.grid[~profile.populated]:
            ax.axvspan(x - width / 2, x + width / 2, color="0.92", lw=0)
        ax.plot(profile.grid, profile.energy, "-", color="C0", label="prior")
        ax.plot(profile.grid, profile.empirical, ".", color="C1", ms=3, label="data")
        finite = profile.empirical[np.isfinite(profile.empirical)]
        top = max(float(finite.max()) if finite.size else 1.0, 1.0) * 1.5
        ax.set_ylim(min(-1.0, float(np.min(profile.energy)) - 1.0), top)
        unit = "nm" if profile.kind == "bond" else "rad"
        ax.set_xlabel(f"{profile.kind} {list(profile.beads)} / {unit}")
        ax.set_ylabel("kJ/mol")
    for ax in axes.ravel()[len(profiles):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    return _save(fig, path, dpi)


def plot_projection(
    projections: Mapping[str, np.ndarray], path: str | os.PathLike, kT: float, bins: int = 40,
    size: tuple[float, float] = (10.0, 3.6), dpi: int = 100,
) -> list[Path]:
    """Free energy over the first two TICA components for each dataset, side by side."""
    stacked = np.concatenate([p[:, :2] for p in projections.values()])
    xe = np.linspace(stacked[:, 0].min(), stacked[:, 0].max(), bins + 1)
    ye = np.linspace(stacked[:, 1].min(), stacked[:, 1].max(), bins + 1)
    surfaces = {k: fes_2d(p[:, 0], p[:, 1], xe, ye, kT) for k, p in projections.items()}
    return plot_fes(surfaces, path, xlabel="TIC 1", ylabel="TIC 2", size=size, dpi=dpi)


def save_metrics(path: str | os.PathLike, metrics: Mapping[str, object]) -> Path:
    """Write ``metrics`` as indented JSON (NaN written as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(metrics), indent=2))
    return path


# ----------------------------------------------------------------------------- helpers


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("figures need matplotlib: pip install 'jaxcg[analysis]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike, dpi: int) -> list[Path]:
    plt = _pyplot()
    stem = Path(path).with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for suffix in (".png", ".svg"):
        target = stem.with_suffix(suffix)
        fig.savefig(target, dpi=dpi)
        out.append(target)
    plt.close(fig)
    return out


def _centred_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    both = np.isfinite(a) & np.isfinite(b)
    diff = np.full(a.shape, np.nan)
    if both.any():
        diff[both] = (b[both] - b[both].mean()) - (a[both] - a[both].mean())
    return diff


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _normalise(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    if np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError("histogram counts must be finite and non-negative")
    total = counts.sum()
    if total <= 0:
        raise ValueError("histogram is empty: no sample fell inside the bins")
    return counts / total


def _check_not_degenerate(probability: np.ndarray, name: str, min_bins: int = 2) -> None:
    populated = int(np.count_nonzero(np.asarray(probability) > 0))
    if populated < min_bins:
        raise ValueError(
            f"{name} histogram is degenerate: {populated} populated bin(s), at least {min_bins} "
            "needed for a meaningful KL/MSE (constant or too few samples, or bins too wide)"
        )


def _same_shape(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"histograms must share bins: shapes {a.shape} and {b.shape} differ")
    return a, b


def _ravel_or_none(weights: np.ndarray | None) -> np.ndarray | None:
    return None if weights is None else np.ravel(weights)


def _check_positive_kT(kT: float) -> None:
    if not np.isfinite(kT) or kT <= 0:
        raise ValueError(f"kT must be a positive energy in kJ/mol, got {kT!r}")


def _frames(positions: np.ndarray, name: str) -> np.ndarray:
    positions = np.asarray(positions)
    if positions.ndim == 2:
        positions = positions[None]
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise ValueError(f"{name} must have shape (T, N, 3), got {positions.shape}")
    return positions


def _index_array(index: np.ndarray, width: int, n_beads: int, name: str) -> np.ndarray:
    index = np.asarray(index, dtype=np.int64).reshape(-1, width)
    if index.size and (index.min() < 0 or index.max() >= n_beads):
        raise ValueError(
            f"{name} index beads {index.min()}..{index.max()} but there are {n_beads} beads"
        )
    return index
