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


GUI = ("napari", "magicgui", "qtpy", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy")
HEADLESS = f'''
import importlib.abc
import sys


class _NoGui(importlib.abc.MetaPathFinder):
    """As if the GUI stack were not installed (this process and every one it starts)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {GUI!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not installed)", name=name)
        return None


sys.meta_path.insert(0, _NoGui())
'''


def test_api_cli_and_batch_run_without_napari_or_qt(tmp_path):
    """A cluster worker or a script installs the core only (`pip install .`, no extras): the API,
    `run` and `batch` (a local dask cluster whose worker processes see the same absence) work."""
    import os

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(HEADLESS)
    script = f'''
import sys
import numpy as np
import tifffile
try:
    import napari  # noqa: F401
    sys.exit("napari is importable: the test's blocker failed")
except ModuleNotFoundError:
    pass
from napari_ssl_restore import restore
from napari_ssl_restore.cli import main

rng = np.random.default_rng(0)
img = (0.5 + 0.1 * rng.standard_normal((32, 32))).astype(np.float32)
assert restore(img, "dncnn", axes="YX", device="cpu").shape == img.shape
tifffile.imwrite(r"{tmp_path}/in.tif", img)
assert main(["run", "dncnn", r"{tmp_path}/in.tif", "-o", r"{tmp_path}/run.tif"]) == 0
assert main(["batch", "dncnn", r"{tmp_path}/in.tif", "-o", r"{tmp_path}/batch",
             "--workers", "1"]) == 0
gui = sorted(m for m in sys.modules if m.split(".")[0] in {GUI!r})
assert not gui, gui
print("headless ok")
'''
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path / "site"), *filter(None, [os.environ.get("PYTHONPATH")])]))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=240)
    assert res.returncode == 0 and "headless ok" in res.stdout, res.stdout + res.stderr
    assert os.path.exists(tmp_path / "run.tif")
    assert os.listdir(tmp_path / "batch") == ["in_dncnn.tif"]
