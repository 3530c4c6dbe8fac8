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
processed plane by plane with the network warm-started from the previous plane.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Literal

import numpy as np

from ..core.axes import as_planes, plane_maps
from ..core.params import param
from ..core.progress import Step, StopRequested, Ticker, unrestored
from ..core.registry import ExtraInput, MethodResult, MethodSpec, Output, RunContext
from ._public import public_function

logger = logging.getLogger(__name__)

TASKS = ("denoise", "inpaint", "sr", "deconv")
#: iterations per task from the paper (denoise 1800-3000, SR 2000, inpainting 5000-6000)
TASK_ITERATIONS = {"denoise": 3000, "inpaint": 5000, "sr": 2000, "deconv": 3000}


@dataclasses.dataclass(frozen=True)
class FitParams:
    """Settings of the DIP optimisation and generator, shared by every DIP-based method."""

    early_stop: bool = param(True, "Stop automatically near peak quality (running variance of the "
                                   "outputs, no ground truth needed) and return the best estimate.")
    es_window: int = param(100, "Early stopping: number of recent iterations the running variance "
                                "averages over (ES-WMV: 100).", min=2, max=10_000, advanced=True)
    es_patience: int = param(500, "Early stopping: stop once the variance has not reached a new "
                                  "minimum for this many iterations.", min=1, max=100_000, advanced=True)
    learning_rate: float = param(0.01, "Adam learning rate (paper: 0.01).", min=1e-6, max=1.0,
                                 step=0.001, advanced=True)
    reg_noise_std: float = param(1 / 30, "Std of the fresh noise added to the network input at "
                                         "every iteration (paper: 1/30 denoising, 0.03 otherwise); "
                                         "0 = off.", min=0.0, max=1.0, step=0.005, advanced=True)
    output_averaging: float = param(0.99, "Exponential moving average of the outputs (paper: "
                                          "0.99, worth ~1 dB); 0 = return the raw output.",
                                    min=0.0, max=0.9999, step=0.01, advanced=True)
    input_depth: int = param(32, "Channels of the random input code z (paper: 32).", min=1, max=512, advanced=True)
    channels: int = param(128, "Feature channels at every scale (paper: 128). 64 is ~4x faster "
                               "on a CPU at some cost in quality.", min=4, max=512, advanced=True)
    depth: int = param(5, "Number of scales of the hourglass (paper: 5).", min=1, max=8, advanced=True)
    skip_channels: int = param(4, "Channels of each skip connection (paper: 4).", min=0, max=256, advanced=True)
    upsample_mode: Literal["bilinear", "nearest"] = param(
        "bilinear", "Upsampling in the decoder (paper: bilinear).", choices=("bilinear", "nearest"), advanced=True)
    warm_start: bool = param(True, "Stacks: start each plane from the previous plane's networks "
                                   "(about 3x faster; measured ~3 dB worse on a noisy test stack, "
                                   "see README). Off: a fresh fit of max_iter per plane.")
    warm_iter_fraction: float = param(0.25, "Stacks: planes after the first start from the previous "
                                            "plane's networks and run this fraction of max_iter "
                                            "(1 = a full fit per plane).",
                                      min=0.01, max=1.0, step=0.05, advanced=True)
    preview_every: int = param(50, "Iterations between preview updates in napari.", min=1,
                               max=100_000, advanced=True)
    mixed_precision: bool = param(True, "Use bfloat16 autocast on CUDA (ignored on the CPU).", advanced=True)

    def plane_iterations(self, n: int) -> list[int]:
        """Iterations for each of ``n`` planes: the first gets ``iterations()``, warm-started ones
        ``warm_iter_fraction`` of it."""
        first = self.iterations()
        later = max(1, round(first * self.warm_iter_fraction)) if self.warm_start else first
        return [first] + [later] * (n - 1)


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


# --- operators -----------------------------------------------------------------------------------

def lanczos_kernel(factor: int, a: int = 3) -> np.ndarray:
    """1-D Lanczos-``a`` anti-aliasing kernel for downsampling by ``factor`` (length ``2 a factor``)."""
    k = 2 * a * factor
    pad_left = (k - factor) // 2
    offsets = (np.arange(k) - pad_left - (factor - 1) / 2) / factor
    w = np.sinc(offsets) * np.sinc(offsets / a)
    w[np.abs(offsets) >= a] = 0
    return (w / w.sum()).astype(np.float32)


