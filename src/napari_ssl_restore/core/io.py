"""TIFF reading and writing (tifffile): axes from the file's metadata, provenance with every result,
and writes that never clobber a file or leave a truncated one behind.

Results are written as tifffile "shaped" TIFFs whose JSON description records the axes (``"TYX"``
...) and the provenance record, so a result read back keeps T as T, and any tifffile user sees the
axes too. Every write goes to a temporary file in the target folder that is renamed over the target
only once complete (:func:`atomic_paths`): a crash or Ctrl-C leaves the folder as it was.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

PROVENANCE_KEY = "napari_ssl_restore"

# file axis letters -> ours; S (samples) is handled apart, Q/I (unknown/image sequence) are unknown
_TIFF_AXES = {"T": "T", "Z": "Z", "Y": "Y", "X": "X", "C": "C"}


def _metadata_axes(tif, series) -> str | None:
    """The axes a TIFF's metadata states (ours, ImageJ, OME, an RGB photometric), or None."""
    shaped = tif.shaped_metadata[0] if tif.is_shaped and tif.shaped_metadata else {}
    axes = shaped.get("axes") if isinstance(shaped, dict) else None
    if isinstance(axes, str) and axes:  # written by this plugin (or another tifffile user)
        up = axes.upper()
        return up if set(up) <= set("TZYXC") and len(up) == len(series.shape) else None
    letters = series.axes.upper()
    if "S" in letters:
        # samples per pixel: colour channels only when stored interleaved (...YXS) as RGB(A);
        # tifffile writes a plain (3, H, W) or (4, H, W) array as planar "RGB" by default, which
        # says nothing about whether those are channels or planes
        contig_rgb = letters.endswith("YXS") and series.shape[-1] in (3, 4) \
            and str(getattr(tif.pages[0].photometric, "name", "")).upper() == "RGB"
        if not contig_rgb:
            return None
        letters = letters[:-1] + "C"
    if not (tif.is_imagej or tif.is_ome or letters.endswith("YXC")):
        return None  # a plain multi-page file: Q/I pages of unknown meaning
    axes = "".join(_TIFF_AXES.get(a, "?") for a in letters)
    if "?" in axes or len(set(axes)) != len(axes) or len(axes) != len(series.shape):
        return None
    return axes


def open_image(path: str | os.PathLike) -> tuple[Any, str | None]:
    """Open an image file lazily; return an array-like and the axes its metadata states (or None).

    ``.tif``/``.tiff``/``.ome.tif`` open through tifffile's zarr interface (one page per chunk, read
    on demand); ``.zarr``/``.ome.zarr`` open with zarr (an OME-Zarr image: its first resolution
    level, axes from its metadata); any other file (a microscope's own format: ``.czi``, ``.nd2``,
    ``.lif`` ...) through bioio, the ``[formats]`` extra (:func:`open_bioio`: a lazy dask array of
    the first scene, axes from its metadata). The one reader of image files: the plane driver
    (:func:`napari_ssl_restore.engine.planes.open_array`) opens paths with it, and
    :func:`read_image` reads a TIFF into memory through the same TIFF reader and checks.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, ValueError
        With a message naming the file when it is missing, of another format or unreadable.
    """
    path = _existing(path)
    low = path.lower().rstrip("/\\")
    if low.endswith(".zarr"):
        return _open_zarr(path)
    if low.endswith((".tif", ".tiff")):
        return _open_tiff(path, lazy=True)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder; give an image file or an .ome.zarr store.")
    return open_bioio(path)


FORMATS_EXTRA = 'pip install "napari-ssl-restore[formats]"'
"""How to get the bioio readers (CZI, ND2, LIF, OME-TIFF, OME-Zarr)."""


def _bioimage(path: str):
    """``bioio.BioImage`` of ``path`` (first scene), or a ``ValueError`` naming what to install."""
    suffix = os.path.splitext(path)[1] or "these"
    try:
        from bioio import BioImage
    except ImportError:
        raise ValueError(f"{path}: {suffix} files are read through bioio, which is not installed: "
                         f"{FORMATS_EXTRA} (readers for CZI, ND2, LIF, OME-TIFF and OME-Zarr); or "
                         "save the image as .tif/.ome.tif or .ome.zarr (e.g. from Fiji).") from None
    try:
        return BioImage(path)
    except Exception as exc:  # noqa: BLE001 - bioio raises per-reader types
        raise ValueError(f"{path}: no installed bioio reader opens it ({type(exc).__name__}: "
                         f"{exc}). {FORMATS_EXTRA} installs the readers for CZI, ND2, LIF, "
                         "OME-TIFF and OME-Zarr; other formats have their own bioio-* "
                         "packages.") from None


