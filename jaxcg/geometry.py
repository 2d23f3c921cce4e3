"""Geometry of bead and atom positions, written once: norms, distances, bond angles, dihedrals.

Every function is pure and differentiable, with a finite gradient everywhere, coincident points
included (the gradient there is 0 rather than NaN):

- ``norm(v)``: ‖v‖ over the last axis; ``norm(v, softening=ε)`` is √(‖v‖² + ε²), smooth at 0;
- ``distances(x, pairs)``: ‖x_j − x_i‖ for pairs (i, j), nm;
- ``angles(x, triplets)``: the angle i-j-k at j, in [0, π] rad;
- ``dihedrals(x, quadruplets)``: the dihedral i-j-k-l, in (−π, π] rad, IUPAC sign (positive
  clockwise looking from j to k; mdtraj's ``compute_dihedrals`` convention).

Positions x: (..., N, 3) nm (any leading batch axes); index arrays are integer (P, 2), (A, 3),
(D, 4). The functions follow their input: a numpy array gives numpy in its own dtype (float64
host analysis of long trajectories, no device copy); anything else (a jax array, a tracer inside
``jit``/``grad``/``vmap``) gives ``jax.numpy``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import jax.numpy as jnp
import numpy as np

Array = Any  # a numpy or jax array


def _namespace(x: Array) -> ModuleType:
    return np if isinstance(x, np.ndarray) else jnp


def _safe_arctan2(y: Array, x: Array) -> Array:
    """arctan2(y, x), 0 with a zero gradient at y = x = 0 (where arctan2's gradient is NaN)."""
    xp = _namespace(x)
    degenerate = (x == 0) & (y == 0)
    return xp.where(degenerate, xp.zeros_like(x), xp.arctan2(y, xp.where(degenerate, xp.ones_like(x), x)))


def norm(v: Array, softening: float = 0.0) -> Array:
    """(...,) Euclidean norm of v: (..., 3) over the last axis (v in nm gives nm).

    With ``softening`` ε = 0 (default): ‖v‖ exactly, with gradient 0 (not NaN) at v = 0.
    With ε > 0: √(‖v‖² + ε²), smooth everywhere (a distance feature that never reaches 0).
    """
    xp = _namespace(v)
    sq = xp.sum(v * v, axis=-1)
    if softening:
        return xp.sqrt(sq + softening * softening)
    positive = sq > 0
    return xp.where(positive, xp.sqrt(xp.where(positive, sq, xp.ones_like(sq))), xp.zeros_like(sq))


def distances(x: Array, pairs: Array) -> Array:
    """(..., P) distances ‖x_j − x_i‖ in nm of the pairs (i, j) = pairs: (P, 2); x: (..., N, 3) nm."""
    return norm(x[..., pairs[:, 1], :] - x[..., pairs[:, 0], :])


def angles(x: Array, triplets: Array) -> Array:
    """(..., A) angles i-j-k at the middle bead j, in rad in [0, π]; triplets: (A, 3);
    x: (..., N, 3) nm. Computed as arctan2(‖a × b‖, a·b), accurate near 0 and π."""
    xp = _namespace(x)
    a = x[..., triplets[:, 0], :] - x[..., triplets[:, 1], :]
    b = x[..., triplets[:, 2], :] - x[..., triplets[:, 1], :]
    return _safe_arctan2(norm(xp.cross(a, b)), xp.sum(a * b, axis=-1))


def dihedrals(x: Array, quadruplets: Array) -> Array:
    """(..., D) dihedral angles i-j-k-l in rad in (−π, π], IUPAC sign; quadruplets: (D, 4);
    x: (..., N, 3) nm.

    φ = arctan2(‖b1‖ b0·(b1 × b2), (b0 × b1)·(b1 × b2)) with b0 = x_j − x_i, b1 = x_k − x_j,
    b2 = x_l − x_k (no division, so finite when beads coincide)."""
    xp = _namespace(x)
    b0 = x[..., quadruplets[:, 1], :] - x[..., quadruplets[:, 0], :]
    b1 = x[..., quadruplets[:, 2], :] - x[..., quadruplets[:, 1], :]
    b2 = x[..., quadruplets[:, 3], :] - x[..., quadruplets[:, 2], :]
    n1 = xp.cross(b0, b1)
    n2 = xp.cross(b1, b2)
    y = norm(b1) * xp.sum(b0 * n2, axis=-1)
    return _safe_arctan2(y, xp.sum(n1 * n2, axis=-1))
