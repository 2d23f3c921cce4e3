"""A tilted double well along x (nm, kJ/mol), harmonic in y and z, for Boltzmann tests of the
simulators: its exact bin probabilities come from quadrature in float64."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class DoubleWell(NamedTuple):
    """U(r) = Σ_beads height ((x / pos)² − 1)² + tilt x + ½ k_yz (y² + z²), kJ/mol; r: (N, 3) nm.

    Attributes: height kJ/mol, pos nm (the wells' x), tilt kJ/mol/nm, k_yz kJ/mol/nm², edges (B + 1,)
    nm of the x histogram.
    """

    height: float
    pos: float
    tilt: float
    k_yz: float
    edges: np.ndarray

    def well(self, x):
        return self.height * ((x / self.pos) ** 2 - 1.0) ** 2 + self.tilt * x

    def energy(self, r):
        """(N, 3) nm -> kJ/mol."""
        return jnp.sum(self.well(r[:, 0])) + 0.5 * self.k_yz * jnp.sum(r[:, 1:] ** 2)

    def exact_bin_probabilities(self, kT: float) -> np.ndarray:
        """Boltzmann probabilities of the x histogram bins at kT (kJ/mol)."""
        x = np.linspace(-0.3, 0.3, 60001)
        weight = np.exp(-self.well(x) / kT)
        cumulative = np.concatenate([[0.0], np.cumsum(weight)])
        index = np.searchsorted(x, self.edges)
        return (cumulative[index[1:]] - cumulative[index[:-1]]) / weight.sum()
