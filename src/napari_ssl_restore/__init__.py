"""napari-ssl-restore: self-supervised image and video restoration for microscopy.

Public API: :func:`restore`, :func:`list_methods`, :func:`batch` (dask.distributed), :func:`analyse`
(the restore assistant), :func:`export_bioimageio` (a saved model as a bioimage.io model zip) and one
skimage-style function per method (``dehaze_dcp`` ...), one per entry of the registry
(:data:`napari_ssl_restore.core.registry.METHODS`). Imports are lazy: ``import napari_ssl_restore``
loads neither torch nor Qt; ``__init__.pyi`` gives editors and type checkers every signature.
"""
from __future__ import annotations

import importlib
from typing import Any

from .core.registry import PUBLIC_FUNCTIONS as _FUNCTIONS

__version__ = "0.1.0"

# name -> module for the entry points that are not per-method functions
_API = {"restore": "napari_ssl_restore.api", "list_methods": "napari_ssl_restore.api",
        "batch": "napari_ssl_restore.batching", "analyse": "napari_ssl_restore.assistant",
        "export_bioimageio": "napari_ssl_restore.export"}

__all__ = [*_API, *_FUNCTIONS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _API.get(name) or _FUNCTIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_ssl_restore' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
