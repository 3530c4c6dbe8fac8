"""The compute core never imports napari, Qt or magicgui, and the package imports without torch."""
import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_core_methods_nets_are_qt_free():
    mods = _modules_after(
        "import napari_ssl_restore.core, napari_ssl_restore.methods, napari_ssl_restore.nets\n"
        "import napari_ssl_restore.api, napari_ssl_restore.cli\n"
        "from napari_ssl_restore.core.registry import all_methods\nall_methods()"
    )
    banned = {m for m in mods if m.split(".")[0] in ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2",
                                                      "PySide6", "magicgui", "superqt")}
    assert not banned, f"Qt/napari imported by the core: {sorted(banned)}"


def test_package_import_is_light():
    mods = _modules_after("import napari_ssl_restore")
    assert "torch" not in mods
    assert "napari" not in mods


def test_methods_never_import_each_other():
    """A method module declares only what is its own; shared machinery lives in core/ and engine/."""
    import ast
    from pathlib import Path

    import napari_ssl_restore.methods as methods

    folder = Path(methods.__file__).parent
    names = {p.stem for p in folder.glob("*.py")} - {"__init__", "_public"}
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imported = {node.module} if node.module else {a.name for a in node.names}
                assert not imported & names, f"{path.name} imports {imported & names}"
