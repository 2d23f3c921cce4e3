"""Prior + network: the standard CG model U = U_prior + U_net."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcg.models._base import EnergyModel


class PriorPlusNet:
    """U(x) = prior.energy(params["prior"], x) + net.energy(params["net"], x), kJ/mol.

    Both parts follow the ``EnergyModel`` interface. Params: ``{"prior": ..., "net": ...}``.
    To keep the prior frozen while training, train ``net`` on delta forces
    (``jaxcg.train.delta_forces``) and combine the parameters afterwards.
    """

    def __init__(self, prior: EnergyModel, net: EnergyModel):
        self.prior = prior
        self.net = net

    @property
    def n_beads(self) -> int | None:
        """Bead count N of the network (None if it does not say)."""
        return getattr(self.net, "n_beads", None)

    def init(self, key: jax.Array, positions: jax.Array) -> dict[str, Any]:
        k_prior, k_net = jax.random.split(key)
        return {"prior": self.prior.init(k_prior, positions), "net": self.net.init(k_net, positions)}

    def energy(self, params: dict[str, Any], x: jax.Array, **net_kwargs: Any) -> jax.Array:
        """U in kJ/mol of x: (N, 3) nm; ``net_kwargs`` go to the network's energy (e.g. a
        SchNet's ``tables=``)."""
        return self.prior.energy(params["prior"], x) + self.net.energy(params["net"], x, **net_kwargs)

    def pair_overflow(self, x: jax.Array) -> jax.Array:
        """() bool: the network's pair capacity overflows at x (N, 3) nm (False if it has none)."""
        overflow = getattr(self.net, "pair_overflow", None)
        return jnp.zeros((), bool) if overflow is None else overflow(x)
