"""The public surface: every exported name exists, later stages load as attributes."""

import pytest

import jaxcg


def test_exports_exist():
    missing = [name for name in jaxcg.__all__ if not hasattr(jaxcg, name)]
    assert not missing


@pytest.mark.parametrize("name", ["analysis", "geometry", "joint", "models", "priors", "reference", "relative_entropy",
                                  "simulate", "train"])
def test_stages_load_on_first_use(name):
    module = getattr(jaxcg, name)
    assert module.__name__ == f"jaxcg.{name}"


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        jaxcg.nope  # noqa: B018
