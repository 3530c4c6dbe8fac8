"""Resuming a batch: the settings an output records, a chunked output's store and its markers,
which units are complete, and completing a store once all its chunks are."""
from __future__ import annotations

import glob
import os
import shutil
import uuid

from .plan import Unit, UnitResult

BATCH_KEY = "napari_ssl_restore_batch"
"""Where an output records the settings that made it (compared on a rerun)."""


def _recorded(path: str) -> dict | None:
    """The batch settings an existing output records (None: not a batch output, or unreadable)."""
    from ..core.io import PROVENANCE_KEY, read_provenance

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
    from ..core.io import create_zarr, read_scale, zoomed_scale
    from ..engine.planes import open_array, output_dtype

    arr, _ = open_array(unit.input)
    axes, zoom = unit.axes, spec.zoom(params)
    primary = spec.primary_name(params)
    kind = next(o.kind for o in spec.outputs if o.name == primary)
    sizes = dict(zip(axes, arr.shape, strict=False))
    sizes["Y"], sizes["X"] = sizes["Y"] * zoom, sizes["X"] * zoom
    out_axes = axes if kind == "image" else axes.replace("C", "")
    dtype = output_dtype(kind, arr.dtype, float_output)
    tmp = os.path.join(os.path.dirname(unit.output),
                       f".{os.path.basename(unit.output)}.{uuid.uuid4().hex[:8]}.partial")
    try:
        create_zarr(tmp, tuple(sizes[a] for a in out_axes), dtype, out_axes, ome=True,
                    scale=zoomed_scale(read_scale(unit.input, axes), zoom))
        import zarr

        zarr.open_group(tmp, mode="r+").attrs[BATCH_KEY] = sig
        os.replace(tmp, unit.output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(_markers(unit.output), ignore_errors=True)
    os.makedirs(_markers(unit.output), exist_ok=True)


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


def _complete_stores(units: list[Unit], results: dict[int, UnitResult], sigs: dict) -> None:
    """Chunked outputs whose every chunk is complete: record it (and the provenance) in the store
    and drop the markers."""
    import zarr

    from ..core.io import PROVENANCE_KEY

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
