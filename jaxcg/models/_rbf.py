"""Radial basis functions, cutoffs and the RBF pair potential (e.g. the water-dimer CG model)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcg.geometry import norm


def gaussian_rbf(r: jax.Array, centers: jax.Array, gamma: float) -> jax.Array:
    """Gaussians exp(-γ (r − μ_k)²): (..., K) for distances r: (...,) nm, centers μ: (K,) nm,
    γ in 1/nm²."""
    d = r[..., None] - centers
    return jnp.exp(-gamma * d * d)


def gaussian_centers(r_min: float, r_max: float, n: int) -> tuple[np.ndarray, float]:
    """(K,) evenly spaced centers in nm and γ = 1 / (2 Δ²) for spacing Δ (SchNet's choice)."""
    if n < 2 or not r_max > r_min:
        raise ValueError(f"need n >= 2 and r_max > r_min, got n={n}, r_min={r_min}, r_max={r_max}")
    centers = np.linspace(r_min, r_max, n)
    spacing = centers[1] - centers[0]
    return centers, float(0.5 / spacing**2)


def cosine_cutoff(r: jax.Array, cutoff: float) -> jax.Array:
    """½ (cos(π r / r_c) + 1) for r < r_c, else 0; r in nm."""
    inside = r < cutoff
    value = 0.5 * (jnp.cos(jnp.pi * jnp.minimum(r, cutoff) / cutoff) + 1.0)
    return jnp.where(inside, value, jnp.zeros_like(value))


def pair_distances(x: jax.Array, i: np.ndarray, j: np.ndarray) -> jax.Array:
    """(P,) distances |x_j − x_i| in nm for static index arrays i, j: (P,), with a finite gradient
    at r = 0."""
    return norm(x[j] - x[i])


class RBFPairPotential:
    """U(x) = Σ_{pairs (i, j)} Σ_k c_k φ_k(|x_i − x_j|), φ_k Gaussian RBFs; the paper's
    water-dimer model (2 beads, one distance).

    Args:
      n_beads: N. n_basis: K Gaussians with centers evenly spaced in [r_min, r_max] nm.
      pairs: (P, 2) bead pairs; default all i < j.
      dtype: parameter dtype.

    Params: ``{"coefficients": (K,) kJ/mol}``, initialised to zeros.
    """

    def __init__(
        self,
        n_beads: int = 2,
        n_basis: int = 32,
        r_min: float = 0.2,
        r_max: float = 1.2,
        pairs: np.ndarray | None = None,
        dtype: jnp.dtype = jnp.float32,
    ):
        if pairs is None:
            pairs = np.stack(np.triu_indices(n_beads, k=1), axis=1)
        self.pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if self.pairs.size == 0:
            raise ValueError(f"RBFPairPotential needs at least one pair, got n_beads={n_beads}")
        self.n_beads = n_beads
        self.dtype = dtype
        self.centers, self.gamma = gaussian_centers(r_min, r_max, n_basis)

    def init(self, key: jax.Array, positions: jax.Array) -> dict[str, jax.Array]:
        del key
        if positions.shape != (self.n_beads, 3):
            raise ValueError(f"positions must have shape ({self.n_beads}, 3), got {positions.shape}")
        return {"coefficients": jnp.zeros(len(self.centers), self.dtype)}

    def basis(self, x: jax.Array) -> jax.Array:
        """(P, K) basis values of every pair for x: (N, 3) nm."""
        r = pair_distances(x, self.pairs[:, 0], self.pairs[:, 1])
        return gaussian_rbf(r, jnp.asarray(self.centers, x.dtype), jnp.asarray(self.gamma, x.dtype))

    def energy(self, params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        """Energy in kJ/mol of x: (N, 3) nm; x with another bead count is refused."""
        if np.shape(x) != (self.n_beads, 3):
            raise ValueError(f"x must have shape ({self.n_beads}, 3) for this {self.n_beads}-bead model, got {np.shape(x)}")
        return jnp.sum(self.basis(x) @ params["coefficients"].astype(x.dtype))