def downsample(x, factor: int):
    """Anti-aliased downsampling of ``(N, C, H, W)`` by an integer ``factor`` (Lanczos-3, reflect)."""
    import torch
    import torch.nn.functional as F

    if factor == 1:
        return x
    k1 = torch.from_numpy(lanczos_kernel(factor)).to(x.device, x.dtype)
    k = k1.numel()
    pl = (k - factor) // 2
    pr = k - factor - pl
    c = x.shape[1]
    x = F.pad(x, (pl, pr, pl, pr), mode="reflect" if min(x.shape[-2:]) > max(pl, pr) else "replicate")
    x = F.conv2d(x, k1.view(1, 1, 1, k).expand(c, 1, 1, k), stride=(1, factor), groups=c)
    return F.conv2d(x, k1.view(1, 1, k, 1).expand(c, 1, k, 1), stride=(factor, 1), groups=c)


def gaussian_psf(sigma: float) -> np.ndarray:
    """Normalised 2-D Gaussian PSF of std ``sigma`` pixels, ``2 ceil(3 sigma) + 1`` wide."""
    r = max(1, math.ceil(3 * sigma))
    ax = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (ax / sigma) ** 2)
    psf = np.outer(g, g)
    return (psf / psf.sum()).astype(np.float32)


def check_psf(psf: np.ndarray) -> np.ndarray:
    """A usable 2-D PSF: non-negative, normalised to sum 1, odd-sized (padded if needed)."""
    psf = np.asarray(psf, dtype=np.float64)
    psf = np.squeeze(psf)
    if psf.ndim != 2:
        raise ValueError(f"psf must be a 2-D image (Y, X); got shape {psf.shape}. For a 3-D PSF, "
                         "pass its in-focus plane.")
    if (psf < 0).any() or psf.sum() <= 0:
        raise ValueError("psf must be non-negative with a positive sum; subtract the background "
                         "and clip negative values first.")
    pad = [(0, 1 - s % 2) for s in psf.shape]
    psf = np.pad(psf, pad)
    return (psf / psf.sum()).astype(np.float32)


def blur(x, psf):
    """Convolve ``(N, C, H, W)`` with a ``(kh, kw)`` PSF tensor (reflect padding, per channel)."""
    import torch.nn.functional as F

    c = x.shape[1]
    kh, kw = psf.shape
    mode = "reflect" if min(x.shape[-2:]) > max(kh, kw) // 2 else "replicate"
    x = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode=mode)
    return F.conv2d(x, psf.flip(0, 1).view(1, 1, kh, kw).expand(c, 1, kh, kw), groups=c)


def total_variation(x):
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


class VarianceEarlyStop:
    """Early stopping from the running variance of the outputs (after ES-EMV, Wang et al. 2021).

    Keeps an exponentially weighted mean and variance of the recent outputs (constant memory); the
    variance falls while the network fits structure and rises once it starts fitting noise. The
    estimate at the variance's minimum is kept; the fit stops after ``patience`` iterations without a
    new minimum.
    """

    def __init__(self, window: int, patience: int):
        self.alpha = 2.0 / (window + 1)
        self.window = window
        self.patience = patience
        self.mean = None
        self.var = 0.0
        self.best_var = math.inf
        self.best_iter = -1
        self.best = None

    def update(self, it: int, output, estimate) -> bool:
        """Feed iteration ``it``'s raw ``output``; ``estimate`` is what to keep if it is the best."""
        if self.mean is None:
            self.mean = output.detach().clone()
            return False
        delta = output.detach() - self.mean
        self.mean.add_(delta, alpha=self.alpha)
        self.var = (1 - self.alpha) * (self.var + self.alpha * float(delta.pow(2).mean()))
        if it >= self.window and self.var < self.best_var:
            self.best_var, self.best_iter = self.var, it
            self.best = ({k: v.detach().clone() for k, v in estimate.items()}
                         if isinstance(estimate, dict) else estimate.detach().clone())
        return self.best_iter >= 0 and it - self.best_iter > self.patience


