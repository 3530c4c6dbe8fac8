"""What a run will take, before it starts: working memory and seconds per plane.

Memory is estimated from the engine's own budgets — the plane buffers it holds, the predictor's
activation budget, the training planes it keeps (at most ``TRAIN_BYTES``), a DIP generator's
activations at the plane's size — plus the outputs when they are returned in memory; it leaves out
the Python/torch process itself (about 0.3 GB on a CPU). Time is measured: the method runs for about
``seconds`` on a crop of the first plane (at most 128², through the same code) and its progress then
is scaled to a whole plane by pixel count. Both are estimates, printed as such.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from .core.progress import Cancelled, StopRequested

PROBE_SIDE = 128
DIP_TENSORS = 14
"""Activations of one generator scale kept for the backward pass (convolutions, normalisation,
non-linearity, skip, upsampling), counted in tensors of the scale's size."""


@dataclasses.dataclass
class Estimate:
    planes: int
    plane_shape: tuple[int, int, int]
    host_bytes: int
    """Working memory on the host (outputs in memory included), without the process itself."""
    device_bytes: int
    """Working memory on the accelerator (0 on a CPU run: then it is host memory)."""
    seconds_per_plane: float
    """Measured on a crop of the first plane, scaled by pixels (NaN if the probe failed)."""
    early_stop: bool = False

    def lines(self) -> list[str]:
        gib = 2.0 ** 30
        h, w, c = self.plane_shape
        out = [f"{self.planes} plane(s) of {h}x{w}" + (f"x{c}" if c > 1 else ""),
               f"estimated working memory: {self.host_bytes / gib:.2f} GiB host"
               + (f", {self.device_bytes / gib:.2f} GiB device" if self.device_bytes else "")
               + " (plus the process itself, ~0.3 GiB)"]
        if np.isfinite(self.seconds_per_plane):
            total = self.seconds_per_plane * self.planes
            out.append(f"estimated time: {self.seconds_per_plane:.2f} s/plane, about "
                       f"{duration(total)} in all (measured on a {PROBE_SIDE}² crop, scaled"
                       + ("; early stopping usually ends sooner" if self.early_stop else "")
                       + ")")
        return out


def duration(seconds: float) -> str:
    """``'42 s'``, ``'12 min'``, ``'3.5 h'``: a time as a person reads it."""
    if seconds < 1:
        return "under 1 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def memory(job, *, outputs_in_memory: bool) -> tuple[int, int]:
    """``(host, device)`` working bytes of ``job`` from the engine's budgets (see module doc)."""
    from .core.device import resolve_device
    from .engine.predict import CPU_BUDGET
    from .engine.train import TRAIN_BYTES

    (h, w), c = job.planes.hw, job.planes.c
    plane = h * w * c * 4
    params, name = job.params, job.spec.name
    host = 6 * plane  # raw and normalised input planes, a result plane and its conversion
    work = 0
    if name == "dcp":
        host += 12 * h * w * 4  # dark channel, transmission, guided-filter maps
    elif name in ("dip", "double-dip"):
        zoom = job.spec.zoom(params)
        nets = 1 if name == "dip" else 3
        # tensors kept for the backward pass, per scale; each scale has a quarter of the pixels
        levels = sum(0.25 ** k for k in range(params.depth))
        work = int(nets * params.width() * h * zoom * w * zoom * 4 * DIP_TENSORS * levels)
    else:  # a network predicting in tiles, and (when it trains) its training planes
        work = CPU_BUDGET
        if getattr(params, "mode", "") in ("train", "offline", "online"):
            work += min(TRAIN_BYTES, len(job.planes) * plane * 3)
    device = resolve_device(job.device)
    on_device = device.type != "cpu"
    host += 0 if on_device else work
    if outputs_in_memory:
        host += job.source.nbytes * (2 if job.spec.name == "dcp" else 1)
    return int(host), int(work if on_device else 0)


def seconds_per_plane(job, seconds: float = 2.0) -> float:
    """Run ``job``'s method on a crop of its first plane for about ``seconds``; scale its progress
    to one whole plane by pixel count."""
    from .api import execute, prepare

    first = job.source.raw(0)
    side_h, side_w = min(PROBE_SIDE, first.shape[0]), min(PROBE_SIDE, first.shape[1])
    crop = first[:side_h, :side_w]
    axes = "YXC" if job.layout.has_channels else "YX"
    crop = crop if job.layout.has_channels else crop[..., 0]
    kwargs = dataclasses.asdict(job.params)
    extras = {}
    for inp in job.spec.inputs:
        if inp.name in job.extras and inp.like_image:
            other = job.extras[inp.name].source.raw(0)[:side_h, :side_w]
            extras[inp.name] = other if job.layout.has_channels else other[..., 0]
    if job.spec.video:  # a time-lapse method needs frames: two crops of the first frame
        crop, axes = np.stack([crop, crop]), "T" + axes
    try:
        probe = prepare(crop, job.spec.name, axes=axes, device=job.device, seed=job.seed,
                        **extras, **kwargs)
    except (ValueError, TypeError):
        return float("nan")  # a setting the crop cannot take (a mask of the full size, say)
    gen = execute(probe)
    start = time.perf_counter()
    reports: list[tuple[float, float]] = []  # (time, fraction done) at each report
    finished = False
    try:
        step = next(gen)
        while True:
            reports.append((time.perf_counter(), step.fraction))
            if reports[-1][0] - start > seconds and step.fraction > reports[0][1]:
                gen.throw(StopRequested())
                break
            step = next(gen)
    except StopIteration:
        finished = True
    except (StopRequested, Cancelled):
        pass
    except Exception:  # noqa: BLE001 - an estimate must never stop a run
        return float("nan")
    finally:
        gen.close()
    if finished:  # the whole crop in time: that is the rate
        per_crop = time.perf_counter() - start
    elif len(reports) >= 2 and reports[-1][1] > reports[0][1]:
        # the rate between the first and last reports leaves start-up costs out
        (t0, f0), (t1, f1) = reports[0], reports[-1]
        per_crop = (t1 - t0) / (f1 - f0)
    else:
        return float("nan")
    per_plane = per_crop / (2 if job.spec.video else 1)
    return per_plane * (job.planes.hw[0] * job.planes.hw[1]) / (side_h * side_w)


def estimate(job, *, outputs_in_memory: bool, probe_seconds: float = 2.0) -> Estimate:
    host, device = memory(job, outputs_in_memory=outputs_in_memory)
    h, w = job.planes.hw
    return Estimate(len(job.planes), (h, w, job.planes.c), host, device,
                    seconds_per_plane(job, probe_seconds),
                    early_stop=bool(getattr(job.params, "early_stop", False)))
