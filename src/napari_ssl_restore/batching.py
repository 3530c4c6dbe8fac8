"""Batch restoration on dask.distributed: many files, or one long stack in chunks of planes.

:func:`batch` (and ``napari-ssl-restore batch``) turns its inputs into *units* — one per file, or one
per chunk of ``chunk_planes`` entries of a stack's first T/Z axis — and runs each unit as one
dask.distributed task on an existing cluster (``client=`` / ``--scheduler``) or on a
``LocalCluster`` it starts: one worker per GPU, else ``workers`` CPU workers whose torch threads
share the cores. dask does the scheduling, retries on lost workers and the dashboard; nothing here
queues or pools.

A unit is the plane driver of :mod:`napari_ssl_restore.engine.planes` run on the worker: it reads its
file (or its chunk of the stack) plane by plane and writes the result plane by plane —

- a file unit to ``OUTDIR/<stem>_<method>.<suffix>`` through a temporary name renamed when complete;
- a chunk unit into its own region of one OME-Zarr store ``OUTDIR/<stem>_<method>.ome.zarr`` made
  up front, then leaves a marker saying the region is complete. A chunk reads the whole stack's
  normalisation and shared estimates (:meth:`Planes.chunk
  <napari_ssl_restore.engine.planes.Planes.chunk>`), so the store equals a single run's result.

A rerun skips every unit whose output is complete and was made with the same settings (the
settings are recorded in each output), so a crash, a killed worker or a failed input costs only
the units it touched. A unit that fails is reported with its error; the others finish.

A model (``model=`` / ``--model``) is sent to the workers once (scattered to all of them) and each
worker process reads it once (:func:`napari_ssl_restore.core.models.load_checkpoint` caches it).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["batch", "batch_steps", "BatchSummary", "UnitResult", "plan_units"]

BATCH_KEY = "napari_ssl_restore_batch"
"""Where an output records the settings that made it (compared on a rerun)."""


@dataclasses.dataclass
class Unit:
    """One task: a file, or the entries ``chunk`` of a stack's first T/Z axis."""

    name: str
    input: str
    output: str
    axes: str
    chunk: tuple[int, int] | None = None
    read_from: int = 0
    """First entry a chunk reads (earlier than ``chunk[0]`` by the method's context frames)."""


@dataclasses.dataclass
class UnitResult:
    unit: str
    status: str
    """``done``, ``skipped`` (complete from an earlier run), ``failed`` or ``cancelled`` (Stop)."""
    seconds: float = 0.0
    worker: str = ""
    error: str = ""
    output: str = ""
    model_reads: int = 0
    """Model files the worker process had read from disk when the unit ended (1 for a worker that
    ran many units with one model)."""


class BatchSummary(list):
    """The :class:`UnitResult` of every unit, in input order, with a printable :meth:`table`."""

    dashboard: str = ""
    wall_seconds: float = 0.0

    @property
    def failed(self) -> list[UnitResult]:
        return [r for r in self if r.status == "failed"]

    @property
    def ok(self) -> bool:
        """Every unit is complete (done now or earlier)."""
        return all(r.status in ("done", "skipped") for r in self)

    def table(self) -> str:
        rows = [("unit", "status", "seconds", "worker")] + [
            (r.unit, r.status + (f": {r.error}" if r.error else ""), f"{r.seconds:.1f}", r.worker)
            for r in self]
        widths = [max(len(row[k]) for row in rows) for k in range(3)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3]
                 for row in rows]
        counts = {s: sum(r.status == s for r in self)
                  for s in ("done", "skipped", "failed", "cancelled")}
        lines.append(f"{counts['done']} done, {counts['skipped']} skipped (complete from an earlier "
                     f"run), {counts['failed']} failed"
                     + (f", {counts['cancelled']} cancelled" if counts["cancelled"] else "")
                     + f" in {self.wall_seconds:.1f} s")
        return "\n".join(lines)


# --- planning (on the client) ---------------------------------------------------------------------