# --- the optimisation loop (reused by Double-DIP) ------------------------------------------------

def make_net(params: FitParams, out_channels: int, device, *, sigmoid: bool = True):
    from ..nets.skip import SkipNet

    return SkipNet(params.input_depth, out_channels, params.channels, params.depth,
                   params.skip_channels, params.upsample_mode, sigmoid=sigmoid).to(device)


def make_code(params: FitParams, shape: tuple[int, int], generator, device):
    """The fixed random input ``z``: uniform noise scaled by 0.1, as in the paper."""
    import torch

    z = torch.rand((1, params.input_depth) + tuple(shape), generator=generator, device=device) * 0.1
    return z.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else z


def fit(nets, codes, render, objective, params: FitParams, iterations: int, *, generator,
        step0: int, total: int, label: str, watch: str, extra_parameters=(), preview_keys=()):
    """The DIP optimisation loop, for one or several generators; a generator of Steps.

    Each iteration feeds every ``nets[k]`` its code ``codes[k]`` (plus fresh ``reg_noise_std`` noise),
    ``render`` turns their outputs into named tensors, ``objective`` turns those into the loss, and
    Adam updates the networks (and ``extra_parameters``). Every rendered tensor is averaged over
    iterations (``output_averaging``); early stopping watches the running variance of
    ``rendered[watch]``. Previews show ``rendered[watch]``, or a dict of the ``preview_keys``
    tensors when given. Returns ``(estimates, info)``: the averaged tensors (at the variance minimum
    when early stopping is on), and ``{"stop_iteration", "best_iteration", "stopped", "final_loss"}``.
    A :class:`StopRequested` thrown in at a yield ends the fit and returns the best estimates so far.
    """
    import torch

    device = codes[0].device
    amp = params.mixed_precision and device.type == "cuda"
    trainable = [p for net in nets for p in net.parameters()] + list(extra_parameters)
    opt = torch.optim.Adam(trainable, lr=params.learning_rate)
    es = VarianceEarlyStop(params.es_window, params.es_patience) if params.early_stop else None
    avg: dict | None = None
    it, stopped, loss_value = 0, False, float("nan")
    ticker = Ticker()
    try:
        for it in range(1, iterations + 1):
            opt.zero_grad(set_to_none=True)
            outs = []
            for net, z in zip(nets, codes):
                if params.reg_noise_std > 0:
                    z = z + params.reg_noise_std * torch.randn(z.shape, generator=generator,
                                                               device=device, dtype=z.dtype)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                    outs.append(net(z).float())
            rendered = render(outs)
            loss = objective(rendered)
            loss.backward()
            opt.step()
            with torch.no_grad():
                if avg is None or params.output_averaging == 0:
                    avg = {k: v.detach().clone() for k, v in rendered.items()}
                else:
                    for k, v in rendered.items():
                        avg[k].mul_(params.output_averaging).add_(
                            v.detach(), alpha=1 - params.output_averaging)
                done = es is not None and es.update(it, rendered[watch], avg)
            preview_due = it % params.preview_every == 0
            if ticker.due() or preview_due or it == iterations or done:
                loss_value = float(loss.detach())
                preview = None
                if preview_due:
                    def show(t):
                        return t[0].permute(1, 2, 0).float().cpu().numpy()

                    preview = ({k: show(avg[k]) for k in preview_keys} if preview_keys
                               else show(avg[watch]))
                best = f", best@{es.best_iter}" if es is not None and es.best_iter >= 0 else ""
                yield Step(step0 + it, total, f"{label} iter {it}/{iterations}, loss "
                                              f"{loss_value:.3e}{best}".strip(), preview,
                           {"loss": loss_value, "iteration": it,
                            "es_variance": es.var if es is not None else float("nan")})
            if done:
                break
    except StopRequested:
        stopped = True
    best_found = es is not None and es.best is not None
    estimates = es.best if best_found else avg
    # an estimate worth keeping: early stopping has a best, or (without it) a window of iterations
    meaningful = best_found or (es is None and it >= min(params.es_window, iterations))
    return estimates, {"stop_iteration": it, "best_iteration": es.best_iter if best_found else it,
                       "stopped": stopped, "final_loss": loss_value, "meaningful": meaningful}


