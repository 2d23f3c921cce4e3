"""Host devices: split a multi-core CPU into several XLA devices.

XLA runs one small computation (a training step of a CG SchNet, a block of replicas) on one CPU
device with poor use of a second core when its work is gathers and elementwise ops rather than
large matmuls. Split into one device per core, the same work sharded over the devices (replicas
in ``jaxcg.simulate`` by default, batches in ``jaxcg.train.fit(devices="auto")``) keeps every
core busy (``benchmarks/bench_simulate.py`` and ``benchmarks/bench_train.py`` measure the gain;
docs/results has the figures).

JAX reads the device count once, when it starts its backends (at the first computation), so
``use_host_devices`` must run before that; ``jaxcg``'s command line does so.
"""

from __future__ import annotations

import os
import re

_FLAG = "--xla_force_host_platform_device_count"


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover - private module moved: assume the worst
        return True
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return True if started is None else bool(started())


def host_device_count() -> int:
    """Host (CPU) devices that JAX has or will have: the XLA_FLAGS count, else 1."""
    match = re.search(_FLAG + r"=(\d+)", os.environ.get("XLA_FLAGS", ""))
    return int(match.group(1)) if match else 1


def use_host_devices(n_devices: int | None = None) -> bool:
    """Ask XLA for ``n_devices`` CPU devices (default: one per core available to this process).

    Returns True if the setting is in place for this process: set now, or already set to the
    same count in XLA_FLAGS. Returns False, changing nothing, when JAX's backends have already
    started (too late to change) or XLA_FLAGS already asks for another count (the user's choice
    wins). Accelerator devices are unaffected; only the CPU platform is split.
    """
    if n_devices is None:
        n_devices = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if isinstance(n_devices, bool) or not isinstance(n_devices, int) or n_devices < 1:
        raise ValueError(f"n_devices must be a positive int, got {n_devices!r}")
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG in flags:
        return host_device_count() == n_devices
    if _backends_started():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={n_devices}".strip()
    return True