def open_bioio(path: str | os.PathLike) -> tuple[Any, str]:
    """An image file through bioio (the ``[formats]`` extra): the first scene as a lazy dask array
    with the axes it has more than one of (always ``Y`` and ``X``; RGB samples as ``C``), in the
    reader's order, and those axes."""
    path = os.fspath(path)
    image = _bioimage(path)
    sizes = dict(zip(image.dims.order, image.shape, strict=True))
    order = "".join(a for a in image.dims.order
                    if a in "YX" or (a in "TCZS" and sizes[a] > 1))
    if "S" in order and "C" in order:
        raise ValueError(f"{path}: {sizes['C']} channels of {sizes['S']}-sample (RGB) pixels; "
                         "export one channel or convert it to single-sample channels first.")
    extra = [a for a in order if a not in "TCZYXS"]
    if extra:  # pragma: no cover - bioio's readers give TCZYX(S)
        raise ValueError(f"{path}: axes {''.join(extra)} are not supported.")
    data = image.get_image_dask_data(order)
    return data, order.replace("S", "C")


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
    """Read a TIFF file (whatever its suffix) into memory; return its data and the axes its metadata
    states (None if it states none).

    Raises
    ------
    FileNotFoundError, ValueError
        With a message naming the file when it is missing or cannot be read as TIFF.
    """
    return _open_tiff(_existing(path), lazy=False)


