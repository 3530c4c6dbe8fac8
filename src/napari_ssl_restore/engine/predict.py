"""The batched device predictor: any network over planes of any size, in overlapping tiles.

Every network method predicts through :class:`Predictor` (Noise2Noise, the pretrained denoiser,
Frame2Frame, Restore-from-Restored, and the adversarial methods to come). It

- chooses tiles by the device: on a CPU, tiles whose full-resolution activation is about 10 MiB
  (286² for the shipped 32-channel DnCNN; large tiles are not faster per pixel there — 704² tiles
  took 18.7 s per 2048² frame against 10.8 s for 284² ones — and batching does not help); on CUDA,
  as large as half the free memory allows, batched; in both cases all tiles of a plane one size,
  with the overlap spread evenly (:func:`tile_plan`), so less is computed twice than with fixed
  tiles (a 2048² plane: 5.2 Mpixels in 284² tiles, against 6.6 in fixed 512² ones);
- stacks tiles — of one plane or of several small planes — into batches on the device, in
  channels-last memory format (the network too, while it predicts: on 2 CPU cores the shipped DnCNN
  runs 1.5–1.7× faster per pixel so; training is slower so and keeps the default layout), runs them
  under ``torch.inference_mode``
  (bfloat16 autocast on CUDA when the method allows), and blends them with a linear ramp window into
  an output accumulated on the device;
- runs the 8-fold rotation/flip self-ensemble as batched passes;
- on an out-of-memory error halves the batch, then the tile, and tries again (never a crash);
- sizes its budget from the device's free memory (CUDA) or a fixed host budget (CPU), unless a
  tile size is given.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..core.progress import Step, Ticker

CPU_TILE_BYTES = 10 * 2**20
"""Bytes of one full-resolution activation of a CPU batch (see above)."""
CPU_BUDGET = 256 * 2**20
"""Bytes of activations a CPU run may take at most (for estimates)."""
MIN_TILE = 64


def tile_plan(length: int, tile: int, overlap: int) -> tuple[int, list[int]]:
    """Tiles along one axis: ``(size, starts)`` with as few equal tiles as cover ``length`` within
    ``tile`` pixels each, overlapping by at least ``overlap``."""
    if length <= tile:
        return length, [0]
    overlap = min(overlap, tile // 2)
    n = math.ceil((length - overlap) / (tile - overlap))
    size = min(length, math.ceil((length - overlap) / n) + overlap)
    starts = [round(k * (length - size) / (n - 1)) for k in range(n)] if n > 1 else [0]
    return size, starts


def _ramp(n: int, overlap: int, device):
    """1 in the middle, a linear ramp over ``overlap`` samples at both ends, never exactly 0."""
    import torch

    w = torch.ones(n, device=device)
    if overlap > 0:
        k = min(overlap, n)
        r = (torch.arange(k, dtype=torch.float32, device=device) + 0.5) / overlap
        w[:k] = torch.minimum(w[:k], r)
        w[n - k:] = torch.minimum(w[n - k:], r.flip(0))
    return w


def _width(net) -> int:
    """Channels of the network's first convolution: its full-resolution activations' width."""
    import torch

    return next((m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)), 32)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the device (or host) ran out of memory."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate" in text
                                              or "not enough memory" in text)


def free_device_memory(device) -> None:
    """Return the cached blocks of a CUDA device to the driver (after an out-of-memory error)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _transforms(ensemble: bool):
    """(forward, inverse) pairs of the geometric self-ensemble (or the identity alone)."""
    import torch

    def make(k: int, flip: bool):
        def fwd(x):
            return torch.rot90(x.flip(-1) if flip else x, k, (-2, -1))

        def inv(y):
            y = torch.rot90(y, -k, (-2, -1))
            return y.flip(-1) if flip else y

        return fwd, inv

    if not ensemble:
        return [make(0, False)]
    return [make(k, flip) for flip in (False, True) for k in range(4)]


