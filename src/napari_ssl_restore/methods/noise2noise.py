"""Noise2Noise (Lehtinen et al., ICML 2018): learn to denoise from pairs of noisy images.

If ``x`` and ``y`` are two independent noisy observations of the same scene with zero-mean noise, a
network trained to map ``x`` to ``y`` with the L2 loss converges to the same function as one trained
on clean targets. In microscopy the pairs come from two acquisitions of the same field (``target=``),
from consecutive frames of a fast time-lapse (structures barely move between frames), or from
adjacent planes of a finely sampled Z-stack. Loss by noise type: L2 (Gaussian, Poisson), L1
(median-type noise: multiplicative Bernoulli, text overlays), annealed L0 (random-valued impulses).

Training samples random patches with random flips and 90° rotations (the same for both images of a
pair), uses Adam with a cosine ramp-down of the learning rate over the last 30 % of the steps, and
reports the loss on a fixed, held-out set of validation patches. Prediction runs the network over
every plane in overlapping, blended tiles, so any image size fits in memory.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Literal

import numpy as np

from ..core.params import param
from ..core.progress import Step, StopRequested, Ticker
from ..core.registry import ExtraInput, MethodResult, MethodSpec, Output, RunContext
from ._public import public_function

logger = logging.getLogger(__name__)

TRAIN = {"mode": ("train",)}  # parameters only a training run uses
MIN_USEFUL_STEPS = 50
"""A network trained from scratch for fewer steps than this is not worth a result: a Stop before
then adds nothing."""


@dataclasses.dataclass(frozen=True)
class Params:
    """Noise2Noise settings (network and optimiser from Lehtinen et al. 2018)."""

    method_title = "Noise2Noise"

    mode: Literal["train", "apply"] = param(
        "train", "'train' a network on noisy pairs (from scratch, or fine-tuning `model`) and "
                 "denoise with it; 'apply' a saved `model` without training (no pairs needed).",
        choices=("train", "apply"))
    pairing: Literal["auto", "target", "time", "z"] = param(
        "auto", "Where the noisy pairs come from: 'target' (a second acquisition, target=), "
                "'time' (consecutive frames, both directions), 'z' (adjacent planes; only for finely "
                "sampled stacks). 'auto': target if given, else time if there is a T axis.",
        choices=("auto", "target", "time", "z"), when=TRAIN)
    model: str = param("", "A saved model (.pt) to apply, or to start training from.",
                       widget="open_file")
    save_model: str = param("", "Save the trained model here (.pt), weights + settings + "
                                "provenance in one file.", widget="save_file", when=TRAIN)
    loss: Literal["l2", "l1", "l0"] = param(
        "l2", "'l2' for Gaussian/Poisson noise, 'l1' for median-type noise (multiplicative "
              "Bernoulli, overlays), 'l0' (annealed) for random-valued impulse noise.",
        choices=("l2", "l1", "l0"), when=TRAIN)
    steps: int = param(0, "Training steps; 0 = chosen from the data size (about 20 passes over "
                          "the distinct patches, between 300 and 3000).", min=0, max=1_000_000, when=TRAIN)
    batch_size: int = param(8, "Patches per step.", min=1, max=1024, when=TRAIN, advanced=True)
    patch_size: int = param(64, "Side of the training patches in pixels; a multiple of "
                                "2**depth (paper: 256; 64 trains ~10x faster on a CPU).",
                            min=8, max=2048, when=TRAIN, advanced=True)
    learning_rate: float = param(3e-4, "Adam learning rate (paper: 3e-4), ramped down to 0 over "
                                       "the last 30 % of the steps.", min=1e-7, max=1.0, step=1e-4, when=TRAIN, advanced=True)
    features: int = param(48, "U-Net feature channels (paper: 48; 32 is the smaller option).",
                          min=4, max=256, when=TRAIN, advanced=True)
    depth: int = param(5, "U-Net poolings (paper: 5; 4 with features=32 is the smaller option).",
                       min=1, max=7, when=TRAIN, advanced=True)
    augment: bool = param(True, "Random flips and 90° rotations of the training patches.", when=TRAIN, advanced=True)
    validation_fraction: float = param(0.1, "Share of patches held out to report a validation "
                                            "loss (never trained on).", min=0.0, max=0.5,
                                       step=0.05, when=TRAIN, advanced=True)
    tile_size: int = param(512, "Tile side for prediction (limits memory on large images).",
                           min=32, max=8192, advanced=True)
    tile_overlap: int = param(32, "Overlap of prediction tiles, blended smoothly.", min=0,
                              max=1024, advanced=True)
    preview_every: int = param(100, "Training steps between previews (prediction on a crop).",
                               min=1, max=1_000_000, when=TRAIN, advanced=True)
    mixed_precision: bool = param(True, "bfloat16 autocast on CUDA (ignored on the CPU).", advanced=True)

    def __post_init__(self):
        mult = 2 ** self.depth
        if self.patch_size % mult:
            raise ValueError(f"Noise2Noise: patch_size must be a multiple of 2**depth = {mult}; "
                             f"got {self.patch_size}. Use "
                             f"{max(mult, round(self.patch_size / mult) * mult)}.")
        if self.tile_overlap >= self.tile_size:
            raise ValueError("Noise2Noise: tile_overlap must be smaller than tile_size.")
        if self.mode == "apply" and not self.model:
            raise ValueError("Noise2Noise: mode='apply' needs model= (a .pt file saved by a "
                             "training run); or use mode='train'.")


# --- losses --------------------------------------------------------------------------------------

def n2n_loss(pred, target, kind: str, progress: float = 0.0):
    """Loss between prediction and *noisy* target. ``progress`` in [0, 1] anneals L0's exponent."""
    import torch

    diff = pred - target
    if kind == "l2":
        return torch.mean(diff ** 2)
    if kind == "l1":
        return torch.mean(diff.abs())
    gamma = 2.0 * (1.0 - progress)  # annealed from 2 (L2) to 0 (L0), as in the paper
    return torch.mean((diff.abs() + 1e-8) ** max(gamma, 1e-3))


