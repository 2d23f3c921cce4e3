"""Evaluation of a CG model by what it samples: simulate many replicas for long, histogram
collective variables (CVs), compare with the all-atom reference.

A model is judged by the distribution it samples over a long run, never by its force-matching
loss alone: two models with the same validation loss can sample very different surfaces (a prior
with a well where the data never go makes the model drain into it, slowly). ``sampling_report``
therefore gives, beside the KL divergence and free-energy MSE of the whole run,

- its own sampling error: the KL of two independent halves of the replicas (``kl_replica_halves``);
- its drift: the KL of the first and of the second half of every replica's run
  (``kl_time_halves``); a model that drains has a second half further from the reference than its
  first, by more than the halves of the replicas differ;
- the fraction of CG frames in bins the reference never visits (``unvisited_fraction``);
- the replicas that were stopped (NaN or a force above the bound) and where.

Units: positions nm, CVs in their own unit (radians for angles), kT kJ/mol, time ps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcg.analysis import FreeEnergy2D, fes_2d, free_energy_mse, kl_divergence

#: Observables of frames: (T, N, 3) nm -> (T, 2) CVs.
Observables = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class SamplingReport:
    """How far a CG model's sampled CV distribution is from the reference's.

    Attributes:
      kl: KL(reference ‖ CG) in nats over the CV bins, all CG frames pooled.
      mse_kJ2_per_mol2: free-energy MSE over bins populated in both, (kJ/mol)².
      kl_replica_halves: (2,) KL of the even- and of the odd-numbered replicas, each alone; their
        difference is the scale of the sampling error of a half-run.
      kl_time_halves: (2,) KL of the first and of the second half of every replica's frames.
      drift: kl_time_halves[1] − kl_time_halves[0]; positive when the model moves away from the
        reference as it runs.
      sampling_error: standard deviation of KL(half A) − KL(half B) over random splits of the
        replicas into two halves: the noise of a difference of two half-run KLs, the same kind of
        quantity as ``drift``.
      unvisited_fraction: fraction of CG frames in bins where the reference has no frame.
      n_frames: CG frames used (frames of stopped replicas after their stop excluded).
      n_replicas: replicas simulated. stopped: [(replica, step), ...] of stopped replicas.
      simulated_ns: CG time simulated over all replicas that counted, ns.
    """

    kl: float
    mse_kJ2_per_mol2: float
    kl_replica_halves: tuple[float, float]
    kl_time_halves: tuple[float, float]
    drift: float
    sampling_error: float
    unvisited_fraction: float
    n_frames: int
    n_replicas: int
    stopped: tuple[tuple[int, int], ...]
    simulated_ns: float

    @property
    def drifting(self) -> bool:
        """True when the run moved away from the reference by more than three times its sampling
        error (and by more than 0.01 nats)."""
        return self.drift > max(3.0 * self.sampling_error, 0.01)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able dict (with ``drifting``)."""
        out = dataclasses.asdict(self)
        out["stopped"] = [list(s) for s in self.stopped]
        out["drifting"] = self.drifting
        return out


def _surface(cv: np.ndarray, edges: tuple[np.ndarray, np.ndarray], kT: float) -> FreeEnergy2D:
    return fes_2d(cv[:, 0], cv[:, 1], edges[0], edges[1], kT)


def _compare(reference: FreeEnergy2D, model: FreeEnergy2D) -> dict[str, float]:
    """KL and MSE; a CG histogram collapsed into one bin is a (bad) result, not an error."""
    return {"kl": kl_divergence(reference.probability, model.probability),
            "mse_kJ2_per_mol2": free_energy_mse(reference.free_energy, model.free_energy)}


