"""jaxcg.devices: splitting the CPU into host devices, in fresh interpreters (JAX reads the
count once, when its backends start)."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = """
import os, sys
from jaxcg.devices import use_host_devices, host_device_count
first = use_host_devices(3)
import jax
import jax.numpy as jnp
jnp.ones(1).block_until_ready()
late = use_host_devices(5)  # backends started: too late, nothing changes
print(first, late, len(jax.devices("cpu")), host_device_count())
"""


def _run(xla_flags: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, check=True)
    return out.stdout.split()


def test_use_host_devices_before_jax_starts_and_not_after():
    assert _run(None) == ["True", "False", "3", "3"]


def test_use_host_devices_leaves_the_users_flag_alone():
    assert _run("--xla_force_host_platform_device_count=2") == ["False", "False", "2", "2"]
    assert _run("--xla_force_host_platform_device_count=3") == ["True", "False", "3", "3"]


def test_use_host_devices_rejects_bad_counts():
    import pytest

    from jaxcg.devices import use_host_devices

    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n_devices must be a positive int"):
            use_host_devices(bad)