def _existing(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file.")
    return path


def _open_tiff(path: str, *, lazy: bool) -> tuple[Any, str | None]:
    """Series 0 of a TIFF: a zarr array read on demand (``lazy``) or a numpy array, and its axes."""
    import tifffile

    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder; give a .tif/.tiff file.")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = _metadata_axes(tif, series)
            shape = series.shape
            data: Any = None if lazy else series.asarray()
        if lazy:
            import zarr

            data = zarr.open(tifffile.imread(path, aszarr=True, series=0, level=0), mode="r")
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types for corrupt files
        raise ValueError(f"{path}: cannot read it as a TIFF image ({type(exc).__name__}: {exc}). "
                         "Save it as .tif/.tiff (e.g. from Fiji or napari) and try again.") from None
    if lazy and tuple(data.shape) != tuple(shape):  # pragma: no cover - tifffile keeps shapes
        raise ValueError(f"{path}: unexpected TIFF layout {data.shape} for series {shape}.")
    if axes is None and len(data.shape) == 2:
        axes = "YX"
    return data, axes


def _open_zarr(path: str) -> tuple[Any, str | None]:
    """A zarr array, or an OME-Zarr group's first resolution level, and the axes its attributes
    state (when they are ``TZYXC`` letters, one per dimension)."""
    import zarr

    from .axes import CANONICAL

    try:
        node = zarr.open(path, mode="r")
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: cannot open it as zarr ({type(exc).__name__}: {exc}).") from None
    axes = None
    if isinstance(node, zarr.Group):
        attrs = dict(node.attrs)
        ms = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if not ms:
            raise ValueError(f"{path} is a zarr group without OME-Zarr 'multiscales' metadata; "
                             "give the array inside it (e.g. path/0).")
        level = ms[0]["datasets"][0]["path"]
        names = [a["name"] if isinstance(a, dict) else a for a in ms[0].get("axes", [])]
        axes = "".join(n.upper() for n in names) or None
        if axes and not set(axes) <= set(CANONICAL):
            axes = None
        node = node[level]
    else:
        stated = node.attrs.get("axes")
        axes = stated.upper() if isinstance(stated, str) else None
    if axes and len(axes) != len(node.shape):
        axes = None
    return node, axes


# --- physical pixel sizes and time steps --------------------------------------------------------

UNITS = {"µm": "micrometer", "\u03bcm": "micrometer", "um": "micrometer", "micron": "micrometer",
         "microns": "micrometer", "nm": "nanometer", "mm": "millimeter", "cm": "centimeter",
         "m": "meter", "Å": "angstrom", "s": "second", "sec": "second", "ms": "millisecond",
         "min": "minute", "h": "hour", "hr": "hour"}
"""Unit symbols as OME-XML and ImageJ write them -> the OME-Zarr (UDUNITS-2) names kept here."""
SYMBOLS = {"micrometer": "µm", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm",
           "meter": "m", "angstrom": "Å", "second": "s", "millisecond": "ms", "minute": "min",
           "hour": "h"}
SCALED_AXES = "TZYX"


def unit_name(unit: Any) -> str | None:
    """The OME-Zarr name of a unit symbol or name (``"µm"`` -> ``"micrometer"``), None if unknown."""
    if not isinstance(unit, str) or not unit.strip():
        return None
    u = unit.strip()
    if u in UNITS:
        return UNITS[u]
    return u.lower() if u.lower() in SYMBOLS else None


def _entry(size: Any, unit: Any) -> dict | None:
    try:
        value = float(size)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(value) or value <= 0:
        return None
    return {"size": value, "unit": unit_name(unit)}


def read_scale(path: str | os.PathLike, axes: str) -> dict[str, dict]:
    """The physical pixel size along X, Y and Z and the time step along T that the file's metadata
    states, as ``{"X": {"size": 0.1625, "unit": "micrometer"}, "T": {"size": 2.0, "unit":
    "second"}, ...}`` (units as OME-Zarr names; ``None`` when the metadata gives none). Axes the
    metadata says nothing about, or not in ``axes``, are left out; metadata that cannot be read
    gives ``{}`` (never an error: the sizes are carried along, not needed).

    Read from OME-TIFF (the first image's ``PhysicalSize*``/``TimeIncrement``), ImageJ TIFF (the
    resolution tags with ImageJ's ``unit``, ``spacing``, ``finterval``), TIFFs this plugin wrote
    (their ``scale``), OME-Zarr (the first level's scale transformation and the axes' units) and
    through bioio (other formats: its physical pixel sizes and time interval). A plain TIFF's
    resolution tags (often a default 72 dpi) are not taken for a pixel size.
    """
    path = os.fspath(path)
    low = path.lower().rstrip("/\\")
    try:
        if low.endswith(".zarr"):
            found = _zarr_scale(path)
        elif low.endswith((".tif", ".tiff")):
            found = _tiff_scale(path)
        else:
            found = _bioio_scale(path)
    except Exception:  # noqa: BLE001 - metadata is optional: unreadable means unknown
        found = {}
    return {a: entry for a in SCALED_AXES if a in axes and (entry := found.get(a))}


def _tiff_scale(path: str) -> dict[str, dict | None]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        shaped = tif.shaped_metadata[0] if tif.is_shaped and tif.shaped_metadata else {}
        if isinstance(shaped, dict) and isinstance(shaped.get("scale"), dict):
            return {a: _entry(v.get("size"), v.get("unit")) for a, v in shaped["scale"].items()
                    if isinstance(v, dict)}
        if tif.is_ome and tif.ome_metadata:
            return _ome_xml_scale(tif.ome_metadata)
        if tif.is_imagej and tif.imagej_metadata is not None:
            ij = tif.imagej_metadata
            unit = ij.get("unit")
            out: dict[str, dict | None] = {}
            xres, yres = page.resolution
            if xres and yres:
                out["X"], out["Y"] = _entry(1.0 / xres, unit), _entry(1.0 / yres, unit)
            out["Z"] = _entry(ij.get("spacing"), unit)
            out["T"] = _entry(ij.get("finterval"), ij.get("tunit", "s"))
            return out
    return {}


def _ome_xml_scale(xml: str) -> dict[str, dict | None]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return {}
    a = pixels.attrib
    out = {ax: _entry(a.get(f"PhysicalSize{ax}"), a.get(f"PhysicalSize{ax}Unit", "µm"))
           for ax in "XYZ"}
    out["T"] = _entry(a.get("TimeIncrement"), a.get("TimeIncrementUnit", "s"))
    return out


def _zarr_scale(path: str) -> dict[str, dict | None]:
    import zarr

    attrs = dict(zarr.open_group(path, mode="r").attrs)
    ms = (attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales"))[0]
    axes = ms.get("axes", [])
    sizes = np.ones(len(axes))
    for transforms in (ms["datasets"][0].get("coordinateTransformations", []),
                       ms.get("coordinateTransformations", [])):
        for t in transforms:
            if t.get("type") == "scale":
                sizes = sizes * np.asarray(t["scale"], float)
    out: dict[str, dict | None] = {}
    for ax, size in zip(axes, sizes, strict=True):
        name = str(ax.get("name") if isinstance(ax, dict) else ax).upper()
        unit = ax.get("unit") if isinstance(ax, dict) else None
        if name in SCALED_AXES and (unit or size != 1.0):
            out[name] = _entry(size, unit)
    return out


def _bioio_scale(path: str) -> dict[str, dict | None]:
    image = _bioimage(path)
    sizes = image.physical_pixel_sizes  # micrometres, bioio's convention
    out = {a: _entry(getattr(sizes, a), "micrometer") for a in "ZYX"}
    interval = image.time_interval
    if interval is not None:
        seconds = interval.to("s").magnitude if hasattr(interval, "to") else interval
        out["T"] = _entry(seconds, "second")
    return out


def zoomed_scale(scale: Mapping[str, dict], zoom: int) -> dict[str, dict]:
    """``scale`` for an output ``zoom`` times finer in Y and X (super-resolution)."""
    return {a: (dict(v, size=v["size"] / zoom) if a in "YX" and zoom != 1 else dict(v))
            for a, v in scale.items()}


def glob_files(pattern: str) -> list[str]:
    """The paths matching a glob pattern, sorted; none is an error naming the pattern."""
    import glob

    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"{pattern}: no file matches this pattern.")
    return files


def read_examples(source) -> list[np.ndarray]:
    """Example images of any sizes: an array (one image or a stack), a list of arrays, or a
    path — a TIFF file, a folder of them, or a glob such as ``'confocal/*.tif'``."""
    import glob

    from .normalize import check_image

    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path) and not path.rstrip("/" + os.sep).lower().endswith(".zarr"):
            files = sorted(f for f in glob.glob(os.path.join(path, "*"))
                           if f.lower().endswith((".tif", ".tiff")))
            if not files:
                raise FileNotFoundError(f"{path}: the folder has no .tif/.tiff files.")
        elif glob.has_magic(path):
            files = glob_files(path)
        else:
            files = [path]
        return [read_image(f)[0] for f in files]
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("the list of examples is empty.")
        return [check_image(v, name="example") for v in source]
    return [check_image(source, name="examples")]


