import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def hazy_small():
    """A small hazy RGB image with known transmission and airlight (uint8)."""
    from napari_ssl_restore.data import hazy_scene

    s = hazy_scene()
    return {k: (v[::6, ::6] if isinstance(v, np.ndarray) and v.ndim >= 2 else v) for k, v in s.items()}


_DISPLAY_HELP = (
    "napari's tests need an X server with OpenGL and Qt's xcb libraries. On Debian/Ubuntu: "
    "`$(command -v sudo) bash scripts/install-system-deps.sh`, then run the tests under "
    "`xvfb-run -a python -m pytest` (or deselect them: `-m 'not napari'`)."
)


@pytest.hookimpl(trylast=True)  # after -m/-k deselection
def pytest_collection_modifyitems(config, items):
    """Fail fast, with the reason, when napari tests are selected but napari cannot open a window
    here, instead of aborting the process after the compute tests have run for minutes."""
    import os
    import subprocess
    import sys

    if not any(item.get_closest_marker("napari") for item in items):
        return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        pytest.exit(f"no display (DISPLAY is not set). {_DISPLAY_HELP}", returncode=4)
    probe = ("import napari\nv = napari.Viewer(show=False)\nv.close()\n")
    try:
        res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             timeout=120)
    except subprocess.TimeoutExpired:
        pytest.exit(f"opening a napari viewer timed out after 120 s. {_DISPLAY_HELP}", returncode=4)
    if res.returncode != 0:
        tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
        pytest.exit(f"napari cannot open a viewer here (exit {res.returncode}: {tail}). "
                    f"{_DISPLAY_HELP}", returncode=4)


def _accelerator() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps is not None and mps.is_available())


def pytest_runtest_setup(item):
    """Tests marked ``gpu`` run only where torch sees a CUDA or MPS device."""
    if item.get_closest_marker("gpu") and not _accelerator():
        pytest.skip("needs a CUDA or MPS device (none here)")
