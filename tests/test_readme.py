"""The README's Python examples run as written, so they never rot; its links stay inside the repo."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
END_TO_END = "## Differentiable end to end"


def python_blocks(text: str | None = None) -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text() if text is None else text, flags=re.S)


def end_to_end_section() -> str:
    """The text of the README's "Differentiable end to end" section, up to the next heading."""
    text = README.read_text()
    assert f"\n{END_TO_END}\n" in text, f"README.md has no section {END_TO_END!r}"
    section = text.split(f"\n{END_TO_END}\n", 1)[1]
    return re.split(r"\n## ", section, maxsplit=1)[0]


def test_readme_has_examples():
    assert python_blocks(), "README.md has no ```python examples"


def test_readme_examples_run():
    """Every block outside the end-to-end section, in order, in one namespace."""
    namespace: dict = {}
    separate = python_blocks(end_to_end_section())
    for block in python_blocks():
        if block not in separate:
            exec(compile(block, str(README), "exec"), namespace)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_end_to_end_examples_run_and_check_themselves(index):
    """Each end-to-end demonstration runs on its own and asserts its check (finite differences or
    an exact answer): the section's block ``index``."""
    blocks = python_blocks(end_to_end_section())
    assert len(blocks) == 3, (f"{END_TO_END}: expected 3 python blocks (joint map + SchNet, gradient through "
                              "dynamics, relative entropy)")
    assert re.search(r"^\s*assert ", blocks[index], flags=re.M), f"{END_TO_END}: block {index} checks nothing"
    exec(compile(blocks[index], f"{README}:{END_TO_END}[{index}]", "exec"), {})


def test_readme_shows_the_fresh_machine_commands():
    text = README.read_text()
    assert "make demo" in text
    assert "Tests: `make test`" in text


def test_readme_links_point_into_the_repository():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert local, "README.md links to no write-up"
    outside = [link for link in local if not (README.parent / link).resolve().is_relative_to(README.parent)]
    assert not outside, f"links leave the repository: {outside}"
    missing = [link for link in local if not (README.parent / link).exists()]
    assert not missing, f"links to missing files: {missing}"