def sampling_report(
    reference_cv: np.ndarray,
    cg_cv: np.ndarray,
    alive: np.ndarray,
    edges: tuple[np.ndarray, np.ndarray],
    kT: float,
    stopped: tuple[tuple[int, int], ...] = (),
    frame_interval_ps: float = float("nan"),
    n_splits: int = 16,
) -> tuple[SamplingReport, dict[str, FreeEnergy2D]]:
    """Compare CG replicas with the reference on two CVs.

    Args:
      reference_cv: (T, 2) CVs of the reference frames.
      cg_cv: (R, F, 2) CVs of F saved frames of each of R replicas, in time order.
      alive: (R, F) bool, False for frames saved after a replica was stopped.
      edges: bin edges (bins + 1,) for each CV.
      kT: kJ/mol, for the free energies.
      stopped: (replica, step) of stopped replicas, reported as given.
      frame_interval_ps: time between saved frames, ps (for ``simulated_ns``).
      n_splits: random half-splits of the replicas for ``sampling_error`` (seeded, reproducible).

    Returns:
      (report, surfaces {"reference", "CG"}).

    Raises:
      ValueError: shapes disagree, or fewer than 2 replicas or 2 frames per replica are left.
    """
    reference_cv = np.asarray(reference_cv, np.float64)
    cg_cv, alive = np.asarray(cg_cv, np.float64), np.asarray(alive, bool)
    if reference_cv.ndim != 2 or reference_cv.shape[1] != 2:
        raise ValueError(f"reference_cv must have shape (T, 2), got {reference_cv.shape}")
    if cg_cv.ndim != 3 or cg_cv.shape[2] != 2:
        raise ValueError(f"cg_cv must have shape (R, F, 2), got {cg_cv.shape}")
    if alive.shape != cg_cv.shape[:2]:
        raise ValueError(f"alive must have shape {cg_cv.shape[:2]} (R, F), got {alive.shape}")
    n_replicas, n_saved = alive.shape
    if n_replicas < 2 or n_saved < 2 or alive.sum() < 2:
        raise ValueError(f"need at least 2 replicas with 2 frames each to estimate a sampling error, got "
                         f"{n_replicas} replicas, {n_saved} frames, {int(alive.sum())} frames alive")
    reference = _surface(reference_cv, edges, kT)
    if np.count_nonzero(reference.probability) < 2:
        raise ValueError("reference_cv falls into fewer than 2 bins of edges: no surface to compare with")
    pooled = _surface(cg_cv[alive], edges, kT)
    metrics = _compare(reference, pooled)

    def kl_of(select: np.ndarray) -> float:
        chosen = cg_cv[select & alive]
        return _compare(reference, _surface(chosen, edges, kT))["kl"] if len(chosen) else float("inf")

    replica_index = np.arange(n_replicas)[:, None] * np.ones((1, n_saved), int)
    frame_index = np.ones((n_replicas, 1), int) * np.arange(n_saved)[None, :]
    halves_r = (kl_of(replica_index % 2 == 0), kl_of(replica_index % 2 == 1))
    halves_t = (kl_of(frame_index < n_saved // 2), kl_of(frame_index >= n_saved // 2))
    rng = np.random.default_rng(0)
    differences = []
    for _ in range(n_splits):
        in_a = np.zeros(n_replicas, bool)
        in_a[rng.permutation(n_replicas)[: n_replicas // 2]] = True
        differences.append(kl_of(in_a[replica_index]) - kl_of(~in_a[replica_index]))
    unvisited = reference.probability == 0
    ix = np.clip(np.searchsorted(edges[0], cg_cv[alive][:, 0], side="right") - 1, 0, len(edges[0]) - 2)
    iy = np.clip(np.searchsorted(edges[1], cg_cv[alive][:, 1], side="right") - 1, 0, len(edges[1]) - 2)
    report = SamplingReport(
        kl=float(metrics["kl"]),
        mse_kJ2_per_mol2=float(metrics["mse_kJ2_per_mol2"]),
        kl_replica_halves=(float(halves_r[0]), float(halves_r[1])),
        kl_time_halves=(float(halves_t[0]), float(halves_t[1])),
        drift=float(halves_t[1] - halves_t[0]),
        sampling_error=float(np.sqrt(np.mean(np.square(differences)))),
        unvisited_fraction=float(np.mean(unvisited[ix, iy])),
        n_frames=int(alive.sum()),
        n_replicas=int(n_replicas),
        stopped=tuple((int(r), int(s)) for r, s in stopped),
        simulated_ns=float(alive.sum() * frame_interval_ps * 1e-3),
    )
    return report, {"reference": reference, "CG": pooled}


def simulate_replicas(
    energy: Callable[[jax.Array], jax.Array],
    start: np.ndarray,
    masses: np.ndarray,
    temperature: float,
    n_steps: int,
    key: jax.Array,
    dt: float = 0.002,
    friction: float = 1.0,
    save_every: int = 100,
    steps_per_chunk: int = 10_000,
    force_bound: float = 1.0e4,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]:
    """Langevin dynamics of replicas started from ``start``; every saved frame kept per replica.

    Args:
      energy: ``energy(x (N, 3) nm) -> kJ/mol``.
      start: (R, N, 3) nm, one starting frame per replica.
      masses: (N,) amu. temperature: K. n_steps: steps per replica. dt: ps. friction: 1/ps.
      save_every: steps between saved frames. steps_per_chunk: steps per jitted call (rounded
        down to a multiple of ``save_every``). force_bound: kJ/mol/nm, a replica with a larger
        force is stopped.
      progress: called as ``progress(steps_done, n_steps)`` after each chunk.

    Returns:
      positions (R, F, N, 3) nm with F = n_steps // save_every (rounded up to whole chunks),
      alive (R, F) bool (False after a replica's stop), stopped ((replica, step), ...).
    """
    from jaxcg.simulate import langevin

    steps_per_chunk = max(save_every, min(steps_per_chunk, n_steps))
    steps_per_chunk -= steps_per_chunk % save_every
    sim = langevin(energy, masses, temperature, dt, friction, steps_per_chunk, save_every,
                   force_bound=force_bound)
    state = sim.init(key, jnp.asarray(start, jnp.float32))
    frames, steps = [], []
    for _ in range(-(-n_steps // steps_per_chunk)):
        first = int(state.step)
        state, record = sim.run_chunk(state)
        frames.append(np.asarray(record.positions))
        steps.append(first + save_every * np.arange(1, frames[-1].shape[0] + 1))
        if progress is not None:
            progress(int(state.step), n_steps)
    positions = np.concatenate(frames).transpose(1, 0, 2, 3)  # (R, F, N, 3)
    steps_all = np.concatenate(steps)
    stopped_at = np.asarray(state.stopped_at)
    alive = (stopped_at[:, None] < 0) | (steps_all[None, :] < stopped_at[:, None])
    stopped = tuple((int(r), int(stopped_at[r])) for r in np.flatnonzero(stopped_at >= 0))
    return positions, alive, stopped


def evaluate_model(
    energy: Callable[[jax.Array], jax.Array],
    reference_positions: np.ndarray,
    observables: Observables,
    edges: tuple[np.ndarray, np.ndarray],
    masses: np.ndarray,
    temperature: float,
    n_replicas: int,
    n_steps: int,
    key: jax.Array,
    start_positions: np.ndarray | None = None,
    dt: float = 0.002,
    friction: float = 1.0,
    save_every: int = 100,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[SamplingReport, dict[str, FreeEnergy2D], np.ndarray]:
    """Simulate ``n_replicas`` × ``n_steps`` of the model and compare its CVs with the reference.

    Args:
      energy: ``energy(x (N, 3) nm) -> kJ/mol`` of the CG model.
      reference_positions: (T, N, 3) nm, the reference mapped to the CG beads (e.g. a long
        all-atom run through the configurational map).
      observables: (T, N, 3) nm -> (T, 2) CVs (e.g. φ/ψ in radians).
      edges: bin edges of the two CVs.
      masses: (N,) amu. temperature: K (kT = 0.0083144626 · T kJ/mol).
      start_positions: (T', N, 3) nm frames the replicas start from (default: the reference).
      dt: timestep, ps.
      friction: 1/ps.
      save_every: steps between saved frames.
      progress: called as ``progress(steps_done, n_steps)`` after each chunk.

    Returns:
      (report, surfaces, positions (R, F, N, 3) nm).
    """
    from jaxcg.simulate import initial_positions
    from jaxcg.units import kT_from_temperature

    key_start, key_run = jax.random.split(key)
    pool = reference_positions if start_positions is None else start_positions
    start = initial_positions(np.asarray(pool), n_replicas, key_start)
    positions, alive, stopped = simulate_replicas(
        energy, start, masses, temperature, n_steps, key_run, dt, friction, save_every,
        progress=progress,
    )
    n_replicas_, n_saved = positions.shape[:2]
    cg_cv = observables(positions.reshape(-1, *positions.shape[2:])).reshape(n_replicas_, n_saved, 2)
    report, surfaces = sampling_report(
        observables(np.asarray(reference_positions)), cg_cv, alive, edges,
        kT_from_temperature(temperature), stopped, frame_interval_ps=save_every * dt,
    )
    return report, surfaces, positions
