"""The documentation site builds with warnings as errors, and every page is reachable from the nav.

The build is static: the API reference is read from the source by griffe (nothing is imported)
and the notebooks are rendered without running them.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def nav_pages() -> set[str]:
    """Every docs-relative page path named in mkdocs.yml's nav."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:") : text.index("\nmarkdown_extensions:")]
    return set(re.findall(r"([\w/.-]+\.(?:md|ipynb))\s*$", nav, flags=re.M))


def test_every_page_is_in_the_nav():
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*") if p.suffix in {".md", ".ipynb"}}
    assert pages, "docs/ holds no pages"
    assert pages - nav_pages() == set(), "pages missing from mkdocs.yml's nav"
    assert nav_pages() - pages == set(), "nav entries without a page"


def test_tutorials_are_the_notebooks():
    notebooks = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    shown = {p.name for p in (DOCS / "tutorials").glob("*.ipynb")}
    assert notebooks == shown, "docs/tutorials/ must link every notebook in notebooks/"
    for page in (DOCS / "tutorials").glob("*.ipynb"):
        assert page.resolve() == (ROOT / "notebooks" / page.name).resolve(), f"{page} is a copy, not a link"


def test_results_pages_state_command_date_and_machine():
    for page in sorted((DOCS / "results").glob("*.md")):
        text = page.read_text()
        if page.name in {"index.md", "alanine_fidelity.md"}:
            continue
        for field in ("**Command:**", "**Date:**", "**Machine:**"):
            assert field in text, f"{page.name} does not state its {field.strip('*:').lower()}"


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    # The API reference is generated from the docstrings: spot-check a few entries.
    maps = (site / "api" / "maps" / "index.html").read_text()
    for name in ("jaxcg.maps.optimal_linear_map", "jaxcg.maps.LinearMap", "jaxcg.maps.check_map"):
        assert f'id="{name}"' in maps, f"{name} missing from the API reference"
    assert "kJ/mol/nm" in maps, "the docstrings' units did not reach the API reference"
    assert (site / "tutorials" / "01_water_dimer" / "index.html").exists()
    assert (site / "results" / "data" / "paper_water_dimer.png").exists()
