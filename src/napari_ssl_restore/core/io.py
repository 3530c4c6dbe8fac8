"""TIFF reading and writing (tifffile) with provenance in the ImageDescription tag."""
from __future__ import annotations

import datetime
import json
import os
from typing import Any, Mapping

import numpy as np

PROVENANCE_KEY = "napari_ssl_restore"

# tifffile series axes -> our letters; Q/I (unknown/image sequence) are left to the caller's guess
_TIFF_AXES = {"T": "T", "Z": "Z", "Y": "Y", "X": "X", "C": "C", "S": "C"}


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
    """Read a TIFF file; return its data and, when the file records them, its axes.

    Raises
    ------
    FileNotFoundError, ValueError
        With a message naming the file when it is missing or cannot be read as TIFF.
    """
    import tifffile

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file.")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = series.asarray()
            tiff_axes = series.axes
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types for corrupt files
        raise ValueError(f"{path}: cannot read it as a TIFF image ({type(exc).__name__}: {exc}). "
                         "Save it as .tif/.tiff (e.g. from Fiji or napari) and try again.") from None
    axes = "".join(_TIFF_AXES.get(a, "?") for a in tiff_axes)
    if "?" in axes or len(set(axes)) != len(axes) or len(axes) != data.ndim:
        axes = None
    if axes is not None and data.ndim == 2:
        axes = "YX"
    return data, axes


def provenance(method: str, params: Mapping[str, Any], *, seed: int | None, device: str | None,
               axes: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The provenance record stored with every result (TIFF description, layer metadata)."""
    from .. import __version__

    rec = {
        "software": "napari-ssl-restore",
        "version": __version__,
        "method": method,
        "params": {k: _jsonable(v) for k, v in params.items()},
        "seed": seed,
        "device": device,
        "axes": axes,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        rec.update({k: _jsonable(v) for k, v in extra.items()})
    return rec


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist() if v.size <= 64 else f"array{v.shape}"
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def write_image(path: str | os.PathLike, data: np.ndarray, *, axes: str | None = None,
                prov: Mapping[str, Any] | None = None) -> None:
    """Write ``data`` as TIFF with the provenance record as JSON in the ImageDescription."""
    import tifffile

    description = json.dumps({PROVENANCE_KEY: dict(prov or {}), "axes": axes})
    tifffile.imwrite(os.fspath(path), np.asarray(data), description=description, metadata=None,
                     photometric="rgb" if axes and axes.endswith("C") and data.shape[-1] in (3, 4)
                     else "minisblack")


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """Return the provenance record written by :func:`write_image` (empty if there is none)."""
    import tifffile

    with tifffile.TiffFile(os.fspath(path)) as tif:
        desc = tif.pages[0].description
    try:
        return json.loads(desc).get(PROVENANCE_KEY, {})
    except (json.JSONDecodeError, AttributeError):
        return {}
