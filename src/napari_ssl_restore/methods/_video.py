"""Shared machinery of the pretrained-denoiser methods (``dncnn``, ``frame2frame``,
``restore-from-restored``): loading the shipped or a saved denoiser, tiled prediction, the frame
layout of a time-lapse, fine-tuning steps, optical flow and warping, and noise-model estimation.

A time-lapse arrives in the canonical ``T[Z]YXC`` layout and is handled as ``(T, P, H, W, C)``: ``P``
is the number of Z planes (1 without Z), each Z plane being its own video and all of them sharing one
network. Frames are restored in ``T``-major order, so "frames done" is a prefix of the output.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from ..core.params import param
from ..core.progress import Step, StopRequested, unrestored

logger = logging.getLogger(__name__)

# --- the denoiser --------------------------------------------------------------------------------


def _wrap(net, channels: int):
    """A module running ``net`` on ``channels``-channel images (folding C into the batch for
    single-channel models, padding for U-Nets), differentiable so it can be fine-tuned."""
    import torch

    from ..nets.unet import pad_to_multiple

    class Denoiser(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.fold = net.config["in_channels"] == 1 and channels > 1
            self.multiple = 2 ** net.depth if hasattr(net, "depth") else 1

        def forward(self, x):
            n, c, h, w = x.shape
            if self.fold:
                x = x.reshape(n * c, 1, h, w)
            if self.multiple > 1:
                x, _ = pad_to_multiple(x, self.multiple)
            y = self.net(x)[..., :h, :w]
            return y.reshape(n, c, h, w) if self.fold else y

    return Denoiser()


def load_denoiser(model: str, channels: int, device):
    """The denoiser to start from: a saved model (``model`` path) or the shipped blind DnCNN.

    Returns ``(module, checkpoint)``. Any model the project saves works (a Noise2Noise U-Net, a
    fine-tuned DnCNN); a single-channel model runs channel by channel on multichannel images.
    """
    from ..core.models import build, load_checkpoint, shipped_model

    ckpt = load_checkpoint(model) if model else shipped_model()
    cin = ckpt["config"]["in_channels"]
    if cin not in (1, channels):
        raise ValueError(f"model {model or 'shipped'!r} expects {cin} channel(s) but the image has "
                         f"{channels}; use a single-channel or a {channels}-channel model.")
    net = build(ckpt, device)
    net.eval()
    return _wrap(net, channels), ckpt


def save_checkpoint(den, base_ckpt: dict, *, method: str, params, seed: int, info: dict) -> dict:
    """A checkpoint of the (fine-tuned) network, recording what it started from."""
    from ..core.models import checkpoint

    start = base_ckpt.get("provenance", {})
    return checkpoint(den.net, architecture=base_ckpt["architecture"],
                      normalization=base_ckpt.get("normalization", {}),
                      provenance={"method": method, "params": dataclasses.asdict(params),
                                  "seed": seed, "started_from": start.get("shipped")
                                  or start.get("method", "a saved model"), **info})


def predict(den, plane: np.ndarray, device, tile: int = 512, overlap: int = 32,
            ensemble: bool = False) -> np.ndarray:
    """Denoise one ``(H, W, C)`` plane in overlapping, blended tiles.

    With ``ensemble`` every tile is denoised in its 8 rotations/flips and the results, turned back,
    are averaged (geometric self-ensemble; Timofte, Rothe & Van Gool, CVPR 2016): 8× the time.
    """
    import torch

    from ..core.axes import from_tensor, to_tensor
    from ..core.tiling import predict_tiled

    was_training = den.training
    den.eval()

    def fn(t: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = to_tensor(t[None], device)
            if not ensemble:
                return from_tensor(den(x))[0]
            acc = torch.zeros_like(x)
            for k in range(8):
                flip = k >= 4
                v = torch.rot90(x.flip(-1) if flip else x, k % 4, (-2, -1))
                y = torch.rot90(den(v), -(k % 4), (-2, -1))
                acc += y.flip(-1) if flip else y
            return from_tensor(acc / 8)[0]

    out = predict_tiled(plane, fn, tile=tile, overlap=overlap)
    den.train(was_training)
    return out


# --- settings shared by the video methods --------------------------------------------------------

ONLINE = {"mode": ("online",)}
OFFLINE = {"mode": ("offline",)}

@dataclasses.dataclass(frozen=True)
class VideoParams:
    """Settings shared by Frame2Frame and Restore-from-Restored."""

    mode: Literal["online", "offline"] = param(
        "offline", "'offline': fine-tune on the whole time-lapse, then restore every frame. "
                   "'online': sweep forward through T, fine-tuning a few steps on each frame and "
                   "restoring it with the model as it is then (frames appear one by one).",
        choices=("online", "offline"))
    model: str = param("", "Denoiser to start from: empty for the shipped blind DnCNN, or a .pt "
                           "saved by this plugin (e.g. a Noise2Noise model).", widget="open_file")
    save_model: str = param("", "Save the fine-tuned model here (.pt) to reuse it with dncnn or "
                                "as a starting point.", widget="save_file")
    patch_size: int = param(128, "Side of the training crops (whole frames when smaller).",
                            min=16, max=4096, advanced=True)
    batch_size: int = param(4, "Crops per fine-tuning step.", min=1, max=256, advanced=True)
    tile_size: int = param(512, "Tile side for prediction (limits memory on large frames).",
                           min=32, max=8192, advanced=True)
    tile_overlap: int = param(32, "Overlap of prediction tiles, blended smoothly.", min=0,
                              max=1024, advanced=True)

    def _check_video(self, title: str):
        if self.tile_overlap >= self.tile_size:
            raise ValueError(f"{title}: tile_overlap must be smaller than tile_size.")


def frames_of(image: np.ndarray, axes: str) -> np.ndarray:
    """View a canonical ``T[Z]YXC`` array as ``(T, P, H, W, C)``."""
    if not axes.startswith("T"):
        raise ValueError(f"a time-lapse needs a T axis first; got canonical axes {axes!r}.")
    t = image.shape[0]
    return image.reshape((t, -1) + image.shape[-3:])


# --- fine-tuning ---------------------------------------------------------------------------------

def random_crops(rng: np.random.Generator, arrays: list[np.ndarray], patch: int, n: int):
    """``n`` aligned random crops (same window in every array) of ``(H, W, ...)`` arrays."""
    h, w = arrays[0].shape[:2]
    ph, pw = min(patch, h), min(patch, w)
    outs = [[] for _ in arrays]
    for _ in range(n):
        y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        for o, a in zip(outs, arrays):
            o.append(a[y:y + ph, x:x + pw])
    return [np.stack(o) for o in outs]


def to_batch(x: np.ndarray, device):
    """``(N, H, W, C)`` (or ``(N, H, W)``) float array to an ``(N, C, H, W)`` tensor."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if t.ndim == 3:
        t = t[..., None]
    return t.permute(0, 3, 1, 2).contiguous().to(device)


