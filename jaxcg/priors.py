"""Physical prior energies of a CG model, fitted by Boltzmann inversion of the mapped data.

Terms (all energies in kJ/mol, lengths in nm, angles in radians):

- bonds, harmonic:          U = ½ k_b (r − r0)²               over ``terms.bonds`` (B, 2)
- angles, harmonic:         U = ½ k_θ (θ − θ0)²               over ``terms.angles`` (A, 3)
- dihedrals, Fourier:       U = Σ_n a_n cos(nφ) + b_n sin(nφ) over ``terms.dihedrals`` (D, 4)
- repulsion, soft wall:     U = ½ k_rep max(σ − r, 0)²        over ``terms.pairs`` (P, 2)

Parameters are kept **per term** (one value per bond, angle, dihedral or pair), not per bead-type
tuple: CA models of small proteins have few enough terms, and per-term values are what Boltzmann
inversion of one molecule gives. Share values across identical type tuples yourself if needed.

Bonded graph: ``CGData.bonds``; angles are the bonded triples i-j-k and dihedrals the bonded
quadruples i-j-k-l (paths in the bond graph); repulsion acts between pairs further apart than
``exclusion_hops`` bonds. Fitting (``fit_prior``), at the data's kT:

- bonds/angles: a weighted quadratic fit to −kT log(p(r)/r²) and −kT log(p(θ)/sin θ);
- dihedrals: maximum likelihood of the samples under p(φ) ∝ exp(−U(φ)/kT) (no bins, so no
  empty bin is left unconstrained: U is high wherever the data never go);
- repulsion: σ = the smallest distance of each pair seen in the data, k_rep fixed.

A least-squares fit of −kT log p over the populated bins only, the textbook recipe, leaves the
series free where there is no data; on alanine dipeptide it put a 290 kJ/mol well at φ ≈ +65°,
where the molecule never goes. ``fit_prior`` keeps each term's profile (``TermProfile``) and warns
(``PriorWellWarning``) when a term is lower outside its data than inside.

``Prior`` gives the uniform model interface of ``jaxcg.models``: ``init(key, x) -> params`` and
``energy(params, x) -> scalar``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcg.bond_graph import adjacency, hop_distances
from jaxcg.data import CGData

# The geometry of the terms (re-exported under the names this module has always had).
from jaxcg.geometry import angles as bond_angles
from jaxcg.geometry import dihedrals as dihedral_angles
from jaxcg.geometry import distances as bond_lengths


class PriorTerms(NamedTuple):
    """The static graph of a prior (numpy integer arrays, not traced).

    Attributes:
      bonds: (B, 2) bead indices. angles: (A, 3). dihedrals: (D, 4). pairs: (P, 2) non-bonded.
    """

    bonds: np.ndarray
    angles: np.ndarray
    dihedrals: np.ndarray
    pairs: np.ndarray


class PriorParams(NamedTuple):
    """Prior parameters, a PyTree of float arrays, one value per term.

    Attributes:
      bond_k: (B,) kJ/mol/nm². bond_r0: (B,) nm.
      angle_k: (A,) kJ/mol/rad². angle_theta0: (A,) rad.
      dihedral_cos: (D, H) kJ/mol, a_n for n = 1..H. dihedral_sin: (D, H) kJ/mol, b_n.
      repulsion_sigma: (P,) nm. repulsion_k: () kJ/mol/nm².
    """

    bond_k: jax.Array
    bond_r0: jax.Array
    angle_k: jax.Array
    angle_theta0: jax.Array
    dihedral_cos: jax.Array
    dihedral_sin: jax.Array
    repulsion_sigma: jax.Array
    repulsion_k: jax.Array


def prior_terms(n_beads: int, bonds: np.ndarray, exclusion_hops: int = 3) -> PriorTerms:
    """Angles, dihedrals and repulsive pairs from the bonded graph.

    Args:
      n_beads: N.
      bonds: (B, 2) int bead pairs.
      exclusion_hops: pairs at most this many bonds apart get no repulsion (3: 1-2, 1-3, 1-4).

    Returns:
      PriorTerms; angles (i, j, k) with i < k, dihedrals (i, j, k, l) with i < l, each once.
    """
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    neighbours = adjacency(n_beads, bonds)
    angles = [
        (i, j, k) for j in range(n_beads) for i in neighbours[j] for k in neighbours[j] if i < k
    ]
    dihedrals = []
    for j, k in bonds:
        for i in neighbours[j]:
            for m in neighbours[k]:
                if len({i, int(j), int(k), m}) == 4:
                    quad = (i, int(j), int(k), m)
                    dihedrals.append(quad if i < m else quad[::-1])
    dihedrals = sorted(set(dihedrals))
    hops = hop_distances(n_beads, bonds)
    ii, jj = np.triu_indices(n_beads, k=1)
    far = hops[ii, jj] > exclusion_hops
    return PriorTerms(
        bonds=bonds,
        angles=np.asarray(angles, dtype=np.int64).reshape(-1, 3),
        dihedrals=np.asarray(dihedrals, dtype=np.int64).reshape(-1, 4),
        pairs=np.stack([ii[far], jj[far]], axis=1).astype(np.int64).reshape(-1, 2),
    )


# ----------------------------------------------------------------------------- energy


def prior_energy(terms: PriorTerms, params: PriorParams, x: jax.Array) -> jax.Array:
    """Total prior energy in kJ/mol of one configuration x: (N, 3) nm. Pure and jittable."""
    dtype = x.dtype
    energy = jnp.zeros((), dtype)
    if len(terms.bonds):
        dr = bond_lengths(x, terms.bonds) - params.bond_r0
        energy = energy + 0.5 * jnp.sum(params.bond_k * dr * dr)
    if len(terms.angles):
        dt = bond_angles(x, terms.angles) - params.angle_theta0
        energy = energy + 0.5 * jnp.sum(params.angle_k * dt * dt)
    if len(terms.dihedrals):
        phi = dihedral_angles(x, terms.dihedrals)
        n = jnp.arange(1, params.dihedral_cos.shape[-1] + 1, dtype=dtype)
        nphi = phi[:, None] * n
        energy = energy + jnp.sum(
            params.dihedral_cos * jnp.cos(nphi) + params.dihedral_sin * jnp.sin(nphi)
        )
    if len(terms.pairs):
        gap = jnp.maximum(params.repulsion_sigma - bond_lengths(x, terms.pairs), 0.0)
        energy = energy + 0.5 * params.repulsion_k * jnp.sum(gap * gap)
    return energy


class Prior:
    """A fitted prior with the model interface of ``jaxcg.models``.

    ``init(key, x)`` returns the fitted ``PriorParams`` (the key is unused); ``energy(params, x)``
    is ``prior_energy`` of one configuration x: (N, 3) nm, in kJ/mol. ``profiles``: the
    ``TermProfile`` of each bonded term when fitted by ``fit_prior`` (empty otherwise).
    """

    def __init__(self, terms: PriorTerms, params: PriorParams, profiles: tuple = ()):
        self.terms = terms
        self.params = params
        self.profiles = profiles  # TermProfile per bonded term when fitted by fit_prior

    def init(self, key: jax.Array, positions: jax.Array) -> PriorParams:
        del key
        return jax.tree.map(lambda p: jnp.asarray(p, dtype=jnp.asarray(positions).dtype), self.params)

    def energy(self, params: PriorParams, x: jax.Array) -> jax.Array:
        return prior_energy(self.terms, params, x)


# ----------------------------------------------------------------------------- fitting


def _histogram(values: np.ndarray, bins: int, lo: float, hi: float, weights: np.ndarray | None):
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi), weights=weights)
    return counts, 0.5 * (edges[1:] + edges[:-1])


def _harmonic_fit(
    values: np.ndarray, kT: float, jacobian, bins: int, weights: np.ndarray | None, name: str
) -> tuple[float, float]:
    """(k, x0) of ½ k (x − x0)² fitted to −kT log(p(x)/J(x)) by weighted quadratic least squares."""
    mean, std = float(np.average(values, weights=weights)), float(np.sqrt(np.cov(values, aweights=weights)))
    if not np.isfinite(std) or std <= 0:
        raise ValueError(f"cannot fit the {name}: its values do not fluctuate (std {std})")
    lo, hi = mean - 4.0 * std, mean + 4.0 * std
    counts, centers = _histogram(values, bins, lo, hi, weights)
    keep = (counts > 0) & (jacobian(centers) > 0)
    if keep.sum() < 3:
        raise ValueError(f"cannot fit the {name}: fewer than 3 populated histogram bins")
    u = -kT * np.log(counts[keep] / jacobian(centers[keep]))
    # Poisson counts: var(log c) ≈ 1/c, so weight residuals by sqrt(c).
    a, b, _ = np.polyfit(centers[keep], u, 2, w=np.sqrt(counts[keep]))
    k = 2.0 * a
    if k <= 0:
        # Not confined: fall back to the Gaussian (moment) estimate.
        return kT / std**2, mean
    return float(k), float(-b / (2.0 * a))


def _fourier_basis(phi: np.ndarray, n_harmonics: int) -> np.ndarray:
    """(..., 2H) cos(nφ), n = 1..H, then sin(nφ)."""
    n = np.arange(1, n_harmonics + 1)
    nphi = np.asarray(phi, np.float64)[..., None] * n
    return np.concatenate([np.cos(nphi), np.sin(nphi)], axis=-1)


def _fourier_fit(
    phi: np.ndarray, kT: float, n_harmonics: int, weights: np.ndarray | None, ridge: float = 1e-4,
    grid_points: int = 720, max_iter: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), each (H,) kJ/mol, of U(φ) = Σ a_n cos nφ + b_n sin nφ by maximum likelihood.

    Maximises the mean log-density of the samples under p(φ) ∝ exp(−U(φ)/kT) (a convex problem in
    the coefficients, solved by Newton's method with the normaliser on a uniform periodic grid).
    Unlike a fit of −kT log p over histogram bins, this uses every sample and no bins: where there
    are no samples the fitted density is as small as H harmonics allow, so U rises there instead
    of being left unconstrained. ``ridge`` penalises Σ (c/kT)² (dimensionless) to keep the
    problem well posed when the samples are concentrated.
    """
    w = np.ones(len(phi)) if weights is None else np.asarray(weights, np.float64)
    target = np.average(_fourier_basis(phi, n_harmonics), axis=0, weights=w)  # data moments (2H,)
    grid = np.linspace(-np.pi, np.pi, grid_points, endpoint=False)
    basis = _fourier_basis(grid, n_harmonics)  # (K, 2H)

    def objective(theta):
        logits = -basis @ theta
        shift = logits.max()
        p = np.exp(logits - shift)
        z = p.sum()
        return theta @ target + np.log(z) + shift + ridge * theta @ theta, p / z

    theta = np.zeros(2 * n_harmonics)
    value, p = objective(theta)
    for _ in range(max_iter):
        mean = p @ basis
        grad = target - mean + 2.0 * ridge * theta
        centred = basis - mean
        hessian = (centred * p[:, None]).T @ centred + 2.0 * ridge * np.eye(len(theta))
        step = np.linalg.solve(hessian, grad)
        t = 1.0
        while True:  # backtracking: the objective is convex, a Newton step with damping converges
            new_value, new_p = objective(theta - t * step)
            if new_value <= value - 1e-4 * t * grad @ step or t < 1e-8:
                break
            t *= 0.5
        theta, value, p = theta - t * step, new_value, new_p
        if abs(grad @ step) < 1e-12:
            break
    coef = kT * theta
    return coef[:n_harmonics], coef[n_harmonics:]


