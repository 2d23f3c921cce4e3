"""The statistically optimal linear force map (Krämer et al., arXiv 2302.07071).

Among all force maps G that are consistent with the configurational map M (G Mᵀ = I) and give
equal weights inside every constraint group, the optimal one minimises the mean squared mapped
force E‖G F‖². Writing each row as g_i = C w_i, with C the (n, m) constraint-group expansion
matrix, the problem for all N beads at once is the equality-constrained quadratic program

    min_W  Σ_i w_iᵀ Q w_i,   Q = Cᵀ E[F Fᵀ] C + l2 CᵀC,   subject to  (M C) W = I,

whose KKT system [[2Q, Aᵀ], [A, 0]] [W; Λ] = [0; I] with A = M C is solved exactly in one linear
solve. Q may be singular (in vacuum the forces sum to zero in every frame, so the all-ones vector
is in its null space); the KKT matrix stays non-singular as long as Q is positive definite on the
null space of A, and the minimum-norm (pseudo-inverse) solution takes over where it is not. The
solve given the moment has two implementations of the same KKT system: ``optimal_force_matrix``
in pure ``jax.numpy`` (jittable and differentiable) and the host solve behind
``solve_optimal_force_map`` and ``optimal_linear_map`` (numpy LAPACK, nothing to compile, so a
map computed once per dataset does not pay for compilation). The moment is accumulated on the
host from streamed chunks with BLAS products (float64 accumulation across chunks).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg import blas

from jaxcg.constraints import expansion_matrix
from jaxcg.data import AtomisticData
from jaxcg.maps._checks import check_config_rows
from jaxcg.maps._linear_map import LinearMap

ForceSource = AtomisticData | np.ndarray | jax.Array | Iterable


@dataclasses.dataclass(frozen=True)
class ForceMoment:
    """Accumulated force second moment, optionally of forces summed over constraint groups.

    Attributes:
      total: (k, k) float64, Σ_t w_t Σ_d F'_td F'_tdᵀ in (kJ/mol/nm)², with F' = Cᵀ F the
        forces summed over the columns of the expansion matrix C (k = m groups), or F itself
        (k = n atoms) when no expansion was given.
      weight: Σ_t w_t (the frame count for uniform weights).
      n_frames: number of frames seen.
    """

    total: np.ndarray
    weight: float
    n_frames: int

    @property
    def mean(self) -> np.ndarray:
        """(k, k) E[Σ_d F'_d F'_dᵀ], (kJ/mol/nm)²."""
        return self.total / self.weight


_PRECISIONS = ("float64", "float32")
#: Frames per block: a block's forces, their transpose and the gathered rows (about 0.45 MB
#: each in float32) stay in a core's L2 cache through the group sums and the BLAS update.
_BLOCK_FRAMES = 64
#: Rows per float32 partial sum: BLAS accumulates this many rows in float32 (as one product
#: over them would), then the partial sum is added to the float64 total.
_FLUSH_ROWS = 8192


@dataclasses.dataclass(frozen=True)
class _GroupSum:
    """How to sum (t, n, 3) forces over constraint groups: a transpose, two row gathers, then
    slab additions.

    A block of frames is transposed to (3n, t), one row per (atom, dimension), frames along the
    row. Internally the groups are ordered by size, largest first. The first gather takes the
    rows of every group's first member, (group, dimension) order, giving (3m, t); the second the
    rows of the later members in member-major order (the second member of every group that has
    one, widths[1] atoms, then the third, ...). Adding each slab of the second onto the leading
    rows of the first leaves the group sums as one contiguous (m, 3t) matrix, ready for BLAS.

    Attributes:
      first: (3 m,) row indices into the transposed block, (group, dimension) order.
      rest: (3 (n - m),) the same for the later members, (atom, dimension) order.
      widths: per member j, the number of groups with more than j members (widths[0] = m;
        the widths sum to n).
      order: (m,) the expansion column of each internal group.
    """

    first: np.ndarray
    rest: np.ndarray
    widths: tuple[int, ...]
    order: np.ndarray


def _group_sum_plan(expansion: np.ndarray) -> _GroupSum | None:
    """The gather plan of a 0/1 expansion matrix that partitions the atoms; None otherwise."""
    expansion = np.asarray(expansion)
    if not (np.all((expansion == 0) | (expansion == 1)) and np.all(expansion.sum(axis=1) == 1)):
        return None
    label = np.argmax(expansion, axis=1)
    sizes = np.bincount(label, minlength=expansion.shape[1])
    if np.any(sizes == 0):
        return None
    order = np.argsort(-sizes, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    atoms = np.argsort(rank[label], kind="stable")  # atoms grouped by internal group
    starts = np.concatenate([[0], np.cumsum(sizes[order])[:-1]])
    widths = tuple(int(np.count_nonzero(sizes > j)) for j in range(int(sizes.max())))
    members = [atoms[starts[:width] + j] for j, width in enumerate(widths)]

    def rows(columns: np.ndarray) -> np.ndarray:
        return (3 * columns[:, None] + np.arange(3)[None, :]).reshape(-1).astype(np.intp)

    rest = np.concatenate(members[1:]) if len(members) > 1 else np.zeros(0, np.intp)
    return _GroupSum(first=rows(members[0]), rest=rows(rest), widths=widths, order=order)


class _Blocks:
    """Reused buffers for the blocks of one accumulation, in the accumulation's dtype."""

    def __init__(self, plan: _GroupSum, n_atoms: int, dtype: type) -> None:
        self.plan, self.dtype = plan, np.dtype(dtype)
        size = 3 * n_atoms * _BLOCK_FRAMES
        self.copy, self.transposed = np.empty(size, self.dtype), np.empty(size, self.dtype)
        self.first = np.empty(plan.first.size * _BLOCK_FRAMES, self.dtype)
        self.rest = np.empty(plan.rest.size * _BLOCK_FRAMES, self.dtype)

    def columns_of(self, forces: np.ndarray) -> np.ndarray:
        """(m, 3t) forces summed over groups: rows internal groups, columns (dimension, frame);
        a C-contiguous view of a reused buffer, valid until the next call. ``forces``: (t, n, 3),
        t ≤ block, contiguous."""
        t, plan = forces.shape[0], self.plan
        flat = forces.reshape(t, -1)
        # a contiguous copy first (also the cast): it brings the block into cache, after which
        # the transposing copy runs at cache speed instead of striding through memory
        copy = self.copy[: flat.size].reshape(flat.shape)
        np.copyto(copy, flat, casting="same_kind")
        transposed = self.transposed[: flat.size].reshape(flat.shape[::-1])
        np.copyto(transposed, copy.T)
        summed = self.first[: plan.first.size * t].reshape(-1, t)
        np.take(transposed, plan.first, axis=0, out=summed, mode="wrap")  # "wrap": unbuffered
        if plan.rest.size:
            rest, offset = self.rest[: plan.rest.size * t].reshape(-1, t), 0
            np.take(transposed, plan.rest, axis=0, out=rest, mode="wrap")
            for width in plan.widths[1:]:
                summed[: 3 * width] += rest[3 * offset : 3 * (offset + width)]
                offset += width
        return summed.reshape(plan.widths[0], 3 * t)