def choose_axes(shape: tuple[int, ...], stated: str | None, *, video: bool, source: str) -> str:
    """The axes of an array read from ``source``: as stated by its metadata, else guessed.

    A guess is refused (``ValueError`` naming the choices) where it would decide between colour
    channels and planes, i.e. a leading or trailing axis of 3 or 4 with no metadata to say which, or
    between the order of T and Z.
    """
    from .axes import infer_axes

    if stated:
        return stated
    ndim = len(shape)
    what = f"{source} has shape {tuple(shape)} and no axes in its metadata"
    if ndim == 3 and shape[0] in (3, 4):
        raise ValueError(f"{what}: the first axis ({shape[0]}) could be colour channels or planes. "
                         f"Pass --axes CYX (channels), ZYX (a Z stack) or TYX (a time-lapse).")
    if ndim == 3 and shape[-1] in (3, 4):
        raise ValueError(f"{what}: the last axis ({shape[-1]}) could be colour channels or the "
                         "width of a stack of narrow images. Pass --axes YXC (channels) or ZYX / "
                         "TYX (planes).")
    if ndim == 4:
        raise ValueError(f"{what}: which axes are time, depth or channels cannot be guessed. Pass "
                         "--axes, e.g. TZYX, ZCYX or TYXC.")
    if ndim > 4:
        raise ValueError(f"{what}: cannot guess the axes of a {ndim}-D array. Pass --axes (e.g. "
                         "TZCYX), or take a sub-stack first.")
    return infer_axes(tuple(shape), video=video)


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
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
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
    """Write ``data`` as TIFF recording ``axes`` and the provenance record in its description.

    Large data is written as BigTIFF. The write goes straight to ``path``: wrap it in
    :func:`atomic_paths` to write a user's output.
    """
    import tifffile

    data = np.asarray(data)
    meta: dict[str, Any] = {PROVENANCE_KEY: dict(prov or {})}
    if axes:
        meta["axes"] = axes
    rgb = axes is not None and axes.endswith("C") and data.shape[-1] in (3, 4) and data.dtype == np.uint8
    tifffile.imwrite(os.fspath(path), data, metadata=meta, photometric="rgb" if rgb else
                     "minisblack", bigtiff=data.nbytes > 2**32 - 2**25)


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """Return the provenance record written by :func:`write_image` (empty if there is none)."""
    import tifffile

    with tifffile.TiffFile(os.fspath(path)) as tif:
        desc = tif.pages[0].description
    try:
        return json.loads(desc).get(PROVENANCE_KEY, {})
    except (json.JSONDecodeError, AttributeError):
        return {}


