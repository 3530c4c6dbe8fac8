"""The Python API: :func:`restore` dispatches to any registered method.

The same two steps serve every front end: :func:`prepare` checks and normalises the input into a
:class:`Job`; :func:`execute` is the generator that runs it (yielding progress) and returns the named
outputs in the caller's axes, dtype and range, with a provenance record.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from .core import axes as _axes
from .core.device import check_device_name
from .core.io import provenance as _provenance
from .core.normalize import Scaling, check_image, percentile_scaling, range_scaling
from .core.params import validate
from .core.progress import Step, drive
from .core.registry import MethodResult, MethodSpec, RunContext, get_method, list_methods

__all__ = ["restore", "list_methods", "prepare", "execute", "Job"]


@dataclasses.dataclass
class Job:
    """A checked, normalised request, ready for :func:`execute`."""

    spec: MethodSpec
    params: Any
    layout: _axes.Layout
    scaling: Scaling
    image: np.ndarray
    """Canonical ``[T][Z]YXC`` float32 in the normalised range (a new array, never the input)."""
    extras: dict[str, np.ndarray]
    device: str
    seed: int
    float_output: bool


def guess_axes(shape: tuple[int, ...], *, video: bool = False, rgb: bool | None = None) -> str:
    """Axes guess for a bare array: a trailing axis of 3 or 4 is taken as RGB(A) channels."""
    if rgb is None:
        rgb = len(shape) >= 3 and shape[-1] in (3, 4)
    return _axes.infer_axes(tuple(shape), rgb=rgb, video=video)


def prepare(data, method: str, *, axes: str | None = None, device: str = "auto", seed: int = 0,
            float_output: bool = False, **kwargs: Any) -> Job:
    """Validate everything up front so that errors surface before any work starts."""
    spec = get_method(method)
    arr = check_image(data)
    if axes is None:
        axes = guess_axes(arr.shape, video=spec.video)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}.")
    device = check_device_name(device)

    extras: dict[str, np.ndarray] = {}
    for inp in spec.inputs:
        value = kwargs.pop(inp.name, None)
        if value is None:
            if inp.required:
                raise ValueError(f"{spec.name} needs {inp.name}=: {inp.doc}")
            continue
        if np.asarray(value).dtype == bool:
            extras[inp.name] = np.asarray(value).copy()
        else:
            extras[inp.name] = check_image(value, name=inp.name).copy()
        if inp.like_image and extras[inp.name].shape != arr.shape:
            raise ValueError(
                f"{inp.name} has shape {extras[inp.name].shape} but the image has shape {arr.shape}; "
                f"{inp.name} must be another acquisition of the same field, with the same shape."
            )
    params = spec.make_params(**kwargs)
    validate(params)

    canon, layout = _axes.to_canonical(arr, axes)
    if spec.video and "T" not in layout.axes:
        raise ValueError(
            f"{spec.title} works on time-lapses and needs a T axis; got axes {layout.axes!r} for shape "
            f"{arr.shape}. Pick a time-lapse layer or set axes='TYX'."
        )
    scaling = range_scaling(arr) if spec.scaling == "range" else percentile_scaling(arr)
    image = scaling.forward(canon)  # always a new float32 array: the input is never touched
    for inp in spec.inputs:
        if inp.like_image and inp.name in extras:
            extras[inp.name] = np.ascontiguousarray(
                scaling.forward(_axes.to_canonical(extras[inp.name], layout.axes)[0]))
    return Job(spec, params, layout, scaling, np.ascontiguousarray(image), extras, device,
               int(seed), bool(float_output))


def _finish(job: Job, result: MethodResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec_out in job.spec.outputs:
        if spec_out.name not in result.outputs:
            continue
        value = np.asarray(result.outputs[spec_out.name])
        if spec_out.kind == "image":
            value = job.scaling.inverse(_axes.from_canonical(value, job.layout),
                                        as_float=job.float_output)
        elif spec_out.kind == "map":
            value = _axes.from_canonical(value, job.layout, channels=False).astype(np.float32)
        elif spec_out.kind == "labels":
            value = _axes.from_canonical(value, job.layout, channels=False).astype(np.int32)
        elif spec_out.kind == "value":
            value = (value * job.scaling.scale + job.scaling.offset).astype(np.float32)
            if not job.layout.has_channels and value.ndim and value.shape[-1] == 1:
                value = value[..., 0]
        out[spec_out.name] = value
    out.update(result.artifacts)
    params = dataclasses.asdict(job.params)
    primary = result.primary or job.spec.primary.name
    out["provenance"] = _provenance(job.spec.name, params, seed=job.seed, device=job.device,
                                    axes=job.layout.axes,
                                    extra={**result.info, "primary_output": primary})
    return out


def execute(job: Job):
    """Generator: run a prepared job, yielding :class:`Step` events; return the outputs dict."""
    ctx = RunContext(device=job.device, seed=job.seed, axes=job.layout.canonical,
                     scale=job.scaling.scale, offset=job.scaling.offset)
    result = yield from job.spec.run(job.image, job.params, ctx, **job.extras)
    return _finish(job, result)


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
    **params: Any,
):
    """Restore ``data`` with a registered method.

    Parameters
    ----------
    data : array_like, shape matching ``axes``
        Image, stack or time-lapse (numpy, dask or a napari layer's data). Never modified.
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
    **params
        The method's parameters and extra inputs (``mask=``, ``psf=``, ``target=`` ...).

    Returns
    -------
    ndarray or dict
        The restored image in the input's shape and axis order (or the dict, see ``full_output``).

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
    try:
        out = drive(execute(job), progress=progress or None, should_stop=should_stop)
    finally:
        if bar is not None:
            bar.close()
    return out if full_output else out[out["provenance"]["primary_output"]]