class TermProfile(NamedTuple):
    """One fitted prior term over its whole range, beside the data it was fitted to.

    Attributes:
      kind: "bond" (nm), "angle" (rad) or "dihedral" (rad). beads: the term's bead indices.
      grid: (K,) bin centres over the whole range. energy: (K,) fitted term, kJ/mol, shifted so
        that its minimum over the populated bins is 0. empirical: (K,) −kT log(p/J) of the data,
        kJ/mol on the same shift (NaN in empty bins; J = r² for bonds, sin θ for angles, 1 for
        dihedrals). populated: (K,) bool, bins holding data.
      well_outside: how far (kJ/mol) the term's lowest point outside the data lies below its
        lowest point inside (0 when it is nowhere lower): a well the data did not ask for.
    """

    kind: str
    beads: tuple[int, ...]
    grid: np.ndarray
    energy: np.ndarray
    empirical: np.ndarray
    populated: np.ndarray
    well_outside: float


class PriorWellWarning(UserWarning):
    """A fitted prior term is lower where there is no data than where there is."""


def _profile(kind, beads, values, weights, kT, lo, hi, bins, energy_fn, jacobian) -> TermProfile:
    counts, centers = _histogram(values, bins, lo, hi, weights)
    populated = counts > 0
    energy = energy_fn(centers)
    inside = energy[populated].min()
    with np.errstate(divide="ignore", invalid="ignore"):
        empirical = np.where(populated, -kT * np.log(counts / counts.sum() / jacobian(centers)), np.nan)
    empirical = empirical - np.nanmin(empirical) if populated.any() else empirical
    outside = energy[~populated].min() if (~populated).any() else np.inf
    return TermProfile(kind, tuple(int(b) for b in beads), centers, energy - inside, empirical,
                       populated, float(max(0.0, inside - outside)))