def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Files named or matched by glob patterns, in order, each once."""
    from .core.io import glob_files

    files: list[str] = []
    for item in inputs:
        item = os.fspath(item)
        if glob.has_magic(item):
            matched = glob_files(item)
        else:
            if not os.path.exists(item):
                raise FileNotFoundError(f"{item}: no such file.")
            matched = [item]
        for path in matched:
            low = path.lower().rstrip("/" + os.sep)
            if os.path.isdir(path) and not low.endswith(".zarr"):
                raise ValueError(f"{path} is a folder; give files or a glob such as "
                                 f"'{os.path.join(path, '*.tif')}'.")
            if os.path.abspath(path) not in map(os.path.abspath, files):
                files.append(path)
    if not files:
        raise ValueError("no inputs given; name files, globs or one OME-Zarr store.")
    return files


def plan_units(files: Sequence[str], spec, params, out_dir: str, *, axes: str | None,
               chunk_planes: int | None, allow_linked: bool = False) -> list[Unit]:
    """The units for ``files``: one per file, or per chunk of ``chunk_planes`` entries of each
    stack's first T/Z axis (refused, with the reason, for settings whose planes depend on each
    other unless ``allow_linked``)."""
    from .core.axes import Layout, check_axes
    from .core.io import split_suffix
    from .engine.planes import open_input

    units: list[Unit] = []
    if chunk_planes is not None:
        if isinstance(chunk_planes, bool) or int(chunk_planes) < 1:
            raise ValueError(f"chunk_planes must be a positive integer; got {chunk_planes!r}.")
        reason = spec.links(params)
        if reason and not allow_linked:
            raise ValueError(
                f"{spec.name} cannot be split into chunks with these settings: {reason}. Chunks "
                "restored apart would not give the whole stack's result. Run it without "
                "--chunk-planes, or pass --train-per-chunk (train_per_chunk=True) to accept "
                "per-chunk results.")
    for path in files:
        try:
            base, suffix = split_suffix(path)
        except ValueError:  # not a format we read: its unit fails, naming it
            base, suffix = os.path.splitext(path.rstrip("/" + os.sep))
        stem = os.path.basename(base)
        if chunk_planes is None:  # opened by its unit: a bad file fails only its unit
            suffix = ".ome.zarr" if suffix.endswith(".zarr") else suffix
            out = os.path.join(out_dir, f"{stem}_{spec.name}{suffix}")
            units.append(Unit(os.path.basename(path.rstrip("/" + os.sep)), path, out, axes or ""))
            continue
        arr, unit_axes = open_input(path, axes, video=spec.video)
        unit_axes = check_axes(unit_axes, tuple(arr.shape))
        layout = Layout(axes=unit_axes, shape=tuple(arr.shape))
        lead = [a for a in layout.canonical[:-3]]
        if not lead:
            raise ValueError(f"{path} is a single plane (axes {unit_axes}); --chunk-planes splits "
                             "a stack or time-lapse along T or Z.")
        size = layout.size(lead[0])
        out = os.path.join(out_dir, f"{stem}_{spec.name}.ome.zarr")
        step = int(chunk_planes)
        context = spec.context_frames if lead[0] == "T" else 0
        for start in range(0, size, step):
            stop = min(start + step, size)
            units.append(Unit(f"{os.path.basename(path.rstrip('/' + os.sep))} "
                              f"[{lead[0]} {start}:{stop}]", path, out, unit_axes, (start, stop),
                              max(0, start - context)))
    outputs = [u.output for u in units if u.chunk is None]
    real_inputs = {os.path.realpath(f) for f in files}
    for u in units:
        if os.path.realpath(u.output) in real_inputs:
            raise ValueError(f"output {u.output} would be one of the inputs; choose another "
                             "output folder.")
    dupes = sorted({o for o in outputs if outputs.count(o) > 1})
    if dupes:
        raise ValueError(f"two inputs would write the same output ({', '.join(dupes)}): their file "
                         "names are equal; batch them into separate output folders.")
    return units


def signature(spec, params, *, seed: int, float_output: bool, model_sha: str, unit: Unit,
              device: str) -> dict[str, Any]:
    """What makes a unit's output: compared with what an existing output records."""
    values = dataclasses.asdict(params)
    if "model" in values and model_sha:
        values["model"] = f"sha256:{model_sha}"
    return {"method": spec.name, "params": json.loads(json.dumps(values, default=str)),
            "seed": int(seed), "float_output": bool(float_output),
            "input": os.path.abspath(unit.input), "axes": unit.axes,
            "chunked": unit.chunk is not None, "device": device}


