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
    level, axes from its metadata). The one reader of image files: the plane driver
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
    raise ValueError(f"{path}: unsupported format; give a .tif, .tiff, .ome.tif, .zarr or "
                     ".ome.zarr file.")


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


def create_zarr(path: str, shape: tuple, dtype, axes: str, *, ome: bool = False):
    """A zarr array at ``path`` chunked per plane; with ``ome`` an OME-Zarr (NGFF 0.4, zarr format 2)
    image whose level ``0`` is the array (returned). The axes are recorded in both cases."""
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
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": os.path.basename(path).split(".")[0],
        "axes": [{"name": a.lower(), "type": kinds[a]} for a in axes],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0] * len(axes)}]}],
    }]
    group.attrs["axes"] = axes
    return arr


class FileStores:
    """Outputs written plane by plane straight to files: ``paths`` maps an output name to the
    (temporary) file it goes to — a memory-mapped TIFF (BigTIFF when large) or an OME-Zarr store,
    by suffix. :meth:`close` records the provenance and the axes and flushes everything."""

    def __init__(self, paths: Mapping[str, str], suffixes: Mapping[str, str]):
        self.paths = dict(paths)
        self.suffixes = dict(suffixes)
        self.stores: dict[str, Any] = {}
        self.axes: dict[str, str] = {}

    def __call__(self, name: str, shape: tuple, dtype, axes: str):
        import tifffile

        path = self.paths[name]
        self.axes[name] = axes
        if self.suffixes[name].endswith(".zarr"):
            store = create_zarr(path, shape, dtype, axes, ome=True)
        else:
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            rgb = axes.endswith("C") and shape[-1] in (3, 4) and np.dtype(dtype) == np.uint8
            store = _ReleasingMemmap(tifffile.memmap(
                path, shape=shape, dtype=dtype, metadata={"axes": axes},
                photometric="rgb" if rgb else "minisblack", bigtiff=nbytes > 2**32 - 2**25))
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
                desc = json.dumps({"shape": shape, "axes": self.axes[name],
                                   PROVENANCE_KEY: _jsonable(prov)})
                tifffile.tiffcomment(path, desc)
        self.stores.clear()


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
