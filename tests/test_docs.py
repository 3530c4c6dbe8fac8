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
        assert re.search(rf"^\| `{re.escape(spec.name)}` \| `{spec.function}` \|", readme, re.M), spec.name


def test_quick_start_commands(readme):
    assert "napari-ssl-restore demo" in readme
    assert "python -m pytest" in readme
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -q torch==2.13.0 -e ".[testing]"' in ci and "xvfb-run -a python -m pytest" in ci
