"""A napari layer's planes restored on a running dask scheduler (the dock's 'dask scheduler' field):
the layer's file, or a copy of its data the workers can read, run by :func:`batch_steps`."""
from __future__ import annotations

import numpy as np

from ..core.io import PROVENANCE_KEY
from ..core.progress import Step
from .cluster import _client


def _cluster_run(job, path: str | None, address: str, chunk_planes: int, params: dict):
    """Generator: ``job``'s image (``path``, or a copy of the layer's data the workers can read)
    restored as dask tasks on the scheduler at ``address`` by
    :func:`napari_ssl_restore.batching.batch_steps` (the code path of ``batch``), a step per task;
    returns the outputs dict over the result's OME-Zarr store (a lazy layer)."""
    import os
    import shutil
    import tempfile

    import zarr

    from ..core.progress import StopRequested
    from .driver import batch_steps

    client = _client(address)
    copy = None
    if path is None:  # held in memory: a copy the workers can read
        copy = tempfile.mkdtemp(prefix="napari-ssl-restore-input-")
        path = yield from _copy_planes(job, os.path.join(copy, "input.ome.zarr"))
    try:
        summary = yield from batch_steps(
            path, job.spec.name, tempfile.mkdtemp(prefix="napari-ssl-restore-batch-"), client,
            chunk_planes=chunk_planes, axes=job.layout.axes, device=job.device, seed=job.seed,
            float_output=job.float_output, **params)
    finally:
        if copy is not None:
            shutil.rmtree(copy, ignore_errors=True)
    done = sum(r.status == "done" for r in summary)
    if any(r.status == "cancelled" for r in summary):
        raise StopRequested(f"Stopped after {done} of {len(summary)} tasks; nothing was added.")
    if summary.failed:
        first = summary.failed[0]
        raise RuntimeError(f"{len(summary.failed)} of {len(summary)} tasks failed; "
                           f"{first.unit}: {first.error}")
    group = zarr.open_group(summary[0].output, mode="r")
    primary = job.spec.primary_name(job.params)
    prov = dict(group.attrs[PROVENANCE_KEY], primary_output=primary, scheduler=address,
                tasks=len(summary), axes=job.layout.axes)
    return {primary: group["0"], "provenance": prov}


def _layer_file(layer, job) -> str | None:
    """The file the layer was opened from, when the workers can read it as the layer's data."""
    import os

    from ..engine.planes import open_array

    path = getattr(getattr(layer, "source", None), "path", None)
    if not path or not os.path.exists(path) or not str(path).lower().rstrip("/").endswith(
            (".tif", ".tiff", ".zarr")):
        return None
    try:
        arr, _ = open_array(path)
    except (ValueError, OSError):
        return None
    return str(path) if tuple(arr.shape) == tuple(job.layout.shape) else None


def _copy_planes(job, path: str):
    """Generator: the job's image written plane by plane to an OME-Zarr store at ``path``."""
    from ..core.io import create_zarr

    src = job.source
    store = create_zarr(path, tuple(job.layout.shape), src.dtype, job.layout.axes, ome=True)
    for i in range(src.n):
        where = src.index(i)
        store[where] = np.asarray(src.array[where])
        yield Step(i + 1, src.n, f"copying plane {i + 1}/{src.n} for the workers")
    return path
