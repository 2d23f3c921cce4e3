"""Neighbour lists: one format (jax-md ``OrderedSparse``: each pair i < j once, padded with N),
built by one factory and checked where it is used.

``neighbor_list(cutoff, skin, box)`` gives jax-md's ``(displacement, shift, neighbor_fn)``; use
``neighbor_fn.allocate(x)`` on the host, ``neighbor_fn.update(x, nbrs)`` inside jit, and check
``nbrs.did_buffer_overflow`` on the host (``jaxcg.simulate`` re-allocates and redoes the chunk).
An energy reads the pairs with ``pairs(neighbor, n_beads)``, which refuses any other format.
Distances nm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# jax-md is not clean under strict dtype promotion (it mixes int32 and float32).
with jax.numpy_dtype_promotion("standard"):
    from jax_md import partition, space


def neighbor_list(
    cutoff: float,
    skin: float = 0.2,
    box: float | np.ndarray | None = None,
    capacity_multiplier: float = 1.25,
    dtype: Any = jnp.float32,
) -> tuple[Callable, Callable, partition.NeighborListFns]:
    """Displacement, shift and jax-md ``OrderedSparse`` neighbour-list functions.

    Args:
      cutoff: nm, the model's interaction cutoff.
      skin: nm; the list holds pairs within cutoff + skin and is rebuilt once a bead moved more
        than skin / 2.
      box: None for free space, else the periodic box side(s) in nm (scalar or (3,)).
      capacity_multiplier: spare room allocated on top of the current occupancy.
      dtype: float dtype of the box.
    """
    for name, value in (("cutoff", cutoff), ("capacity_multiplier", capacity_multiplier)):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if not np.isfinite(skin) or skin < 0:
        raise ValueError(f"skin must be a non-negative finite number (nm; 0 rebuilds every step), got {skin!r}")
    with jax.numpy_dtype_promotion("standard"):
        if box is None:
            displacement, shift = space.free()
            list_box, disable_cell_list = 1.0, True
        else:
            list_box = jnp.asarray(box, dtype=dtype)
            displacement, shift = space.periodic(list_box)
            disable_cell_list = False
        neighbor_fn = partition.neighbor_list(
            displacement, list_box, cutoff, dr_threshold=skin, capacity_multiplier=capacity_multiplier,
            disable_cell_list=disable_cell_list, format=partition.NeighborListFormat.OrderedSparse,
        )
    return displacement, shift, neighbor_fn


def check_format(neighbor: Any) -> None:
    """Refuse a neighbour list that is not a jax-md ``OrderedSparse`` list of shape (2, capacity)
    (or batched over replicas by vmap): the rows of a ``Dense`` or ``Sparse`` list are not the
    pairs i < j, so an energy would be wrong without an error."""
    form = getattr(neighbor, "format", None)
    name = getattr(form, "name", repr(form))
    if name != "OrderedSparse":
        raise ValueError(
            f"neighbor must be a jax-md OrderedSparse neighbour list (jaxcg.neighbors.neighbor_list builds one), "
            f"got format {name}: its idx rows are not the pairs i < j, so the energy would be wrong"
        )
    if np.ndim(neighbor.idx) != 2 or np.shape(neighbor.idx)[0] != 2:
        raise ValueError(f"neighbor.idx must have shape (2, capacity) (OrderedSparse), got {np.shape(neighbor.idx)}")


def pairs(neighbor: Any, n_beads: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(i, j, valid): the (capacity,) pair indices of an ``OrderedSparse`` list, padding entries
    set to 0 and marked invalid; each pair i < j appears once."""
    check_format(neighbor)
    i, j = neighbor.idx[0], neighbor.idx[1]
    valid = (i < n_beads) & (j < n_beads)
    return jnp.where(valid, i, 0), jnp.where(valid, j, 0), valid


def with_capacity(neighbor: Any, capacity: int, n_beads: int) -> Any:
    """``neighbor`` with room for exactly ``capacity`` entries (its idx truncated, or padded with
    ``n_beads``); ``neighbor_fn.update`` then fills it and flags overflow. jax-md's own
    ``extra_capacity`` scales with N for pair formats, so it cannot hit a given capacity."""
    if capacity < 1:
        raise ValueError(f"capacity must be a positive integer, got {capacity}")
    idx = neighbor.idx
    width = idx.shape[-1]
    if capacity <= width:
        idx = idx[..., :capacity]
    else:
        pad = [(0, 0)] * (idx.ndim - 1) + [(0, capacity - width)]
        idx = jnp.pad(idx, pad, constant_values=n_beads)
    return dataclasses.replace(neighbor, idx=idx, max_occupancy=int(capacity))
