"""Units and physical constants (OpenMM/mdtraj conventions: nm, ps, kJ/mol)."""

from __future__ import annotations

#: Molar Boltzmann constant in kJ/mol/K (CODATA 2018, as OpenMM uses).
BOLTZMANN_KJ_PER_MOL_K = 0.0083144626

#: Factors that convert a force given in the key's unit into kJ/mol/nm.
FORCE_UNIT_FACTORS: dict[str, float] = {
    "kJ/mol/nm": 1.0,
    "kJ/mol/A": 10.0,
    "kcal/mol/nm": 4.184,
    "kcal/mol/A": 41.84,
}


def kT_from_temperature(temperature: float) -> float:
    """Thermal energy kT in kJ/mol for a temperature in K."""
    return BOLTZMANN_KJ_PER_MOL_K * float(temperature)


def force_unit_factor(unit: str) -> float:
    """Factor that converts forces in ``unit`` to kJ/mol/nm.

    Accepts the keys of ``FORCE_UNIT_FACTORS``; "Å", "Angstrom" and "angstrom" are read as "A".
    """
    normalised = unit.replace("Å", "A").replace("Angstrom", "A").replace("angstrom", "A")
    normalised = normalised.replace(" ", "").replace("kj", "kJ").replace("KJ", "kJ")
    if normalised not in FORCE_UNIT_FACTORS:
        raise ValueError(
            f"force_units must be one of {sorted(FORCE_UNIT_FACTORS)}, got {unit!r}"
        )
    return FORCE_UNIT_FACTORS[normalised]