class Predictor:
    """Apply ``net`` to ``(N, H, W, C)`` float planes in batched, blended tiles on ``device``.

    Parameters
    ----------
    net : torch.nn.Module
        Maps ``(B, C, h, w)`` to ``(B, C_out, h*scale, w*scale)``; put in eval mode while predicting.
    device : torch.device
    tile : int
        Largest tile side; 0 = from the memory budget.
    overlap : int
        Overlap of neighbouring tiles, blended with linear ramps (no seams from border effects).
    multiple : int
        Tile sides are padded (reflect) to a multiple of this (a U-Net's ``2**depth``).
    amp : bool
        bfloat16 autocast on CUDA.
    ensemble : bool
        Average over the 8 rotations/flips (Timofte, Rothe & Van Gool, CVPR 2016): 8 passes.
    budget : int
        Bytes of activations one batch may use; default: half the free CUDA memory, or on a CPU
        one cache-sized activation (:data:`CPU_TILE_BYTES`).
    """

    def __init__(self, net, device, *, tile: int = 0, overlap: int = 32, multiple: int = 1,
                 amp: bool = False, ensemble: bool = False, scale: int = 1,
                 budget: int | None = None):
        import torch

        self.net = net
        self.device = torch.device(device)
        self.overlap = overlap
        self.multiple = max(1, multiple)
        self.amp = amp and self.device.type == "cuda"
        self.ensemble = ensemble
        self.scale = scale
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            budget = budget or free // 2
            # a batch's bytes per pixel: full-resolution activations, ~8 alive (deeper layers are
            # smaller), 2 bytes in bfloat16, else 4
            self.pixel_bytes = _width(net) * 8 * (2 if self.amp else 4)
        else:
            budget = budget or CPU_TILE_BYTES
            self.pixel_bytes = _width(net) * 4  # one activation, kept within the cache
        self.max_pixels = max(MIN_TILE * MIN_TILE, budget // self.pixel_bytes)
        self.tile = tile or int(math.sqrt(self.max_pixels))
        self.batch_limit = 0  # set by out-of-memory back-off

    # --- planning ---
    def plan(self, hw: tuple[int, int]):
        """``((tile_h, ys), (tile_w, xs))`` for a plane of ``hw``."""
        return tile_plan(hw[0], self.tile, self.overlap), tile_plan(hw[1], self.tile, self.overlap)

    def batch_size(self, tile_hw: tuple[int, int]) -> int:
        per_tile = tile_hw[0] * tile_hw[1] * (8 if self.ensemble else 1)
        b = max(1, self.max_pixels // max(per_tile, 1))
        return min(b, self.batch_limit) if self.batch_limit else b

    # --- running ---
    def run(self, planes: np.ndarray) -> Iterator[tuple[int, int]]:
        """Predict ``(N, H, W, C)`` planes; a generator yielding ``(batches done, batches)`` after
        every batch and returning ``(N, H*scale, W*scale, C_out)`` float32."""
        while True:
            try:
                return (yield from self._run(planes))
            except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are retried
                if not is_out_of_memory(exc):
                    raise
                self._back_off(planes.shape[1:3])

    def __call__(self, planes: np.ndarray) -> np.ndarray:
        """Predict ``(N, H, W, C)`` planes at once (no progress)."""
        gen = self.run(planes)
        try:
            while True:
                next(gen)
        except StopIteration as done:
            return done.value

    def _back_off(self, hw) -> None:
        free_device_memory(self.device)
        (th, _), (tw, _) = self.plan(hw)
        b = self.batch_size((th, tw))
        if b > 1:
            self.batch_limit = b // 2
        elif self.tile > MIN_TILE:
            self.tile = max(MIN_TILE, self.tile // 2)
            self.batch_limit = 0
        else:
            raise MemoryError("out of memory even with one 64x64 tile per batch; free device "
                              "memory or use device='cpu'.")

    def _run(self, planes: np.ndarray):
        import torch
        import torch.nn.functional as F

        from .train import to_device

        n, h, w, _ = planes.shape
        (th, ys), (tw, xs) = self.plan((h, w))
        s = self.scale
        ov = min(self.overlap, th // 2, tw // 2)
        win = (_ramp(th * s, ov * s if len(ys) > 1 else 0, self.device)[:, None]
               * _ramp(tw * s, ov * s if len(xs) > 1 else 0, self.device)[None, :])
        x = to_device(planes, self.device)
        jobs = [(i, y, xx) for i in range(n) for y in ys for xx in xs]
        b = self.batch_size((th, tw))
        batches = [jobs[k:k + b] for k in range(0, len(jobs), b)]
        out: Any = None
        weight: Any = None
        was_training = self.net.training
        self.net.eval()
        # channels-last while predicting only: training (DIP's, a fine-tuning's) is slower so on a
        # CPU, and the network may be trained again after this
        self.net.to(memory_format=torch.channels_last)
        try:
            with torch.inference_mode(), torch.autocast(device_type=self.device.type,
                                                        dtype=torch.bfloat16, enabled=self.amp):
                for k, batch in enumerate(batches):
                    tiles = torch.stack([x[i, :, y:y + th, xx:xx + tw] for i, y, xx in batch])
                    tiles = tiles.contiguous(memory_format=torch.channels_last)
                    pred = self._forward(tiles, F).float()
                    if out is None:
                        out = torch.zeros((n, pred.shape[1], h * s, w * s), device=self.device)
                        weight = torch.zeros((1, 1, h * s, w * s), device=self.device)
                    for (i, y, xx), p in zip(batch, pred, strict=False):
                        region = (slice(y * s, (y + th) * s), slice(xx * s, (xx + tw) * s))
                        out[i, :, region[0], region[1]] += p * win
                        if i == 0:
                            weight[0, 0, region[0], region[1]] += win
                    yield k + 1, len(batches)
                out /= weight
                result = out.permute(0, 2, 3, 1).cpu().numpy()
        finally:
            self.net.to(memory_format=torch.contiguous_format)
            self.net.train(was_training)
        return result

    def _forward(self, tiles, F):
        """The network on a batch of tiles (each pass padded to ``multiple``, reflect), averaged
        over the self-ensemble's transforms when asked."""
        m, s = self.multiple, self.scale
        transforms = _transforms(self.ensemble)
        acc = None
        for fwd, inv in transforms:
            t = fwd(tiles)
            th, tw = t.shape[-2:]
            ph, pw = (-th) % m, (-tw) % m
            if ph or pw:
                mode = "reflect" if min(th, tw) > max(ph, pw) else "replicate"
                t = F.pad(t, (0, pw, 0, ph), mode=mode)
            y = inv(self.net(t)[..., :th * s, :tw * s])
            acc = y if acc is None else acc + y
        return acc / len(transforms)


def predict_planes(predictor: Predictor, read: Callable[[int], np.ndarray], indices,
                   write: Callable[[int, np.ndarray], None], *, step0: int = 0,
                   total: int | None = None, label: str = "predicting"):
    """Predict the planes ``indices`` (``read(i)`` gives plane ``i``) and ``write`` each result;
    a generator of :class:`Step` events (about every half second, with progress within a plane).

    Small planes are predicted several at a time (as many as one batch holds); a Stop thrown in
    at a report propagates to the caller between batches. Returns the number of planes done.
    """
    indices = list(indices)
    total = total if total is not None else step0 + len(indices)
    ticker = Ticker()
    done = 0
    k = 0
    while k < len(indices):
        first = read(indices[k])
        (th, ys), (tw, xs) = predictor.plan(first.shape[:2])
        per_plane = len(ys) * len(xs)
        group = max(1, predictor.batch_size((th, tw)) // per_plane) if per_plane == 1 else 1
        chunk = [indices[k]] + indices[k + 1:k + group]
        stack = np.stack([first] + [read(i) for i in chunk[1:]])
        gen = predictor.run(stack)
        try:
            while True:
                b, nb = next(gen)
                if ticker.due() and b < nb:
                    yield Step(step0 + done, total, f"{label} plane {done + 1}/{len(indices)}"
                                                    f" (batch {b}/{nb})")
        except StopIteration as finished:
            result = finished.value
        for i, plane in zip(chunk, result, strict=False):
            write(i, plane)
        done += len(chunk)
        k += len(chunk)
        yield Step(step0 + done, total, f"{label} plane {done}/{len(indices)}")
    return done


def predict_into(predictor: Predictor, read: Callable[[int], np.ndarray], n: int,
                 write: Callable[[int, np.ndarray], None], *, step0: int, total: int, label: str,
                 stoppable: bool = True, preview: Callable[[], Any] | None = None):
    """Predict planes ``0 .. n-1`` into ``write``; a generator of Steps returning ``(done,
    stopped)``. With ``stoppable`` a Stop keeps the planes done (the engine fills the rest with the
    input); without (the run was already stopped, e.g. during training) every plane is predicted,
    progress still reported. ``preview()`` gives each Step's preview."""
    from ..core.progress import StopRequested

    state = {"done": 0}

    def counted(i: int, plane: np.ndarray) -> None:
        write(i, plane)
        state["done"] += 1

    steps = predict_planes(predictor, read, range(n), counted, step0=step0, total=total,
                           label=label)
    for step in steps:
        if preview is not None:
            step = Step(step.step, step.total, step.message, preview(), step.metrics)
        try:
            yield step
        except StopRequested:
            if stoppable:
                steps.close()
                return state["done"], True
    return state["done"], False


def predict_after_training(predictor: Predictor, planes, write: Callable[[int, np.ndarray], None],
                           *, step0: int, stopped: bool, verb: str,
                           read: Callable[[int], np.ndarray] | None = None):
    """Generator: every plane of ``planes`` (or ``read(i)`` of it: what the network sees)
    through ``predictor`` into ``write``, after ``step0`` training steps. A training a Stop ended
    still restores every plane with the model as it is (not stoppable again) and says so. Returns
    ``(planes done, stopped)``."""
    n = len(planes)
    done, late = yield from predict_into(
        predictor, read or (lambda i: planes[i]), n, write, step0=step0, total=step0 + n,
        label=verb if not stopped else f"stopped: {verb} with the model so far,",
        stoppable=not stopped)
    return done, stopped or late


def centre_crop(plane: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` × ``size`` part of a ``(H, W, ...)`` plane (all of it when smaller):
    what training previews show."""
    h, w = plane.shape[:2]
    y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return plane[y:y + size, x:x + size]
