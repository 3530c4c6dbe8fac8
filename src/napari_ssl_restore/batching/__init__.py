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

Modules: :mod:`.plan` (units, results, the settings an output records), :mod:`.resume` (what a rerun
skips, chunked outputs' stores), :mod:`.worker` (one unit on a worker), :mod:`.cluster` (the local
cluster, schedulers' clients), :mod:`.driver` (:func:`batch`, :func:`batch_steps`) and
:mod:`.remote` (a napari layer's planes on a scheduler).
"""
from __future__ import annotations

# the names the CLI, the widget, the tests and the benchmarks import from here (private ones too)
# ruff: noqa: F401
from .cluster import _CLIENTS, _client, _threads_plugin, dashboard_link, local_cluster
from .driver import _cancel, _submit, batch, batch_steps
from .plan import BatchSummary, Unit, UnitResult, expand_inputs, plan_units, signature
from .remote import _cluster_run, _copy_planes, _layer_file
from .resume import (
    BATCH_KEY,
    _chunk_done,
    _complete_stores,
    _make_store,
    _marker,
    _markers,
    _recorded,
    _resume,
)
from .worker import _model_file, _Region, _worker_name, run_unit

__all__ = ["batch", "batch_steps", "BatchSummary", "UnitResult", "plan_units"]
