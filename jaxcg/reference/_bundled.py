"""Small reference datasets shipped in ``jaxcg/bundled`` (loading them needs no OpenMM).

| name                       | atoms | frames | interval | constraints          |
|----------------------------|-------|--------|----------|----------------------|
| "water_dimer_flexible"     | 6     | 20000  | 0.5 ps   | none                 |
| "water_dimer_rigid"        | 6     | 20000  | 0.5 ps   | 6 (O-H, O-H, H-H x2) |
| "alanine_dipeptide_vacuum" | 22    | 20000  | 1 ps     | 12 (HBonds)          |

All at 300 K, seed 0, Reference platform, OpenMM 8.6.1. Regenerate them exactly with::

    jaxcg reference water_dimer --frames 20000 --seed 0 --out jaxcg/bundled/water_dimer_flexible.h5
    jaxcg reference water_dimer --rigid --frames 20000 --seed 0 --out jaxcg/bundled/water_dimer_rigid.h5
    jaxcg reference alanine_dipeptide --solvent vacuum --frames 20000 --seed 0 \\
        --out jaxcg/bundled/alanine_dipeptide_vacuum.h5

(defaults: save every 0.5 ps for the water dimer and 1 ps for alanine dipeptide, 300 K,
10 ps equilibration after minimisation, Langevin friction 1/ps). The same frames come back on
the same OpenMM version and platform; other versions give statistically equivalent data.
"""

from __future__ import annotations

from pathlib import Path

from jaxcg.data import AtomisticData, load_dataset

_DATA_DIR = Path(__file__).resolve().parent.parent / "bundled"

#: Names of the bundled datasets and their files in ``jaxcg/bundled``.
BUNDLED: dict[str, str] = {
    "water_dimer_flexible": "water_dimer_flexible.h5",
    "water_dimer_rigid": "water_dimer_rigid.h5",
    "alanine_dipeptide_vacuum": "alanine_dipeptide_vacuum.h5",
}


def bundled_dataset_path(name: str) -> Path:
    """Path of the bundled dataset ``name`` (one of ``BUNDLED``)."""
    if name not in BUNDLED:
        raise ValueError(f"name must be one of {list(BUNDLED)}, got {name!r}")
    path = _DATA_DIR / BUNDLED[name]
    if not path.exists():
        raise FileNotFoundError(
            f"bundled dataset {name!r} is missing at {str(path)!r}; regenerate it with the "
            "command in jaxcg.reference._bundled"
        )
    return path


def bundled_dataset(name: str) -> AtomisticData:
    """Load the bundled dataset ``name``: positions (T, n, 3) nm, forces (T, n, 3) kJ/mol/nm."""
    return load_dataset(bundled_dataset_path(name))
