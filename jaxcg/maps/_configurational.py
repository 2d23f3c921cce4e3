"""Configuration-dependent force maps G(r), valid at every configuration.

For a linear configurational map x = M r and coefficients G(r) (N, n) that satisfy G(r) Mᵀ = I
at every r, the mapped force of bead i along Cartesian direction α is

    f_iα(r) = Σ_a G_ia(r) F_aα(r) + kT Σ_a ∂G_ia(r) / ∂r_aα                       (kJ/mol/nm)

The second (divergence) term is required: integrating by parts over the atoms at fixed x,
E[Σ_a G_ia F_aα | x] = −∂PMF/∂x_iα − kT E[Σ_a ∂G_ia/∂r_aα | x], so without it the mean force is
biased wherever the coefficients vary with r. With it, E[f | x] = −∇PMF(x) for every valid G(r),
and minimising E‖f‖² lowers only the noise.

G(r) = G0 + θ(r) B uses the valid-map parametrisation (``valid_map_parametrization``), so
consistency holds exactly for every network output. θ_i(r) comes from a small MLP of invariant,
local features: the distances from bead i's position M_i r to every atom, and a one-hot bead index.

For these features the divergence has a closed form. With bead position b_i = M_i r,
d_ic = |b_i − r_c| and unit vectors u_ic = (b_i − r_c) / d_ic, ∂d_ic/∂r_aα = u_icα (M_ia − δ_ac);
since every basis row B_ik is orthogonal to M_i (Σ_a B_ika M_ia = 0, that is what keeps G Mᵀ = I),

    Σ_a ∂G_ia/∂r_aα = −Σ_c s_ic u_icα,   s_ic = Σ_k (∂θ_ik/∂d_ic) B_ikc,

which needs only the MLP's Jacobian with respect to its n distance inputs, not the Jacobian of
G (N × n) with respect to all 3n coordinates: ``fit_configurational_map`` and
``mean_squared_configurational_force`` use it (``configurational_mapped_forces`` keeps the
general autodiff divergence for any G(r), and the tests check that the two agree).

Limitation: the divergence above is the ambient one, exact for unconstrained data. Under holonomic
constraints the divergence must be taken on the constraint manifold (and the constrained measure
brings a metric factor), which is not implemented: ``fit_configurational_map`` refuses
constrained data rather than return a biased map.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcg.data import AtomisticData
from jaxcg.geometry import norm
from jaxcg.maps._parametrized import MapParametrization, force_matrix
from jaxcg.optim import fit_loss, weighted_mean

MLPParams = list[tuple[jax.Array, jax.Array]]


def init_configurational_map(
    parametrization: MapParametrization, key: jax.Array, hidden: tuple[int, ...] = (64, 64)
) -> MLPParams:
    """MLP weights mapping bead features (n distances + N one-hot) to θ_i (K).

    The last layer starts at zero, so the initial map is the parametrisation's base map.
    """
    n_beads, width, n_atoms = np.shape(parametrization.basis)
    sizes = [n_atoms + n_beads, *hidden, width]
    params = []
    keys = jax.random.split(key, len(sizes) - 1)
    dtype = parametrization.basis.dtype
    for layer, (k, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
        last = layer == len(sizes) - 2
        weight = jnp.zeros((fan_in, fan_out), dtype) if last else (
            jax.random.normal(k, (fan_in, fan_out), dtype) / jnp.sqrt(jnp.asarray(fan_in, dtype))
        )
        params.append((weight, jnp.zeros((fan_out,), dtype)))
    return params


def _bead_features(parametrization: MapParametrization, positions: jax.Array) -> jax.Array:
    """(N, n + N) features: distances (nm) from each bead to every atom, and a one-hot index."""
    beads = parametrization.config.astype(positions.dtype) @ positions
    # Softened so that a bead on an atom (slice maps) keeps a finite ∂d/∂r = offset / d.
    distances = norm(beads[:, None, :] - positions[None, :, :], softening=1e-6)
    n_beads = beads.shape[0]
    return jnp.concatenate([distances, jnp.eye(n_beads, dtype=positions.dtype)], axis=1)


def _mlp(params: MLPParams, features: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    """(output, pre-activations of the hidden layers) of the SiLU MLP."""
    hidden, pre_activations = features, []
    for weight, bias in params[:-1]:
        z = hidden @ weight + bias
        pre_activations.append(z)
        hidden = jax.nn.silu(z)
    weight, bias = params[-1]
    return hidden @ weight + bias, pre_activations


def _silu_derivative(z: jax.Array) -> jax.Array:
    sigmoid = jax.nn.sigmoid(z)
    return sigmoid * (1.0 + z * (1.0 - sigmoid))


def _mlp_and_basis_trace(
    params: MLPParams, features: jax.Array, basis: jax.Array, n_atoms: int
) -> tuple[jax.Array, jax.Array]:
    """θ = MLP(features) (N, K) and s_ic = Σ_k (∂θ_ik/∂d_ic) B_ikc (N, n) for the first n inputs.

    s is the diagonal of Jᵀ B, accumulated from the output down the layers with B as the
    cotangent and its atom index c carried along: P ← W_l P, P ← silu'(z) ⊙ P, and finally
    s_c = Σ_h W_1[c, h] P[h, c]. Cost O(H² n) per bead instead of a Jacobian of n columns."""
    theta, pre_activations = _mlp(params, features)
    cotangent = basis  # (N, K, n): at the output θ
    for (weight, _), z in zip(reversed(params[1:]), reversed(pre_activations), strict=True):
        cotangent = jnp.einsum("gh,ihc->igc", weight, cotangent) * _silu_derivative(z)[:, :, None]
    strength = jnp.einsum("ch,ihc->ic", params[0][0][:n_atoms], cotangent)
    return theta, strength


def mapped_forces_closed_form(
    parametrization: MapParametrization, params: MLPParams, positions: jax.Array, forces: jax.Array, kT: float
) -> tuple[jax.Array, jax.Array]:
    """(f, Δ): mapped forces f = G(r) F + kT ∇·G(r) (N, 3) kJ/mol/nm of one frame, divergence
    in closed form (module docstring), and Δ = G(r) − G0 (N, n). positions (n, 3) nm."""
    config = parametrization.config.astype(positions.dtype)
    n_atoms = positions.shape[0]
    features = _bead_features(parametrization, positions)  # (N, n + N)
    beads = config @ positions
    offsets = beads[:, None, :] - positions[None, :, :]
    units = offsets / features[:, :n_atoms, None]
    basis = parametrization.basis.astype(positions.dtype)
    theta, strength = _mlp_and_basis_trace(params, features, basis, n_atoms)
    divergence = -jnp.einsum("ic,icd->id", strength, units)
    delta = jnp.einsum("ik,ikn->in", theta, basis)
    g = parametrization.base.astype(positions.dtype) + delta
    return g.astype(forces.dtype) @ forces + kT * divergence.astype(forces.dtype), delta


def configurational_coefficients(
    parametrization: MapParametrization, params: MLPParams, positions: jax.Array
) -> jax.Array:
    """G(r): (N, n) valid force-map coefficients at one configuration ``positions`` (n, 3) nm."""
    return force_matrix(parametrization, _mlp(params, _bead_features(parametrization, positions))[0])


def configurational_mapped_forces(
    coefficients_fn: Callable[[jax.Array], jax.Array],
    positions: jax.Array,
    forces: jax.Array,
    kT: float,
    divergence: bool = True,
) -> jax.Array:
    """Mapped forces f = G(r) F + kT ∇·G(r) of one frame.

    Args:
      coefficients_fn: r (n, 3) -> G(r) (N, n); must satisfy G(r) Mᵀ = I.
      positions: (n, 3) nm. forces: (n, 3) kJ/mol/nm. kT: kJ/mol.
      divergence: include the kT Σ_a ∂G_ia/∂r_aα term (leave on: without it the map is biased).

    Returns:
      (N, 3) kJ/mol/nm. Use ``jax.vmap`` over frames.
    """
    g = coefficients_fn(positions)
    mapped = g.astype(forces.dtype) @ forces
    if not divergence:
        return mapped
    jacobian = jax.jacfwd(coefficients_fn)(positions)  # (N, n, n, 3): ∂G_ia / ∂r_bβ
    div = jnp.einsum("iaad->id", jacobian)
    return mapped + kT * div.astype(forces.dtype)


def fit_configurational_map(
    parametrization: MapParametrization,
    data: AtomisticData,
    key: jax.Array,
    params: MLPParams | None = None,
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 1000,
    batch_size: int = 64,
    l2: float = 0.0,
    hidden: tuple[int, ...] = (64, 64),
    callback: Callable[[int, float], None] | None = None,
) -> tuple[MLPParams, np.ndarray]:
    """Train G(r) to minimise E‖f‖² + l2 E‖G(r) − G0‖² with optax (divergence term included).

    Args:
      parametrization: valid-map parametrisation (its base is θ = 0; build it with
        ``base=`` an optimal linear map to start from the best linear map).
      data: unconstrained all-atom frames (positions nm, forces kJ/mol/nm).
      key: jax.random key (initialisation and minibatches).
      params: starting MLP weights (default ``init_configurational_map``).
      optimizer: default Adam, learning rate 1e-3 cosine-decayed.
      steps: optimisation steps.
      batch_size: frames per step.
      l2: weight of the penalty l2 · E‖G(r) − G0‖² (squared departure of the coefficients from
        the base map, summed over beads and atoms), (kJ/mol/nm)².
      callback: callback(step, loss) every 100 steps.

    Returns:
      (params, losses) with losses (steps,) in (kJ/mol/nm)² per frame.
    """
    if data.constraints is not None and len(data.constraints):
        raise ValueError(
            "fit_configurational_map needs unconstrained data: the divergence correction on a "
            f"constraint manifold is not implemented (data has {len(data.constraints)} constraints)"
        )
    init_key, key = jax.random.split(key)
    params = init_configurational_map(parametrization, init_key, hidden) if params is None else params
    optimizer = optimizer or optax.adam(optax.cosine_decay_schedule(1e-3, steps, alpha=1e-2))
    positions = jnp.asarray(data.positions, parametrization.basis.dtype)
    forces = jnp.asarray(data.forces, parametrization.basis.dtype)
    kT = data.kT

    def loss_fn(p: MLPParams, batch) -> jax.Array:
        def one(r, f):
            mapped, delta = mapped_forces_closed_form(parametrization, p, r, f, kT)
            return jnp.sum(mapped**2) + l2 * jnp.sum(delta**2)

        return weighted_mean(jax.vmap(one)(*batch.data), batch.weights)

    params, losses, _ = fit_loss(
        loss_fn, params, (positions, forces), optimizer, steps=steps, batch_size=batch_size, key=key,
        callback=callback, name="fit_configurational_map",
    )
    return params, losses


def mean_squared_configurational_force(
    parametrization: MapParametrization, params: MLPParams, data: AtomisticData, chunk_size: int = 256
) -> float:
    """E Σ_beads ‖f‖² of the configuration-dependent map over ``data``, (kJ/mol/nm)²."""
    dtype = parametrization.basis.dtype

    @jax.jit
    def chunk_sum(r, f):
        def one(x, y):
            return jnp.sum(mapped_forces_closed_form(parametrization, params, x, y, data.kT)[0] ** 2)

        return jnp.sum(jax.vmap(one)(r, f))

    total = 0.0
    for positions, forces in data.chunks(chunk_size):
        total += float(chunk_sum(jnp.asarray(positions, dtype), jnp.asarray(forces, dtype)))
    return total / data.n_frames