# --- pairs and patches ---------------------------------------------------------------------------

def make_pairs(image: np.ndarray, axes: str, pairing: str,
               target: np.ndarray | None) -> tuple[list[np.ndarray], list[tuple[int, int]], str]:
    """Planes and (source, target) index pairs for training, from a canonical ``[T][Z]YXC`` image."""
    lead = axes[:-3]
    if pairing == "auto":
        pairing = "target" if target is not None else ("time" if "T" in lead else "none")
    if pairing == "none":
        raise ValueError(
            "Noise2Noise needs pairs of noisy images: give target= (a second acquisition of the "
            "same field; --target FILE), or a time-lapse (axes with T, e.g. 'TYX'), or set "
            "pairing='z' for adjacent Z planes. To denoise with a saved model, use mode='apply'."
        )
    planes = list(image.reshape((-1,) + image.shape[-3:]))
    pairs: list[tuple[int, int]] = []
    if pairing == "target":
        if target is None:
            raise ValueError("pairing='target' needs target= (a second acquisition of the field).")
        n = len(planes)
        planes += list(target.reshape((-1,) + target.shape[-3:]))
        for i in range(n):
            pairs += [(i, n + i), (n + i, i)]
        return planes, pairs, pairing
    axis = "T" if pairing == "time" else "Z"
    if axis not in lead:
        raise ValueError(f"pairing={pairing!r} needs a {axis} axis; the image has axes "
                         f"{axes.replace('C', '')!r}. Set axes (e.g. '{axis}YX') or use target=.")
    sizes = image.shape[:-3]
    k = lead.index(axis)
    if sizes[k] < 2:
        raise ValueError(f"Noise2Noise needs at least 2 planes along {axis} to make pairs; got "
                         f"{sizes[k]}. Pick a stack or give target=.")
    index = np.arange(len(planes)).reshape(sizes)
    a = np.take(index, np.arange(sizes[k] - 1), axis=k).ravel()
    b = np.take(index, np.arange(1, sizes[k]), axis=k).ravel()
    for i, j in zip(a, b):
        pairs += [(int(i), int(j)), (int(j), int(i))]
    return planes, pairs, pairing