def check_outputs(outputs: Sequence[str | os.PathLike], *, inputs: Sequence[str | os.PathLike] = (),
                  overwrite: bool = False) -> None:
    """Refuse outputs that would overwrite an input (always) or an existing file (unless
    ``overwrite``), or whose folder does not exist; before any work starts.
    """
    real_inputs = {os.path.realpath(os.fspath(p)) for p in inputs}
    for out in outputs:
        out = os.fspath(out)
        if os.path.realpath(out) in real_inputs:
            raise ValueError(f"output {out!r} is one of the inputs; write the result to another "
                             "file (inputs are never overwritten, not even with --overwrite).")
        folder = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(folder):
            raise ValueError(f"output folder {folder!r} does not exist; create it first.")
        if os.path.isdir(out) and not out.lower().rstrip("/" + os.sep).endswith(".zarr"):
            raise ValueError(f"output {out!r} is a folder; give a file name.")
        if os.path.exists(out) and not overwrite:
            raise ValueError(f"output {out!r} already exists; pass --overwrite to replace it, or "
                             "choose another name.")


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike]) -> Iterator[list[str]]:
    """Temporary paths, one per target in the target's own folder, renamed over the targets only
    when the block completes; on an error or interrupt they are removed and the targets untouched.
    Targets may be files or folders (a zarr store): a folder replaced with ``--overwrite`` goes only
    once the new one is in place. A temporary path never written (an output the run did not
    produce) leaves its target as it was.
    """
    targets = [os.path.abspath(os.fspath(p)) for p in paths]
    tag = uuid.uuid4().hex[:8]
    temps = [os.path.join(os.path.dirname(t), f".{os.path.basename(t)}.{tag}.partial")
             for t in targets]
    try:
        yield temps
        for tmp, target in zip(temps, targets, strict=True):
            if not os.path.exists(tmp):
                continue
            if os.path.isdir(target) and not os.path.islink(target):
                old = f"{tmp}.old"
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
    finally:
        for tmp in temps:
            _remove(tmp)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


# --- outputs written plane by plane (the CLI's large results) ------------------------------------

OUTPUT_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".ome.zarr", ".zarr")


def split_suffix(path: str | os.PathLike) -> tuple[str, str]:
    """``("out", ".ome.zarr")`` for ``out.ome.zarr``; the suffix must be one we write."""
    path = os.fspath(path).rstrip("/" + os.sep)
    for suffix in OUTPUT_SUFFIXES:
        if path.lower().endswith(suffix):
            return path[: -len(suffix)], path[-len(suffix):]
    raise ValueError(f"output {path!r} must end in .tif, .tiff, .ome.tif, .zarr or .ome.zarr.")


def plane_chunks(shape: tuple, axes: str) -> tuple:
    """One chunk per plane: 1 along T and Z, whole along Y, X and C."""
    return tuple(1 if a in "TZ" else s for a, s in zip(axes, shape, strict=False))


def create_zarr(path: str, shape: tuple, dtype, axes: str, *, ome: bool = False,
                scale: Mapping[str, dict] | None = None):
    """A zarr array at ``path`` chunked per plane; with ``ome`` an OME-Zarr (NGFF 0.4, zarr format 2)
    image whose level ``0`` is the array (returned). The axes are recorded in both cases; ``scale``
    (:func:`read_scale`'s form) becomes the OME-Zarr scale transformation and the axes' units."""
    import zarr

    if not ome:
        arr = zarr.create_array(path, shape=shape, chunks=plane_chunks(shape, axes), dtype=dtype,
                                zarr_format=2, overwrite=True, fill_value=0)
        arr.attrs["axes"] = axes
        return arr
    group = zarr.open_group(path, mode="w", zarr_format=2)
    arr = group.create_array("0", shape=shape, chunks=plane_chunks(shape, axes), dtype=dtype,
                             fill_value=0)
    kinds = {"T": "time", "Z": "space", "Y": "space", "X": "space", "C": "channel"}
    scale = dict(scale or {})
    described = []
    for a in axes:
        entry = {"name": a.lower(), "type": kinds[a]}
        if scale.get(a, {}).get("unit"):
            entry["unit"] = scale[a]["unit"]
        described.append(entry)
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": os.path.basename(path).split(".")[0],
        "axes": described,
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [float(scale[a]["size"]) if a in scale else 1.0
                                        for a in axes]}]}],
    }]
    group.attrs["axes"] = axes
    return arr


