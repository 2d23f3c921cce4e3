"""SchNet on CG beads (Flax nnx): type embedding, Gaussian RBF filters with a cosine cutoff,
continuous-filter convolutions, an atom-wise MLP and sum pooling.

Two pair paths share one network:

- dense (``SchNet.energy``): every unordered pair i < j (minus exclusions) once, a static list;
  each pair filter (and its RBFs) is computed once and used for both directions (W_ij = W_ji);
  messages are gathered with static indices and summed with ``segment_sum``. Best for small CG
  systems (tens to hundreds of beads).
- neighbour list (``SchNet.energy_neighbors``): a jax-md ``OrderedSparse`` list (each pair once,
  padded with N), for large systems. Its capacity is static; ``did_buffer_overflow`` is carried in
  the list as data and must be checked on the host (jax-md's convention).

Filters W_b(r) (RBF expansion → two dense layers → cosine envelope) depend on the distance alone.
With ``filter_table=K`` they are evaluated on K + 1 grid points in [0, r_c] (values and exact
derivatives, by forward-mode AD) and interpolated per pair with cubic Hermite splines: C¹ in r,
error O(h⁴) in W and O(h³) in dW/dr for h = r_c / K, and forces stay the exact gradient of the
(tabulated) energy. The grid is rebuilt from the parameters on every call, so training through it
works; it pays when the batch has more pairs than the grid has points. For simulation, where the
weights are fixed, ``filter_tables(params)`` computes the grid once; it is passed beside the
parameters (``energy(params, x, tables=tables)``), never stored among the trainable ones.

Two equivalent interfaces: the pure one (``SchNet.init`` → params, a nested dict of arrays;
``SchNet.energy(params, x)``), and a stateful Flax nnx module (``SchNet.module(key)`` →
``SchNetModule``, ``module(x)`` → energy), usable with ``nnx.jit``, ``nnx.grad`` and
``nnx.Optimizer``. ``SchNet.params_of(module)`` and ``SchNet.module_from(params)`` convert between
them; the pure energy is the module's ``__call__`` on ``nnx.merge(graphdef, params)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from jaxcg import neighbors
from jaxcg.bond_graph import pairs_within_hops
from jaxcg.geometry import norm
from jaxcg.models._rbf import cosine_cutoff, gaussian_centers, gaussian_rbf


def shifted_softplus(x: jax.Array) -> jax.Array:
    """softplus(x) − log 2, SchNet's activation."""
    return jax.nn.softplus(x) - jnp.log(2.0).astype(x.dtype)


class _Interaction(nnx.Module):
    """One interaction block: W = MLP(rbf) ⊙ envelope per pair, h ← h + MLP(Σ_j W_ij ⊙ (L h)_j)."""

    def __init__(self, n_features: int, n_rbf: int, dtype: Any, rngs: nnx.Rngs):
        kw = {"param_dtype": dtype, "dtype": dtype, "rngs": rngs}
        self.filter_in = nnx.Linear(n_rbf, n_features, **kw)
        self.filter_out = nnx.Linear(n_features, n_features, **kw)
        self.in2f = nnx.Linear(n_features, n_features, use_bias=False, **kw)
        self.f2out = nnx.Linear(n_features, n_features, **kw)
        self.dense = nnx.Linear(n_features, n_features, **kw)

    def filter(self, rbf: jax.Array, envelope: jax.Array) -> jax.Array:
        """(P, F) filters W(r) from rbf: (P, K) and envelope: (P,)."""
        return self.filter_out(shifted_softplus(self.filter_in(rbf))) * envelope[:, None]

    def __call__(self, h: jax.Array, w: jax.Array, aggregate) -> jax.Array:
        m = aggregate(self.in2f(h), w)
        return h + self.dense(shifted_softplus(self.f2out(m)))