def _recorded(path: str) -> dict | None:
    """The batch settings an existing output records (None: not a batch output, or unreadable)."""
    from .core.io import PROVENANCE_KEY, read_provenance

    try:
        if path.lower().rstrip("/" + os.sep).endswith(".zarr"):
            import zarr

            attrs = dict(zarr.open_group(path, mode="r").attrs)
            return attrs.get(BATCH_KEY) or attrs.get(PROVENANCE_KEY, {}).get("batch")
        return read_provenance(path).get("batch")
    except Exception:  # noqa: BLE001 - a half-written or foreign file: not ours
        return None


def _markers(store: str) -> str:
    """Folder beside a chunked output's store holding one marker per completed chunk."""
    folder, name = os.path.split(os.path.abspath(store.rstrip("/" + os.sep)))
    return os.path.join(folder, f".{name}.chunks")


def _marker(store: str, chunk: tuple[int, int]) -> str:
    return os.path.join(_markers(store), f"{chunk[0]:08d}-{chunk[1]:08d}.done")


def _make_store(spec, params, unit: Unit, sig: dict, float_output: bool) -> None:
    """Create a chunked output's OME-Zarr store (through a temporary name) with its final shape."""
    from .core.io import create_zarr
    from .engine.planes import open_array, output_dtype

    arr, _ = open_array(unit.input)
    axes, zoom = unit.axes, spec.zoom(params)
    primary = spec.primary_name(params)
    kind = next(o.kind for o in spec.outputs if o.name == primary)
    sizes = dict(zip(axes, arr.shape))
    sizes["Y"], sizes["X"] = sizes["Y"] * zoom, sizes["X"] * zoom
    out_axes = axes if kind == "image" else axes.replace("C", "")
    dtype = output_dtype(kind, arr.dtype, float_output)
    tmp = os.path.join(os.path.dirname(unit.output),
                       f".{os.path.basename(unit.output)}.{uuid.uuid4().hex[:8]}.partial")
    try:
        create_zarr(tmp, tuple(sizes[a] for a in out_axes), dtype, out_axes, ome=True)
        import zarr

        zarr.open_group(tmp, mode="r+").attrs[BATCH_KEY] = sig
        os.replace(tmp, unit.output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(_markers(unit.output), ignore_errors=True)
    os.makedirs(_markers(unit.output), exist_ok=True)


# --- one unit (on a worker) -----------------------------------------------------------------------

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
    from .api import output_files, prepare, write_files
    from .core.models import checkpoint_reads
    from .core.progress import drive

    t0 = time.perf_counter()
    worker = _worker_name()
    try:
        kwargs = dict(params, **extras)
        if model is not None:
            kwargs["model"] = _model_file(model, model_sha)
        if unit.chunk is None:
            from .core.registry import get_method
            from .engine.planes import open_input

            data, axes = open_input(unit.input, unit.axes or None,
                                    video=get_method(method).video)
            job = prepare(data, method, axes=axes, device=device, seed=seed,
                          float_output=float_output, **kwargs)
            write_files(job, output_files(job, unit.output), input_path=unit.input,
                        provenance={"batch": sig})
        else:
            import zarr

            from .api import execute

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


# --- the cluster ------------------------------------------------------------------------------------

def _threads_plugin(threads: int, gpus: int):
    """A worker plugin setting torch's threads per worker (so workers share the cores instead of
    each taking all of them) and, with GPUs, one GPU per worker (LocalCluster names workers 0..n-1).
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    class Threads(WorkerPlugin):
        name = "napari-ssl-restore-threads"

        def setup(self, worker) -> None:
            os.environ["OMP_NUM_THREADS"] = str(threads)
            import torch

            torch.set_num_threads(threads)
            if gpus:
                index = int(worker.name) % gpus if str(worker.name).isdigit() else 0
                torch.cuda.set_device(index)

    return Threads()


def local_cluster(workers: int | None = None, device: str = "auto"):
    """A ``LocalCluster`` of worker processes: one per GPU when the device is a GPU, else
    ``workers`` (default: one per core, at most 8), each with an equal share of the cores for
    torch. Returns the client (its ``cluster`` closes with it)."""
    from distributed import Client, LocalCluster

    gpus = 0
    if device.startswith(("auto", "cuda")):
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cores = os.cpu_count() or 1
    if workers is None:  # many single-threaded workers beat one multi-threaded (README)
        workers = gpus or min(cores, 8)
    if isinstance(workers, bool) or int(workers) < 1:
        raise ValueError(f"workers must be a positive integer; got {workers!r}.")
    workers = int(workers)
    threads = max(1, cores // workers)
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core",
                 "distributed.http.proxy", "distributed.worker"):
        logging.getLogger(name).setLevel(logging.WARNING)  # not every start/stop line on stderr
    try:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.WARNING)
    except RuntimeError as exc:
        raise RuntimeError(
            f"the local dask cluster did not start ({exc}). Called from a script? Worker "
            "processes re-import it: put the call under `if __name__ == \"__main__\":`.") from exc
    client = Client(cluster)
    client.register_plugin(_threads_plugin(threads, gpus))
    return client


def dashboard_link(client) -> str:
    try:
        return client.dashboard_link or ""
    except Exception:  # noqa: BLE001 - no bokeh: no dashboard
        return ""


# --- the entry point ------------------------------------------------------------------------------

def batch(inputs: str | os.PathLike | Sequence[str | os.PathLike], method: str,
          out_dir: str | os.PathLike, client=None, *, scheduler: str | None = None,
          workers: int | None = None, chunk_planes: int | None = None, axes: str | None = None,
          device: str = "auto", seed: int = 0, float_output: bool = False,
          overwrite: bool = False, train_per_chunk: bool = False,
          progress: bool | Callable[[UnitResult, int, int], None] = True,
          should_stop: Callable[[], bool] | None = None, **params: Any) -> BatchSummary:
    """Restore many files, or one long stack in chunks, on dask.distributed.

    Parameters
    ----------
    inputs : path, glob or list of them
        TIFF/OME-TIFF files, zarr/OME-Zarr stores, or glob patterns (``"data/*.tif"``).
    method : str
        A name from :func:`~napari_ssl_restore.list_methods`.
    out_dir : path
        Folder for the results (made if missing): ``<stem>_<method>.<suffix>`` per file, or one
        ``<stem>_<method>.ome.zarr`` per chunked stack.
    client : distributed.Client, optional
        A running cluster's client. Without it, ``scheduler`` (an address) is connected to, or a
        ``LocalCluster`` of ``workers`` processes is started and closed at the end.
    chunk_planes : int, optional
        Split each input into chunks of this many entries of its first T (else Z) axis, each a
        unit writing its region of one OME-Zarr store. Settings whose planes depend on each other
        (training on the whole movie, warm-started fits) are refused unless ``train_per_chunk``.
    device, seed, float_output, axes
        As for :func:`~napari_ssl_restore.restore`; ``axes`` applies to every input (default: each
        file's metadata).
    overwrite : bool
        Redo units whose output exists, even when complete (default: skip complete outputs made
        with the same settings, refuse outputs made with other settings).
    progress : bool or callable
        ``True``: a tqdm bar over units on stderr; a callable gets ``(result, done, total)`` as each
        unit ends.
    should_stop : callable, optional
        Polled about twice a second: when it returns True the units not yet finished are
        cancelled (reported as ``cancelled``; a rerun does them).
    **params
        The method's parameters (``model=`` a ``.pt`` file is sent to the workers) and extra inputs
        that apply to every unit (``psf=``, ``mask=``: arrays or file paths).

    Returns
    -------
    BatchSummary
        One :class:`UnitResult` per unit (``unit``, ``status``, ``seconds``, ``worker``, ``error``);
        ``.table()`` prints them.
    """
    from .core.progress import drive

    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=1, desc=f"batch {method}", unit="unit", file=sys.stderr)

    def report(step) -> None:
        res = step.metrics.get("unit")
        if step.metrics.get("dashboard") and bar is not None:
            bar.write(f"dask dashboard: {step.metrics['dashboard']}", file=sys.stderr)
        if bar is not None:
            bar.total, bar.n = step.total, step.step
            bar.set_postfix_str(f"{res.unit}: {res.status}" if res else step.message,
                                refresh=True)
        elif callable(progress) and res is not None:
            progress(res, step.step, step.total)

    gen = batch_steps(inputs, method, out_dir, client, scheduler=scheduler, workers=workers,
                      chunk_planes=chunk_planes, axes=axes, device=device, seed=seed,
                      float_output=float_output, overwrite=overwrite,
                      train_per_chunk=train_per_chunk, **params)
    try:  # a Stop thrown in cancels the rest; batch_steps still returns its summary
        return drive(gen, progress=report, should_stop=should_stop)
    finally:
        if bar is not None:
            bar.close()


def batch_steps(inputs, method: str, out_dir, client=None, *, scheduler: str | None = None,
                workers: int | None = None, chunk_planes: int | None = None,
                axes: str | None = None, device: str = "auto", seed: int = 0,
                float_output: bool = False, overwrite: bool = False,
                train_per_chunk: bool = False, **params: Any):
    """Generator behind :func:`batch`: yields a :class:`~napari_ssl_restore.core.progress.Step`
    as each unit ends (``metrics["unit"]`` its :class:`UnitResult`) and about twice a second
    between; returns the :class:`BatchSummary`. ``StopRequested`` thrown in (a Stop) cancels the
    units not yet finished. Everything is checked before the first step, so bad input fails
    before any work."""
    from .core.models import sha256_file
    from .core.progress import Step
    from .engine.request import check_request

    request = check_request(method, params, seed=seed, device=device, for_batch=True)
    spec, spec_params, extras = request.spec, request.params, request.extras
    seed, device = request.seed, request.device
    model_blob, model_sha = None, ""
    if request.model_path:
        model_sha = sha256_file(request.model_path)
        with open(request.model_path, "rb") as f:
            model_blob = f.read()

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    files = expand_inputs([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)
    units = plan_units(files, spec, spec_params, out_dir, axes=axes, chunk_planes=chunk_planes,
                       allow_linked=train_per_chunk)
    sigs = {id(u): signature(spec, spec_params, seed=seed, float_output=float_output,
                             model_sha=model_sha, unit=u, device=device) for u in units}
    todo, skipped = _resume(spec, spec_params, units, sigs, float_output, overwrite)

    summary = BatchSummary()
    results: dict[int, UnitResult] = {id(u): UnitResult(u.name, "skipped", output=u.output)
                                      for u in skipped}
    t0 = time.perf_counter()
    own = None
    total = len(units)
    if todo:
        if client is None:
            if scheduler:
                from distributed import Client

                client = own = Client(scheduler)
            else:
                client = own = local_cluster(workers, device)
        summary.dashboard = dashboard_link(client)
        yield Step(len(skipped), total, f"{len(todo)} unit(s) to run, {len(skipped)} complete",
                   metrics={"dashboard": summary.dashboard})
        try:
            results.update((yield from _submit(
                client, todo, spec.name, dataclasses.asdict(spec_params), extras, sigs, device,
                seed, float_output, model_blob, model_sha, total, len(skipped))))
        finally:
            if own is not None:
                cluster = getattr(own, "cluster", None)
                own.close()
                if cluster is not None and not scheduler:
                    cluster.close()
    _complete_stores(units, results, sigs)
    summary.extend(results[id(u)] for u in units)
    summary.wall_seconds = time.perf_counter() - t0
    return summary


def _resume(spec, params, units: list[Unit], sigs: dict, float_output: bool,
            overwrite: bool) -> tuple[list[Unit], list[Unit]]:
    """Split units into those to run and those complete from an earlier run with these settings;
    make the chunked outputs' stores. An output made with other settings is refused (or, with
    ``overwrite``, redone)."""
    todo, skipped, made = [], [], set()
    for u in units:
        if u.chunk is None:
            if os.path.exists(u.output):
                if not overwrite and _recorded(u.output) != sigs[id(u)]:
                    raise ValueError(f"{u.output} exists and was not made by this batch's "
                                     "settings; pass --overwrite to redo it, or choose another "
                                     "output folder.")
                if not overwrite:
                    skipped.append(u)
                    continue
            # temporary files a killed worker left for this output (its rerun writes anew)
            folder, name = os.path.split(os.path.abspath(u.output))
            for stale in glob.glob(os.path.join(folder, f".{glob.escape(name)}.*.partial")):
                (shutil.rmtree if os.path.isdir(stale) else os.remove)(stale)
            todo.append(u)
            continue
        if u.output not in made:
            made.add(u.output)
            recorded = _recorded(u.output) if os.path.exists(u.output) else None
            fresh = dict(sigs[id(u)])
            if recorded is not None and recorded.get("complete"):
                recorded = {k: v for k, v in recorded.items() if k != "complete"}
            if os.path.exists(u.output) and recorded != fresh and not overwrite:
                raise ValueError(f"{u.output} exists and was not made by this batch's settings; "
                                 "pass --overwrite to redo it, or choose another output folder.")
            if overwrite or not os.path.exists(u.output):
                _make_store(spec, params, u, fresh, float_output)
            elif not os.path.isdir(_markers(u.output)):
                os.makedirs(_markers(u.output), exist_ok=True)
        if _chunk_done(u):
            skipped.append(u)
        else:
            todo.append(u)
    return todo, skipped


def _chunk_done(u: Unit) -> bool:
    if os.path.isfile(_marker(u.output, u.chunk)):
        return True
    rec = _recorded(u.output)
    return bool(rec and rec.get("complete"))


def _submit(client, todo: list[Unit], method: str, params: dict, extras: dict, sigs: dict,
            device: str, seed: int, float_output: bool, model_blob, model_sha: str, total: int,
            done0: int):
    """Generator: submit the units, yield a Step as each ends (and every ~0.5 s), return the
    results; a Stop thrown in cancels what has not finished."""
    from distributed import wait

    from .core.progress import Step, StopRequested

    model = client.scatter(model_blob, broadcast=True, hash=False) if model_blob else None
    shared = client.scatter(extras, broadcast=True, hash=False) if extras else {}
    token = uuid.uuid4().hex[:8]
    units = {}
    for k, u in enumerate(todo):
        fut = client.submit(run_unit, u, method, params, shared, sig=sigs[id(u)], device=device,
                            seed=seed, float_output=float_output, model=model,
                            model_sha=model_sha, key=f"napari-ssl-restore-{k}-{token}",
                            pure=False)
        units[fut] = u
    results: dict[int, UnitResult] = {}
    pending = set(units)
    done = done0
    while pending:
        try:
            finished, pending = wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
        except TimeoutError:  # none ended within the half second: report, and look for a Stop
            finished = set()
        for fut in finished:
            u = units[fut]
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker died (KilledWorker) or was lost
                msg = " ".join(str(exc).split())
                res = UnitResult(u.name, "failed", 0.0, "", f"{type(exc).__name__}: {msg}",
                                 u.output)
            results[id(u)] = res
            done += 1
            try:
                yield Step(done, total, f"{res.unit}: {res.status}", metrics={"unit": res})
            except StopRequested:
                pending = _cancel(client, pending, units, results)
        if pending and not finished:
            try:
                yield Step(done, total, f"{done}/{total} units")
            except StopRequested:
                pending = _cancel(client, pending, units, results)
    return results


def _cancel(client, pending, units, results) -> set:
    """Cancel the units not finished; they are reported as ``cancelled``."""
    client.cancel(list(pending))
    for fut in pending:
        u = units[fut]
        results[id(u)] = UnitResult(u.name, "cancelled", output=u.output)
    return set()


def _complete_stores(units: list[Unit], results: dict[int, UnitResult], sigs: dict) -> None:
    """Chunked outputs whose every chunk is complete: record it (and the provenance) in the store
    and drop the markers."""
    import zarr

    from .core.io import PROVENANCE_KEY

    by_store: dict[str, list[Unit]] = {}
    for u in units:
        if u.chunk is not None:
            by_store.setdefault(u.output, []).append(u)
    for store, chunk_units in by_store.items():
        if not all(_chunk_done(u) for u in chunk_units):
            continue
        group = zarr.open_group(store, mode="r+")
        sig = dict(sigs[id(chunk_units[0])])
        if not (group.attrs.get(BATCH_KEY) or {}).get("complete"):
            group.attrs[BATCH_KEY] = dict(sig, complete=True)
            group.attrs[PROVENANCE_KEY] = {"method": sig["method"], "params": sig["params"],
                                           "seed": sig["seed"], "input": sig["input"],
                                           "batch": {"chunks": len(chunk_units)}}
        shutil.rmtree(_markers(store), ignore_errors=True)