class FileStores:
    """Outputs written plane by plane straight to files: ``paths`` maps an output name to the
    (temporary) file it goes to — a memory-mapped TIFF (BigTIFF when large) or an OME-Zarr store,
    by suffix. :meth:`close` records the provenance and the axes and flushes everything."""

    def __init__(self, paths: Mapping[str, str], suffixes: Mapping[str, str], *,
                 scale: Mapping[str, dict] | None = None):
        self.paths = dict(paths)
        self.suffixes = dict(suffixes)
        self.scale = dict(scale or {})
        self.stores: dict[str, Any] = {}
        self.axes: dict[str, str] = {}

    def __call__(self, name: str, shape: tuple, dtype, axes: str):
        import tifffile

        path = self.paths[name]
        self.axes[name] = axes
        scale = {a: v for a, v in self.scale.items() if a in axes}
        if self.suffixes[name].endswith(".zarr"):
            store = create_zarr(path, shape, dtype, axes, ome=True, scale=scale)
        else:
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            rgb = axes.endswith("C") and shape[-1] in (3, 4) and np.dtype(dtype) == np.uint8
            store = _ReleasingMemmap(tifffile.memmap(
                path, shape=shape, dtype=dtype, metadata={"axes": axes},
                photometric="rgb" if rgb else "minisblack", bigtiff=nbytes > 2**32 - 2**25,
                **_resolution(scale)))
        self.stores[name] = store
        return store

    def close(self, provenance: Mapping[str, Any], primary: str) -> None:
        """Flush every store and write its provenance (TIFF description / zarr attributes)."""
        import tifffile

        for name, store in self.stores.items():
            prov = dict(provenance) if name == primary else dict(provenance, output=name)
            path = self.paths[name]
            if self.suffixes[name].endswith(".zarr"):
                import zarr

                zarr.open_group(path, mode="r+").attrs[PROVENANCE_KEY] = _jsonable(prov)
            else:
                shape = list(store.shape)
                store.close()
                del store
                meta: dict[str, Any] = {"shape": shape, "axes": self.axes[name]}
                scale = {a: v for a, v in self.scale.items() if a in self.axes[name]}
                if scale:
                    meta["scale"] = scale
                desc = json.dumps(dict(meta, **{PROVENANCE_KEY: _jsonable(prov)}))
                tifffile.tiffcomment(path, desc)
        self.stores.clear()


def _resolution(scale: Mapping[str, dict]) -> dict:
    """TIFF resolution tags (pixels per centimetre) for a pixel size in a known length unit, so
    that readers which know only the tags see it too; nothing otherwise."""
    per_cm = {"nanometer": 1e7, "micrometer": 1e4, "millimeter": 10.0, "centimeter": 1.0,
              "meter": 0.01}
    x, y = scale.get("X"), scale.get("Y")
    if not (x and y and x.get("unit") in per_cm and y.get("unit") in per_cm):
        return {}
    return {"resolution": (per_cm[x["unit"]] / x["size"], per_cm[y["unit"]] / y["size"]),
            "resolutionunit": "CENTIMETER"}


class _ReleasingMemmap:
    """A memory-mapped TIFF's data that hands every plane written back to the page cache.

    Written pages of a file mapping count as the process's resident memory until the kernel
    reclaims them; flushing each plane and advising the kernel it is not needed
    (``MADV_DONTNEED``, a no-op where the platform lacks it) keeps resident memory flat however
    large the file. The data is safe: it was flushed first.
    """

    def __init__(self, array):
        self.array = array
        self.shape, self.dtype = array.shape, array.dtype

    def __setitem__(self, index, value) -> None:
        import mmap

        self.array[index] = value
        self.array.flush()
        raw = getattr(self.array, "_mmap", None)
        if raw is not None and hasattr(raw, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            raw.madvise(mmap.MADV_DONTNEED)

    def __getitem__(self, index):
        return self.array[index]

    def close(self) -> None:
        self.array.flush()
        del self.array