class SchNetNetwork(nnx.Module):
    """SchNet's weights (Flax's default initialisers): embedding, interaction blocks sharing one
    RBF expansion, atom-wise MLP, sum pooling. ``__call__(types (N,), filters, aggregate)``
    gives the energy from precomputed per-pair filters; ``SchNetModule`` wraps it with the
    geometry."""

    def __init__(self, n_types: int, n_features: int, n_interactions: int, n_rbf: int, dtype: Any, rngs: nnx.Rngs):
        kw = {"param_dtype": dtype, "dtype": dtype, "rngs": rngs}
        self.n_interactions = n_interactions
        self.embedding = nnx.Embed(n_types, n_features, param_dtype=dtype, dtype=dtype, rngs=rngs)
        for b in range(n_interactions):
            setattr(self, f"interaction_{b}", _Interaction(n_features, n_rbf, dtype, rngs))
        self.out_1 = nnx.Linear(n_features, n_features // 2, **kw)
        self.out_2 = nnx.Linear(n_features // 2, 1, **kw)

    def blocks(self) -> list[_Interaction]:
        return [getattr(self, f"interaction_{b}") for b in range(self.n_interactions)]

    def filters(self, rbf: jax.Array, envelope: jax.Array) -> list[jax.Array]:
        """Each block's (P, F) filters for rbf: (P, K) and envelope: (P,)."""
        return [block.filter(rbf, envelope) for block in self.blocks()]

    def __call__(self, types: jax.Array, filters: list[jax.Array], aggregate, mask: jax.Array | None = None) -> jax.Array:
        """Energy from types (N,), each block's per-pair filters and ``aggregate``; ``mask``: (N,)
        bool, the beads whose atom-wise outputs are summed (None: all)."""
        h = self.embedding(types)
        for block, w in zip(self.blocks(), filters, strict=True):
            h = block(h, w, aggregate)
        out = self.out_2(shifted_softplus(self.out_1(h)))
        if mask is not None:
            out = jnp.where(mask[:, None], out, jnp.zeros_like(out))
        return jnp.sum(out)


def _take(table: jax.Array, index: jax.Array) -> jax.Array:
    """table[index] along the first axis for indices known to lie in range (no bounds handling)."""
    return table.at[index].get(mode="promise_in_bounds")


def hermite_coefficients(values: jax.Array, slopes: jax.Array, spacing: float) -> jax.Array:
    """(K, 4, F) cubic coefficients c_0..c_3 of each grid interval, p(t) = Σ c_m t^m for
    t ∈ [0, 1], from values and slopes (dW/dr): (K + 1, F) on a grid of the given spacing."""
    v0, v1 = values[:-1], values[1:]
    s0, s1 = slopes[:-1] * spacing, slopes[1:] * spacing
    c2 = 3.0 * (v1 - v0) - 2.0 * s0 - s1
    c3 = 2.0 * (v0 - v1) + s0 + s1
    return jnp.stack([v0, s0, c2, c3], axis=1)


def hermite_interpolate(coefficients: jax.Array, r: jax.Array, spacing: float) -> jax.Array:
    """(P, F) cubic Hermite interpolation at r: (P,) ≥ 0 of a grid from ``hermite_coefficients``;
    r beyond the grid takes the last point's value. Differentiable in r and in the coefficients."""
    n_intervals = coefficients.shape[0]
    u = jnp.minimum(r / spacing, float(n_intervals))
    index = jnp.minimum(jnp.floor(jax.lax.stop_gradient(u)).astype(jnp.int32), n_intervals - 1)
    t = (u - index.astype(u.dtype))[:, None]
    c = _take(coefficients, index)
    return c[:, 0] + t * (c[:, 1] + t * (c[:, 2] + t * c[:, 3]))


class SchNet:
    """SchNet energy model of one CG molecule.

    Args:
      bead_types: (N,) int bead types (embedding indices).
      n_types: size of the type vocabulary (default max(bead_types) + 1).
      features: F, width of embeddings and filters (default 128).
      blocks: interaction blocks (default 2).
      rbf: K Gaussians with centers evenly spaced in [0, cutoff] (default 32).
      cutoff: r_c in nm (default 1.2); filters vanish smoothly at r_c (cosine cutoff).
      bonds: (B, 2) bonded pairs, used only for exclusions.
      exclusion_hops: pairs at most this many bonds apart are left out of the convolutions
        (0: none, 1: bonded pairs, 2: also 1-3 pairs, ...).
      max_pairs: None (default) evaluates every pair, zeroing those beyond the cutoff. An int
        keeps only the pairs within the cutoff, compacted into a static buffer of this size, so
        filters are computed for those alone (a large saving when many pairs lie beyond the
        cutoff). Like a jax-md neighbour list, the capacity overflows as data: a configuration
        with more pairs within the cutoff is evaluated over the first ``max_pairs`` of them and
        ``pair_overflow(x)`` is True for it; check the flag (``jaxcg.train.fit`` does, every step,
        and raises ``PairCapacityError``). Choose it with ``pair_counts`` over the data, plus a
        margin. Parameters do not depend on it: train with a capacity and simulate without one.
      filter_table: None (default) evaluates the filter network for every pair. An int K
        tabulates each block's filters on K + 1 points in [0, r_c] and interpolates them with
        cubic Hermite splines (see the module docstring): the same parameters, an approximation
        of the exact model whose error falls as K⁻⁴ (measure it with ``filter_table_error``).
      dtype: parameter and compute dtype (float32 default).

    Params: a nested dict of arrays (``nnx.to_pure_dict`` of the weights' state); the same model as a
    stateful Flax nnx module: ``module(key)``, ``module_from(params)``, ``params_of(module)``.
    """

    def __init__(
        self,
        bead_types: np.ndarray,
        n_types: int | None = None,
        features: int = 128,
        blocks: int = 2,
        rbf: int = 32,
        cutoff: float = 1.2,
        bonds: np.ndarray | None = None,
        exclusion_hops: int = 0,
        max_pairs: int | None = None,
        filter_table: int | None = None,
        dtype: Any = jnp.float32,
    ):
        self.bead_types = np.asarray(bead_types, dtype=np.int32)
        if self.bead_types.ndim != 1 or self.bead_types.size < 2:
            raise ValueError(f"bead_types must have shape (N,) with N >= 2, got {self.bead_types.shape}")
        self.n_beads = int(self.bead_types.size)
        self.n_types = int(self.bead_types.max() + 1 if n_types is None else n_types)
        if self.bead_types.min() < 0 or self.bead_types.max() >= self.n_types:
            raise ValueError(f"bead_types must lie in [0, {self.n_types}), got {self.bead_types.min()}..{self.bead_types.max()}")
        if cutoff <= 0:
            raise ValueError(f"cutoff must be positive (nm), got {cutoff}")
        self.features, self.blocks, self.rbf = features, blocks, rbf
        self.cutoff = float(cutoff)
        self.dtype = dtype
        self.centers, self.gamma = gaussian_centers(0.0, self.cutoff, rbf)
        self.exclusions = pairs_within_hops(self.n_beads, bonds, exclusion_hops)
        excluded = {tuple(p) for p in self.exclusions.tolist()}
        i, j = np.triu_indices(self.n_beads, k=1)
        keep = np.array([(a, b) not in excluded for a, b in zip(i.tolist(), j.tolist(), strict=True)])
        self.pair_i, self.pair_j = i[keep], j[keep]
        if max_pairs is not None and not 1 <= max_pairs <= len(self.pair_i):
            raise ValueError(f"max_pairs must be in [1, {len(self.pair_i)}] (the pairs of the model), got {max_pairs}")
        self.max_pairs = max_pairs
        if filter_table is not None and (
            isinstance(filter_table, bool) or not isinstance(filter_table, int | np.integer) or filter_table < 2
        ):
            raise ValueError(f"filter_table must be an int >= 2 (grid intervals over [0, cutoff]), got {filter_table}")
        self.filter_table = None if filter_table is None else int(filter_table)
        self._exclusion_keys = np.sort(self.exclusions[:, 0] * self.n_beads + self.exclusions[:, 1])
        self._graphdef = nnx.graphdef(nnx.eval_shape(lambda: self._network(jax.random.key(0))))

    def _network(self, key: jax.Array) -> SchNetNetwork:
        return SchNetNetwork(self.n_types, self.features, self.blocks, self.rbf, self.dtype, nnx.Rngs(key))

    # ------------------------------------------------------------------ module <-> params

    def module(self, key: jax.Array) -> SchNetModule:
        """A new ``SchNetModule`` with random weights from ``key`` (Flax's default initialisers)."""
        return SchNetModule(self, self._network(key))

    def module_from(self, params: dict[str, Any]) -> SchNetModule:
        """The ``SchNetModule`` holding ``params`` (a nested dict as ``init`` returns)."""
        return SchNetModule(self, nnx.merge(self._graphdef, params))

    @staticmethod
    def params_of(module: SchNetModule) -> dict[str, Any]:
        """The pure parameters (nested dict of arrays) of a ``SchNetModule``."""
        return nnx.to_pure_dict(nnx.state(module.network, nnx.Param))

    def init(self, key: jax.Array, positions: jax.Array) -> dict[str, Any]:
        """Random parameters from ``key`` (those of ``module(key)``); positions: (N, 3) nm (only
        its shape is checked)."""
        if np.shape(positions) != (self.n_beads, 3):
            raise ValueError(f"positions must have shape ({self.n_beads}, 3), got {np.shape(positions)}")
        return self.params_of(self.module(key))

    # ------------------------------------------------------------------ filters

    def _features(self, r: jax.Array) -> tuple[jax.Array, jax.Array]:
        rbf = gaussian_rbf(r, jnp.asarray(self.centers, r.dtype), jnp.asarray(self.gamma, r.dtype))
        return rbf, cosine_cutoff(r, self.cutoff)

    def filter_tables(self, params: dict[str, Any]) -> tuple[jax.Array, ...]:
        """Each block's (K, 4, F) Hermite coefficients of its filters, computed once from
        ``params``, for ``energy(params, x, tables=...)`` when the weights do not change
        (simulation): the grid is then not rebuilt on every call. Gradients with respect to the
        filter weights do not flow through tables passed in this way."""
        if self.filter_table is None:
            raise ValueError("filter_tables needs a model built with filter_table=K")
        network = nnx.merge(self._graphdef, params)
        return tuple(jax.jit(lambda: self._filter_coefficients(network, self.dtype))())

    def _checked_tables(self, tables: Any) -> list[jax.Array]:
        if self.filter_table is None:
            raise ValueError("tables were passed to a model built with filter_table=None: build it with "
                             "filter_table=K or leave tables out")
        shape = (self.filter_table, 4, self.features)
        if len(tables) != self.blocks or any(np.shape(t) != shape for t in tables):
            raise ValueError(f"tables must be {self.blocks} arrays of shape {shape} (from this model's "
                             f"filter_tables), got {[np.shape(t) for t in tables]}")
        return list(tables)

    def _filter_coefficients(self, network: SchNetNetwork, dtype: Any) -> list[jax.Array]:
        """Each block's (K, 4, F) Hermite coefficients of W(r) on the grid (values and slopes by
        one forward-mode pass through the filter networks)."""
        grid = jnp.linspace(0.0, self.cutoff, self.filter_table + 1, dtype=dtype)
        values, slopes = jax.jvp(lambda r: network.filters(*self._features(r)), (grid,), (jnp.ones_like(grid),))
        spacing = self.cutoff / self.filter_table
        return [hermite_coefficients(v, s, spacing) for v, s in zip(values, slopes, strict=True)]

    def filter_table_error(self, params: dict[str, Any], n_points: int = 4096) -> float:
        """Largest |W_table(r) − W(r)| over r in [0, r_c] and all blocks and features, relative to
        the largest |W(r)|: the accuracy of ``filter_table`` for these parameters (0 without one)."""
        if self.filter_table is None:
            return 0.0
        network = nnx.merge(self._graphdef, params)
        r = jnp.linspace(0.0, self.cutoff, n_points, dtype=self.dtype)
        exact = network.filters(*self._features(r))
        spacing = self.cutoff / self.filter_table
        tabulated = [hermite_interpolate(c, r, spacing) for c in self._filter_coefficients(network, self.dtype)]
        error = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(tabulated, exact, strict=True))
        return error / max(float(jnp.max(jnp.abs(w))) for w in exact)

    def _apply(self, network: SchNetNetwork, r: jax.Array, envelope_mask: jax.Array | None, aggregate,
               tables: Any, types: jax.Array | None = None, bead_mask: jax.Array | None = None) -> jax.Array:
        """Energy from pair distances r: (P,) nm (pairs masked out by ``envelope_mask``); ``types``
        (N,) replace the model's bead types and ``bead_mask`` (N,) bool selects the beads whose
        outputs count (padded models, ``TransferableSchNet``)."""
        if self.filter_table is None:
            if tables is not None:
                self._checked_tables(tables)
            rbf, envelope = self._features(r)
            if envelope_mask is not None:
                envelope = jnp.where(envelope_mask, envelope, jnp.zeros_like(envelope))
            filters = network.filters(rbf, envelope)
        else:
            spacing = self.cutoff / self.filter_table
            if tables is None:
                coefficients = self._filter_coefficients(network, r.dtype)
            else:
                coefficients = self._checked_tables(tables)
            filters = [hermite_interpolate(c, r, spacing) for c in coefficients]
            if envelope_mask is not None:
                filters = [jnp.where(envelope_mask[:, None], w, jnp.zeros_like(w)) for w in filters]
        types = jnp.asarray(self.bead_types) if types is None else types
        return network(types, filters, aggregate, bead_mask)

    def _check_x(self, x: jax.Array) -> None:
        """The model's bead count is fixed: x of another shape is refused (at trace time)."""
        if np.shape(x) != (self.n_beads, 3):
            raise ValueError(
                f"x must have shape ({self.n_beads}, 3): this SchNet has {self.n_beads} beads, got {np.shape(x)}"
            )

    def energy(self, params: dict[str, Any], x: jax.Array, tables: Any = None) -> jax.Array:
        """Energy in kJ/mol of x: (N, 3) nm, dense pair path. Pure and jittable.

        ``tables``: the filter grid from ``filter_tables(params)`` (models with ``filter_table``
        only), so that it is not rebuilt on every call. With ``max_pairs`` set, a configuration
        with more pairs within the cutoff is evaluated over the first ``max_pairs`` of them:
        ``pair_overflow(x)`` flags it (check the flag).
        """
        return self._dense_energy(nnx.merge(self._graphdef, params), x, tables)

    def _dense_energy(self, network: SchNetNetwork, x: jax.Array, tables: Any, types: jax.Array | None = None,
                      bead_mask: jax.Array | None = None) -> jax.Array:
        """Dense-pair energy; with ``bead_mask`` (N,) bool, pairs with a masked-out bead have zero
        filters and masked-out beads' outputs do not count (see ``_apply``)."""
        self._check_x(x)
        x = x.astype(self.dtype)
        i, j = self.pair_i, self.pair_j
        r = norm(x[j] - x[i])
        pair_mask = None if bead_mask is None else bead_mask[i] & bead_mask[j]
        if self.max_pairs is None:
            return self._apply(network, r, pair_mask, self._aggregate(i, j), tables, types, bead_mask)
        within = r < self.cutoff if pair_mask is None else (r < self.cutoff) & pair_mask
        (selected,) = jnp.nonzero(within, size=self.max_pairs, fill_value=0)
        valid = jnp.arange(self.max_pairs) < jnp.sum(within)
        ii, jj = jnp.asarray(i)[selected], jnp.asarray(j)[selected]
        return self._apply(network, r[selected], valid, self._aggregate(ii, jj), tables, types, bead_mask)

    def pair_overflow(self, x: jax.Array) -> jax.Array:
        """() bool: x (N, 3) nm has more (non-excluded) pairs within the cutoff than ``max_pairs``,
        so ``energy`` left some out; always False without ``max_pairs``. Pure and jittable (the
        overflow flag as data, jax-md's ``did_buffer_overflow`` convention)."""
        self._check_x(x)
        if self.max_pairs is None:
            return jnp.zeros((), bool)
        x = x.astype(self.dtype)
        return jnp.sum(norm(x[self.pair_j] - x[self.pair_i]) < self.cutoff) > self.max_pairs

    def _aggregate(self, i: Any, j: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
        i, j = jnp.asarray(i), jnp.asarray(j)

        def aggregate(hx: jax.Array, w: jax.Array) -> jax.Array:
            # m_i = Σ_j W_ij x_j with W_ij = W_ji: one filter per unordered pair, used in both
            # directions by two gathers and two segment sums (indices in range by construction).
            n = self.n_beads
            forward = jax.ops.segment_sum(w * _take(hx, j), i, num_segments=n, mode="promise_in_bounds")
            return forward + jax.ops.segment_sum(w * _take(hx, i), j, num_segments=n, mode="promise_in_bounds")

        return aggregate

    def pair_counts(self, positions: np.ndarray) -> np.ndarray:
        """(T,) number of (non-excluded) pairs within the cutoff in each frame of positions
        (T, N, 3) nm; ``max_pairs`` must be at least the maximum over the frames the model sees."""
        positions = np.asarray(positions)
        return np.sum(norm(positions[:, self.pair_j] - positions[:, self.pair_i]) < self.cutoff, axis=1)

    # ------------------------------------------------------------------ neighbour-list path

    def neighbor_list(
        self, box: jax.Array | None = None, dr_threshold: float = 0.1, capacity_multiplier: float = 1.25
    ) -> tuple[Callable, Callable]:
        """``(displacement_fn, neighbor_fn)`` of a jax-md ``OrderedSparse`` list with this
        model's cutoff (``jaxcg.neighbors.neighbor_list``).

        Args:
          box: periodic box side lengths (3,) nm, or None for free space.
          dr_threshold: skin in nm. capacity_multiplier: spare capacity on allocation.

        Use ``neighbor_fn.allocate(x)`` on the host, ``neighbor_fn.update(x, nbrs)`` inside jit,
        and check ``nbrs.did_buffer_overflow`` on the host (re-allocate and redo the chunk if set).
        """
        displacement, _, neighbor_fn = neighbors.neighbor_list(
            self.cutoff, dr_threshold, box, capacity_multiplier, dtype=self.dtype)
        return displacement, neighbor_fn

    def energy_neighbors(
        self, params: dict[str, Any], x: jax.Array, neighbor: Any, displacement: Callable | None = None,
        tables: Any = None,
    ) -> jax.Array:
        """Energy in kJ/mol of x: (N, 3) nm over the pairs of a jax-md ``OrderedSparse`` list.

        ``displacement`` is the list's displacement function (default free space). Another
        format (a ``Dense`` or ``Sparse`` list, as jax-md builds by default) is
        refused with a ``ValueError``: its ``idx`` rows are not pairs. ``neighbor`` may be
        batched over replicas by ``jax.vmap``. ``tables`` as for ``energy``.
        """
        return self._neighbor_energy(nnx.merge(self._graphdef, params), x, neighbor, displacement, tables)

    def _neighbor_energy(
        self, network: SchNetNetwork, x: jax.Array, neighbor: Any, displacement: Callable | None, tables: Any
    ) -> jax.Array:
        ii, jj, valid = neighbors.pairs(neighbor, self.n_beads)
        self._check_x(x)
        x = x.astype(self.dtype)
        n = self.n_beads
        if len(self._exclusion_keys):
            keys = jnp.asarray(self._exclusion_keys)
            flat = jnp.minimum(ii, jj) * n + jnp.maximum(ii, jj)
            pos = jnp.clip(jnp.searchsorted(keys, flat), 0, len(keys) - 1)
            valid = valid & (keys[pos] != flat)
            ii, jj = jnp.where(valid, ii, 0), jnp.where(valid, jj, 0)
        if displacement is None:
            d = x[jj] - x[ii]
        else:
            d = jax.vmap(displacement)(x[jj], x[ii])
        r = norm(d)
        ok = valid & (r > 0)

        def aggregate(hx: jax.Array, w: jax.Array) -> jax.Array:
            out = jax.ops.segment_sum(w * hx[jj], ii, num_segments=n)
            return out + jax.ops.segment_sum(w * hx[ii], jj, num_segments=n)

        return self._apply(network, jnp.where(ok, r, jnp.zeros_like(r)), ok, aggregate, tables)


class SchNetModule(nnx.Module):
    """A ``SchNet`` as a stateful Flax nnx module: ``module(x)`` is the energy in kJ/mol of
    x: (N, 3) nm, the same function as ``SchNet.energy(params, x)``.

    Built by ``SchNet.module(key)`` or ``SchNet.module_from(params)``; trains with
    ``nnx.Optimizer(module, tx, wrt=nnx.Param)`` and ``nnx.jit``/``nnx.value_and_grad``. The
    weights live in ``module.network`` (``nnx.Param``s); ``schnet`` is the model description
    (static: bead types, pairs, cutoff).
    """

    def __init__(self, schnet: SchNet, network: SchNetNetwork):
        self.schnet = schnet
        self.network = network

    def __call__(self, x: jax.Array, tables: Any = None) -> jax.Array:
        return self.schnet._dense_energy(self.network, x, tables)

    def energy_neighbors(
        self, x: jax.Array, neighbor: Any, displacement: Callable | None = None, tables: Any = None
    ) -> jax.Array:
        """Energy in kJ/mol over the pairs of a jax-md ``OrderedSparse`` list (see ``SchNet``)."""
        return self.schnet._neighbor_energy(self.network, x, neighbor, displacement, tables)
