"""Force matching of CG energy models with optax.

Loss (per batch): the weighted mean over frames and beads of ‖f_map − F_model‖², with
F_model = −∂U/∂x, in (kJ/mol/nm)². Optionally the targets are "delta forces" (mapped forces minus
the forces of a frozen prior, ``delta_forces``).

Pieces, from the inside out:

- ``force_matching_loss(energy, params, batch)``: the loss of one batch.
- ``make_train_step(energy, optimizer)``: one pure ``step(state, batch) -> (state, metrics)``,
  ``jaxcg.optim.make_step`` of the force-matching loss; ``fit`` jits it once (fixed batch shape,
  padded last batch) so the epoch loop never retraces.
- ``block_split``: train/validation split by contiguous trajectory blocks.
- ``fit``: the epoch loop: the frames copied to the device once, minibatches gathered and their
  order shuffled there (nothing crosses per step), validation, early stopping, non-finite checks on
  the host once per epoch, metrics to ``metrics.json``/``metrics.csv``, orbax checkpoints that
  resume exactly, data parallelism over ``devices`` with ``jax.sharding``. Given a
  ``jaxcg.distributed.FrameFile`` instead of arrays, the same loop reads each batch from disk,
  each process of a ``jax.distributed`` run its own rows (``jaxcg.distributed``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcg import optim
from jaxcg._files import OutputExistsError, reading, refuse_changed_settings
from jaxcg.dtypes import params_dtype

if TYPE_CHECKING:
    from jaxcg.distributed import FrameFile

Params = Any
EnergyFn = Callable[[Params, jax.Array], jax.Array]
ProgressFn = Callable[[int, int, int, "dict[str, float] | None"], None]


class Batch(NamedTuple):
    """A minibatch: positions (B, N, 3) nm, forces (B, N, 3) kJ/mol/nm, weights (B,) (0 marks
    padding frames); types (B, N) int per-frame bead types of padded molecules (−1 marks padding
    beads; ``jaxcg.molecules``), or None for one molecule."""

    positions: jax.Array
    forces: jax.Array
    weights: jax.Array
    types: jax.Array | None = None


class TrainState(NamedTuple):
    """Everything a resumed run needs, a PyTree of arrays.

    Attributes:
      params: model parameters. opt_state: optax state. key: (2,) uint32 PRNG key (shuffling).
      epoch: () int32, epochs completed. best_params: parameters of the best validation epoch.
      best_loss: () float32, best validation loss. bad_epochs: () int32, epochs since the best.
    """

    params: Params
    opt_state: Any
    key: jax.Array
    epoch: jax.Array
    best_params: Params
    best_loss: jax.Array
    bad_epochs: jax.Array


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of ``fit``.

    Attributes:
      epochs: maximum number of epochs.
      batch_size: frames per step (a multiple of the devices).
      learning_rate: peak Adam learning rate.
      schedule: "constant" or "cosine" (decay to ``final_lr_fraction`` of the peak over all
        steps, after ``warmup_steps`` of linear warm-up).
      warmup_steps: steps of linear warm-up.
      final_lr_fraction: the cosine schedule's final learning rate, as a fraction of the peak.
      clip_norm: global gradient-norm clip, or None.
      val_fraction: share of trajectory blocks held out.
      n_blocks: contiguous blocks the frames are cut into for the split.
      patience: stop after this many epochs without validation improvement (None: never).
      min_delta: improvement that counts.
      seed: PRNG seed of shuffling and of the split.
    """

    epochs: int = 100
    batch_size: int = 128
    learning_rate: float = 1e-3
    schedule: str = "cosine"
    warmup_steps: int = 0
    final_lr_fraction: float = 0.01
    clip_norm: float | None = 10.0
    val_fraction: float = 0.1
    n_blocks: int = 10
    patience: int | None = 10
    min_delta: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> ValueError:
            return ValueError(f"{name} must be {want}, got {getattr(self, name)!r}")

        for name in ("epochs", "batch_size", "n_blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise bad(name, "a positive integer")
        if not (np.isfinite(self.learning_rate) and self.learning_rate >= 0):
            raise bad("learning_rate", "a finite number >= 0")
        if isinstance(self.warmup_steps, bool) or int(self.warmup_steps) != self.warmup_steps or self.warmup_steps < 0:
            raise bad("warmup_steps", "a non-negative integer")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise bad("final_lr_fraction", "in [0, 1]")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise bad("clip_norm", "positive or None")
        if not 0.0 <= self.val_fraction < 1.0:
            raise bad("val_fraction", "in [0, 1)")
        if self.patience is not None and (isinstance(self.patience, bool) or int(self.patience) != self.patience or self.patience < 1):
            raise bad("patience", "a positive integer or None")
        if not self.min_delta >= 0:
            raise bad("min_delta", "non-negative")


class TrainResult(NamedTuple):
    """``params``: best-validation parameters; ``state``: final TrainState; ``history``: one dict
    of metrics per epoch."""

    params: Params
    state: TrainState
    history: list[dict[str, float]]


# ----------------------------------------------------------------------------- pure pieces


def force_matching_loss(energy: EnergyFn, params: Params, batch: Batch) -> jax.Array:
    """Σ_t w_t Σ_i ‖f_ti − F_ti‖² / (N Σ_t w_t), (kJ/mol/nm)²; F = −∂U/∂x of each frame.

    With ``batch.types`` (padded molecules), the energy is ``energy(params, x, types)`` and each
    frame's error is its mean over its real beads: Σ_t w_t (Σ_{i real} ‖f_ti − F_ti‖² / n_t) / Σ_t w_t,
    so a mixed batch gives the frame-weighted mean of each molecule's own loss.
    """
    args = (batch.positions,) if batch.types is None else (batch.positions, batch.types)

    def total_energy(x: jax.Array) -> jax.Array:
        return jnp.sum(jax.vmap(energy, in_axes=(None,) + (0,) * len(args))(params, x, *args[1:]))

    model_forces = -jax.grad(total_energy)(batch.positions)
    squared = (batch.forces - model_forces) ** 2
    if batch.types is not None:
        real = batch.types >= 0
        err = jnp.sum(jnp.where(real[..., None], squared, jnp.zeros_like(squared)), axis=(1, 2))
        return jnp.sum(batch.weights * err / jnp.sum(real, axis=1).astype(err.dtype)) / jnp.sum(batch.weights)
    err = jnp.sum(squared, axis=(1, 2))
    n_beads = batch.positions.shape[1]
    return jnp.sum(batch.weights * err) / (n_beads * jnp.sum(batch.weights))


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Adam with the schedule and gradient clipping of ``config``."""
    if config.schedule == "constant":
        schedule = optax.constant_schedule(config.learning_rate)
    elif config.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            0.0 if config.warmup_steps else config.learning_rate,
            config.learning_rate,
            config.warmup_steps,
            max(total_steps, config.warmup_steps + 1),
            end_value=config.learning_rate * config.final_lr_fraction,
        )
    else:
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {config.schedule!r}")
    parts = [] if config.clip_norm is None else [optax.clip_by_global_norm(config.clip_norm)]
    return optax.chain(*parts, optax.adam(schedule))


def _init_optimizer(optimizer: optax.GradientTransformation, params: Params) -> Any:
    return optim.init_state(optimizer, params).opt_state


def _batch_loss(energy: EnergyFn, overflow: Callable[[jax.Array], jax.Array] | None):
    """loss(params, Batch) -> (loss, {"overflow": frames whose pairs overflow the model's capacity})."""

    def loss(params: Params, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
        flags = {}
        if overflow is not None:
            flags["overflow"] = jnp.sum(jax.vmap(overflow)(batch.positions) & (batch.weights > 0))
        return force_matching_loss(energy, params, batch), flags

    return loss


def make_train_step(
    energy: EnergyFn, optimizer: optax.GradientTransformation
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """One pure optimisation step ``step(state, batch) -> (state, {"loss", "grad_norm"})``
    (``jaxcg.optim.make_step`` of ``force_matching_loss``; with a model that has ``pair_overflow``,
    also ``"overflow"``, the count of frames beyond its pair capacity)."""
    return optim.make_step(_batch_loss(energy, _model_method(energy, "pair_overflow")), optimizer, has_aux=True)


def make_eval_step(energy: EnergyFn) -> Callable[[Params, Batch], tuple[jax.Array, jax.Array]]:
    """``evaluate(params, batch) -> (Σ weighted squared error / N, Σ weights)`` for pooling."""

    def evaluate(params: Params, batch: Batch) -> tuple[jax.Array, jax.Array]:
        total = jnp.sum(batch.weights)
        return force_matching_loss(energy, params, batch) * total, total

    return evaluate


def delta_forces(
    energy: EnergyFn, params: Params, positions: np.ndarray, forces: np.ndarray, chunk_size: int = 1024
) -> np.ndarray:
    """Targets for training a network on top of a frozen model (e.g. a prior): forces minus the
    model's forces. positions, forces: (T, N, 3) nm, kJ/mol/nm; returns (T, N, 3) kJ/mol/nm."""
    grad = jax.jit(jax.vmap(jax.grad(energy, argnums=1), in_axes=(None, 0)))
    out = []
    for start in range(0, len(positions), chunk_size):
        x = jnp.asarray(positions[start : start + chunk_size], params_dtype(params))
        out.append(np.asarray(forces[start : start + chunk_size]) + np.asarray(grad(params, x)))
    return np.concatenate(out).astype(np.asarray(forces).dtype)


def block_split(
    n_frames: int, val_fraction: float, n_blocks: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train_indices, val_indices): frames cut into ``n_blocks`` contiguous blocks, of which
    round(val_fraction · n_blocks) (at least 1 when val_fraction > 0) chosen at random are held out
    whole, so correlated neighbouring frames do not leak across the split."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_blocks = max(1, min(n_blocks, n_frames))
    blocks = np.array_split(np.arange(n_frames), n_blocks)
    n_val = 0 if val_fraction == 0 else min(max(1, round(val_fraction * n_blocks)), n_blocks - 1)
    if n_val == 0:
        return np.arange(n_frames), np.zeros(0, dtype=np.int64)
    chosen = set(np.random.default_rng(seed).choice(n_blocks, n_val, replace=False).tolist())
    val = np.concatenate([b for k, b in enumerate(blocks) if k in chosen])
    train = np.concatenate([b for k, b in enumerate(blocks) if k not in chosen])
    return train, val


# ----------------------------------------------------------------------------- the loop


def _batches(indices: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, batch_size) frame indices and weights masks; the last batch padded with weight 0."""
    table, mask = optim.batch_table(len(indices), batch_size)
    return np.asarray(indices, np.int32)[table] * (mask > 0), mask


def _write_metrics(out_dir: Path, history: list[dict[str, float]]) -> None:
    """Rewrite metrics.json and metrics.csv atomically (a kill leaves the old or the new file)."""
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(history, indent=1))
    os.replace(tmp, out_dir / "metrics.json")
    if history:
        tmp = out_dir / "metrics.csv.tmp"
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
        os.replace(tmp, out_dir / "metrics.csv")


def _checkpoint_manager(out_dir: Path):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    return ocp.CheckpointManager((out_dir / "checkpoints").absolute(), options=options)


def _model_n_beads(energy: EnergyFn) -> int | None:
    """The bead count of the model behind ``energy`` (a bound ``model.energy``), if it says."""
    model = getattr(energy, "__self__", None)
    n_beads = getattr(model, "n_beads", None)
    return int(n_beads) if isinstance(n_beads, int | np.integer) else None


def _model_method(energy: EnergyFn, name: str) -> Callable | None:
    """Method ``name`` of the model behind ``energy`` (a bound ``model.energy``), or None."""
    return getattr(getattr(energy, "__self__", None), name, None)


class PairCapacityError(ValueError):
    """Frames hold more pairs within the cutoff than the model's pair capacity (``max_pairs``)."""


def _raise_pair_overflow(energy: EnergyFn, positions: np.ndarray, batches: np.ndarray, mask: np.ndarray,
                         order: np.ndarray, overflows: np.ndarray, epoch: int) -> None:
    """Raise ``PairCapacityError`` for the first step whose overflow flag is set."""
    model = energy.__self__
    model = getattr(model, "net", model)  # PriorPlusNet: the capacity is the network's
    s = int(np.flatnonzero(overflows)[0])
    b = int(order[s])
    frames = batches[b][mask[b] > 0]
    counts = model.pair_counts(positions[frames])
    over = frames[counts > model.max_pairs]
    needed = max(int(model.pair_counts(positions[i : i + 65536]).max()) for i in range(0, len(positions), 65536))
    raise PairCapacityError(
        f"max_pairs={model.max_pairs} is too small: in epoch {epoch}, batch {b} (step {s} of the epoch), frames "
        f"{over[:10].tolist()}{'...' if over.size > 10 else ''} have up to {int(counts.max())} pairs within the "
        f"cutoff; the training data need max_pairs >= {needed} (model.pair_counts(positions).max())"
    )


class CheckpointWarning(UserWarning):
    """The newest training checkpoint could not be read; an older intact one was used."""


def _remove_run(out_dir: Path) -> None:
    """Delete the checkpoints, metrics and config of an earlier run in ``out_dir``."""
    import shutil

    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    for name in ("metrics.json", "metrics.csv", "config.json"):
        (out_dir / name).unlink(missing_ok=True)


def _restore_latest_intact(manager: Any, like: TrainState, out_dir: Path) -> TrainState:
    """The newest checkpoint that restores; an unreadable newer one is reported with a warning."""
    import warnings

    import orbax.checkpoint as ocp

    failures = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state = manager.restore(step, args=ocp.args.StandardRestore(like))
        except Exception as err:  # tensorstore/orbax raise many types for a damaged checkpoint
            failures.append(f"step {step}: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}")
            continue
        if failures:
            warnings.warn(
                f"checkpoint(s) in {str(out_dir / 'checkpoints')!r} unreadable ({'; '.join(failures)}); "
                f"resuming from the intact checkpoint of epoch {step}",
                CheckpointWarning, stacklevel=3,
            )
        return state
    raise ValueError(
        f"no checkpoint in {str(out_dir / 'checkpoints')!r} can be read ({'; '.join(failures)}); "
        "start anew with overwrite=True (--overwrite)"
    )


def _check_inputs(positions: np.ndarray, forces: np.ndarray, weights, config: TrainConfig, n_dev: int,
                  n_beads: int | None = None) -> None:
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise ValueError(f"positions must have shape (T, N, 3), got {positions.shape}")
    if n_beads is not None and positions.shape[1] != n_beads:
        raise ValueError(f"positions has {positions.shape[1]} beads (shape {positions.shape}) but the model has {n_beads}")
    for name, array in (("positions", positions), ("forces", forces)):
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"{name} must hold floats (nm, kJ/mol/nm), got dtype {array.dtype}")
    if forces.shape != positions.shape:
        raise ValueError(f"forces has shape {forces.shape} but positions has shape {positions.shape}")
    if weights is not None and np.shape(weights) != (positions.shape[0],):
        raise ValueError(f"weights must have shape ({positions.shape[0]},), got {np.shape(weights)}")
    if config.batch_size < 1 or config.batch_size % n_dev:
        raise ValueError(f"batch_size must be a positive multiple of the {n_dev} device(s), got {config.batch_size}")


def _is_frame_file(positions: Any) -> bool:
    from jaxcg.distributed import FrameFile

    return isinstance(positions, FrameFile)


def _sync_processes(name: str) -> None:
    """Wait for every process of a multi-process run (no-op in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _replicate(tree: Any, replicated: NamedSharding) -> Any:
    """``tree`` on every device of ``replicated``; leaves not already there pass through the host
    (with jax 0.10, a jax.Array of one process put onto the devices of several comes out with
    malformed shards that orbax cannot save)."""

    def put(leaf: Any) -> jax.Array:
        if isinstance(leaf, jax.Array) and leaf.sharding == replicated:
            return leaf
        return jax.device_put(np.asarray(leaf), replicated)

    return jax.tree.map(put, tree)


class _DeviceFeed:
    """The batches of ``fit`` gathered from frames copied to the device(s) once: a step receives
    only its number (``train_step(state, s)`` after ``start_epoch(order)``)."""

    def __init__(self, positions, forces, frame_w, step, evaluate, train_table, val_table, replicated, sharded,
                 bead_types=None):
        dtype = frame_w.dtype  # the parameters' dtype (jaxcg.dtypes)
        data = (np.asarray(positions, dtype), np.asarray(forces, dtype))
        if bead_types is not None:  # several molecules padded (``fit(bead_types=)``)
            data += (np.asarray(bead_types, np.int32),)
        self.frames = jax.device_put(optim.Batch(data, frame_w), replicated)
        self.train_table = jax.device_put(train_table, replicated)
        self.val_table = None if val_table[0] is None else jax.device_put(val_table, replicated)
        self.replicated = replicated

        def batch_at(frames: optim.Batch, table: jax.Array, mask: jax.Array, b: jax.Array) -> Batch:
            """Batch b of a (S, B) frame table, gathered from the device-resident frames."""
            picked = optim.gather(frames.data, frames.weights, table[b], mask[b])
            batch = Batch(picked.data[0], picked.data[1], picked.weights, *picked.data[2:])
            return jax.lax.with_sharding_constraint(batch, sharded)

        def train_step(state, frames, table, mask, order, s):
            """Step ``s`` of the epoch; returns s + 1 on the device, so no number crosses per step."""
            return *step(state, batch_at(frames, table, mask, order[s])), s + 1

        def eval_step(params, frames, table, mask, b):
            return evaluate(params, batch_at(frames, table, mask, b))

        self.step_fn = jax.jit(train_step, out_shardings=replicated)
        self.eval_fn = jax.jit(eval_step, out_shardings=replicated)

    def start_epoch(self, order: jax.Array) -> None:
        self.order = order
        self.s = jax.device_put(np.zeros((), np.int32), self.replicated)

    def train_step(self, state: TrainState, s: int) -> tuple[TrainState, dict[str, jax.Array]]:
        del s  # counted on the device
        state, metrics, self.s = self.step_fn(state, self.frames, *self.train_table, self.order, self.s)
        return state, metrics

    def evaluate(self, params: Params, b: int) -> tuple[jax.Array, jax.Array]:
        return self.eval_fn(params, self.frames, *self.val_table, b)


def _training_devices(devices: list[jax.Device] | str | None, batch_size: int) -> list[jax.Device]:
    if devices is None:
        return jax.local_devices()[:1]
    if isinstance(devices, str):
        if devices != "auto":
            raise ValueError(f"devices must be 'auto', None or a list of devices, got {devices!r}")
        local = jax.local_devices()
        return local if batch_size % len(local) == 0 else local[:1]
    return list(devices)


def fit(
    energy: EnergyFn,
    params: Params,
    positions: np.ndarray | FrameFile,
    forces: np.ndarray | None,
    config: TrainConfig = TrainConfig(),
    weights: np.ndarray | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    devices: list[jax.Device] | str | None = None,
    overwrite: bool = False,
    bead_types: np.ndarray | None = None,
) -> TrainResult:
    """Train ``params`` of ``energy`` by force matching.

    Args:
      energy: ``U(params, x) -> ()`` kJ/mol for x: (N, 3) nm (e.g. ``model.energy``).
      params: initial parameters (e.g. ``model.init(key, positions[0])``).
      positions: (T, N, 3) nm, copied to the device(s) whole; or a ``jaxcg.distributed.FrameFile``
        whose frames (and weights) are read from disk batch by batch, each process of a
        ``jax.distributed`` run reading its rows of each batch (``forces`` and ``weights`` None).
        The frames are cast to the dtype of ``params`` (float64 params train in float64, see
        ``jaxcg.dtypes``).
      forces: (T, N, 3) kJ/mol/nm (mapped, or delta forces).
      config: ``TrainConfig``.
      weights: (T,) frame weights or None.
      out_dir: folder for ``metrics.json``, ``metrics.csv``, ``config.json`` and ``checkpoints/``
        (one orbax checkpoint per epoch); None keeps everything in memory.
      resume: continue from the latest checkpoint in ``out_dir``; the run ends with the same
        parameters as an uninterrupted one. Every differing ``config`` field is named in the error.
        An unreadable newest checkpoint is reported (``CheckpointWarning``) and the previous intact
        one used.
      overwrite: delete the checkpoints and metrics of an earlier run in ``out_dir`` first;
        without it (and without ``resume``) an ``out_dir`` holding checkpoints is refused.
      progress: called as ``progress(epoch, step, steps_per_epoch, None)`` after each step and
        ``progress(epoch, steps_per_epoch, steps_per_epoch, metrics)`` after each epoch.
      devices: devices for data parallelism (batch sharded over them, parameters replicated;
        ``batch_size`` must be a multiple of their number); None (default): the first local
        device; "auto": every local device if their number divides ``batch_size``, else the
        first (``benchmarks/bench_train.py`` measures the gain). With a ``FrameFile``, None and
        "auto" mean every device of every process (``jax.devices()``).
      bead_types: (T, N) int bead types of each frame for several molecules padded to N beads
        (``jaxcg.molecules.pad_molecules``; −1 marks padding beads): ``energy`` is then called
        as ``energy(params, x, types)`` (``TransferableSchNet.energy``) and the loss averages
        each frame over its real beads. None (default): one molecule, ``energy(params, x)``.

    Returns:
      TrainResult with the best-validation parameters.

    Raises:
      FloatingPointError: a batch gave a non-finite loss; the message names epoch, batch and frames.
      PairCapacityError: a batch held frames with more pairs within the cutoff than the model's
        ``max_pairs`` (its ``pair_overflow`` flag, checked on the host once per epoch).
    """
    source = None
    if _is_frame_file(positions):
        if forces is not None or weights is not None:
            raise ValueError("with a FrameFile as positions, forces and weights must be None (the file holds them)")
        source, positions, forces = positions, positions.positions, positions.forces
        devices = jax.devices() if devices is None or devices == "auto" else devices
    else:
        positions = np.asarray(positions)
        forces = np.asarray(forces)
    devices = _training_devices(devices, config.batch_size)
    _check_inputs(positions, forces, weights, config, len(devices), _model_n_beads(energy))
    if bead_types is not None and source is not None:
        raise ValueError("bead_types (several molecules) is not supported with a FrameFile: pass the padded arrays")
    if bead_types is not None and np.shape(bead_types) != positions.shape[:2]:
        raise ValueError(f"bead_types must have shape {positions.shape[:2]} (T, N), got {np.shape(bead_types)}")
    dtype = params_dtype(params)  # the frames are cast to the parameters' dtype (jaxcg.dtypes)
    train_idx, val_idx = block_split(len(positions), config.val_fraction, config.n_blocks, config.seed)
    train_batches, train_mask = _batches(train_idx, config.batch_size)
    val_batches, val_mask = _batches(val_idx, config.batch_size) if len(val_idx) else (None, None)
    steps = len(train_batches)
    optimizer = make_optimizer(config, config.epochs * steps)

    mesh = Mesh(np.asarray(devices), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    step = make_train_step(energy, optimizer)
    evaluate = make_eval_step(energy)
    shuffle = jax.jit(lambda key, epoch: jax.random.permutation(jax.random.fold_in(key, epoch), steps),
                      out_shardings=replicated)
    params = jax.tree.map(lambda p: jnp.asarray(p), params)
    state = TrainState(
        params=params,
        opt_state=_init_optimizer(optimizer, params),
        key=jax.random.PRNGKey(config.seed),
        epoch=jnp.zeros((), jnp.int32),
        best_params=params,
        best_loss=jnp.asarray(np.inf, dtype),
        bad_epochs=jnp.zeros((), jnp.int32),
    )
    state = _replicate(state, replicated)
    history: list[dict[str, float]] = []
    manager = None
    writer = jax.process_index() == 0  # of a multi-process run, process 0 writes the files
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        config_text = json.dumps(dataclasses.asdict(config), indent=1, sort_keys=True)
        if overwrite and not resume and writer:
            _remove_run(out_dir)
        _sync_processes("jaxcg.train.fit: out_dir ready")
        manager = _checkpoint_manager(out_dir)
        if resume and manager.latest_step() is not None:
            if (out_dir / "config.json").exists():
                with reading(out_dir / "config.json", "training config"):
                    saved = json.loads((out_dir / "config.json").read_text())
                refuse_changed_settings(out_dir, saved, dataclasses.asdict(config), sorted(set(saved) | set(dataclasses.asdict(config))), what="config")
            state = _restore_latest_intact(manager, state, out_dir)
            if (out_dir / "metrics.json").exists():
                with reading(out_dir / "metrics.json", "training metrics"):
                    history = json.loads((out_dir / "metrics.json").read_text())[: int(state.epoch)]
        elif manager.latest_step() is not None:
            raise OutputExistsError(
                f"out_dir {str(out_dir)!r} holds checkpoints; pass resume=True (--resume) to continue, "
                "overwrite=True (--overwrite) to start anew, or use a new folder"
            )
        if writer:
            (out_dir / "config.json").write_text(config_text)

    tables = (train_batches, train_mask), (val_batches, val_mask)
    if source is None:
        frame_w = np.ones(len(positions), dtype) if weights is None else np.asarray(weights, dtype)
        feed = _DeviceFeed(positions, forces, frame_w, step, evaluate, *tables, replicated, sharded, bead_types)
    else:
        from jaxcg.distributed import _StreamFeed

        feed = _StreamFeed(source, dtype, step, evaluate, *tables, replicated, sharded)

    while int(state.epoch) < config.epochs:
        epoch = int(state.epoch)
        if config.patience is not None and int(state.bad_epochs) >= config.patience:
            break
        order = shuffle(state.key, epoch)
        feed.start_epoch(order)
        losses, norms, overflows = [], [], []
        for s in range(steps):
            state, metrics = feed.train_step(state, s)
            losses.append(metrics["loss"])
            norms.append(metrics["grad_norm"])
            overflows.append(metrics.get("overflow", 0))
            if progress is not None:
                progress(epoch, s + 1, steps, None)
        order = np.asarray(order)
        overflows = np.asarray(jax.device_get(overflows))
        if overflows.any():
            _raise_pair_overflow(energy, positions, train_batches, train_mask, order, overflows, epoch)
        losses_host = np.asarray(jax.device_get(losses))
        bad = np.flatnonzero(~np.isfinite(losses_host))
        if bad.size:
            b = int(order[bad[0]])
            frames_bad = train_batches[b][train_mask[b] > 0]
            finite = np.isfinite(positions[frames_bad]).all(axis=(1, 2)) & np.isfinite(forces[frames_bad]).all(axis=(1, 2))
            nonfinite = frames_bad[~finite]
            cause = (
                f"frames {nonfinite[:10].tolist()} hold NaN/inf positions or forces"
                if nonfinite.size
                else "its inputs are finite: lower the learning rate or check the model"
            )
            raise FloatingPointError(
                f"non-finite loss in epoch {epoch}, batch {b} (step {int(bad[0])} of the epoch, "
                f"frames {frames_bad[:10].tolist()}{'...' if frames_bad.size > 10 else ''}): {cause}"
            )
        row = {
            "epoch": epoch,
            "train_loss": float(losses_host.mean()),
            "grad_norm": float(np.mean(jax.device_get(norms))),
        }
        if val_batches is not None:
            sums = [feed.evaluate(state.params, b) for b in range(len(val_batches))]
            sums = np.asarray(jax.device_get(sums))
            row["val_loss"] = float(sums[:, 0].sum() / sums[:, 1].sum())
        monitor = row.get("val_loss", row["train_loss"])
        if monitor < float(state.best_loss) - config.min_delta:
            state = state._replace(
                best_params=state.params,
                best_loss=jnp.asarray(monitor, dtype),
                bad_epochs=jnp.zeros((), jnp.int32),
            )
        else:
            state = state._replace(bad_epochs=state.bad_epochs + 1)
        state = state._replace(epoch=jnp.asarray(epoch + 1, jnp.int32))
        state = _replicate(state, replicated)
        row["best_loss"] = float(state.best_loss)
        history.append(row)
        if manager is not None:
            import orbax.checkpoint as ocp

            # Metrics first: a kill between the two leaves an extra row that resume drops.
            if writer:
                _write_metrics(out_dir, history)
            manager.save(epoch + 1, args=ocp.args.StandardSave(state))
            manager.wait_until_finished()
        if progress is not None:
            progress(epoch, steps, steps, row)
    if manager is not None:
        manager.close()
    return TrainResult(params=state.best_params, state=state, history=history)