class PatchSampler:
    """Random aligned crops of pairs (with the same random flip/rotation), on a NumPy generator."""

    def __init__(self, planes, pairs, patch: int, rng: np.random.Generator, augment: bool):
        h, w = planes[0].shape[:2]
        if min(h, w) < patch:
            raise ValueError(f"patch_size {patch} is larger than the image ({h}x{w}); choose a "
                             f"patch_size of at most {min(h, w)} (a multiple of 2**depth).")
        self.planes, self.pairs, self.patch, self.rng, self.augment = planes, pairs, patch, rng, augment

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        p = self.patch
        h, w = self.planes[0].shape[:2]
        src = np.empty((n, p, p, self.planes[0].shape[2]), np.float32)
        tgt = np.empty_like(src)
        for b in range(n):
            i, j = self.pairs[self.rng.integers(len(self.pairs))]
            y, x = self.rng.integers(0, h - p + 1), self.rng.integers(0, w - p + 1)
            a, c = self.planes[i][y:y + p, x:x + p], self.planes[j][y:y + p, x:x + p]
            if self.augment:
                k = int(self.rng.integers(4))
                a, c = np.rot90(a, k), np.rot90(c, k)
                if self.rng.integers(2):
                    a, c = a[:, ::-1], c[:, ::-1]
            src[b], tgt[b] = a, c
        return src, tgt


def auto_steps(planes, pairs, patch: int, batch: int) -> int:
    """About 20 passes over the distinct patches of the pairs, clipped to [300, 3000]."""
    h, w = planes[0].shape[:2]
    distinct = len(pairs) * max(1, (h // patch) * (w // patch))
    return int(np.clip(round(20 * distinct / batch), 300, 3000))


def _lr_factor(step: int, total: int) -> float:
    """1 for the first 70 % of training, then a cosine ramp down to 0 (the paper's ramp-down)."""
    start = 0.7 * total
    if step <= start:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - start) / max(total - start, 1)))


# --- training ------------------------------------------------------------------------------------

def train(net, sampler: PatchSampler, params: Params, device, *, total: int, grand_total: int,
          preview_plane: np.ndarray | None = None):
    """Train ``net`` on patches from ``sampler`` for ``total`` steps; a generator of Steps.

    Returns ``{"steps", "train_loss", "val_loss", "stopped"}``. A :class:`StopRequested` thrown in at
    a yield ends training early and keeps the network as it is.
    """
    import torch

    n_val = int(round(params.validation_fraction * max(8, 4 * params.batch_size)))
    val = None
    if n_val:
        val = tuple(torch.from_numpy(v).permute(0, 3, 1, 2).contiguous().to(device)
                    for v in sampler.sample(n_val))
    opt = torch.optim.Adam(net.parameters(), lr=params.learning_rate, betas=(0.9, 0.99))
    amp = params.mixed_precision and device.type == "cuda"
    crop = _preview_crop(preview_plane) if preview_plane is not None else None
    train_loss = val_loss = float("nan")
    running = None
    step, stopped = 0, False
    ticker = Ticker()
    net.train()
    try:
        for step in range(1, total + 1):
            for group in opt.param_groups:
                group["lr"] = params.learning_rate * _lr_factor(step, total)
            src, tgt = sampler.sample(params.batch_size)
            x = torch.from_numpy(src).permute(0, 3, 1, 2).contiguous().to(device)
            y = torch.from_numpy(tgt).permute(0, 3, 1, 2).contiguous().to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                pred = net(x)
            loss = n2n_loss(pred.float(), y, params.loss, step / total)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            running = value if running is None else 0.95 * running + 0.05 * value
            preview_due = step % params.preview_every == 0 or step == total
            if ticker.due() or preview_due:
                preview = None
                if preview_due:
                    net.eval()
                    if val is not None:
                        with torch.no_grad():
                            val_loss = float(n2n_loss(net(val[0]), val[1], params.loss,
                                                      step / total))
                    if crop is not None:
                        preview = predict_plane(net, crop, params, device)
                    net.train()
                train_loss = running
                yield Step(step, grand_total,
                           f"training step {step}/{total}, loss {train_loss:.3e}"
                           + (f", validation {val_loss:.3e}" if val is not None else ""),
                           preview, {"loss": train_loss, "val_loss": val_loss, "step": step})
    except StopRequested:
        stopped = True
        logger.info("training stopped after %d steps; keeping that model", step)
    net.eval()
    return {"steps": step, "train_loss": running if running is not None else train_loss,
            "val_loss": val_loss, "stopped": stopped}


