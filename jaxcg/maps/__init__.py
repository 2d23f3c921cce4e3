"""Linear coarse-graining maps: positions x = M r, forces f = G F."""

from jaxcg.maps._builders import (
    BACKBONE_NAMES,
    basic_aggregation_map,
    ca_sidechain_groups,
    ca_sidechain_map,
    com_map,
    slice_map,
)
from jaxcg.maps._cg_data import bead_types_by_atom, cg_topology, map_dataset
from jaxcg.maps._checks import MapReport, MapValidityError, check_map
from jaxcg.maps._configurational import (
    configurational_coefficients,
    configurational_mapped_forces,
    fit_configurational_map,
    init_configurational_map,
    mean_squared_configurational_force,
)
from jaxcg.maps._linear_map import LinearMap, apply_map, mean_squared_mapped_force
from jaxcg.maps._noise import (
    NoiseAugmentedMap,
    apply_noise_augmented_map,
    augment_with_noise,
    noise_augmented_map,
)
from jaxcg.maps._optimal import (
    ForceMoment,
    force_second_moment,
    objective,
    optimal_force_matrix,
    optimal_linear_map,
    solve_optimal_force_map,
)
from jaxcg.maps._parametrized import (
    MapParametrization,
    fit_force_map,
    force_matrix,
    parametrized_map,
    support_within_bonds,
    valid_map_parametrization,
)

__all__ = [
    "BACKBONE_NAMES",
    "ForceMoment",
    "LinearMap",
    "MapParametrization",
    "MapReport",
    "MapValidityError",
    "NoiseAugmentedMap",
    "apply_map",
    "apply_noise_augmented_map",
    "augment_with_noise",
    "basic_aggregation_map",
    "ca_sidechain_groups",
    "ca_sidechain_map",
    "cg_topology",
    "check_map",
    "configurational_coefficients",
    "configurational_mapped_forces",
    "com_map",
    "fit_configurational_map",
    "fit_force_map",
    "force_matrix",
    "force_second_moment",
    "init_configurational_map",
    "bead_types_by_atom",
    "map_dataset",
    "mean_squared_configurational_force",
    "mean_squared_mapped_force",
    "noise_augmented_map",
    "objective",
    "optimal_force_matrix",
    "optimal_linear_map",
    "parametrized_map",
    "slice_map",
    "solve_optimal_force_map",
    "support_within_bonds",
    "valid_map_parametrization",
]
