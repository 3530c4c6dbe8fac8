"""napari-ssl-restore: self-supervised image and video restoration for microscopy.

Public API: :func:`restore`, :func:`list_methods`, :func:`batch` (dask.distributed) and one
skimage-style function per method (``dehaze_dcp`` ...). Imports are lazy: ``import napari_ssl_restore`` loads neither torch nor Qt.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["restore", "list_methods", "batch", "dehaze_dcp", "restore_dip", "denoise_noise2noise",
           "decompose_double_dip", "denoise_dncnn", "denoise_frame2frame",
           "denoise_restore_from_restored", "restore_physics_gan", "dehaze_cycle",
           "deblur_disentangled", "__version__"]

# public function name -> method module (kept in step with the registry by tests/test_api.py)
_FUNCTIONS = {
    "dehaze_dcp": "napari_ssl_restore.methods.dcp",
    "restore_dip": "napari_ssl_restore.methods.dip",
    "denoise_noise2noise": "napari_ssl_restore.methods.noise2noise",
    "decompose_double_dip": "napari_ssl_restore.methods.double_dip",
    "denoise_dncnn": "napari_ssl_restore.methods.dncnn",
    "denoise_frame2frame": "napari_ssl_restore.methods.frame2frame",
    "denoise_restore_from_restored": "napari_ssl_restore.methods.restore_from_restored",
    "restore_physics_gan": "napari_ssl_restore.methods.physics_gan",
    "dehaze_cycle": "napari_ssl_restore.methods.cycle_dehaze",
    "deblur_disentangled": "napari_ssl_restore.methods.disentangled_deblur",
}


def __getattr__(name: str) -> Any:
    if name in ("restore", "list_methods"):
        return getattr(importlib.import_module("napari_ssl_restore.api"), name)
    if name == "batch":
        return importlib.import_module("napari_ssl_restore.batching").batch
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(_FUNCTIONS[name]), name)
    raise AttributeError(f"module 'napari_ssl_restore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
