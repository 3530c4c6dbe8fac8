"""Deep Image Prior (Ulyanov, Vedaldi & Lempitsky, CVPR 2018) through a known forward operator.

A randomly initialised generator ``f`` fitted to one degraded image ``y`` reproduces image structure
long before it reproduces noise. Every task is the same optimisation, ``min_f ||H(f(z)) - y||²``; only
the operator ``H`` changes (the "physical model" constraint):

- ``denoise``: ``H = I``;
- ``inpaint``: ``H = M`` (keep the known pixels; the mask's nonzero pixels are missing);
- ``sr``: ``H`` = Lanczos-3 anti-aliased downsampling by an integer factor;
- ``deconv``: ``H`` = convolution with the PSF (given, or Gaussian from ``psf_sigma``): self-supervised
  deconvolution of widefield images, where the fit stops before it models the noise. Deviation:
  the estimate spans ``DECONV_RANGE`` (-0.1 to 2 of the data's unit range) instead of the sigmoid's
  0-1, since a deconvolved image's peaks rise above the blurred data's.

Practicalities beyond the paper: an exponential moving average of the outputs (the paper's averaging,
+~1 dB), automatic early stopping without ground truth from the running variance of recent outputs
(after ES-WMV/ES-EMV, Wang et al. 2021: the variance reaches its minimum near peak quality), and stacks
streamed from disk with a fresh fit per plane, several planes fitted at once on a GPU
(``plane_batch``: one network each, in one batched step), or, for quick looks, each plane
warm-started from the previous plane's network.
The fitting machinery is the engine's (:mod:`napari_ssl_restore.engine.prior`), the operators are
:mod:`napari_ssl_restore.physics.operators`; this module declares the settings, the choice of ``H`` and
the per-plane generator.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import numpy as np

from ..core.axes import plane_maps
from ..core.params import param
from ..core.progress import StopRequested, unrestored
from ..core.registry import ExtraInput, MethodResult, MethodSpec, Output, RunContext
from ..engine.planes import Outputs, Planes
from ..engine.predict import free_device_memory, is_out_of_memory
from ..engine.prior import FitParams, fit, make_code, make_net, plane_batch, too_early
from ..physics.operators import blur, downsample, psf_kernel, total_variation
from ._public import public_function

logger = logging.getLogger(__name__)

TASKS = ("denoise", "inpaint", "sr", "deconv")
#: iterations per task: the paper's (denoise 1800-3000, SR 2000, inpainting 5000-6000); deconvolution
#: at most 3000 (preconditioned, it stops by the discrepancy principle well before on the fields
#: measured; without preconditioning it peaked near 5500, docs/benchmarks)
TASK_ITERATIONS = {"denoise": 3000, "inpaint": 5000, "sr": 2000, "deconv": 3000}
DISCREPANCY_OVERSHOOT = 1.5
"""Deconvolution stops at this multiple of the iteration where the averaged estimate's residual
``mean (H x̂ - y)²`` first fell to the noise variance measured on the plane (the discrepancy
principle). On the two fields it was chosen on (synthetic cells, Gaussian PSF σ 2, noise 0.01;
scikit-image's cell crop, σ 3, noise 0.005) the PSNR went on rising after the crossing, to a peak
at 1.5-1.6 times its iteration; held-out results in docs/benchmarks (``bench_dip.py --only deconv``)."""
TASK_CHANNELS = {"denoise": 128, "inpaint": 128, "sr": 128, "deconv": 64}
DECONV_RANGE = (-0.1, 2.0)
"""The deconvolution estimate's range in the data's unit scale (the 0.1-99.9 percentiles of the
blurred data map to 0-1): ``lo + (hi - lo) * sigmoid``. A deconvolved image is sharper than the
data it explains, its peaks above the data's and its background below; a plain sigmoid clips them
(measured 1 dB lower on the benchmark, docs/benchmarks)."""


@dataclasses.dataclass(frozen=True)
class Params(FitParams):
    """Deep Image Prior settings (defaults from Ulyanov et al. 2018)."""

    method_title = "Deep Image Prior"

    task: Literal["denoise", "inpaint", "sr", "deconv"] = param(
        "denoise", "What H is: 'denoise' (identity), 'inpaint' (needs a mask: nonzero = missing), "
                   "'sr' (downsampling by sr_factor; the output is larger) or 'deconv' (blur by the "
                   "PSF, given as psf= or Gaussian with psf_sigma).", choices=TASKS)
    max_iter: int = param(0, "Iterations per plane; 0 = the count for the task (the paper's: "
                             "denoise 3000, inpaint 5000, sr 2000; deconv at most 3000). Early "
                             "stopping usually ends denoising sooner.", min=0, max=100_000)
    sr_factor: int = param(4, "Super-resolution factor for task 'sr'.", choices=(2, 3, 4, 8),
                           when={"task": ("sr",)})
    psf_sigma: float = param(2.0, "Std (pixels) of the Gaussian PSF for task 'deconv' when no PSF "
                                  "image is given.", min=0.1, max=50.0, step=0.1,
                             when={"task": ("deconv",)})
    plane_batch: int = param(0, "Stacks: planes fitted at once, each by its own network in one "
                                "batched step (the same result as one by one, faster on a GPU). "
                                "0 = automatic: as many as fit in the GPU's free memory; 1 on the "
                                "CPU, where batching is slower. Not used with warm_start.",
                             min=0, max=256, advanced=True)
    precondition: float = param(0.1, "deconv: weight the data term's frequencies by "
                                     "1/sqrt(|OTF|² + λ) (λ given here; 0 = off), so the "
                                     "frequencies the PSF attenuates are fitted as fast as the "
                                     "others.", min=0.0, max=1.0, step=0.001,
                                when={"task": ("deconv",)}, advanced=True)
    tv_weight: float = param(0.0, "Optional total-variation weight added to the data term "
                                  "(noise-heavy deconvolution); 0 = pure DIP.", min=0.0, max=10.0,
                             step=1e-4, advanced=True)

    channels: int = param(0, "Feature channels at every scale; 0 = the task's (paper: 128; deconv "
                             "64, which fits as well per iteration at half the time, docs/benchmarks).",
                          min=0, max=512, advanced=True)

    def iterations(self) -> int:
        return self.max_iter or TASK_ITERATIONS[self.task]

    def width(self) -> int:
        return self.channels or TASK_CHANNELS[self.task]


# --- the generator -------------------------------------------------------------------------------

def run(planes: Planes, params: Params, ctx: RunContext, out: Outputs, mask=None, psf=None):
    """Fit one DIP per plane (``plane_batch`` planes at a time, or warm-started from plane to
    plane), each written as it is done."""
    import torch

    device = ctx.torch_device
    n, (h, w), c = len(planes), planes.hw, planes.c
    masks = _inpaint_masks(params.task, mask, planes)
    operator, zoom, (lo, hi) = _forward_model(params, psf, (h, w), device)
    out_h, out_w = h * zoom, w * zoom

    gen = torch.Generator(device=device).manual_seed(ctx.seed)
    z = make_code(params, (out_h, out_w), gen, device)
    iters = params.plane_iterations(n)
    batch = 1 if params.warm_start or n == 1 else plane_batch(
        params.plane_batch, n, c, (out_h, out_w), params.width(), device)
    total = sum(iters[i] for i in range(0, n, batch))
    info: dict = {"stop_iterations": [], "best_iterations": [], "data_residual": [],
                  "stopped": False,
                  "planes_done": 0, "zoom": zoom, "device": str(device), "plane_batch": batch}
    net = make_net(params, c, device, seed=ctx.seed + planes.first) if params.warm_start else None

    step0, i = 0, 0
    while i < n:
        rows = list(range(i, min(i + batch, n)))
        nets, gens = _block_nets(params, planes, rows, net, gen, ctx.seed, c, device)
        block = np.stack([planes[r] for r in rows])
        target = torch.from_numpy(np.ascontiguousarray(block.transpose(0, 3, 1, 2))).to(device)
        weight, norm = _pixel_weights(masks, planes, rows, target, device)
        code = z.expand(len(rows), *z.shape[1:])
        objective = _objective(operator, target, weight, norm, len(rows), params,
                               _preconditioner(params, psf, (h, w), device))
        try:
            estimates, fit_info = yield from fit(
                [nets], [code], lambda outs: {"image": lo + (hi - lo) * outs[0]}, objective,
                params, iters[i], generator=gens, step0=step0, total=total,
                label=_block_label(i, rows, n), watch="image",
                discrepancy=_discrepancy(params, operator, target, block))
        except Exception as exc:  # a batch too large for the device: fit fewer planes at once
            if len(rows) == 1 or not is_out_of_memory(exc):
                raise
            batch = _smaller_batch(rows, device, info)
            continue
        fit_info["data_residual"] = _data_residual(operator, estimates["image"], target, weight,
                                                   norm)
        kept = [not fit_info["stopped"] or m for m in fit_info["meaningful_each"]]
        if not kept[0] and i == 0:
            raise StopRequested(too_early(fit_info, params))
        _store_block(estimates, fit_info, kept, rows, block, masks, planes, out, info)
        step0 += iters[i]
        i += len(rows)
        if fit_info["stopped"]:
            _note_stopped(info, n)
            break
    return MethodResult({}, info)


def _inpaint_masks(task: str, mask, planes: Planes):
    """The missing-pixel maps ``(planes, Y, X)`` for ``inpaint`` (``None`` otherwise), checked."""
    if task == "inpaint" and mask is None:
        raise ValueError("DIP inpainting needs a mask (nonzero = missing pixels): pass mask= (API), "
                         "--mask FILE (CLI) or pick a Labels/Shapes layer (napari).")
    masks = None
    if task == "inpaint":
        m = np.asarray(mask) != 0
        if m.ndim == len(planes.shape) and m.shape[:-1] == planes.shape[:-1]:  # with channels
            m = m.any(axis=-1)
        masks = plane_maps(m, planes.whole.shape, name="mask",
                           hint="draw the mask on a layer of the same size.")
    if masks is not None and masks.all():
        raise ValueError("the mask marks every pixel as missing; nothing is left to fit.")
    return masks


def _forward_model(params: Params, psf, hw: tuple[int, int], device):
    """The task's operator ``H``, its zoom and the estimate's range ``(lo, hi)``."""
    task = params.task
    h, w = hw
    kernel = None
    if task == "deconv":
        kernel = psf_kernel(psf, params.psf_sigma, device)
    zoom = params.sr_factor if task == "sr" else 1
    if task == "sr" and min(h, w) < 4:
        raise ValueError(f"image planes of {h}x{w} are too small to super-resolve.")

    if task == "sr":
        def operator(x):
            return downsample(x, zoom)
    elif task == "deconv":
        def operator(x):
            return blur(x, kernel)
    else:
        def operator(x):
            return x

    return operator, zoom, DECONV_RANGE if task == "deconv" else (0.0, 1.0)


def _noise_generator(gen, g: int, seed: int, device):
    """Plane ``g``'s noise: the first plane continues the code's generator, the others start
    from seed + g, so a plane fits the same alone, in its stack, in a chunk or in a batch."""
    import torch

    return gen if g == 0 else torch.Generator(device=device).manual_seed(seed + g)


def _block_nets(params: Params, planes: Planes, rows: list[int], net, gen, seed: int, c: int,
                device):
    """The network(s) and noise generator(s) fitting the planes ``rows`` together."""
    from ..nets.stack import StackedNets

    if params.warm_start:  # one network carried from plane to plane, one noise stream
        return net, gen
    singles = [make_net(params, c, device, seed=seed + planes.first + r) for r in rows]
    nets = singles[0] if len(rows) == 1 else StackedNets(singles)
    gens = [_noise_generator(gen, planes.first + r, seed, device) for r in rows]
    return nets, gens


def _pixel_weights(masks, planes: Planes, rows: list[int], target, device):
    """The known-pixel weights and their per-plane counts (``None, None`` without a mask)."""
    import torch

    if masks is None:
        return None, None
    weight = torch.from_numpy(~masks[[planes.first + r for r in rows]])
    weight = weight[:, None].float().to(device).expand_as(target)
    norm = weight.flatten(1).sum(1).clamp_min(1.0)
    return weight, norm


def _objective(operator, target, weight, norm, n_rows: int, params: Params, precondition=None):
    """The data term ``||H(f(z)) - y||²`` (known pixels only with a mask), summed over planes;
    with ``precondition`` (a residual filter) ``||P(H(f(z)) - y)||²``."""
    def objective(r):
        residual = operator(r["image"]) - target
        if precondition is not None:
            residual = precondition(residual)
        residual = (residual ** 2).flatten(1)
        per_plane = (residual.mean(1) if weight is None
                     else (residual * weight.flatten(1)).sum(1) / norm)
        loss = per_plane.sum()  # planes fitted together do not share gradients
        if params.tv_weight > 0:
            loss = loss + params.tv_weight * n_rows * total_variation(r["image"])
        return loss

    return objective


def _discrepancy(params: Params, operator, target, block: np.ndarray):
    """For deconvolution, the discrepancy principle's ``(residual, level)`` for :func:`fit`: each
    plane's ``mean (H x̂ - y)²`` against the noise variance ``mean(a·y + b)`` fitted on the plane
    itself (:func:`~napari_ssl_restore.physics.estimate.channel_noise_models`, normalised units).
    ``None`` for the other tasks, and where a plane is too small to measure its noise."""
    import torch

    from ..physics.estimate import channel_noise_models

    if params.task != "deconv":
        return None
    levels = []
    for plane in block:
        try:
            models = channel_noise_models([plane])
        except ValueError:
            return None
        u = np.clip(plane, 0, None)
        levels.append(float(np.mean(np.maximum(models[:, 0] * u + models[:, 1], 0.0))))
    level = torch.tensor(levels, device=target.device)

    def residual(estimates):
        return ((operator(estimates["image"]) - target) ** 2).flatten(1).mean(1)

    return residual, level, DISCREPANCY_OVERSHOOT


def _preconditioner(params: Params, psf, hw: tuple[int, int], device):
    """For deconvolution with ``precondition`` = λ > 0, the residual filter with frequency weights
    ``sqrt((1 + λ) / (|OTF|² + λ))`` (1 at zero frequency): gradient descent on ``||H x - y||²``
    fits a frequency at a speed proportional to ``|OTF|²``, so the detail the PSF attenuates
    comes last; the weights even this out, as a preconditioned Landweber iteration does, without
    moving the minimiser. ``None`` otherwise."""
    import torch

    if params.task != "deconv" or params.precondition <= 0:
        return None
    kernel = psf_kernel(psf, params.psf_sigma, device)
    h, w = hw
    kh, kw = kernel.shape
    padded = torch.zeros((h, w), device=device)
    padded[:min(kh, h), :min(kw, w)] = kernel[:h, :w]
    padded = torch.roll(padded, (-(kh // 2), -(kw // 2)), dims=(0, 1))
    power = torch.fft.rfft2(padded).abs() ** 2
    lam = params.precondition
    gain = torch.sqrt((1 + lam) / (power / power[0, 0].clamp_min(1e-12) + lam))

    def precondition(residual):
        return torch.fft.irfft2(torch.fft.rfft2(residual) * gain, s=residual.shape[-2:])

    return precondition


def _data_residual(operator, estimate, target, weight, norm) -> list[float]:
    """Each plane's data term ``mean (H(x̂) - y)²`` (known pixels only with a mask) for the
    returned estimates, in normalised units: the run's quality block divides it by the noise
    variance (the discrepancy principle)."""
    import torch

    with torch.no_grad():
        residual = ((operator(estimate.float()) - target) ** 2).flatten(1)
        per_plane = (residual.mean(1) if weight is None
                     else (residual * weight.flatten(1)).sum(1) / norm)
    return [round(float(v), 8) for v in per_plane.cpu()]


def _block_label(i: int, rows: list[int], n: int) -> str:
    """The progress label of the planes ``rows`` (empty for a single plane)."""
    if n <= 1:
        return ""
    return f"plane {i + 1}/{n}," if len(rows) == 1 else f"planes {i + 1}-{rows[-1] + 1}/{n},"


def _smaller_batch(rows: list[int], device, info: dict) -> int:
    """Halve the planes fitted at once after running out of device memory; the new batch."""
    batch = max(1, len(rows) // 2)
    logger.warning("DIP: out of device memory fitting %d planes at once; retrying with %d",
                   len(rows), batch)
    free_device_memory(device)
    info["plane_batch"] = batch
    return batch


def _store_block(estimates, fit_info, kept, rows, block, masks, planes, out, info) -> None:
    """Write the kept planes of a fitted block, in order, up to the first one not kept."""
    for k, r in enumerate(rows):
        if not kept[k]:
            break
        result = estimates["image"][k].permute(1, 2, 0).float().cpu().numpy()
        if masks is not None:  # keep the measured pixels exactly; fill only the missing ones
            keep = ~masks[planes.first + r]
            result[keep] = block[k][keep]
        out["image"][r] = result
        info["stop_iterations"].append(fit_info["stop_iterations"][k])
        info["best_iterations"].append(fit_info["best_iterations"][k])
        info["data_residual"].append(fit_info["data_residual"][k])
        info["planes_done"] = r + 1


def _note_stopped(info: dict, n: int) -> None:
    """Record a Stop and warn about the planes it leaves unrestored."""
    info["stopped"] = True
    if info["planes_done"] < n:  # the engine returns them as they were (resized for sr)
        logger.warning("DIP stopped on plane %d/%d: %s returned unrestored",
                       info["planes_done"] + 1, n, unrestored(info["planes_done"], n))


def _demo() -> list[dict]:
    from ..data import noisy_cells

    s = noisy_cells(size=64, sigma=0.1)
    return [{**s, "params": {"max_iter": 300, "channels": 32, "es_patience": 100}}]


def _standing(settings) -> str:
    """Where each task's defaults stand against the classical baseline (docs/benchmarks/dip.md)."""
    task = settings.get("task", "denoise")
    if task == "denoise":
        return ("Measured below BM3D at these defaults (0.24 dB at σ 25 on a held-out crop, "
                "in minutes per plane): classic-denoise or dncnn take seconds.")
    if task == "deconv":
        return ("Measured on four held-out 128² crops, two noise draws: -0.26 to +1.59 dB "
                "(mean +0.54) against the best Richardson-Lucy (below it on sparse point sources "
                "and barely blurred detail), about 5 minutes a plane on 2 CPU cores; "
                "richardson-lucy takes seconds.")
    return ""


SPEC = MethodSpec(
    name="dip",
    title="Deep Image Prior (Ulyanov et al. 2018): denoise, inpaint, super-resolve, deconvolve",
    task="restore",
    params=Params,
    run=run,
    function="restore_dip",
    outputs=(Output("image", "The restored image (sr: Y and X multiplied by sr_factor)."),),
    inputs=(
        ExtraInput("mask", "Missing pixels for task 'inpaint' (nonzero = missing); the image's "
                           "shape without C, or one Y X plane for all planes.", layer_kind="mask",
                     when=(("task", ("inpaint",)),)),
        ExtraInput("psf", "Point-spread function (2-D) for task 'deconv'; a Gaussian of psf_sigma "
                          "when omitted.", layer_kind="image", when=(("task", ("deconv",)),)),
    ),
    scaling="percentile",
    uses_torch=True,
    demo=_demo,
    linked_planes=lambda p: ("warm_start: each plane starts from the previous plane's network (set "
                             "warm_start=False for independent planes)" if p.warm_start else ""),
    zoom_of=lambda p: p.sr_factor if p.task == "sr" else 1,
    standing=_standing,
)

restore_dip = public_function(
    SPEC,
    summary="Restore an image with a Deep Image Prior fitted through a known operator.",
    notes="""
    Minimises :math:`\\lVert H(f_\\theta(z)) - y \\rVert^2` over the weights of a randomly initialised
    hourglass network :math:`f_\\theta` with a fixed random input :math:`z` (perturbed by
    ``reg_noise_std`` each step), with Adam. :math:`H` is the identity (denoise), a mask (inpaint),
    Lanczos downsampling (sr) or a PSF blur (deconv). The returned image is the exponential average of
    the outputs at the minimum of their running variance (early stopping), or after ``max_iter``.
    Images are percentile-normalised to [0, 1] first (the network ends in a sigmoid; for
    deconvolution the estimate spans -0.1 to 2 of that range, room for sharpened peaks).
    """,
    references="""
    .. [1] D. Ulyanov, A. Vedaldi, V. Lempitsky. Deep Image Prior. CVPR 2018; IJCV 128, 2020.
    .. [2] H. Wang, T. Li, Z. Zhuang, T. Chen, H. Liang, J. Sun. Early Stopping for Deep Image Prior.
           TMLR 2023 (arXiv:2112.06074).
    """,
    examples="""
    >>> import numpy as np
    >>> from napari_ssl_restore import restore_dip
    >>> noisy = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    >>> out = restore_dip(noisy, max_iter=5, channels=8, depth=2, device="cpu")
    >>> out.shape
    (32, 32)
    """,
)
