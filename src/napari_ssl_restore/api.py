"""The Python API: :func:`restore` dispatches to any registered method.

The same two steps serve every front end: :func:`prepare` checks the input and opens it as lazy
planes (:mod:`napari_ssl_restore.engine.planes`) into a :class:`Job`; :func:`execute` is the generator
that runs it (yielding progress), writing every output plane by plane into preallocated stores in the
caller's axes, dtype and range, and returns them with a provenance record. Nothing holds the whole
stack as float32: a time-lapse larger than RAM streams from disk to disk.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from .core import axes as _axes
from .core.io import provenance as _provenance
from .core.normalize import Scaling, check_image
from .core.progress import Step, drive
from .core.registry import MethodResult, MethodSpec, RunContext, list_methods
from .engine.planes import (
    IN_MEMORY_BYTES,
    Outputs,
    OutputSpec,
    Planes,
    Source,
    StoreFactory,
    ZarrStores,
    is_lazy,
    numpy_store,
    open_array,
    scaling_for,
)
from .engine.request import check_request

__all__ = ["restore", "list_methods", "prepare", "execute", "Job", "output_files", "write_files"]


@dataclasses.dataclass
class Job:
    """A checked request, ready for :func:`execute`; the image is read lazily, plane by plane."""

    spec: MethodSpec
    params: Any
    source: Source
    scaling: Scaling
    planes: Planes
    """Normalised float32 ``(H, W, C)`` planes of the image, read on demand."""
    extras: dict[str, Any]
    """Extra inputs: :class:`Planes` for a second acquisition of the image, arrays otherwise."""
    device: str
    seed: int
    float_output: bool

    @property
    def layout(self) -> _axes.Layout:
        return self.source.layout


def guess_axes(shape: tuple[int, ...], *, video: bool = False, rgb: bool | None = None) -> str:
    """Axes guess for a bare array: a trailing axis of 3 or 4 is taken as RGB(A) channels."""
    if rgb is None:
        rgb = len(shape) >= 3 and shape[-1] in (3, 4)
    return _axes.infer_axes(tuple(shape), rgb=rgb, video=video)


def prepare(data, method: str, *, axes: str | None = None, device: str = "auto", seed: int = 0,
            float_output: bool = False, chunk: tuple[int, int] | None = None,
            **kwargs: Any) -> Job:
    """Validate everything up front so that errors surface before any work starts.

    ``data`` is an array (numpy, dask, zarr) or a path to a TIFF/zarr file; nothing but a bounded
    sample of its planes is read here. ``chunk=(start, stop)`` restores only those entries of the
    first T/Z axis, with the whole stack's normalisation and shared estimates, so that chunks
    restored apart (``batch``) add up to the whole stack's result.
    """
    request = check_request(method, kwargs, seed=seed, device=device)
    spec = request.spec
    arr, stated = open_array(data)
    if not (hasattr(arr, "shape") and hasattr(arr, "dtype")):
        arr = check_image(arr)  # lists and other array-likes
    if axes is None:
        axes = stated or guess_axes(tuple(arr.shape), video=spec.video)
    source = Source(arr, axes)
    source.check()
    extras = dict(request.extras)
    like: dict[str, Source] = {}
    for name, other in request.like.items():
        if tuple(other.shape) != tuple(arr.shape):
            raise ValueError(
                f"{name} has shape {tuple(other.shape)} but the image has shape "
                f"{tuple(arr.shape)}; {name} must be another acquisition of the same field, "
                "with the same shape.")
        like[name] = Source(other, source.layout.axes, name=name)
        like[name].check()
    params = request.params

    if spec.video and "T" not in source.layout.axes:
        raise ValueError(
            f"{spec.title} works on time-lapses and needs a T axis; got axes {source.layout.axes!r} "
            f"for shape {tuple(arr.shape)}. Pick a time-lapse layer or set axes='TYX'."
        )
    scaling = scaling_for(source, spec.scaling)
    planes = Planes(source, scaling)
    if chunk is not None:
        planes = planes.chunk(*chunk)
        source = planes.source
    for name, other in like.items():  # in the image's units, so the two compare
        extras[name] = Planes(other, scaling) if chunk is None else \
            Planes(other, scaling).chunk(*chunk)
    return Job(spec, params, source, scaling, planes, extras, request.device, request.seed,
               bool(float_output))


def default_stores(job: Job) -> StoreFactory:
    """numpy for in-memory inputs whose outputs fit comfortably; else zarr in a temporary folder."""
    if job.source.in_memory and job.source.nbytes <= IN_MEMORY_BYTES:
        return numpy_store
    return ZarrStores(tempfile.mkdtemp(prefix="napari-ssl-restore-"))


def execute(job: Job, *, stores: StoreFactory | None = None, keep=None, previews: bool = True):
    """Generator: run a prepared job, yielding :class:`Step` events; return the outputs dict.

    Every per-plane output is written into a store made by ``stores`` (default
    :func:`default_stores`) in the caller's axes and dtype; ``keep`` names the outputs worth storing
    (default: all). Planes a Stop left are filled in (:meth:`Outputs.finish`). ``previews=False``
    when nobody shows them (the CLI): methods then make none.
    """
    ctx = RunContext(device=job.device, seed=job.seed, axes=job.layout.canonical,
                     scale=job.scaling.scale, offset=job.scaling.offset, previews=previews)
    out = Outputs(job.source, job.scaling, [OutputSpec(o.name, o.kind) for o in job.spec.outputs],
                  factory=stores or default_stores(job), float_output=job.float_output, keep=keep)
    result = yield from job.spec.run(job.planes, job.params, ctx, out, **job.extras)
    primary = result.primary or job.spec.primary_name(job.params)
    restored = out[primary].written.copy() if primary in out else None  # before the fill-in
    out.finish(job.planes)
    return _finish(job, result, out, restored)


def output_files(job: Job, output: str | os.PathLike, *, all_outputs: bool = False) -> dict[str, str]:
    """The files a run of ``job`` writes to ``output``: the primary output there and, with
    ``all_outputs``, every other per-plane output as ``OUTPUT_<name>.<suffix>``."""
    from .core.io import split_suffix

    output = os.fspath(output)
    base, suffix = split_suffix(output)
    primary = job.spec.primary_name(job.params)
    names = [primary] + ([o.name for o in job.spec.outputs if o.kind != "value" and o.name != primary]
                         if all_outputs else [])
    return {name: output if name == primary else f"{base}_{name}{suffix}" for name in names}


def write_files(job: Job, files: dict[str, str], *, input_path: str | os.PathLike | None = None,
                progress: Callable[[Step], None] | None = None,
                should_stop: Callable[[], bool] | None = None,
                provenance: dict[str, Any] | None = None,
                record: dict[str, Any] | None = None) -> list[str]:
    """Run ``job`` writing its outputs plane by plane straight to ``files`` (from
    :func:`output_files`): TIFF (memory-mapped, BigTIFF when large) or OME-Zarr by suffix, each
    through a temporary name renamed when complete, so a crash or a Stop leaves nothing half
    written. The provenance (plus ``provenance``) goes into each file, and into ``record`` when
    given (e.g. for its ``quality`` block); the input file's physical pixel sizes and time step
    (:func:`~napari_ssl_restore.core.io.read_scale`) go into the outputs' metadata (finer by the
    zoom of a super-resolution). Returns the files written."""
    from .core.io import FileStores, atomic_paths, read_scale, split_suffix, zoomed_scale

    names = list(files)
    primary = job.spec.primary_name(job.params)
    scale = (zoomed_scale(read_scale(input_path, job.layout.axes), job.spec.zoom(job.params))
             if input_path is not None else {})
    with atomic_paths(list(files.values())) as temps:
        stores = FileStores(dict(zip(files, temps, strict=False)),
                            {name: split_suffix(path)[1] for name, path in files.items()},
                            scale=scale)
        outputs = drive(execute(job, stores=stores, keep=names, previews=False),
                        progress=progress, should_stop=should_stop)
        prov = dict(outputs["provenance"], **(provenance or {}))
        if input_path is not None:
            prov["input"] = os.path.abspath(input_path)
        if scale:
            prov["scale"] = scale
        stores.close(prov, primary)
        if record is not None:
            record.update(prov)
        written = [files[name] for name in names if name in stores.paths and name in outputs]
    return written


def _finish(job: Job, result: MethodResult, out: Outputs,
            restored: np.ndarray | None = None) -> dict[str, Any]:
    outputs: dict[str, Any] = dict(out.results())
    for spec_out in job.spec.outputs:  # whole values (e.g. the airlight), in input units
        if spec_out.kind == "value" and spec_out.name in result.outputs:
            value = np.asarray(result.outputs[spec_out.name])
            value = (value * job.scaling.scale + job.scaling.offset).astype(np.float32)
            if not job.layout.has_channels and value.ndim and value.shape[-1] == 1:
                value = value[..., 0]
            outputs[spec_out.name] = value
    ordered = {o.name: outputs[o.name] for o in job.spec.outputs if o.name in outputs}
    ordered.update(result.artifacts)
    params = dataclasses.asdict(job.params)
    primary = result.primary or job.spec.primary_name(job.params)
    quality = quality_of(job, result, out, primary, restored)
    ordered["provenance"] = _provenance(job.spec.name, params, seed=job.seed, device=job.device,
                                        axes=job.layout.axes,
                                        extra={**result.info, "primary_output": primary,
                                               "quality": quality})
    return ordered


QUALITY_PLANES = 3
"""Planes of a run :func:`quality_of` reads back (spread over the restored ones)."""


def quality_of(job: Job, result: MethodResult, out: Outputs, primary: str,
               restored: np.ndarray | None) -> dict[str, Any]:
    """The run's ``quality`` block (:func:`~napari_ssl_restore.engine.judge.residual_quality`):
    up to :data:`QUALITY_PLANES` restored planes of the primary output, centre crops only, read
    back from its store and compared with the same crops of the input in normalised units; a
    ``verdict`` saying why not when the output cannot be judged against the input."""
    from .engine.judge import QUALITY_CROP, residual_quality

    not_judged = _not_judged(job, out, primary, restored)
    if not_judged:
        return {"verdict": f"Not judged: {not_judged}."}
    sink, zoom = out[primary], job.spec.zoom(job.params)
    restored = np.asarray(restored, bool)
    done = np.flatnonzero(restored)
    picks = done[np.unique(np.linspace(0, len(done) - 1, min(QUALITY_PLANES, len(done)))
                           .round().astype(int))]
    (h, w), source = job.planes.hw, job.planes.source
    sy, sx = min(h, QUALITY_CROP), min(w, QUALITY_CROP)
    y0, x0 = (h - sy) // 2, (w - sx) // 2
    inputs, outputs = [], []
    for i in picks:
        lead = np.unravel_index(int(i), source.lead) if source.lead else ()
        where = dict(zip(job.layout.canonical[:-3], (int(k) for k in lead), strict=False))
        inputs.append(job.scaling.forward(_crop_of(source.array, source.layout.axes, where,
                                                   slice(y0, y0 + sy), slice(x0, x0 + sx))))
        outputs.append(job.scaling.forward(_crop_of(
            sink.store, sink.axes, where, slice(y0 * zoom, (y0 + sy) * zoom),
            slice(x0 * zoom, (x0 + sx) * zoom))))
    quality = residual_quality(inputs, outputs, task=_task_of(job), zoom=zoom,
                               scale=job.scaling.scale, **_method_checks(result.info))
    if len(done) < len(restored):
        quality["verdict"] += (f" Judged on the {len(done)} of {len(restored)} planes the run "
                               "restored before it stopped.")
    for caveat in result.info.get("caveats", ()):  # what the method says of its own run
        quality["verdict"] += f" {caveat}"
    return quality


def _not_judged(job: Job, out: Outputs, primary: str, restored: np.ndarray | None) -> str:
    """Why the primary output cannot be judged against the input (``""`` when it can)."""
    if primary != job.spec.outputs[0].name or primary not in out \
            or out[primary].spec.kind != "image":
        return f"the {primary!r} output is not meant to reproduce the input"
    sink = out[primary]
    if restored is None or sink.store is None or not hasattr(sink.store, "__getitem__") \
            or not restored.any():
        return "no plane was restored"
    zoom = job.spec.zoom(job.params)
    h, w = job.planes.hw
    if tuple(sink.plane_hw) != (h * zoom, w * zoom) or sink.channels != job.planes.c:
        return (f"the output's planes ({sink.plane_hw[0]}x{sink.plane_hw[1]}, {sink.channels} "
                f"channel(s)) are not the input's ({h}x{w}, {job.planes.c}) times {zoom}")
    if min(h, w) < 8:
        return f"the planes ({h}x{w}) are too small"
    return ""


def _crop_of(array, axes: str, where: dict[str, int], ys: slice, xs: slice) -> np.ndarray:
    """``(h, w, C)`` crop of one plane (``where``: its T/Z indices) of an array in ``axes``."""
    index = tuple(where.get(a, ys if a == "Y" else xs if a == "X" else slice(None))
                  for a in axes)
    plane = np.asarray(array[index])
    present = [a for a in axes if a in "YXC"]
    plane = np.transpose(plane, [present.index(a) for a in "YXC" if a in present])
    return plane if "C" in axes else plane[..., np.newaxis]


def _task_of(job: Job) -> str:
    """What the run did: the method's ``task`` parameter when it has one, else its spec's task."""
    task = getattr(job.params, "task", None)
    return task if isinstance(task, str) else job.spec.task


def _method_checks(info: dict[str, Any]) -> dict[str, Any]:
    """What a method reports of its own fit, for :func:`residual_quality`: DIP's data term per
    plane (``data_residual``, ``mean (H x̂ − y)²`` normalised), physics-GAN's physics residual
    against its noise estimate (both mean absolute values on its fixed crops), the held-out loss
    of a video method's fine-tuning (start and kept weights)."""
    checks: dict[str, Any] = {}
    if info.get("data_residual"):
        checks["physics_mse"] = float(np.mean(info["data_residual"]))
    elif info.get("physics_residual") is not None and info.get("noise_level"):
        checks["physics_ratio"] = (float(info["physics_residual"]) / info["noise_level"]) ** 2
    history = info.get("held_out_loss")
    if history:
        kept = dict((int(it), v) for it, v in history).get(int(info.get("best_step", -1)))
        end = history[-1][1] if info.get("kept", "final") == "final" or kept is None else kept
        checks["held_out"] = (float(history[0][1]), float(end))
    return checks