def fit_prior(
    data: CGData,
    n_harmonics: int = 4,
    exclusion_hops: int = 3,
    repulsion_k: float = 5000.0,
    bins: int = 60,
    dtype: jnp.dtype = jnp.float32,
    well_tolerance_kT: float = 0.5,
) -> Prior:
    """Fit every prior term by Boltzmann inversion of ``data`` at its kT.

    No term may invent a well where there is no data: harmonic bonds and angles rise on both
    sides of the data by construction (k > 0 is enforced); dihedrals are fitted by maximum
    likelihood over all samples (``_fourier_fit``), so their energy is high where no sample lies;
    the repulsive wall is zero at every distance seen and rises below the smallest one. Each
    term's profile over its whole range is kept in ``Prior.profiles``, and a ``PriorWellWarning``
    names every term whose energy somewhere outside the data is more than ``well_tolerance_kT``
    below its minimum inside.

    Args:
      data: CGData with positions (T, N, 3) nm, bonds (B, 2) and temperature (K); frame weights
        are honoured.
      n_harmonics: H, Fourier terms per dihedral.
      exclusion_hops: see ``prior_terms``.
      repulsion_k: stiffness of the repulsive wall, kJ/mol/nm².
      bins: histogram bins per term (harmonic fits and profiles).
      dtype: dtype of the returned parameters.
      well_tolerance_kT: warn when a term is lower outside the data than inside by more than this
        many kT.

    Returns:
      A ``Prior`` holding the terms, the fitted ``PriorParams`` and the term profiles.
    """
    import warnings

    if n_harmonics < 1:
        raise ValueError(f"n_harmonics must be >= 1, got {n_harmonics}")
    x = np.asarray(data.positions, dtype=np.float64)
    kT = data.kT
    w = None if data.weights is None else np.asarray(data.weights, dtype=np.float64)
    terms = prior_terms(data.n_beads, data.bonds, exclusion_hops)
    r = np.asarray(bond_lengths(x, terms.bonds)) if len(terms.bonds) else np.zeros((len(x), 0))
    bonds = [
        _harmonic_fit(r[:, b], kT, lambda c: c**2, bins, w, f"bond {terms.bonds[b].tolist()}")
        for b in range(len(terms.bonds))
    ]
    theta = np.asarray(bond_angles(x, terms.angles)) if len(terms.angles) else np.zeros((len(x), 0))
    angles = [
        _harmonic_fit(theta[:, a], kT, np.sin, bins, w, f"angle {terms.angles[a].tolist()}")
        for a in range(len(terms.angles))
    ]
    phi = np.asarray(dihedral_angles(x, terms.dihedrals)) if len(terms.dihedrals) else np.zeros((len(x), 0))
    fourier = [_fourier_fit(phi[:, d], kT, n_harmonics, w) for d in range(len(terms.dihedrals))]
    dist = np.asarray(bond_lengths(x, terms.pairs)) if len(terms.pairs) else np.zeros((len(x), 0))

    profiles = []
    for b, (k, r0) in enumerate(bonds):
        hi = 1.5 * float(r[:, b].max())
        profiles.append(_profile("bond", terms.bonds[b], r[:, b], w, kT, 0.0, hi, bins,
                                 lambda c, k=k, r0=r0: 0.5 * k * (c - r0) ** 2, lambda c: c**2))
    for a, (k, t0) in enumerate(angles):
        profiles.append(_profile("angle", terms.angles[a], theta[:, a], w, kT, 0.0, np.pi, bins,
                                 lambda c, k=k, t0=t0: 0.5 * k * (c - t0) ** 2, np.sin))
    for d, (a_n, b_n) in enumerate(fourier):
        coef = np.concatenate([a_n, b_n])
        profiles.append(_profile("dihedral", terms.dihedrals[d], phi[:, d], w, kT, -np.pi, np.pi, bins,
                                 lambda c, coef=coef: _fourier_basis(c, n_harmonics) @ coef,
                                 np.ones_like))
    for profile in profiles:
        if profile.well_outside > well_tolerance_kT * kT:
            warnings.warn(
                f"the fitted {profile.kind} prior on beads {list(profile.beads)} is "
                f"{profile.well_outside:.1f} kJ/mol lower outside the data than inside: a well "
                "where the data never go", PriorWellWarning, stacklevel=2,
            )

    def arr(values, shape):
        return jnp.asarray(np.asarray(values, dtype=np.float64).reshape(shape), dtype=dtype)

    params = PriorParams(
        bond_k=arr([b[0] for b in bonds], (-1,)),
        bond_r0=arr([b[1] for b in bonds], (-1,)),
        angle_k=arr([a[0] for a in angles], (-1,)),
        angle_theta0=arr([a[1] for a in angles], (-1,)),
        dihedral_cos=arr([f[0] for f in fourier], (-1, n_harmonics)),
        dihedral_sin=arr([f[1] for f in fourier], (-1, n_harmonics)),
        repulsion_sigma=arr(dist.min(axis=0), (-1,)),
        repulsion_k=arr(repulsion_k, ()),
    )
    return Prior(terms, params, tuple(profiles))
