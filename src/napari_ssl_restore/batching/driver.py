"""The entry points: :func:`batch` and its generator :func:`batch_steps`, which plan the units,
skip the complete ones, submit the rest to the cluster and gather a :class:`BatchSummary`."""
from __future__ import annotations

import dataclasses
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from .cluster import dashboard_link, local_cluster
from .plan import BatchSummary, Unit, UnitResult, expand_inputs, plan_units, signature
from .resume import _complete_stores, _resume
from .worker import run_unit


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
    from ..core.progress import drive

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
    from ..core.models import sha256_file
    from ..core.progress import Step
    from ..engine.request import check_request

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


def _submit(client, todo: list[Unit], method: str, params: dict, extras: dict, sigs: dict,
            device: str, seed: int, float_output: bool, model_blob, model_sha: str, total: int,
            done0: int):
    """Generator: submit the units, yield a Step as each ends (and every ~0.5 s), return the
    results; a Stop thrown in cancels what has not finished."""
    from distributed import wait

    from ..core.progress import Step, StopRequested

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
