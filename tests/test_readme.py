"""The README's Python examples run as written, so they never rot; its links stay inside the repo."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert python_blocks(), "README.md has no ```python examples"


def test_readme_examples_run():
    namespace: dict = {}
    for block in python_blocks():
        exec(compile(block, str(README), "exec"), namespace)


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
