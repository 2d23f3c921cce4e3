"""jaxcg: differentiable coarse-graining in JAX.

Units everywhere: nm, ps, kJ/mol; temperatures in K, kT in kJ/mol.
"""

from jaxcg.constraints import (
    constraint_groups,
    constraints_from_topology,
    constraints_from_trajectory,
)
from jaxcg.data import (
    AtomisticData,
    CGData,
    iter_chunks,
    load_atomistic,
    load_dataset,
    load_forces,
    load_topology,
    make_atomistic_data,
    save_dataset,
)
from jaxcg.maps import (
    LinearMap,
    apply_map,
    basic_aggregation_map,
    ca_sidechain_map,
    check_map,
    com_map,
    map_dataset,
    mean_squared_mapped_force,
    optimal_linear_map,
    slice_map,
)

__version__ = "0.1.0"

# Heavier stages load on first use: ``jaxcg.models``, ``jaxcg.train``, ``jaxcg.simulate``, ...
_SUBMODULES = (
    "analysis", "distributed", "evaluate", "experiments", "export", "geometry", "joint", "models", "molecules", "optim",
    "pipeline",
    "priors",
    "reference", "relative_entropy",
    "saved_model", "simulate", "train",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"jaxcg.{name}")
    raise AttributeError(f"module 'jaxcg' has no attribute {name!r}")

__all__ = [
    "AtomisticData",
    "CGData",
    "LinearMap",
    "apply_map",
    "basic_aggregation_map",
    "ca_sidechain_map",
    "check_map",
    "com_map",
    "constraint_groups",
    "constraints_from_topology",
    "constraints_from_trajectory",
    "iter_chunks",
    "load_atomistic",
    "load_dataset",
    "load_forces",
    "load_topology",
    "make_atomistic_data",
    "map_dataset",
    "mean_squared_mapped_force",
    "optimal_linear_map",
    "save_dataset",
    "slice_map",
]