def too_early(plane_info: dict, params: FitParams) -> str:
    """Why a fit stopped at its first plane has nothing to keep (the Stop's message)."""
    needed = (f"early stopping keeps its first estimate after {params.es_window} iterations"
              if params.early_stop else f"an estimate needs {params.es_window} iterations")
    return (f"Stopped at iteration {plane_info['stop_iteration']}, before a usable estimate "
            f"({needed}); nothing was kept.")


# --- the generator -------------------------------------------------------------------------------

def run(image: np.ndarray, params: Params, ctx: RunContext, mask=None, psf=None):
    """Fit one DIP per plane of a canonical ``[T][Z]YXC`` image (warm-started across planes)."""
    import torch

    from ..core.device import resolve_device

    device = resolve_device(ctx.device)
    planes = as_planes(image)
    n, h, w, c = planes.shape
    task = params.task
    if task == "inpaint" and mask is None:
        raise ValueError("DIP inpainting needs a mask (nonzero = missing pixels): pass mask= (API), "
                         "--mask FILE (CLI) or pick a Labels/Shapes layer (napari).")
    masks = None
    if task == "inpaint":
        m = np.asarray(mask) != 0
        if m.ndim == image.ndim and m.shape[:-1] == image.shape[:-1]:  # a mask with channels
            m = m.any(axis=-1)
        masks = plane_maps(m, image.shape, name="mask",
                           hint="draw the mask on a layer of the same size.")
    if masks is not None and masks.all():
        raise ValueError("the mask marks every pixel as missing; nothing is left to fit.")
    kernel = None
    if task == "deconv":
        kernel = torch.from_numpy(check_psf(psf) if psf is not None
                                  else gaussian_psf(params.psf_sigma)).to(device)
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

    torch.manual_seed(ctx.seed)
    gen = torch.Generator(device=device).manual_seed(ctx.seed)
    net = make_net(params, c, device)
    z = make_code(params, (out_h, out_w), gen, device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    iters = params.plane_iterations(n)
    total = sum(iters)
    result = np.empty((n, out_h, out_w, c), np.float32)
    info: dict = {"stop_iterations": [], "best_iterations": [], "stopped": False,
                  "planes_done": 0, "zoom": zoom, "device": str(device)}
    step0 = 0
    for i in range(n):
        if i > 0 and not params.warm_start:  # a fresh generator for every plane
            net = make_net(params, c, device)
            if device.type == "cuda":
                net = net.to(memory_format=torch.channels_last)
        target = torch.from_numpy(np.ascontiguousarray(planes[i].transpose(2, 0, 1)))[None].to(device)
        weight = norm = None
        if masks is not None:
            weight = torch.from_numpy((~masks[i]).astype(np.float32))[None, None].to(device)
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
            result[i] = estimates["image"][0].permute(1, 2, 0).float().cpu().numpy()
            info["stop_iterations"].append(plane_info["stop_iteration"])
            info["best_iterations"].append(plane_info["best_iteration"])
        info["planes_done"] = i + 1 if kept else i
        step0 += iters[i]
        if plane_info["stopped"]:
            info["stopped"] = True
            done = info["planes_done"]
            for j in range(done, n):  # not restored: the input (bicubic-resized for 'sr')
                if zoom == 1:
                    result[j] = planes[j]
                    continue
                rest = torch.from_numpy(np.ascontiguousarray(planes[j].transpose(2, 0, 1)))[None]
                rest = torch.nn.functional.interpolate(rest, scale_factor=zoom, mode="bicubic")
                lo, hi = float(planes[j].min()), float(planes[j].max())  # no bicubic overshoot
                result[j] = rest[0].permute(1, 2, 0).clamp(lo, hi).numpy()
            if done < n:
                logger.warning("DIP stopped on plane %d/%d: %s returned unrestored", i + 1, n,
                               unrestored(done, n))
            break
    if masks is not None:  # keep the measured pixels exactly; fill only the missing ones
        keep = ~masks.reshape(n, h, w)
        result[keep] = planes[keep]
    lead = image.shape[:-3]
    return MethodResult({"image": result.reshape(lead + (out_h, out_w, c))}, info)


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