def restore(
    data,
    method: str,
    *,
    axes: str | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: Callable[[Step], None] | bool | None = None,
    full_output: bool = False,
    float_output: bool = False,
    should_stop: Callable[[], bool] | None = None,
    out: str | os.PathLike | None = None,
    **params: Any,
):
    """Restore ``data`` with a registered method.

    Parameters
    ----------
    data : array_like or path, shape matching ``axes``
        Image, stack or time-lapse: numpy, dask or zarr array, a napari layer's data, or the path of
        a ``.tif``/``.ome.tif``/``.zarr``/``.ome.zarr`` file. Never modified. Lazy inputs are read
        plane by plane, so a stack larger than RAM works.
    method : str
        A name from :func:`list_methods`, e.g. ``"dcp"``.
    axes : str, optional
        One letter per dimension from ``T Z Y X C`` (``"YX"``, ``"TYX"``, ``"YXC"`` ...). Guessed from
        the shape when omitted: a trailing axis of size 3/4 is RGB(A), 3-D grey is ``ZYX`` (``TYX``
        for video methods).
    device : {"auto", "cpu", "cuda", "mps"}
        Torch device for network methods; ``"auto"`` prefers CUDA, then MPS, then the CPU.
    seed : int
        Seed for every random choice: the same seed gives the same result.
    progress : callable or bool, optional
        Called with every :class:`~napari_ssl_restore.core.progress.Step`; ``True`` shows a tqdm bar.
    full_output : bool
        Return a dict of every named output (and ``"provenance"``) instead of the primary output.
    float_output : bool
        Return images as float32 instead of the input's dtype and range.
    should_stop : callable, optional
        Polled between steps; return True to stop (optimisation methods then return their best
        estimate so far, closed-form methods raise ``Cancelled``).
    out : path, optional
        A new folder to write the outputs to, as zarr arrays (``<out>/image.zarr`` ...); the result
        is then a dask array backed by them. Lazy inputs (dask, zarr, files) get such a folder in
        the temporary directory when ``out`` is not given.
    **params
        The method's parameters and extra inputs (``mask=``, ``psf=``, ``target=`` ...).

    Returns
    -------
    ndarray, dask array or dict
        The restored image in the input's shape and axis order (or the dict, see ``full_output``):
        numpy for in-memory inputs up to 1 GiB, a dask array over the written zarr store for lazy
        ones and larger ones (so the result does not double the memory a stack takes).

    Examples
    --------
    >>> from napari_ssl_restore import restore
    >>> from napari_ssl_restore.data import hazy_scene
    >>> hazy = hazy_scene()["image"]
    >>> clear = restore(hazy, "dcp", axes="YXC")
    >>> clear.shape == hazy.shape
    True
    """
    job = prepare(data, method, axes=axes, device=device, seed=seed, float_output=float_output,
                  **params)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=100, desc=method, unit="%", leave=False)

        def progress(step: Step) -> None:  # noqa: F811 - deliberate rebinding to the tqdm adapter
            bar.n = round(100 * step.fraction)
            bar.set_postfix_str(step.message, refresh=True)
    stores = None
    if out is not None:
        stores = _stores_at(out)
    elif is_lazy(data):
        stores = ZarrStores(tempfile.mkdtemp(prefix="napari-ssl-restore-"))
    try:
        res = drive(execute(job, stores=stores, previews=callable(progress) and bar is None),
                    progress=progress or None, should_stop=should_stop)
    finally:
        if bar is not None:
            bar.close()
    res = {k: (_as_dask(v) if _is_zarr(v) else v) for k, v in res.items()}
    return res if full_output else res[res["provenance"]["primary_output"]]


def _is_zarr(value) -> bool:
    return type(value).__module__.startswith("zarr")


def _as_dask(value):
    import dask.array as da

    return da.from_zarr(value)


def _stores_at(folder) -> StoreFactory:
    """Outputs as zarr arrays in ``folder`` (``<folder>/<output>.zarr``)."""
    folder = os.fspath(folder)
    if os.path.exists(folder) and os.listdir(folder):
        raise ValueError(f"out={folder!r} exists and is not empty; give a new folder.")
    return ZarrStores(folder)
