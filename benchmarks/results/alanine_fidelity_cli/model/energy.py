"""Energy of the CG model trained here, for `jaxcg simulate --energy energy.py:energy`."""
from pathlib import Path

from jaxcg.saved_model import load_energy


def energy(filter_table=None):
    return load_energy(Path(__file__).resolve().parent, filter_table=filter_table)