def make_optimizer(den, lr: float):
    import torch

    return torch.optim.Adam(den.parameters(), lr=lr)


def train_step(den, opt, x, y, loss_fn) -> float:
    den.train()
    loss = loss_fn(den(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


# --- optical flow and warping (Frame2Frame) -------------------------------------------------------

def optical_flow(reference: np.ndarray, moving: np.ndarray, method: str = "tvl1") -> np.ndarray:
    """Flow ``(2, H, W)`` (rows, columns) with ``moving[r + v_r, c + v_c] ≈ reference[r, c]``.

    Computed on the channel mean of two (denoised) ``(H, W, C)`` frames with scikit-image's TV-L1
    (Zach, Pock, Bischof 2007) or iterative Lucas-Kanade.
    """
    from skimage import registration

    a = reference.mean(axis=-1) if reference.ndim == 3 else reference
    b = moving.mean(axis=-1) if moving.ndim == 3 else moving
    if method == "tvl1":
        return np.asarray(registration.optical_flow_tvl1(a, b), np.float32)
    if method == "ilk":
        return np.asarray(registration.optical_flow_ilk(a, b, radius=7), np.float32)
    raise ValueError(f"unknown flow method {method!r}; use 'tvl1' or 'ilk'.")


def warp(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backward-warp ``(H, W, C)`` ``image`` by ``flow`` with bilinear ``grid_sample``.

    Returns the warped image and a boolean map of pixels that sampled inside the frame.
    """
    import torch
    import torch.nn.functional as F

    h, w = image.shape[:2]
    rr, cc = np.mgrid[0:h, 0:w].astype(np.float32)
    r, c = rr + flow[0], cc + flow[1]
    inside = (r >= 0) & (r <= h - 1) & (c >= 0) & (c <= w - 1)
    grid = np.stack([2 * c / max(w - 1, 1) - 1, 2 * r / max(h - 1, 1) - 1], axis=-1)
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))[None]
    with torch.no_grad():
        y = F.grid_sample(x, torch.from_numpy(grid)[None], mode="bilinear",
                          padding_mode="border", align_corners=True)
    return y[0].numpy().transpose(1, 2, 0), inside


def occlusion_mask(flow: np.ndarray, warped_denoised: np.ndarray, denoised: np.ndarray,
                   inside: np.ndarray, *, divergence: float, warp_error: float,
                   dilation: int) -> np.ndarray:
    """Pixels to train on: not occluded and inside the frame.

    Occluded: flow divergence magnitude above ``divergence`` (Ehret et al. use ~0.75) or a warping
    error of the denoised frames above ``warp_error`` (normalised intensity), dilated by ``dilation``
    pixels.
    """
    div = np.gradient(flow[0], axis=0) + np.gradient(flow[1], axis=1)
    err = np.abs(warped_denoised - denoised).mean(axis=-1)
    bad = (np.abs(div) > divergence) | (err > warp_error) | ~inside
    if dilation > 0 and bad.any():
        bad = ndi.binary_dilation(bad, iterations=dilation)
    return ~bad


# --- noise model (Restore-from-Restored) -----------------------------------------------------------

@dataclasses.dataclass
class NoiseModel:
    """Noise of variance ``gain * x + offset`` at clean intensity ``x``, white or spatially
    correlated through a unit-energy ``kernel`` (odd-sized, ``None`` for white noise)."""

    gain: float
    offset: float
    kernel: np.ndarray | None = None

    def sample(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noise for ``(..., H, W, C)`` ``clean``."""
        white = rng.standard_normal(clean.shape).astype(np.float32)
        if self.kernel is not None:
            k = self.kernel[(None,) * (clean.ndim - 3) + (slice(None), slice(None), None)]
            white = ndi.convolve(white, k, mode="wrap")
        var = np.clip(self.gain * np.clip(clean, 0, None) + self.offset, 1e-10, None)
        return white * np.sqrt(var).astype(np.float32)

    def describe(self) -> dict:
        return {"gain": float(self.gain), "offset": float(self.offset),
                "sigma_at_0": float(np.sqrt(max(self.offset, 0))),
                "correlated": self.kernel is not None}


def estimate_noise(noisy: np.ndarray, clean: np.ndarray, kind: str = "auto",
                   correlated: bool = True, kernel_size: int = 5,
                   min_correlation: float = 0.1) -> NoiseModel:
    """Estimate a :class:`NoiseModel` from ``noisy`` and a pseudo-clean estimate ``clean``.

    The residual's variance (per bin, so a biased pseudo-clean does not count as noise) is fitted
    as ``gain * clean + offset`` over 20 intensity bins
    (Poisson-Gaussian, the usual camera model; ``kind='gaussian'`` fits the offset only, ``'auto'``
    keeps the gain only when it explains a tenth of the variance at the median intensity or more). With
    ``correlated``, when neighbouring residuals correlate by more than ``min_correlation``, the
    spectrum of the variance-normalised residual, averaged over 32×32 tiles, gives a zero-phase
    shaping kernel (``kernel_size``²) that reproduces the noise's spatial correlation.
    """
    res = np.subtract(noisy, clean, dtype=np.float32)
    x = np.asarray(clean, np.float32)
    gain, offset = 0.0, float(np.var(res, dtype=np.float64))
    if kind in ("auto", "poisson-gaussian"):
        edges = np.unique(np.quantile(x, np.linspace(0, 1, 21)))
        if edges.size > 2:
            idx = np.clip(np.searchsorted(edges, x.ravel(), side="right") - 1, 0, edges.size - 2)
            counts = np.bincount(idx, minlength=edges.size - 1)
            ok = counts > 50
            means = np.bincount(idx, x.ravel(), edges.size - 1)[ok] / counts[ok]
            r = res.ravel().astype(np.float64)
            mean_r = np.bincount(idx, r, edges.size - 1)[ok] / counts[ok]
            var = np.bincount(idx, r ** 2, edges.size - 1)[ok] / counts[ok] - mean_r ** 2
            if ok.sum() >= 2:
                a, b = np.polyfit(means, var, 1)
                a = max(a, 0.0)
                b = max(b, 1e-8) if a > 0 else offset
                med = float(np.median(x))
                if kind == "poisson-gaussian" or a * max(med, 0) > 0.1 * (a * max(med, 0) + b):
                    gain, offset = float(a), float(max(np.mean(var - a * means), 1e-8))
    model = NoiseModel(gain, offset)
    if correlated:
        std = np.sqrt(np.clip(gain * np.clip(x, 0, None) + offset, 1e-10, None))
        unit = (res / std).reshape((-1,) + res.shape[-3:])  # (N, H, W, C)
        unit = unit - unit.mean(axis=(1, 2), keepdims=True)
        energy = float(np.mean(unit ** 2)) or 1.0
        rho = max(abs(float(np.mean(unit[:, 1:] * unit[:, :-1]))),
                  abs(float(np.mean(unit[:, :, 1:] * unit[:, :, :-1])))) / energy
        if rho > min_correlation:  # else white: a denoiser's residual is never exactly white
            model.kernel = _shaping_kernel(unit, kernel_size)
    return model


def _shaping_kernel(unit: np.ndarray, size: int, tile: int = 32) -> np.ndarray | None:
    """Zero-phase kernel ``k`` (``size``², unit energy) such that white noise convolved with it has
    the average power spectrum of ``unit`` (``(N, H, W, C)``, roughly unit variance)."""
    n, h, w, c = unit.shape
    t = min(tile, h, w)
    if t < size:
        return None
    spectra, count = np.zeros((t, t)), 0
    for i in range(n):
        for y in range(0, h - t + 1, t):
            for x in range(0, w - t + 1, t):
                for ch in range(c):
                    patch = unit[i, y:y + t, x:x + t, ch]
                    spectra += np.abs(np.fft.fft2(patch - patch.mean())) ** 2
                    count += 1
    psd = spectra / max(count, 1)
    kern = np.real(np.fft.ifft2(np.sqrt(psd / psd.mean())))
    kern = np.fft.fftshift(kern)
    m, r = t // 2, size // 2
    kern = kern[m - r:m + r + 1, m - r:m + r + 1]
    kern = kern / np.sqrt(np.sum(kern ** 2))
    return kern.astype(np.float32)


# --- the two ways of running: online and offline ----------------------------------------------------

def _partial(done: int, n: int) -> None:
    logger.warning("stopped after %d/%d frame planes: %s returned unrestored "
                   "(full_output=True reports planes_done)", done, n, unrestored(done, n))


def _frame_label(t: int, p: int, frames: np.ndarray) -> str:
    return f"frame {t + 1}/{frames.shape[0]}" + (f" plane {p + 1}/{frames.shape[1]}"
                                                  if frames.shape[1] > 1 else "")


def online(frames, den, device, params, *, make_sampler, loss_fn, lr: float, steps_per_frame: int,
           shape: tuple[int, ...]):
    """Sweep forward through T: for every frame, ``steps_per_frame`` fine-tuning steps on batches
    from ``make_sampler(t, p, out)`` (``None``: no training on that frame), then restore the frame
    with the model as it is. A generator; returns ``(out, info)``.

    ``out`` starts as a copy of the input and is the preview, so the viewer shows frames replaced one
    by one. A Stop keeps the frames restored so far; the others stay as they were (``info`` says how
    many are done).
    """
    n_t, n_p = frames.shape[:2]
    out = frames.copy()
    opt = make_optimizer(den, lr)
    total = n_t * n_p * (steps_per_frame + 1)
    step, done, losses = 0, 0, []
    for t in range(n_t):
        for p in range(n_p):
            sampler = make_sampler(t, p, out)
            label = _frame_label(t, p, frames)
            for k in range(steps_per_frame if sampler is not None else 0):
                x, y = sampler(params.batch_size)
                losses.append(train_step(den, opt, x, y, loss_fn))
                step += 1
                stop = yield from yield_or_stop(Step(
                    step, total, f"{label}: step {k + 1}/{steps_per_frame}, loss "
                                 f"{losses[-1]:.3e}", None, {"loss": losses[-1], "frame": t}))
                if stop:
                    _partial(done, n_t * n_p)
                    return out, {"stopped": True, "planes_done": done, "steps": len(losses)}
            step = (t * n_p + p + 1) * (steps_per_frame + 1)
            out[t, p] = predict(den, frames[t, p], device, params.tile_size, params.tile_overlap)
            done += 1
            stop = yield from yield_or_stop(Step(step, total, f"{label} restored",
                                                 out.reshape(shape), {"frame": t}))
            if stop and done < n_t * n_p:
                _partial(done, n_t * n_p)
                return out, {"stopped": True, "planes_done": done, "steps": len(losses)}
    return out, {"stopped": False, "planes_done": done, "steps": len(losses),
                 "final_loss": losses[-1] if losses else float("nan")}


def fine_tune(den, opt, samplers, n_steps: int, loss_fn, rng, batch_size: int, *, step0: int,
              total: int, label: str):
    """``n_steps`` steps cycling through ``samplers`` in random order (one epoch = one pass).

    A generator; returns ``(steps_done, last_loss, stopped)``. A Stop ends it and keeps the model.
    """
    order: list[int] = []
    loss = float("nan")
    for k in range(n_steps):
        if not order:
            order = list(rng.permutation(len(samplers)))
        x, y = samplers[order.pop()](batch_size)
        loss = train_step(den, opt, x, y, loss_fn)
        stop = yield from yield_or_stop(Step(step0 + k + 1, total,
                                             f"{label} step {k + 1}/{n_steps}, loss {loss:.3e}",
                                             None, {"loss": loss}))
        if stop:
            return k + 1, loss, True
    return n_steps, loss, False


def predict_all(frames, den, device, params, *, step0: int, total: int, label: str,
                on_stop: str, preview_shape: tuple[int, ...] | None = None):
    """Run the model over every frame, filling a copy of the input; a generator of Steps.

    ``on_stop`` says what a Stop does: ``"cancel"`` lets it end the run (nothing useful done yet),
    ``"keep"`` returns the frames done so far, ``"ignore"`` goes on (a Stop already honoured
    elsewhere; the run must still produce its result). With ``preview_shape`` the filling array is
    the preview. Returns ``(out, done, stopped)``.
    """
    out = frames.copy()
    n = out.shape[0] * out.shape[1]
    done = 0
    for t in range(frames.shape[0]):
        for p in range(frames.shape[1]):
            out[t, p] = predict(den, frames[t, p], device, params.tile_size, params.tile_overlap)
            done += 1
            step = Step(step0 + done, total, f"{label} {_frame_label(t, p, frames)}",
                        None if preview_shape is None else out.reshape(preview_shape),
                        {"frame": t})
            if on_stop == "cancel":
                yield step
                continue
            stop = yield from yield_or_stop(step)
            if stop and on_stop == "keep" and done < n:
                return out, done, True
    return out, done, False


def restore_all(frames, den, device, params, *, step0: int, total: int, shape, stoppable: bool):
    """Restore every frame with the final model, the filling movie as the preview.

    Returns ``(out, done, stopped)``. With ``stoppable`` a Stop keeps the frames done; without (after
    a Stop during fine-tuning) every frame is restored, progress still reported.
    """
    what = "restoring" if stoppable else "stopped: restoring with the model so far,"
    out, done, stopped = yield from predict_all(
        frames, den, device, params, step0=step0, total=total, label=what,
        on_stop="keep" if stoppable else "ignore", preview_shape=shape)
    if stopped:
        _partial(done, out.shape[0] * out.shape[1])
    return out, done, stopped


def start(image: np.ndarray, params, ctx):
    """What every video run begins with: device, seeded generators, the ``(T, P, H, W, C)`` frames
    and the starting denoiser. Returns ``(device, rng, frames, den, base_checkpoint, info)``."""
    import time

    import torch

    from ..core.device import resolve_device

    device = resolve_device(ctx.device)
    torch.manual_seed(ctx.seed)
    rng = np.random.default_rng(ctx.seed)
    frames = frames_of(image, ctx.axes)
    den, base = load_denoiser(params.model, image.shape[-1], device)
    info = {"device": str(device), "mode": params.mode, "frames": frames.shape[0],
            "_t0": time.perf_counter()}
    return device, rng, frames, den, base, info


def finish(out, image, den, base, params, ctx, info: dict, *, method: str):
    """The result of a video run: timing, the fine-tuned checkpoint (saved when asked)."""
    import time

    from ..core.models import save_model
    from ..core.registry import MethodResult

    info["seconds"] = round(time.perf_counter() - info.pop("_t0"), 3)
    ckpt = save_checkpoint(den, base, method=method, params=params, seed=ctx.seed,
                           info={"steps": info.get("steps", 0)})
    if params.save_model:
        info["model_saved"] = save_model(ckpt, params.save_model)
    return MethodResult({"image": out.reshape(image.shape)}, info, {"model": ckpt})


def demo_samples() -> list[dict]:
    """The demo of the fine-tuning video methods: a short Poisson-Gaussian time-lapse, offline."""
    from ..data import noisy_video

    s = noisy_video(n_frames=6, size=128, sigma=25 / 255, poisson=30.0)
    return [{**s, "params": {"mode": "offline", "epochs": 5}}]


def tensor_sampler(rng, device, inputs: list[np.ndarray], targets: list[np.ndarray], patch: int):
    """A sampler of aligned random crops: ``n -> (input batch, target batch or tuple of them)``."""

    def sample(n: int):
        crops = random_crops(rng, inputs + targets, patch, n)
        x = to_batch(crops[0], device)
        ys = [to_batch(c, device) for c in crops[1:]]
        return x, ys[0] if len(ys) == 1 else tuple(ys)

    return sample


# --- stopping --------------------------------------------------------------------------------------

def yield_or_stop(step: Step):
    """Yield ``step``; return True when a Stop was requested at it."""
    try:
        yield step
    except StopRequested:
        return True
    return False
