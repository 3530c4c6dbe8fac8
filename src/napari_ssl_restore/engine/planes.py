"""The plane driver: any input read lazily as canonical planes, every output written plane by plane.

An image, stack or time-lapse — a numpy array, a dask array, a zarr array, an OME-Zarr store or a
TIFF file (through tifffile's zarr interface, one page at a time) — is seen as ``n`` planes of
``(H, W, C)``, the canonical ``[T][Z]YXC`` layout of :mod:`napari_ssl_restore.core.axes` flattened over
its leading T and Z axes (T major: plane ``i`` is frame ``i // Z``, depth ``i % Z``). A plane is read
only when asked for, so a time-lapse larger than RAM streams through.

Normalisation statistics come from a bounded sample of planes (:func:`scaling_for`): at most
``SAMPLE_PLANES`` planes, evenly spread, and at most ``SAMPLE_VALUES`` values of them; a small stack is
sampled whole, so its statistics are exact.

Outputs are written into preallocated stores (:class:`Outputs`): numpy for small in-memory data, a
zarr array (or a memory-mapped TIFF, from the CLI) for large or lazy data. Each store is made when
its first plane arrives (its spatial size may differ from the input's: super-resolution), holds the
caller's axis order and final dtype, and converts planes on the way in. After a run, planes a Stop
left unwritten are filled in one place (:meth:`Outputs.finish`): the input, resized if needed, for
images; zeros for maps and labels.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..core.axes import Layout, check_axes
from ..core.io import choose_axes, create_zarr, open_image
from ..core.normalize import Scaling, check_finite, check_kind

SAMPLE_PLANES = 16
"""Planes read to estimate normalisation statistics (evenly spread over the stack)."""
SAMPLE_VALUES = 16 * 2**20
"""Values (per channel set) those statistics see at most; beyond, pixels are strided."""
IN_MEMORY_BYTES = 1 << 30
"""Outputs of in-memory inputs up to this size are numpy arrays; larger ones go to a zarr store."""


# --- reading -------------------------------------------------------------------------------------

def is_lazy(data) -> bool:
    """Whether ``data`` is read on demand (a path, a dask or zarr array) rather than held in RAM."""
    return isinstance(data, (str, os.PathLike)) or (not isinstance(data, np.ndarray)
                                                    and hasattr(data, "shape")
                                                    and hasattr(data, "dtype"))


def open_array(data) -> tuple[Any, str | None]:
    """An array-like for ``data`` and the axes its metadata states (or None).

    Paths open lazily with :func:`~napari_ssl_restore.core.io.open_image` (TIFF/OME-TIFF through
    tifffile's zarr interface, one page per chunk, read on demand; zarr/OME-Zarr with zarr, an
    OME-Zarr image's first resolution level). Arrays (numpy, dask, zarr) are returned as they are.
    """
    if not isinstance(data, (str, os.PathLike)):
        return data, None
    return open_image(data)


def open_input(path, axes: str | None = None, *, video: bool = False) -> tuple[Any, str]:
    """A file opened lazily (:func:`open_array`) with its axes: ``axes`` when given, else those
    its metadata states, else a guess that refuses to decide between channels and planes
    (:func:`~napari_ssl_restore.core.io.choose_axes`)."""
    arr, stated = open_array(path)
    return arr, axes or choose_axes(tuple(arr.shape), stated, video=video,
                                    source=os.fspath(path))


class Source:
    """An image (numpy, dask or zarr array) read lazily as canonical ``(H, W, C)`` planes."""

    def __init__(self, array, axes: str, *, name: str = "image"):
        check_kind(array, name=name)
        self.array = array
        self.name = name
        self.layout = Layout(axes=check_axes(axes, tuple(array.shape)), shape=tuple(array.shape))
        self.dtype = np.dtype(array.dtype)
        canon = self.layout.canonical
        self.lead = tuple(self.layout.size(a) for a in canon[:-3])
        self.hw = (self.layout.size("Y"), self.layout.size("X"))
        self.c = self.layout.size("C")
        self.n = int(np.prod(self.lead, dtype=int))
        present = [a for a in self.layout.axes if a in "YXC"]
        self._to_yxc = [present.index(a) for a in "YXC" if a in present]

    @property
    def shape(self) -> tuple[int, ...]:
        """Canonical shape ``[T][Z]YXC``."""
        return self.lead + self.hw + (self.c,)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.array, np.ndarray)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.layout.shape, dtype=np.int64)) * self.dtype.itemsize

    def index(self, i: int) -> tuple:
        """The caller-order index of plane ``i`` (ints for T/Z, full slices elsewhere)."""
        lead = np.unravel_index(i, self.lead) if self.lead else ()
        where = dict(zip(self.layout.canonical[:-3], (int(k) for k in lead), strict=False))
        return tuple(where.get(a, slice(None)) for a in self.layout.axes)

    def raw(self, i: int) -> np.ndarray:
        """Plane ``i`` as stored, ``(H, W, C)`` in the input's dtype (read now, from disk if lazy)."""
        if not 0 <= i < self.n:
            raise IndexError(f"plane {i} of {self.n}")
        plane = np.asarray(self.array[self.index(i)])
        if hasattr(plane, "compute"):  # pragma: no cover - dask scalars
            plane = plane.compute()
        plane = np.transpose(plane, self._to_yxc)
        return plane if self.layout.has_channels else plane[..., np.newaxis]

    def sample_indices(self, k: int = SAMPLE_PLANES) -> list[int]:
        """At most ``k`` plane indices spread evenly over the stack (all of them when ``n <= k``)."""
        if self.n <= k:
            return list(range(self.n))
        return sorted({int(round(x)) for x in np.linspace(0, self.n - 1, k)})

    def check(self) -> None:
        """Refuse NaN/inf, looking at every plane of in-memory data and a sample of lazy data."""
        if self.dtype.kind != "f":
            return
        picks = range(self.n) if self.in_memory else self.sample_indices()
        bad = sum(int(np.size(p) - np.count_nonzero(np.isfinite(p)))
                  for p in (self.raw(i) for i in picks))
        check_finite(bad, name=self.name)


class AxisRange:
    """Entries ``start:stop`` of one axis of an array (numpy, dask, zarr, another view), read on
    demand: indexing it reads only what the index asks of the underlying array."""

    def __init__(self, array, axis: int, start: int, stop: int):
        self.array = array
        self.axis, self.start, self.stop = int(axis), int(start), int(stop)
        shape = list(array.shape)
        shape[self.axis] = self.stop - self.start
        self.shape = tuple(shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(shape)

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        index = index + (slice(None),) * (self.ndim - len(index))
        k = index[self.axis]
        length = self.stop - self.start
        if isinstance(k, (int, np.integer)):
            if not -length <= k < length:
                raise IndexError(f"index {k} is out of range for an axis of {length}")
            k = self.start + (int(k) % length)
        elif isinstance(k, slice):
            r = range(length)[k]
            if r.step != 1:
                raise IndexError("AxisRange supports only unit steps along its axis")
            k = slice(self.start + r.start, self.start + max(r.stop, r.start))
        else:
            raise IndexError(f"unsupported index {k!r} along the chunked axis")
        return self.array[index[:self.axis] + (k,) + index[self.axis + 1:]]


def scaling_for(source: Source, kind: str, *, low: float = 0.1, high: float = 99.9) -> Scaling:
    """Normalisation of ``source`` from a bounded sample of its planes.

    ``kind`` ``"range"`` maps ``[0, max]`` (or ``[min, max]`` with negatives; 8-bit: ``[0, 255]``) to
    ``[0, 1]``; ``"percentile"`` maps the ``low``/``high`` percentiles to 0 and 1 (CSBDeep-style).
    """
    from ..core.normalize import percentile_scaling, range_scaling

    picks = source.sample_indices()
    if kind == "range":
        if source.dtype == np.uint8:
            return range_scaling(np.zeros(1, np.uint8))
        lo = min(float(np.min(source.raw(i))) for i in picks)
        hi = max(float(np.max(source.raw(i))) for i in picks)
        return range_scaling(np.array([lo, hi], dtype=source.dtype))
    per_plane = int(np.prod(source.hw)) * source.c
    stride = max(1, int(np.ceil(len(picks) * per_plane / SAMPLE_VALUES)))
    values = np.concatenate([source.raw(i).reshape(-1)[::stride] for i in picks])
    return percentile_scaling(values, low, high)


class Planes:
    """Normalised float32 planes of a :class:`Source`: ``planes[i]`` is ``(H, W, C)`` in units.

    A chunk of a larger stack (:meth:`chunk`) knows the whole stack (:attr:`whole`, for statistics
    shared over it such as a shared airlight) and the whole stack's index of its plane 0
    (:attr:`first`, for per-plane seeds), so that restoring the stack chunk by chunk gives what
    restoring it at once gives.
    """

    def __init__(self, source: Source, scaling: Scaling, *, whole: Planes | None = None,
                 first: int = 0):
        self.source = source
        self.scaling = scaling
        self.whole = self if whole is None else whole
        self.first = int(first)

    def chunk(self, start: int, stop: int) -> Planes:
        """Entries ``start:stop`` of the stack's first T/Z axis (all planes under them), read lazily
        through the same scaling; ``whole`` and ``first`` refer to this stack."""
        layout = self.source.layout
        lead_axes = layout.canonical[:-3]
        if not lead_axes:
            raise ValueError("a single plane has no T or Z axis to split into chunks.")
        size = self.source.lead[0]
        if not 0 <= start < stop <= size:
            raise ValueError(f"chunk {start}:{stop} is outside the {size} entries of axis "
                             f"{lead_axes[0]}.")
        view = AxisRange(self.source.array, layout.axes.index(lead_axes[0]), start, stop)
        per_entry = self.source.n // size
        return Planes(Source(view, layout.axes, name=self.source.name), self.scaling,
                      whole=self.whole, first=self.first + start * per_entry)

    def __len__(self) -> int:
        return self.source.n

    def __getitem__(self, i: int) -> np.ndarray:
        return self.scaling.forward(self.source.raw(i))

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.source.shape

    @property
    def lead(self) -> tuple[int, ...]:
        return self.source.lead

    @property
    def hw(self) -> tuple[int, int]:
        return self.source.hw

    @property
    def c(self) -> int:
        return self.source.c

    @property
    def axes(self) -> str:
        """Canonical axes (``"TYXC"`` ...)."""
        return self.source.layout.canonical

    def frame_index(self, t: int, p: int) -> int:
        """Plane index of frame ``t``, depth ``p`` (video: each Z plane is its own movie)."""
        return t * (self.n_depth) + p

    @property
    def n_frames(self) -> int:
        return self.lead[0] if self.axes.startswith("T") else 1

    @property
    def n_depth(self) -> int:
        return len(self) // max(self.n_frames, 1)

    def stack(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """``(k, H, W, C)`` float32 of the given planes (all of them by default): for small data or
        a bounded subset only."""
        indices = range(len(self)) if indices is None else indices
        out = np.empty((len(indices),) + self.hw + (self.c,), np.float32)
        for k, i in enumerate(indices):
            out[k] = self[i]
        return out


# --- writing -------------------------------------------------------------------------------------

@dataclasses.dataclass
class OutputSpec:
    """How one named output is stored: its kind (``image``, ``map``, ``labels``) and conversion."""

    name: str
    kind: str


def output_dtype(kind: str, input_dtype, float_output: bool) -> np.dtype:
    """The stored dtype of an output of ``kind``: float32 maps, int32 labels, images in the
    input's dtype (float32 on request)."""
    if kind == "map":
        return np.dtype(np.float32)
    if kind == "labels":
        return np.dtype(np.int32)
    return np.dtype(np.float32) if float_output else np.dtype(input_dtype)


StoreFactory = Callable[[str, tuple, np.dtype, str], Any]
"""``(output name, shape, dtype, axes) -> array-like`` preallocated in the caller's order."""


def numpy_store(_name: str, shape: tuple, dtype: np.dtype, _axes: str) -> np.ndarray:
    return np.empty(shape, dtype)


class ZarrStores:
    """Zarr arrays, one per output, in one folder (``<folder>/<name>.zarr``), chunked per plane."""

    def __init__(self, folder: str):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def __call__(self, name: str, shape: tuple, dtype: np.dtype, axes: str):
        return create_zarr(os.path.join(self.folder, f"{name}.zarr"), shape, dtype, axes)


class Sink:
    """One output: a store in the caller's order and dtype, made at its first plane."""

    def __init__(self, spec: OutputSpec, source: Source, convert: Callable[[np.ndarray], np.ndarray],
                 factory: StoreFactory, dtype: np.dtype):
        self.spec = spec
        self.source = source
        self.convert = convert
        self.factory = factory
        self.dtype = np.dtype(dtype)
        self.store: Any = None
        self.written = np.zeros(source.n, bool)
        layout = source.layout
        self.axes = layout.axes if spec.kind == "image" else layout.axes.replace("C", "")
        self.plane_hw: Any = None  # (h, w), known once the first plane is written
        self.channels = 0

    def _allocate(self, plane: np.ndarray) -> None:
        h, w = plane.shape[:2]
        c = plane.shape[2] if plane.ndim == 3 else 1
        self.plane_hw, self.channels = (h, w), c
        if self.spec.kind == "image" and "C" not in self.axes and c != 1:
            self.axes += "C"  # the method produced channels the input did not have
        sizes = {a: self.source.layout.size(a) for a in "TZ"} | {"Y": h, "X": w, "C": c}
        shape = tuple(sizes[a] for a in self.axes)
        self.store = self.factory(self.spec.name, shape, self.dtype, self.axes)

    def __setitem__(self, i: int, plane: np.ndarray) -> None:
        """Write canonical plane ``i`` (``(H, W, C)`` float in units, or ``(H, W)`` for maps)."""
        if self.store is None:
            self._allocate(plane)
        lead = np.unravel_index(i, self.source.lead) if self.source.lead else ()
        where = dict(zip(self.source.layout.canonical[:-3], (int(k) for k in lead), strict=False))
        index = tuple(where.get(a, slice(None)) for a in self.axes)
        out = self.convert(plane)
        if out.ndim == 3 and "C" not in self.axes:  # a single channel the caller does not have
            out = out[..., 0]
        here = "YXC"[:out.ndim]  # -> the caller's order of Y, X (and C)
        out = np.transpose(out, [here.index(a) for a in self.axes if a in "YXC"])
        self.store[index] = out
        self.written[i] = True


class Outputs:
    """The named per-plane outputs of one run (``out["image"][i] = plane``)."""

    def __init__(self, source: Source, scaling: Scaling, specs: Sequence[OutputSpec], *,
                 factory: StoreFactory | None = None, float_output: bool = False,
                 keep: Sequence[str] | None = None):
        self.source = source
        self.scaling = scaling
        self.sinks: dict[str, Sink] = {}
        self.fill_sources: dict[str, Planes] = {}
        factory = factory or numpy_store
        for spec in specs:
            if spec.kind not in ("image", "map", "labels"):
                continue
            make = factory if keep is None or spec.name in keep else _discard
            self.sinks[spec.name] = Sink(spec, source, self._converter(spec.kind, float_output),
                                         make, output_dtype(spec.kind, source.dtype,
                                                            float_output))

    def _converter(self, kind: str, float_output: bool):
        if kind == "image":
            def convert(plane):
                plane = plane if plane.ndim == 3 else plane[..., None]
                return self.scaling.inverse(plane, as_float=float_output)
        elif kind == "map":
            def convert(plane):
                return np.asarray(plane, np.float32).reshape(plane.shape[:2])
        else:
            def convert(plane):
                return np.asarray(plane).reshape(plane.shape[:2]).astype(np.int32)
        return convert

    def __getitem__(self, name: str) -> Sink:
        return self.sinks[name]

    def __contains__(self, name: str) -> bool:
        return name in self.sinks

    def fill_from(self, name: str, planes: Planes) -> None:
        """Planes of ``name`` a Stop leaves unwritten come from ``planes`` (default: the input)."""
        self.fill_sources[name] = planes

    def finish(self, planes: Planes) -> None:
        """Fill every plane left unwritten: the input (resized to the output's plane size) for
        images, zeros for maps and labels. Outputs never written at all stay absent."""
        for name, sink in self.sinks.items():
            if sink.store is None or sink.written.all():
                continue
            source = self.fill_sources.get(name, planes)
            for i in np.flatnonzero(~sink.written):
                if sink.spec.kind == "image":
                    sink[int(i)] = _resized(source[int(i)], sink.plane_hw)
                else:
                    sink[int(i)] = np.zeros(sink.plane_hw, np.float32)

    def results(self) -> dict[str, Any]:
        """The stores written (numpy arrays or zarr arrays), by output name."""
        return {name: sink.store for name, sink in self.sinks.items()
                if sink.store is not None and not isinstance(sink.store, _Discarded)}


class _Discarded:
    """A store that keeps nothing (an output the caller did not ask for)."""

    def __init__(self, shape):
        self.shape = shape

    def __setitem__(self, index, value) -> None:
        pass


def _discard(_name, shape, _dtype, _axes):
    return _Discarded(shape)


def _resized(plane: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``plane`` at ``hw`` (cubic spline, no overshoot beyond the plane's range); as is if equal."""
    if plane.shape[:2] == tuple(hw):
        return plane
    from scipy import ndimage as ndi

    factors = (hw[0] / plane.shape[0], hw[1] / plane.shape[1], 1)
    out = ndi.zoom(plane, factors, order=3, mode="nearest", grid_mode=True)
    return np.clip(out, plane.min(), plane.max()).astype(np.float32)
