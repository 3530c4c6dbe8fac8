"""Planning a batch (on the client): its units, their results, and the settings each output records."""
from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections.abc import Sequence
from typing import Any


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
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=False))
                 + "  " + row[3] for row in rows]
        counts = {s: sum(r.status == s for r in self)
                  for s in ("done", "skipped", "failed", "cancelled")}
        lines.append(f"{counts['done']} done, {counts['skipped']} skipped (complete from an earlier "
                     f"run), {counts['failed']} failed"
                     + (f", {counts['cancelled']} cancelled" if counts["cancelled"] else "")
                     + f" in {self.wall_seconds:.1f} s")
        return "\n".join(lines)


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Files named or matched by glob patterns, in order, each once."""
    from ..core.io import glob_files

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
    from ..core.axes import Layout, check_axes
    from ..core.io import split_suffix
    from ..engine.planes import open_input

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
