"""An independent float64 solver of the optimal-force-map problem, for tests.

Null-space method per bead, with numpy/scipy only (no JAX, no KKT matrix): for bead i the weights
over constraint groups are w = w0 + Z θ, w0 a particular solution of (M C) w = e_i and Z an
orthonormal basis of the null space of M C; θ minimises (w0 + Zθ)ᵀ Q (w0 + Zθ).
"""

import numpy as np
import scipy.linalg


def expansion(n_atoms, groups):
    """(n, m) matrix giving atoms in one group equal weights; groups: lists of atom indices."""
    label = np.arange(n_atoms)
    for group in groups:
        label[list(group)] = min(group)
    uniq = np.unique(label)
    col = {u: k for k, u in enumerate(uniq)}
    mat = np.zeros((n_atoms, uniq.size))
    for a in range(n_atoms):
        mat[a, col[label[a]]] = 1.0
    return mat


def optimal_force_map_reference(forces, config, groups, l2=0.0):
    """forces (T, n, 3), config (N, n), groups: list of atom-index lists -> G (N, n) float64."""
    forces = np.asarray(forces, dtype=np.float64)
    n_frames, n_atoms, _ = forces.shape
    flat = np.swapaxes(forces, 1, 2).reshape(-1, n_atoms)  # (T*3, n)
    c = expansion(n_atoms, groups)
    reduced = flat @ c
    q = reduced.T @ reduced / n_frames + l2 * c.T @ c
    a = np.asarray(config, np.float64) @ c
    z = scipy.linalg.null_space(a)
    reduced_q = z.T @ q @ z
    # the least-squares (minimum-norm) solutions of all beads at once: pseudo-inverses with
    # lstsq's default cut-off, computed once instead of one lstsq per bead
    w0 = np.linalg.pinv(a, rcond=max(a.shape) * np.finfo(float).eps)  # columns: particular solutions
    theta = -np.linalg.pinv(reduced_q, rcond=max(reduced_q.shape) * np.finfo(float).eps) @ (z.T @ q @ w0)
    return (c @ (w0 + z @ theta)).T


def objective(force_map, forces):
    """Mean over frames of Σ_beads ‖G F‖², float64."""
    mapped = np.einsum("in,tnd->tid", np.asarray(force_map, np.float64), np.asarray(forces, np.float64))
    return float((mapped**2).sum(axis=(1, 2)).mean())
