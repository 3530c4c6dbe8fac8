"""One unit, on a dask worker: :func:`run_unit` (a module-level function, pickled by reference)."""
from __future__ import annotations

import json
import os
import tempfile
import time
import uuid

import numpy as np

from .plan import Unit, UnitResult
from .resume import _marker


class _Region:
    """The part of a shared output store one chunk writes: planes of the chunk's own entries,
    shifted to their place in the whole stack; context planes before them are dropped."""

    def __init__(self, array, axis: int, offset: int, keep: tuple[int, int]):
        self.array, self.axis, self.offset, self.keep = array, axis, offset, keep
        self.shape = array.shape

    def __setitem__(self, index, value) -> None:
        k = index[self.axis] + self.offset
        if self.keep[0] <= k < self.keep[1]:
            self.array[index[:self.axis] + (k,) + index[self.axis + 1:]] = value


def _model_file(blob: bytes, sha: str) -> str:
    """The model the client sent, written once per machine under the temporary folder."""
    folder = os.path.join(tempfile.gettempdir(), "napari-ssl-restore-models")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{sha}.pt")
    if not os.path.isfile(path):
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.partial"
        with open(tmp, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    return path


def _worker_name() -> str:
    try:
        from distributed import get_worker

        w = get_worker()
        return str(w.name) if w.name is not None else w.address
    except (ImportError, ValueError):
        return "local"


def run_unit(unit: Unit, method: str, params: dict, extras: dict, *, sig: dict, device: str,
             seed: int, float_output: bool, model: bytes | None = None,
             model_sha: str = "") -> UnitResult:
    """Restore one unit; never raises (a failure comes back as a ``failed`` result)."""
    from ..api import output_files, prepare, write_files
    from ..core.models import checkpoint_reads
    from ..core.progress import drive

    t0 = time.perf_counter()
    worker = _worker_name()
    try:
        kwargs = dict(params, **extras)
        if model is not None:
            kwargs["model"] = _model_file(model, model_sha)
        if unit.chunk is None:
            from ..core.registry import get_method
            from ..engine.planes import open_input

            data, axes = open_input(unit.input, unit.axes or None,
                                    video=get_method(method).video)
            job = prepare(data, method, axes=axes, device=device, seed=seed,
                          float_output=float_output, **kwargs)
            write_files(job, output_files(job, unit.output), input_path=unit.input,
                        provenance={"batch": sig})
        else:
            import zarr

            from ..api import execute

            start, stop = unit.chunk
            job = prepare(unit.input, method, axes=unit.axes, device=device, seed=seed,
                          float_output=float_output, chunk=(unit.read_from, stop), **kwargs)
            store = zarr.open_group(unit.output, mode="r+")["0"]
            store_axes = zarr.open_group(unit.output, mode="r").attrs["axes"]
            region = _Region(store, store_axes.index(job.planes.axes[0]), unit.read_from,
                             (start, stop))
            primary = job.spec.primary_name(job.params)

            def stores(name, shape, dtype, axes):
                if axes != store_axes or np.dtype(dtype) != store.dtype:
                    raise RuntimeError(f"chunk output {axes} {dtype} does not match the store's "
                                       f"{store_axes} {store.dtype}")
                return region

            drive(execute(job, stores=stores, keep=[primary], previews=False))
            marker = _marker(unit.output, unit.chunk)
            with open(f"{marker}.partial", "w") as f:
                json.dump({"worker": worker, "seconds": time.perf_counter() - t0}, f)
            os.replace(f"{marker}.partial", marker)
        return UnitResult(unit.name, "done", time.perf_counter() - t0, worker, output=unit.output,
                          model_reads=checkpoint_reads())
    except Exception as exc:  # noqa: BLE001 - reported in the summary; the other units go on
        msg = " ".join(str(exc).split())
        return UnitResult(unit.name, "failed", time.perf_counter() - t0, worker,
                          f"{type(exc).__name__}: {msg}", unit.output, checkpoint_reads())
