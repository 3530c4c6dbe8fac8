"""The registry is the one list of methods: everything else that names them must agree with it.

Checked here against ``core.registry.METHODS``: the package's exports and lazy function table,
napari.yaml (one command and one widget per method, nothing stale), ``tests/helpers.TINY``, the README
method table and the generated ``__init__.pyi``; and ``core.models.ARCHITECTURES`` against the
networks the code saves.
"""
import ast
import importlib
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import napari_ssl_restore as nsr
from napari_ssl_restore.core import models
from napari_ssl_restore.core.registry import (
    METHOD_MODULES,
    METHODS,
    PUBLIC_FUNCTIONS,
    get_method,
    list_methods,
)

ROOT = Path(__file__).resolve().parents[1]
PKG = Path(nsr.__file__).parent
# the package's entry points besides the methods
NOT_METHODS = ["restore", "list_methods", "batch", "analyse", "export_bioimageio"]


def test_registry_entries_match_their_specs():
    assert list_methods() == list(METHODS) == list(METHOD_MODULES)
    assert len(set(METHODS.values())) == len(METHODS)
    for name, function in METHODS.items():
        spec = get_method(name)
        assert spec.name == name and spec.function == function
        assert METHOD_MODULES[name] == f"napari_ssl_restore.methods.{name.replace('-', '_')}"
        assert PUBLIC_FUNCTIONS[function] == METHOD_MODULES[name]


def test_package_exports_every_method_function():
    assert nsr.__all__ == [*NOT_METHODS, *METHODS.values(), "__version__"]
    for name, function in METHODS.items():
        exported = getattr(nsr, function)
        assert exported is getattr(importlib.import_module(METHOD_MODULES[name]), function)
        assert exported.__name__ == function
    assert set(nsr.__all__) <= set(dir(nsr))
    with pytest.raises(AttributeError, match="no attribute 'dehaze'"):
        nsr.dehaze  # noqa: B018


def _manifest() -> dict:
    return yaml.safe_load((PKG / "napari.yaml").read_text())["contributions"]


def test_napari_yaml_has_one_widget_per_method_and_nothing_stale():
    contrib = _manifest()
    commands = {c["id"]: c for c in contrib["commands"]}
    assert len(commands) == len(contrib["commands"]), "duplicate command ids"
    expected = [f"napari-ssl-restore.make_{m.replace('-', '_')}_widget" for m in list_methods()]
    extra = {"napari-ssl-restore.make_assistant_widget"}  # the Restore assistant, not a method
    # registry order: the menu's
    assert [w["command"] for w in contrib["widgets"] if w["command"] not in extra] == expected
    for method, command in zip(list_methods(), expected, strict=True):
        # the class name is written out here, not derived by the package's code, so a rename shows
        cls = "".join(part.capitalize() for part in method.split("-")) + "Widget"
        assert commands[command]["python_name"] == f"napari_ssl_restore._napari.widgets:{cls}"
        assert commands[command]["title"]
    names = [w["display_name"] for w in contrib["widgets"]]
    assert len(set(names)) == len(names)
    # every other command is sample data, used once; no sample entry names a missing command
    samples = [s["command"] for s in contrib.get("sample_data", [])]
    assert len(set(samples)) == len(samples)
    assert set(commands) == set(expected) | set(samples) | extra
    assert all(commands[s]["python_name"].startswith("napari_ssl_restore._napari.sample_data:")
               for s in samples)


def test_tiny_settings_cover_exactly_the_registry():
    sys.path.insert(0, str(Path(__file__).parent))
    from helpers import SKIP, TINY

    assert list(TINY) == list_methods()
    for method, settings in TINY.items():
        get_method(method).make_params(**settings)  # every name a parameter of the method
    for method, choice in SKIP:
        spec = get_method(method)
        assert any(choice in (p.choices or ()) for p in spec.param_info if p.name in ("task", "mode"))


def test_readme_method_table_matches_the_registry():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.startswith("| method (`restore(..., method)`) | function |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(tuple(re.fullmatch(r"`([^`]+)`", cell.strip()).group(1)
                          for cell in line.split("|")[1:3]))
    assert rows == list(METHODS.items())


# --- networks a checkpoint can hold ----------------------------------------------------------------

def _saved_architectures() -> set[str]:
    """Architecture names the code saves under: ``checkpoint(..., architecture="x")`` and
    ``architecture = "x"`` / ``arch = "x" if ... else "y"`` in the package and its scripts."""
    def literals(node) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.IfExp):
            return literals(node.body) | literals(node.orelse)
        return set()

    found: set[str] = set()
    for path in [*PKG.rglob("*.py"), *(ROOT / "scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "architecture":
                found |= literals(node.value)
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) and node.value else []
            if any(isinstance(t, ast.Name) and t.id in ("architecture", "arch") for t in targets):
                found |= literals(node.value)
    return found


def test_architectures_are_those_the_code_saves():
    shipped = {entry["architecture"] for entry in models.shipped_manifest().values()}
    assert _saved_architectures() | shipped == set(models.ARCHITECTURES)


@pytest.mark.parametrize("name", list(models.ARCHITECTURES))
def test_architecture_rebuilds_from_its_config(name):
    torch = pytest.importorskip("torch")
    cls = models.network_class(name)
    assert issubclass(cls, torch.nn.Module)
    net = cls()
    again = models.build({"architecture": name, "config": net.config, "state_dict": net.state_dict()})
    assert type(again) is cls and again.config == net.config


# --- the static stub ------------------------------------------------------------------------------

def _make_stubs():
    spec = importlib.util.spec_from_file_location("make_stubs", ROOT / "scripts" / "make_stubs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stub_is_current_and_shipped():
    stub = PKG / "__init__.pyi"
    assert stub.read_text(encoding="utf-8") == _make_stubs().render(), \
        "__init__.pyi is out of date: run python scripts/make_stubs.py"
    tree = ast.parse(stub.read_text(encoding="utf-8"))
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert defined == set(NOT_METHODS) | set(METHODS.values())
    assert (PKG / "py.typed").is_file()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert {"__init__.pyi", "py.typed", "napari.yaml"} <= set(data["napari_ssl_restore"])


def test_stub_gives_type_checkers_the_signatures(tmp_path):
    pytest.importorskip("mypy")
    code = tmp_path / "use.py"
    code.write_text(
        "import numpy as np\nimport napari_ssl_restore as nsr\n"
        "a: np.ndarray = nsr.dehaze_dcp(np.zeros((8, 8)), patch_size=5)\n"
        "b: dict = nsr.restore_dip(np.zeros((8, 8)), task='sr', full_output=True)\n"
        "c = nsr.restore(np.zeros((8, 8)), 'dcp', device='cpu')\n"
        "nsr.restore_dip(np.zeros((8, 8)), task='denoize')\n"
        "nsr.dehaze_dcp(np.zeros((8, 8)), patch_sise=5)\n")
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", "/dev/null",
                          "--no-error-summary", str(code)], capture_output=True, text=True,
                         cwd=tmp_path).stdout
    errors = sorted({int(m) for m in re.findall(r"use\.py:(\d+): error", out)})
    assert errors == [6, 7], out  # only the bad task and the misspelt parameter
