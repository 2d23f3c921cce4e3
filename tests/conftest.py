"""Test configuration: two host devices and strict dtype promotion, so sharding and dtype bugs show
on a laptop CPU."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PACKAGE_DATA = Path(__file__).resolve().parents[1] / "jaxcg" / "bundled"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Starting structures: ../shared/data beside the checkout, else the copies jaxcg ships."""
    for folder in (SHARED_DATA, PACKAGE_DATA):
        if (folder / "cln025.pdb").exists() and (folder / "alanine-dipeptide.pdb").exists():
            return folder
    pytest.fail(f"neither {SHARED_DATA} nor {PACKAGE_DATA} holds cln025.pdb and alanine-dipeptide.pdb")
