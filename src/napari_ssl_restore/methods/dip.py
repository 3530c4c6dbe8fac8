"""Deep Image Prior (Ulyanov, Vedaldi & Lempitsky, CVPR 2018) through a known forward operator.

A randomly initialised generator ``f`` fitted to one degraded image ``y`` reproduces image structure
long before it reproduces noise. Every task is the same optimisation, ``min_f ||H(f(z)) - y||²``; only
the operator ``H`` changes (the "physical model" constraint):

- ``denoise``: ``H = I``;
- ``inpaint``: ``H = M`` (keep the known pixels; the mask's nonzero pixels are missing);
- ``sr``: ``H`` = Lanczos-3 anti-aliased downsampling by an integer factor;
- ``deconv``: ``H`` = convolution with the PSF (given, or Gaussian from ``psf_sigma``): self-supervised
  deconvolution of widefield images, where the fit stops before it models the noise.

Practicalities beyond the paper: an exponential moving average of the outputs (the paper's averaging,
+~1 dB), automatic early stopping without ground truth from the running variance of recent outputs
(after ES-WMV/ES-EMV, Wang et al. 2021: the variance reaches its minimum near peak quality), and stacks
processed plane by plane, streamed from disk, with the network warm-started from the previous plane.
The fitting machinery is the engine's (:mod:`napari_ssl_restore.engine.prior`), the operators are
:mod:`napari_ssl_restore.core.operators`; this module declares the settings, the choice of ``H`` and
the per-plane generator.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import numpy as np

from ..core.axes import plane_maps
from ..core.operators import blur, downsample, psf_kernel, total_variation
from ..core.params import param
from ..core.progress import StopRequested, unrestored
from ..core.registry import ExtraInput, MethodResult, MethodSpec, Output, RunContext
from ..engine.planes import Outputs, Planes
from ..engine.prior import FitParams, fit, make_code, make_net, too_early
from ._public import public_function

logger = logging.getLogger(__name__)

TASKS = ("denoise", "inpaint", "sr", "deconv")
#: iterations per task from the paper (denoise 1800-3000, SR 2000, inpainting 5000-6000)
TASK_ITERATIONS = {"denoise": 3000, "inpaint": 5000, "sr": 2000, "deconv": 3000}


@dataclasses.dataclass(frozen=True)
class Params(FitParams):
    """Deep Image Prior settings (defaults from Ulyanov et al. 2018)."""

    method_title = "Deep Image Prior"

    task: Literal["denoise", "inpaint", "sr", "deconv"] = param(
        "denoise", "What H is: 'denoise' (identity), 'inpaint' (needs a mask: nonzero = missing), "
                   "'sr' (downsampling by sr_factor; the output is larger) or 'deconv' (blur by the "
                   "PSF, given as psf= or Gaussian with psf_sigma).", choices=TASKS)
    max_iter: int = param(0, "Iterations for the first plane; 0 = the paper's count for the task "
                             "(denoise 3000, inpaint 5000, sr 2000, deconv 3000). Early stopping "
                             "usually ends sooner.", min=0, max=100_000)
    sr_factor: int = param(4, "Super-resolution factor for task 'sr'.", choices=(2, 3, 4, 8), when={"task": ("sr",)})
    psf_sigma: float = param(2.0, "Std (pixels) of the Gaussian PSF for task 'deconv' when no PSF "
                                  "image is given.", min=0.1, max=50.0, step=0.1, when={"task": ("deconv",)})
    tv_weight: float = param(0.0, "Optional total-variation weight added to the data term "
                                  "(noise-heavy deconvolution); 0 = pure DIP.", min=0.0, max=10.0,
                             step=1e-4, advanced=True)

    def iterations(self) -> int:
        return self.max_iter or TASK_ITERATIONS[self.task]


# --- the generator -------------------------------------------------------------------------------

def run(planes: Planes, params: Params, ctx: RunContext, out: Outputs, mask=None, psf=None):
    """Fit one DIP per plane (warm-started across planes), each written as it is done."""
    import torch

    from ..core.device import resolve_device

    device = resolve_device(ctx.device)
    n, (h, w), c = len(planes), planes.hw, planes.c
    task = params.task
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
    kernel = None
    if task == "deconv":
        kernel = psf_kernel(psf, params.psf_sigma, device)
    zoom = params.sr_factor if task == "sr" else 1
    out_h, out_w = h * zoom, w * zoom
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

    gen = torch.Generator(device=device).manual_seed(ctx.seed)
    net = make_net(params, c, device, seed=ctx.seed + planes.first)
    z = make_code(params, (out_h, out_w), gen, device)
    iters = params.plane_iterations(n)
    total = sum(iters)
    info: dict = {"stop_iterations": [], "best_iterations": [], "stopped": False,
                  "planes_done": 0, "zoom": zoom, "device": str(device)}
    step0 = 0
    for i in range(n):
        if not params.warm_start:  # a fresh fit per plane, seeded by its index in the stack
            g = planes.first + i
            if i > 0:
                net = make_net(params, c, device, seed=ctx.seed + g)
            if g > 0:  # so a plane fits the same alone, in its stack or in a chunk of it
                gen.manual_seed(ctx.seed + g)
        plane = planes[i]
        target = torch.from_numpy(np.ascontiguousarray(plane.transpose(2, 0, 1)))[None].to(device)
        weight = norm = None
        if masks is not None:
            weight = torch.from_numpy((~masks[planes.first + i]).astype(np.float32))
            weight = weight[None, None].to(device)
            weight = weight.expand_as(target)
            norm = weight.sum().clamp_min(1.0)

        def objective(r, target=target, weight=weight, norm=norm):
            residual = (operator(r["image"]) - target) ** 2
            loss = residual.mean() if weight is None else (residual * weight).sum() / norm
            if params.tv_weight > 0:
                loss = loss + params.tv_weight * total_variation(r["image"])
            return loss

        label = f"plane {i + 1}/{n}," if n > 1 else ""
        estimates, plane_info = yield from fit(
            [net], [z], lambda outs: {"image": outs[0]}, objective, params, iters[i],
            generator=gen, step0=step0, total=total, label=label, watch="image")
        kept = not (plane_info["stopped"] and not plane_info["meaningful"])
        if not kept and i == 0:
            raise StopRequested(too_early(plane_info, params))
        if kept:
            result = estimates["image"][0].permute(1, 2, 0).float().cpu().numpy()
            if masks is not None:  # keep the measured pixels exactly; fill only the missing ones
                keep = ~masks[planes.first + i]
                result[keep] = plane[keep]
            out["image"][i] = result
            info["stop_iterations"].append(plane_info["stop_iteration"])
            info["best_iterations"].append(plane_info["best_iteration"])
        info["planes_done"] = i + 1 if kept else i
        step0 += iters[i]
        if plane_info["stopped"]:
            info["stopped"] = True
            if info["planes_done"] < n:  # the engine returns them as they were (resized for sr)
                logger.warning("DIP stopped on plane %d/%d: %s returned unrestored", i + 1, n,
                               unrestored(info["planes_done"], n))
            break
    return MethodResult({}, info)


def _demo() -> list[dict]:
    from ..data import noisy_cells

    s = noisy_cells(size=64, sigma=0.1)
    return [{**s, "params": {"max_iter": 300, "channels": 32, "es_patience": 100}}]


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
                           "shape without C, or one Y X plane for all planes.", layer_kind="mask", when=(("task", ("inpaint",)),)),
        ExtraInput("psf", "Point-spread function (2-D) for task 'deconv'; a Gaussian of psf_sigma "
                          "when omitted.", layer_kind="image", when=(("task", ("deconv",)),)),
    ),
    scaling="percentile",
    uses_torch=True,
    demo=_demo,
    linked_planes=lambda p: ("warm_start: each plane starts from the previous plane's network (set "
                             "warm_start=False for independent planes)" if p.warm_start else ""),
    zoom_of=lambda p: p.sr_factor if p.task == "sr" else 1,
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
    Images are percentile-normalised to [0, 1] first (the network ends in a sigmoid).
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
