"""The README follows the registry and keeps its two quick-start commands."""
import re
from pathlib import Path

import pytest

from napari_ssl_restore.core.registry import all_methods

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def readme():
    if not README.exists():
        pytest.skip("README not present (installed package without sources)")
    return README.read_text()


def test_every_method_in_the_methods_table(readme):
    for spec in all_methods():
        row = rf"^\| `{re.escape(spec.name)}` \| `{spec.function}` \|"
        assert re.search(row, readme, re.M), spec.name


def test_quick_start_commands(readme):
    assert "napari-ssl-restore demo" in readme
    assert "python -m pytest" in readme
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -q torch==2.13.0 -e ".[testing]"' in ci and "xvfb-run -a python -m pytest" in ci


def test_readme_examples_follow_the_registry(readme):
    import ast

    from napari_ssl_restore import list_methods

    shown = re.search(r"^list_methods\(\)\s+# (\[.*\])$", readme, re.M)
    assert shown and ast.literal_eval(shown.group(1)) == list_methods()


def test_system_packages_are_installed_the_same_way_in_readme_and_ci(readme):
    script = README.parent / "scripts" / "install-system-deps.sh"
    command = script.read_text().split("apt-get install", 1)[1].split("\n\n")[0]
    packages = {w for w in command.replace("\\\n", " ").split()
                if not w.startswith("-") and w != ">/dev/null"}
    assert {"xvfb", "libgl1-mesa-dri", "libxcb-cursor0"} <= packages
    assert "bash scripts/install-system-deps.sh" in readme
    assert "bash scripts/install-system-deps.sh" in (README.parent / ".ci" / "run").read_text()
    named = re.search(r"\(`xvfb\s+xauth\s+([^`]+)`", readme)
    assert named and set(("xvfb xauth " + named.group(1)).split()) == packages


DOCS = README.parent / "docs"


def test_readme_is_a_front_page(readme):
    """The manual lives in docs/ (the mkdocs site); the README stays a front page."""
    assert len(readme.splitlines()) <= 300


def test_readme_links_resolve(readme):
    for target in re.findall(r"\]\(((?:docs/|\.\./)?[^)#:]+)(?:#[^)]*)?\)", readme):
        if not target.startswith("http"):
            assert (README.parent / target).exists(), target


def test_every_method_has_a_page_with_its_settings():
    import yaml

    nav = yaml.safe_load((README.parent / "mkdocs.yml").read_text())["nav"]
    listed = set()

    def walk(node):
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        else:
            listed.add(node)

    walk(nav)
    for spec in all_methods():
        page = DOCS / "methods" / f"{spec.name}.md"
        module = spec.name.replace("-", "_")
        assert f"::: napari_ssl_restore.methods.{module}.{spec.function}" in page.read_text()
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages == listed, (pages - listed, listed - pages)  # every page in the nav, and back
