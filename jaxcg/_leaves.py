"""PyTree leaves in an npz archive: the one scheme behind saved models (``model.npz``) and
simulation checkpoints. Leaves are stored in ``jax.tree.leaves`` order as ``leaf_0000``,
``leaf_0001``, ...; the tree structure comes from a template the reader builds, so the archive
holds arrays only (no pickled objects). Writes go to a temporary file renamed into place, so an
interruption never leaves half an archive."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

_LEAF = re.compile(r"leaf_(\d+)$")


def write_leaves(path: str | os.PathLike, leaves: list[Any], extra: dict[str, Any] | None = None) -> Path:
    """Write ``leaves`` (arrays) as ``leaf_NNNN`` and the arrays of ``extra`` under their own names
    (which must not look like leaves) to the npz file ``path``, atomically."""
    path = Path(path)
    extra = dict(extra or {})
    clash = sorted(name for name in extra if _LEAF.match(name))
    if clash:
        raise ValueError(f"extra must not use leaf names, got {clash}")
    arrays = {f"leaf_{i:04d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays, **extra)
    os.replace(tmp, path)
    return path


def read_leaves(archive: Any) -> list[np.ndarray]:
    """The leaves of an open npz ``archive`` in index order (any zero padding of the index)."""
    indexed = sorted((int(m.group(1)), name) for name in archive.files if (m := _LEAF.match(name)))
    if [i for i, _ in indexed] != list(range(len(indexed))):
        raise ValueError(f"the archive's leaves are not numbered 0..{len(indexed) - 1}")
    return [archive[name] for _, name in indexed]
