"""The dtype policy: data on disk are float32; computation runs in the dtype of the parameters.

- Datasets, trajectories and saved models store float32 (positions nm, forces kJ/mol/nm).
- A model computes in the dtype it is built with (``SchNet(dtype=...)``, float32 by default);
  training (``jaxcg.train.fit``, ``jaxcg.joint``) casts the frames to the dtype of the parameters
  (``params_dtype``), and the simulator's state has the builder's ``dtype``.
- float64 end to end: enable 64-bit JAX (``jax.config.update("jax_enable_x64", True)`` or the
  ``jax.enable_x64`` context), build the model with ``dtype=jnp.float64`` and the simulator with
  ``dtype=jnp.float64``. Finite-difference checks and exact comparisons use this path. jax-md
  rounds the timestep to float32 (2⁻⁹ ps = 0.001953125 ps is exact in both, if that matters).
- Force maps: the optimal map is returned in the default float dtype, and its force second
  moment is accumulated in that dtype unless ``precision=`` says otherwise (float32 rank-k
  updates summed in float64 every 8,192 rows; float64 under 64-bit JAX); its KKT system is
  solved in float64 whatever the setting. ``force_second_moment`` on its own defaults to
  float64.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def params_dtype(params: Any) -> np.dtype:
    """The float dtype shared by the floating-point leaves of ``params`` (float32 if there are
    none). Raises ValueError when leaves mix float dtypes: cast them to one first."""
    dtypes = {np.dtype(leaf.dtype) for leaf in jax.tree.leaves(params)
              if np.issubdtype(np.dtype(getattr(leaf, "dtype", np.int32)), np.floating)}
    if not dtypes:
        return np.dtype(np.float32)
    if len(dtypes) > 1:
        raise ValueError(f"params mix float dtypes {sorted(str(d) for d in dtypes)}: cast them to one "
                         "(e.g. jax.tree.map(lambda p: p.astype(jnp.float64), params))")
    return dtypes.pop()
