"""Plausibility checks of physical inputs: warnings for numbers that look like the wrong unit.

Nothing here raises for a plausible-but-unusual value; each check warns (``UnitWarning``) with the
value seen and the likely mistake, so a user who meant it can silence the warning.

- ``check_temperature``: a temperature below 10 K looks like kT in kJ/mol (2.494 at 300 K).
- ``check_positions_scale``: a median nearest-neighbour distance above 0.8 nm looks like Å
  (bonded atoms are 0.1-0.15 nm apart, CG beads typically 0.3-0.5 nm).
- ``check_force_scale``: the virial theorem. For frames drawn from exp(-U/kT) of a molecule free
  to translate, -Σ_i <(x_i - x̄)·F_i> = (3N - 3) kT (generalised equipartition over the 3N - 3
  internal coordinates; F the force or the mean force of a valid CG map). A ratio near 1/4.184,
  1/10 or 1/41.84 says the forces are in kcal/mol or per Å; near 10 says positions in Å. Only
  meaningful without holonomic constraints: atomistic data with constraints is not checked.
"""

from __future__ import annotations

import warnings

import numpy as np

from jaxcg.units import kT_from_temperature

#: Below this temperature (K) a value looks like kT in kJ/mol.
KT_LIKE_BELOW_K = 10.0
#: Median nearest-neighbour distance (nm) above which positions look like Å.
ANGSTROM_LIKE_ABOVE_NM = 0.8
#: Virial ratios outside this range warn (a factor 4.184 or 10 off lies outside it).
VIRIAL_RANGE = (0.5, 2.0)


class UnitWarning(UserWarning):
    """An input whose magnitude suggests another unit than the documented one."""


def check_temperature(temperature: float, name: str = "temperature") -> None:
    """Raise for a non-positive or non-finite temperature (K); warn below 10 K (looks like kT)."""
    if isinstance(temperature, bool) or not np.isscalar(temperature) or not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"{name} must be a positive number of kelvin, got {temperature!r}")
    if temperature < KT_LIKE_BELOW_K:
        warnings.warn(
            f"{name}={temperature!r} K is below {KT_LIKE_BELOW_K:g} K: it looks like kT in kJ/mol "
            f"(kT at 300 K is {kT_from_temperature(300.0):.3f}); {name} is in kelvin",
            UnitWarning, stacklevel=3,
        )


def _sample(frames: np.ndarray, max_frames: int) -> np.ndarray:
    stride = max(1, len(frames) // max_frames)
    return np.asarray(frames[::stride][:max_frames], dtype=np.float64)


def check_positions_scale(positions: np.ndarray, name: str = "positions", max_frames: int = 50) -> None:
    """Warn if positions (T, N, 3) look like Å rather than nm (median nearest-neighbour distance)."""
    x = _sample(positions, max_frames)
    if x.ndim != 3 or x.shape[1] < 2:
        return
    x = x[np.isfinite(x).all(axis=(1, 2)), :300]
    if len(x) == 0:
        return
    d = np.linalg.norm(x[:, :, None] - x[:, None, :], axis=-1)
    d[:, np.arange(x.shape[1]), np.arange(x.shape[1])] = np.inf
    nearest = float(np.median(d.min(axis=-1)))
    if np.isfinite(nearest) and nearest > ANGSTROM_LIKE_ABOVE_NM:
        warnings.warn(
            f"{name}: the median nearest-neighbour distance is {nearest:.3g} nm, implausible for "
            f"nm (above {ANGSTROM_LIKE_ABOVE_NM} nm): positions look like Å; divide by 10",
            UnitWarning, stacklevel=3,
        )


def virial_ratio(positions: np.ndarray, forces: np.ndarray, temperature: float, n_blocks: int = 10) -> tuple[float, float]:
    """(-Σ_i <(x_i - x̄)·F_i> / ((3N - 3) kT), its standard error from ``n_blocks`` block means).

    positions: (T, N, 3) nm; forces: (T, N, 3) kJ/mol/nm; temperature: K. 1 for Boltzmann frames
    of an unconstrained molecule with forces in kJ/mol/nm (see the module docstring).
    """
    x = np.asarray(positions, dtype=np.float64)
    f = np.asarray(forces, dtype=np.float64)
    finite = np.isfinite(x).all(axis=(1, 2)) & np.isfinite(f).all(axis=(1, 2))
    x, f = x[finite], f[finite]
    if len(x) == 0:
        return float("nan"), float("inf")
    centred = x - x.mean(axis=1, keepdims=True)
    virial = -np.einsum("tia,tia->t", centred, f) / ((3 * x.shape[1] - 3) * kT_from_temperature(temperature))
    blocks = np.array_split(virial, max(2, min(n_blocks, len(virial))))
    means = np.array([b.mean() for b in blocks if len(b)])
    error = float(means.std(ddof=1) / np.sqrt(len(means))) if len(means) > 1 else float("inf")
    return float(virial.mean()), error


def check_force_scale(
    positions: np.ndarray, forces: np.ndarray, temperature: float, name: str = "forces",
    min_frames: int = 200, max_frames: int = 20000,
) -> float | None:
    """Warn if forces (T, N, 3) are implausible for kJ/mol/nm at ``temperature`` K (virial ratio).

    Checked only with at least ``min_frames`` frames and a ratio known to 25%; returns the ratio
    (or None when not checked). Call it only for frames without holonomic constraints (CG data
    from a valid map, or unconstrained atomistic data).
    """
    if len(positions) < min_frames or np.shape(positions)[1] < 2:
        return None
    stride = max(1, len(positions) // max_frames)
    ratio, error = virial_ratio(positions[::stride], forces[::stride], temperature)
    if not np.isfinite(ratio) or error > 0.25 * abs(ratio):
        return None
    low, high = VIRIAL_RANGE
    if not low <= ratio <= high:
        hints = {1 / 41.84: "kcal/mol/Å", 1 / 4.184: "kcal/mol/nm", 1 / 10: "kJ/mol/Å",
                 10.0: "positions in Å", 4.184: "kJ where kcal was meant"}
        likely = min(hints, key=lambda r: abs(np.log(abs(ratio) / r))) if ratio > 0 else None
        hint = f"; closest to a factor {likely:.4g}: {hints[likely]}?" if likely else ""
        warnings.warn(
            f"{name}: -<Σ (x - x̄)·F> / ((3N-3) kT) = {ratio:.3g} ± {error:.2g} at {temperature:g} K, "
            f"where forces in kJ/mol/nm and positions in nm give 1 (virial theorem){hint} "
            "(an invalid force map, e.g. a slice map on constrained data, also breaks it)",
            UnitWarning, stacklevel=3,
        )
    return ratio