# --- prediction ----------------------------------------------------------------------------------

def predict_plane(net, plane: np.ndarray, params: Params, device) -> np.ndarray:
    """Denoise one ``(H, W, C)`` plane with overlapping tiles."""
    import torch

    from ..core.axes import from_tensor, to_tensor
    from ..core.tiling import predict_tiled
    from ..nets.unet import pad_to_multiple

    mult = 2 ** net.depth
    amp = params.mixed_precision and device.type == "cuda"

    def fn(tile: np.ndarray) -> np.ndarray:
        x, (h, w) = pad_to_multiple(to_tensor(tile[None], device), mult)
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                             enabled=amp):
            y = net(x)
        return from_tensor(y[..., :h, :w])[0]

    return predict_tiled(plane, fn, tile=params.tile_size, overlap=params.tile_overlap)


# --- the generator -------------------------------------------------------------------------------

def run(image: np.ndarray, params: Params, ctx: RunContext, target=None):
    """Train (or load) a Noise2Noise U-Net, then denoise every plane of ``image``."""
    import torch

    from ..core.device import resolve_device
    from ..core.models import build, checkpoint, load_checkpoint, save_model
    from ..nets.unet import UNet

    device = resolve_device(ctx.device)
    torch.manual_seed(ctx.seed)
    rng = np.random.default_rng(ctx.seed)
    c = image.shape[-1]
    ckpt = load_checkpoint(params.model) if params.model else None
    if ckpt is not None:
        if ckpt["config"]["in_channels"] != c:
            raise ValueError(f"model {params.model!r} expects {ckpt['config']['in_channels']} "
                             f"channel(s) but the image has {c}.")
        net = build(ckpt, device)
    else:
        net = UNet(c, c, params.features, params.depth).to(device)
    info: dict = {"device": str(device), "trained_steps": 0, "stopped": False}
    if ckpt is not None:
        info["model_loaded"] = params.model

    stopped = False
    if params.mode == "train":
        planes, pairs, pairing = make_pairs(image, ctx.axes, params.pairing, target)
        info["pairing"], info["pairs"] = pairing, len(pairs)
        sampler = PatchSampler(planes, pairs, params.patch_size, rng, params.augment)
        total = params.steps or auto_steps(planes, pairs, params.patch_size, params.batch_size)
        grand_total = total + int(np.prod(image.shape[:-3], dtype=int))
        fit = yield from train(net, sampler, params, device, total=total, grand_total=grand_total,
                               preview_plane=planes[pairs[0][0]])
        stopped = fit["stopped"]
        useful = min(MIN_USEFUL_STEPS, total)
        if stopped and ckpt is None and fit["steps"] < useful:
            raise StopRequested(f"Stopped after {fit['steps']} training steps, before the network "
                                f"had learned anything (at least {useful} are needed); nothing "
                                "was kept.")
        info.update(trained_steps=fit["steps"], train_loss=fit["train_loss"],
                    val_loss=fit["val_loss"], stopped=stopped)
        ckpt_out = checkpoint(net, architecture="unet",
                              normalization={"kind": "percentile", "low": 0.1, "high": 99.9},
                              provenance={"method": "noise2noise", "params": dataclasses.asdict(params),
                                          "steps": fit["steps"], "seed": ctx.seed})
        if params.save_model:
            info["model_saved"] = save_model(ckpt_out, params.save_model)
    else:
        ckpt_out = ckpt
        grand_total = int(np.prod(image.shape[:-3], dtype=int))
        total = 0

    net.eval()
    planes_in = image.reshape((-1,) + image.shape[-3:])
    out = np.empty_like(planes_in)
    for i, plane in enumerate(planes_in):
        out[i] = predict_plane(net, plane, params, device)
        if not stopped:  # after a Stop, predict without yielding (the stop is already honoured)
            try:
                yield Step(total + i + 1, grand_total, f"denoising plane {i + 1}/{len(planes_in)}")
            except StopRequested:
                stopped = True
                info["stopped"] = True
    return MethodResult({"image": out.reshape(image.shape)}, info, {"model": ckpt_out})


