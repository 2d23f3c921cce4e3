"""Validity checks of a linear map: consistency, constraint orthogonality, normalisation."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxcg.constraints import constraint_groups
from jaxcg.maps._linear_map import LinearMap, check_matrices


class MapValidityError(ValueError):
    """A force map that would not give the potential of mean force."""


@dataclasses.dataclass(frozen=True)
class MapReport:
    """How far a map is from valid (each a max absolute deviation; 0 is exact).

    Attributes:
      consistency: max |G Mᵀ - I| (Noid et al. 2008).
      constraint_spread: max over beads and constraint groups of the spread (max - min) of G's
        weights inside the group; non-zero lets constraint forces into the mapped forces.
      config_row_sum: max |Σ_a M_ia - 1|; non-zero breaks translation of CG coordinates.
      worst_group: the constraint group with the largest spread, or None.
      tolerance: the tolerance the report was judged with.
    """

    consistency: float
    constraint_spread: float
    config_row_sum: float
    worst_group: tuple[int, ...] | None
    tolerance: float

    @property
    def valid(self) -> bool:
        return max(self.consistency, self.constraint_spread, self.config_row_sum) <= self.tolerance

    def problems(self) -> list[str]:
        out = []
        if self.consistency > self.tolerance:
            out.append(f"G Mᵀ differs from the identity by up to {self.consistency:.3g}")
        if self.constraint_spread > self.tolerance:
            out.append(
                f"weights differ by up to {self.constraint_spread:.3g} inside constraint group "
                f"{list(self.worst_group or ())}: constraint forces leak into the mapped forces"
            )
        if self.config_row_sum > self.tolerance:
            out.append(f"rows of M sum to 1 only within {self.config_row_sum:.3g}")
        return out


def check_map(
    linear_map: LinearMap,
    constraints: np.ndarray | None = None,
    tolerance: float = 1e-5,
    raise_on_error: bool = True,
) -> MapReport:
    """Check that a map is valid for force matching.

    Args:
      linear_map: the (M, G) pair, each (N, n).
      constraints: (K, 2) constrained atom pairs of the all-atom data, or None.
      tolerance: largest absolute deviation accepted (float32 maps reach ~1e-6).
      raise_on_error: raise ``MapValidityError`` naming each violation (default) or just report.

    Returns:
      MapReport with the deviations.
    """
    config = np.asarray(linear_map.config, dtype=np.float64)
    force = np.asarray(linear_map.force, dtype=np.float64)
    if not (np.all(np.isfinite(config)) and np.all(np.isfinite(force))):
        raise MapValidityError("map holds NaN or inf coefficients")
    check_matrices(config, force)
    consistency = float(np.abs(force @ config.T - np.eye(config.shape[0])).max())
    row_sum = float(np.abs(config.sum(axis=1) - 1.0).max())
    spread, worst = 0.0, None
    for group in constraint_groups(constraints, config.shape[1]):
        weights = force[:, list(group)]
        group_spread = float((weights.max(axis=1) - weights.min(axis=1)).max())
        if group_spread > spread:
            spread, worst = group_spread, group
    report = MapReport(consistency, spread, row_sum, worst, tolerance)
    if raise_on_error and not report.valid:
        raise MapValidityError("invalid map: " + "; ".join(report.problems()))
    return report


def check_config_rows(config: np.ndarray, name: str = "config_map", tolerance: float = 1e-5) -> None:
    """Raise ``MapValidityError`` if a row of the configurational map M (N, n) does not sum to 1.

    Rows summing to 1 make CG positions x = M r translate with the atoms; any other sum scales or
    shifts the CG coordinates (nm) silently.
    """
    config = np.asarray(config, dtype=np.float64)
    if config.ndim != 2:
        raise ValueError(f"{name} must be an (N, n) matrix, got shape {config.shape}")
    sums = config.sum(axis=1)
    bad = np.flatnonzero(~(np.abs(sums - 1.0) <= tolerance))
    if bad.size:
        raise MapValidityError(
            f"{name}: rows of the configurational map must sum to 1 (x = M r in nm), but bead(s) "
            f"{bad[:5].tolist()} sum to {np.round(sums[bad[:5]], 6).tolist()}"
        )
