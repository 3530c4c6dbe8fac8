"""The package's borders, read from the source: the arrows between its layers point one way.

``core/``, ``physics/``, ``nets/`` and ``engine/`` never import the front ends (``api``, ``cli``,
``estimate``, the ``batching`` package, ``demo``, ``_napari``); ``methods/`` import neither the front
ends nor each other (``methods/_public.py``, which makes each method's public function a call of
``restore``, is the one bridge to the API). Checked on the import statements themselves
(top-level and inside functions), so a lazy import cannot slip through.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "napari_ssl_restore"
FRONT_ENDS = ("api", "cli", "estimate", "batching", "demo", "_napari")
LOWER = ("core", "physics", "nets", "engine")


def _imports(path: Path, root: Path = PKG) -> set[str]:
    """Modules ``path`` imports, as dotted names under ``napari_ssl_restore`` (others dropped)."""
    rel = path.relative_to(root.parent).with_suffix("").parts
    package = rel[:-1] if rel[-1] != "__init__" else rel
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ((node.module,) if node.module else ()))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.startswith("napari_ssl_restore")}


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def _files(layer: str) -> list[Path]:
    return sorted((PKG / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", LOWER)
def test_lower_layers_never_import_the_front_ends(layer):
    bad = {f"{p.relative_to(PKG)} imports {n}" for p in _files(layer) for n in _imports(p)
           if _layer(n) in FRONT_ENDS + ("methods",)}
    assert not bad, sorted(bad)


def test_methods_import_neither_front_ends_nor_each_other():
    bad = set()
    for p in _files("methods"):
        for n in _imports(p):
            parts = n.split(".")
            if _layer(n) in FRONT_ENDS and not (p.name == "_public.py" and _layer(n) == "api"):
                bad.add(f"{p.name} imports {n}")
            elif (_layer(n) == "methods" and len(parts) > 2 and parts[2] not in (p.stem, "_public")
                  and not parts[2][0].isupper()):
                bad.add(f"{p.name} imports {n}")
    assert not bad, sorted(bad)


def test_the_check_sees_an_upward_import(tmp_path):
    """The checker itself: relative and absolute imports of a front end inside a function."""
    assert "napari_ssl_restore.core.registry" in _imports(PKG / "engine" / "request.py")
    root = tmp_path / "napari_ssl_restore"
    src = root / "engine" / "x.py"
    src.parent.mkdir(parents=True)
    src.write_text("def f():\n    from ..api import prepare\n    import napari_ssl_restore.cli\n")
    found = _imports(src, root)
    assert {"napari_ssl_restore.api", "napari_ssl_restore.cli"} <= found
    assert {_layer(n) for n in found} & set(FRONT_ENDS)