def _preview_crop(plane: np.ndarray, size: int = 256) -> np.ndarray:
    h, w = plane.shape[:2]
    y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return plane[y:y + size, x:x + size]


def _demo() -> list[dict]:
    from ..data import noisy_pair

    s = noisy_pair(size=128, sigma=0.15)
    return [{**s, "params": {"steps": 300, "features": 32, "depth": 4, "batch_size": 4}}]


SPEC = MethodSpec(
    name="noise2noise",
    title="Noise2Noise (Lehtinen et al. 2018): train a denoiser on pairs of noisy images",
    task="denoise",
    params=Params,
    run=run,
    function="denoise_noise2noise",
    outputs=(Output("image", "The denoised image, same shape, axes and dtype as the input."),),
    inputs=(ExtraInput("target", "A second noisy acquisition of the same field (same shape): "
                                 "the training target, and vice versa.", like_image=True,
                       when=(("mode", ("train",)),)),),
    scaling="percentile",
    uses_torch=True,
    demo=_demo,
)

denoise_noise2noise = public_function(
    SPEC,
    summary="Denoise with a U-Net trained on pairs of noisy images (Noise2Noise).",
    notes="""
    Minimises :math:`\\mathbb{E}\\, L(f_\\theta(x), y)` over pairs :math:`(x, y)` of independent noisy
    observations of the same scene: two acquisitions (``target=``), consecutive frames
    (``pairing='time'``) or adjacent planes (``pairing='z'``). With :math:`L = L_2` and zero-mean noise
    the minimiser equals that of training on clean targets. ``full_output=True`` also returns the
    trained ``model`` checkpoint (save it with ``save_model=`` to reuse it with ``mode='apply'``).
    """,
    references="""
    .. [1] J. Lehtinen, J. Munkberg, J. Hasselgren, S. Laine, T. Karras, M. Aittala, T. Aila.
           Noise2Noise: Learning Image Restoration without Clean Data. ICML 2018.
    """,
    examples="""
    >>> import numpy as np
    >>> from napari_ssl_restore import denoise_noise2noise
    >>> rng = np.random.default_rng(0)
    >>> clean = rng.random((32, 32)).astype(np.float32)
    >>> a = clean + 0.1 * rng.standard_normal(clean.shape).astype(np.float32)
    >>> b = clean + 0.1 * rng.standard_normal(clean.shape).astype(np.float32)
    >>> out = denoise_noise2noise(a, target=b, steps=5, patch_size=16, features=8, depth=2)
    >>> out.shape
    (32, 32)
    """,
)