class _MomentSum:
    """Σ_r w_r x_r x_rᵀ over blocks of rows x_r (m,): BLAS rank-k updates of an upper triangle
    in the blocks' dtype, float32 partial sums added to a float64 total every ``_FLUSH_ROWS``."""

    def __init__(self, m: int, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.syrk = blas.ssyrk if self.dtype == np.float32 else blas.dsyrk
        self.partial = np.zeros((m, m), self.dtype, order="F")  # upper triangle used
        self.total = np.zeros((m, m))  # upper triangle of the flushed partial sums
        self.rows_since_flush = 0

    def add_columns(self, columns: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add the R columns of the C-contiguous (m, R) ``columns`` (scaled in place by √w when
        weighted, ``weights`` (R,) non-negative)."""
        if weights is not None:
            if np.any(weights < 0):
                raise ValueError("frame weights must be non-negative")
            columns *= np.sqrt(weights, dtype=columns.dtype)[None, :]
        columns = np.ascontiguousarray(columns, self.dtype)
        # columns.T is Fortran-ordered (R, m): A Aᵀ as syrk's aᵀ a, accumulated in place (beta 1)
        self.partial = self.syrk(1.0, columns.T, beta=1.0, c=self.partial, trans=1, lower=0, overwrite_c=1)
        self.rows_since_flush += columns.shape[1]
        if self.dtype == np.float32 and self.rows_since_flush >= _FLUSH_ROWS:
            self.flush()

    def finite(self) -> bool:
        """Whether everything added so far is finite (a NaN or inf reaches the diagonal)."""
        return bool(np.isfinite(np.trace(self.total) + np.trace(self.partial, dtype=np.float64)))

    def flush(self) -> None:
        self.total += self.partial
        self.partial[...] = 0.0
        self.rows_since_flush = 0

    def symmetric_total(self) -> np.ndarray:
        """(m, m) float64 symmetric sum of everything added."""
        self.flush()
        upper = np.triu(self.total)
        return upper + np.triu(upper, 1).T


def _iter_force_chunks(source: ForceSource, chunk_size: int):
    """Yield (forces (t, n, 3), weights (t,) or None) blocks from any supported source."""
    if isinstance(source, AtomisticData):
        for start in range(0, source.n_frames, chunk_size):
            stop = start + chunk_size
            weights = None if source.weights is None else source.weights[start:stop]
            yield source.forces[start:stop], weights
        return
    if isinstance(source, np.ndarray | jax.Array):
        for start in range(0, source.shape[0], chunk_size):
            yield source[start : start + chunk_size], None
        return
    for item in source:
        if isinstance(item, tuple):
            if len(item) != 2:
                raise ValueError(
                    f"chunks must be forces arrays or (positions, forces) pairs, got a {len(item)}-tuple"
                )
            item = item[1]
        yield item, None


def force_second_moment(
    source: ForceSource,
    expansion: np.ndarray | None = None,
    chunk_size: int = 8192,
    precision: str = "float64",
) -> ForceMoment:
    """Accumulate E[F Fᵀ] (or E[(Cᵀ F)(Cᵀ F)ᵀ]) over frames without holding the trajectory whole.

    Args:
      source: AtomisticData (its per-frame weights are used), a (T, n, 3) forces array in
        kJ/mol/nm, or an iterable of force chunks (t, n, 3) or (positions, forces) chunks, e.g.
        ``jaxcg.data.iter_chunks(...)``.
      expansion: optional (n, m) constraint-group expansion matrix C
        (``jaxcg.constraints.expansion_matrix``): the moment of the group-summed forces, m × m,
        which is all the optimal map needs and m²/n² of the work.
      chunk_size: frames per accumulation step for in-memory sources (an iterable's own chunks
        are used as they come); memory use grows with the chunk, not with the frame count.
      precision: "float64" (default; float64 products of the given forces) or "float32"
        (float32 rank-k updates over 8,192 rows at a time, those partial sums added in float64:
        half the memory traffic and twice the SIMD width; relative error ~1e-7 of the largest
        entry).

    Returns:
      ForceMoment, accumulated in float64.

    Blocks of frames are transposed, summed over the groups by two row gathers and a few slab
    additions, and added to the moment by BLAS symmetric rank-k updates (X Xᵀ of the (m, 3t)
    group sums): nothing is compiled, and the same code serves every chunk size.
    """
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    dtype = np.float64 if precision == "float64" else np.float32
    moment, weight, n_frames, n_atoms, plan, buffers = None, 0.0, 0, None, None, None
    for forces, weights in _iter_force_chunks(source, chunk_size):
        forces = np.ascontiguousarray(forces)
        if forces.ndim != 3 or forces.shape[2] != 3:
            raise ValueError(f"force chunks must have shape (t, n, 3), got {forces.shape}")
        if n_atoms is None:
            n_atoms = forces.shape[1]
            if expansion is None:
                expansion = np.eye(n_atoms)
            elif np.shape(expansion)[0] != n_atoms:
                raise ValueError(
                    f"forces have {n_atoms} atoms but the map/expansion has {np.shape(expansion)[0]}"
                )
            expansion = np.asarray(expansion, dtype=np.float64)
            plan = _group_sum_plan(expansion)
            expansion_t = expansion.T.astype(dtype)  # for a general (non-partition) expansion
        elif forces.shape[1] != n_atoms:
            raise ValueError(
                f"force chunk has {forces.shape[1]} atoms but earlier chunks had {n_atoms}"
            )
        w = None if weights is None else np.asarray(weights, np.float64)
        moment = moment or _MomentSum(expansion.shape[1], dtype)
        for start in range(0, forces.shape[0], _BLOCK_FRAMES):
            block = forces[start : start + _BLOCK_FRAMES]
            if plan is None:  # a general expansion: a dense product instead of gathers
                columns = expansion_t @ np.transpose(block, (1, 2, 0)).reshape(n_atoms, -1).astype(dtype)
            else:
                buffers = buffers or _Blocks(plan, n_atoms, dtype)
                columns = buffers.columns_of(block)
            weights_of_columns = None if w is None else np.tile(w[start : start + _BLOCK_FRAMES], 3).astype(dtype)
            moment.add_columns(columns, weights_of_columns)
        if not moment.finite():
            raise ValueError(f"forces chunk starting at frame {n_frames} holds NaN or inf")
        weight += float(forces.shape[0] if w is None else w.sum())
        n_frames += forces.shape[0]
    if moment is None:
        raise ValueError("no frames: the force source is empty")
    total = moment.symmetric_total()
    if plan is not None:
        inverse = np.argsort(plan.order)
        total = total[np.ix_(inverse, inverse)]
    return ForceMoment(total=total, weight=weight, n_frames=n_frames)


def _kkt_system(q: jax.Array, a: jax.Array, xp=jnp) -> tuple[jax.Array, jax.Array]:
    """KKT matrix [[2q/s, aᵀ], [a, 0]] (s = mean diagonal of q, for conditioning) and rhs [0; I].

    ``xp`` is the array module: ``jax.numpy`` (traceable) or ``numpy`` (host, no compilation).
    """
    m, n_beads = q.shape[0], a.shape[0]
    scale = xp.maximum(xp.trace(q) / m, xp.finfo(q.dtype).tiny)
    kkt = xp.block([[2.0 * q / scale, a.T], [a, xp.zeros((n_beads, n_beads), q.dtype)]])
    rhs = xp.concatenate([xp.zeros((m, n_beads), q.dtype), xp.eye(n_beads, dtype=q.dtype)])
    return kkt, rhs


def _kkt_tolerance(dtype) -> float:
    """Largest accepted max |a W - I| of an LU solution before the pseudo-inverse takes over."""
    return max(1e-8, 1e4 * float(np.finfo(dtype).eps))


def _kkt_weights(q: jax.Array, a: jax.Array) -> jax.Array:
    """Minimise Σ_i w_iᵀ q w_i subject to a W = I; q (m, m), a (N, m); returns W (m, N).

    One LU solve of the KKT system; where that fails (q singular on ker a, so the KKT matrix is
    singular: a non-finite W or a W off a W = I by more than max(1e-8, 10⁴ eps)), the
    minimum-norm solution by the pseudo-inverse instead. The choice is a ``lax.cond`` inside
    the graph (no host round trip), and gradients flow through the branch taken.
    """
    kkt, rhs = _kkt_system(q, a)
    m, n_beads = q.shape[0], a.shape[0]
    tolerance = _kkt_tolerance(q.dtype)

    def exact() -> jax.Array:
        return jnp.linalg.solve(kkt, rhs)[:m]

    def minimum_norm() -> jax.Array:
        return (jnp.linalg.pinv(kkt) @ rhs)[:m]

    trial = jax.lax.stop_gradient(exact())
    error = jnp.max(jnp.abs(jax.lax.stop_gradient(a) @ trial - jnp.eye(n_beads, dtype=q.dtype)))
    solved = jnp.all(jnp.isfinite(trial)) & (error <= tolerance)
    return jax.lax.cond(solved, exact, minimum_norm)


def _kkt_weights_host(q: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``_kkt_weights`` on the host in float64 numpy: the same system, test and fallback."""
    kkt, rhs = _kkt_system(q, a, np)
    m, n_beads = q.shape[0], a.shape[0]
    try:
        weights = np.linalg.solve(kkt, rhs)[:m]
        error = np.max(np.abs(a @ weights - np.eye(n_beads)))
        solved = bool(np.all(np.isfinite(weights))) and error <= _kkt_tolerance(q.dtype)
    except np.linalg.LinAlgError:
        solved = False
    if not solved:
        rtol = max(kkt.shape) * np.finfo(kkt.dtype).eps  # jnp.linalg.pinv's default cut-off
        weights = (np.linalg.pinv(kkt, rtol=rtol) @ rhs)[:m]
    return weights


@functools.partial(jax.jit, static_argnames="reduced")
def optimal_force_matrix(
    moment: jax.Array,
    config: jax.Array,
    expansion: jax.Array | None = None,
    l2: float | jax.Array = 0.0,
    reduced: bool = False,
) -> jax.Array:
    """The optimal (N, n) force matrix G as a pure ``jax.numpy`` function of the force moment.

    Jittable and differentiable in ``moment``, ``config`` and ``l2`` (e.g. ``jax.grad`` of the
    objective Σ_i g_iᵀ E[F Fᵀ] g_i through the solve). No input checks: use
    ``solve_optimal_force_map`` (numpy in, float64 out, with clear errors) unless you need the
    gradient or a jitted caller. Runs in the inputs' dtype; use float64 (``jax.enable_x64``).

    Args:
      moment: E[Σ_d F_d F_dᵀ] in (kJ/mol/nm)²: (n, n) over atoms, or (m, m) over constraint
        groups when ``reduced``.
      config: (N, n) configurational map M.
      expansion: (n, m) 0/1 constraint-group expansion matrix C
        (``jaxcg.constraints.expansion_matrix``), or None for no constraints (C = I).
      l2: ridge weight on each bead's expanded coefficients, in the units of ``moment``.
      reduced: whether ``moment`` is already over the groups of ``expansion``.

    Returns:
      G = (C W)ᵀ, (N, n): G Mᵀ = I, equal weights inside every constraint group.
    """
    expand = jnp.eye(config.shape[1], dtype=moment.dtype) if expansion is None else expansion.astype(moment.dtype)
    q = moment if reduced else expand.T @ moment @ expand
    q = q + l2 * jnp.diag(jnp.sum(expand, axis=0))  # CᵀC is diagonal: the group sizes
    weights = _kkt_weights(q, config.astype(moment.dtype) @ expand)
    return (expand @ weights).T


def solve_optimal_force_map(
    moment: np.ndarray,
    config: np.ndarray,
    constraints: np.ndarray | None = None,
    l2: float = 0.0,
    reduced: bool = False,
) -> np.ndarray:
    """The optimal (N, n) force matrix G from a force second moment, with input checks.

    Args:
      moment: E[Σ_d F_d F_dᵀ] in (kJ/mol/nm)² (``ForceMoment.mean``): (n, n) over atoms, or
        (m, m) over constraint groups when ``reduced`` (moment of ``expansion_matrix``-summed
        forces).
      config: (N, n) configurational map M.
      constraints: (K, 2) constrained atom pairs, or None.
      l2: weight of the penalty l2 · ‖g_i‖² on each bead's expanded coefficient vector, in the
        units of ``moment``. (The paper's code penalises against Σ_t rather than the mean, so its
        ``l2_regularization`` equals this ``l2`` times the number of frames.)
      reduced: whether ``moment`` is already over constraint groups.

    Returns:
      G as a float64 numpy array: the solution of ``optimal_force_matrix``, solved on the host
      in float64 numpy (no compilation) whatever the global precision setting.
    """
    config = np.asarray(config, dtype=np.float64)
    return _solve_host(moment, config, expansion_matrix(constraints, config.shape[1]), l2, reduced)


def _solve_host(moment: np.ndarray, config: np.ndarray, expand: np.ndarray, l2: float, reduced: bool) -> np.ndarray:
    """``solve_optimal_force_map`` given the (n, m) expansion matrix instead of the constraints."""
    moment = np.asarray(moment, dtype=np.float64)
    n_beads, n_atoms = config.shape
    size = expand.shape[1] if reduced else n_atoms
    if moment.shape != (size, size):
        raise ValueError(
            f"moment has shape {moment.shape}; expected ({size}, {size}) for config_map's "
            f"{n_atoms} atoms{' in ' + str(size) + ' constraint groups' if reduced else ''}"
        )
    if l2 < 0:
        raise ValueError(f"l2 must be non-negative, got {l2}")
    empty = np.flatnonzero(~np.any(config != 0, axis=1))
    if empty.size:
        raise ValueError(f"config_map: bead {empty[0]} has no atoms (an all-zero row of M)")
    if np.linalg.matrix_rank(config @ expand) < n_beads:
        raise ValueError(
            "no force map can be consistent with this config_map under these constraints: "
            "the beads' atoms, merged over constraint groups, are linearly dependent "
            "(e.g. two beads whose atoms lie in one constraint group)"
        )
    q = moment if reduced else expand.T @ moment @ expand
    q = q + l2 * np.diag(expand.sum(axis=0))  # CᵀC is diagonal: the group sizes
    return (expand @ _kkt_weights_host(q, config @ expand)).T


def optimal_linear_map(
    source: ForceSource,
    config_map: LinearMap | np.ndarray,
    constraints: np.ndarray | None = None,
    l2: float = 0.0,
    chunk_size: int = 8192,
    precision: str | None = None,
) -> LinearMap:
    """The valid force map with the smallest mean squared mapped force E‖G F‖².

    Args:
      source: forces to average over: AtomisticData, a (T, n, 3) array in kJ/mol/nm, or an
        iterable of chunks (streamed; the trajectory is never held whole).
      config_map: a LinearMap (its ``config`` is used) or an (N, n) matrix M.
      constraints: (K, 2) constrained atom pairs; their groups get equal weights. For
        AtomisticData with ``constraints=None`` the data's own constraints are used.
      l2: ridge penalty on the expanded coefficients, (kJ/mol/nm)² (see
        ``solve_optimal_force_map``).
      chunk_size: frames per accumulation step.
      precision: of the force moment, "float64" or "float32" (see ``force_second_moment``);
        by default the dtype the map is returned in (float32 unless 64-bit JAX is enabled).
        The KKT solve is float64 either way.

    Returns:
      LinearMap(config=M, force=G), G in the default float dtype.
    """
    config = np.asarray(config_map.config if isinstance(config_map, LinearMap) else config_map)
    check_config_rows(config, "optimal_linear_map: config_map")
    if constraints is None and isinstance(source, AtomisticData):
        constraints = source.constraints
    n_atoms = config.shape[1]
    if isinstance(source, AtomisticData | np.ndarray | jax.Array) and _n_atoms(source) != n_atoms:
        raise ValueError(f"forces have {_n_atoms(source)} atoms but config_map has {n_atoms}")
    dtype = np.dtype(jnp.result_type(float))
    if precision is None:
        precision = "float64" if dtype == np.float64 else "float32"
    expand = expansion_matrix(constraints, n_atoms)
    moment = force_second_moment(source, expansion=expand, chunk_size=chunk_size, precision=precision)
    force = _solve_host(moment.mean, np.asarray(config, np.float64), expand, l2, reduced=True)
    # cast on the host and device_put (a device cast would compile; jnp.asarray of a numpy
    # array costs ~20 ms on its first call in a process)
    return LinearMap.validated(config=jax.device_put(config.astype(dtype)), force=jax.device_put(force.astype(dtype)))


def _n_atoms(source: ForceSource) -> int:
    return source.n_atoms if isinstance(source, AtomisticData) else int(source.shape[1])


def objective(force_map: LinearMap | np.ndarray, moment: np.ndarray) -> float:
    """Σ_i g_iᵀ E[F Fᵀ] g_i: the mean squared mapped force from an (n, n) moment, (kJ/mol/nm)²."""
    g = np.asarray(force_map.force if isinstance(force_map, LinearMap) else force_map, np.float64)
    return float(np.einsum("in,nm,im->", g, np.asarray(moment, np.float64), g))
