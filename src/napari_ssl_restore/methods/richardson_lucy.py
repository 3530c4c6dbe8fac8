"""Richardson–Lucy deconvolution, stopped by the discrepancy principle: the classical baseline.

Richardson (1972) and Lucy (1974) derived the same multiplicative iteration for an image blurred by
a known PSF ``h`` with Poisson noise; it is the EM algorithm for the Poisson likelihood:

    x ← x · Hᵀ(y / Hx),

with ``H`` the convolution with ``h`` and ``Hᵀ`` the correlation with it. Started from a flat,
positive image it stays non-negative and (``h`` summing to 1) keeps the total flux. Its iterations
first restore detail and then fit the noise, so when to stop is the method's one real choice.
Here it is the discrepancy principle (Morozov 1966): stop at the first iteration at which the
estimate explains the data to within the noise, ``‖Hx − y‖² / N ≤ tolerance · σ̄²``, where ``σ̄²``
is the mean over the plane of the Poisson-Gaussian variance ``a·Hx + b`` fitted to the image itself
(:func:`~napari_ssl_restore.physics.estimate.noise_fit`, in the normalised units the method sees),
or ``noise_sigma²`` when given. ``stop="fixed"`` runs ``max_iter`` iterations instead.

Practicalities: each plane is reflect-padded by the PSF's radius (and up to a fast FFT size) and
cropped back, so the FFT's circular convolution does not wrap the opposite edge into the image
(no edge ringing); the PSF's transfer function is computed once per plane shape. The data are
clipped at 0 for the division (the Poisson model has no negative counts; with ``scaling="range"``
zero stays zero). Each channel is deconvolved and stopped on its own. A 3-D PSF ``(Z, Y, X)`` is
reduced to its in-focus plane, the one of most energy (sum of squares), since this method works
per 2-D plane.

References: W. H. Richardson, "Bayesian-based iterative method of image restoration", JOSA 62(1),
55–59, 1972. L. B. Lucy, "An iterative technique for the rectification of observed distributions",
AJ 79(6), 745–754, 1974. V. A. Morozov, "On the solution of functional equations by the method of
regularization", Soviet Math. Dokl. 7, 414–417, 1966.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import numpy as np
from scipy import fft as sfft

from ..core.params import param
from ..core.progress import Step, StopRequested, Ticker, unrestored
from ..core.registry import ExtraInput, MethodResult, MethodSpec, Output, RunContext
from ..engine.planes import Outputs, Planes
from ..physics.operators import check_psf, gaussian_psf
from ._public import public_function

logger = logging.getLogger(__name__)

EPS = 1e-7
"""Floor of the blurred estimate in the division ``y / Hx`` (normalised units)."""


@dataclasses.dataclass(frozen=True)
class Params:
    """Richardson–Lucy settings."""

    method_title = "Richardson-Lucy"

    psf_sigma: float = param(2.0, "Std (pixels) of the Gaussian PSF used when no psf= is given.",
                             min=0.1, max=50.0, step=0.1)
    stop: Literal["discrepancy", "fixed"] = param(
        "discrepancy", "When to stop: 'discrepancy' at the first iteration whose residual "
                       "|Hx - y|²/N falls to the noise variance measured on the image (Morozov), "
                       "at most max_iter; 'fixed' after exactly max_iter iterations.",
        choices=("discrepancy", "fixed"))
    max_iter: int = param(100, "Most iterations per plane ('fixed': exactly this many).", min=1,
                          max=10000)
    tolerance: float = param(1.0, "Discrepancy: stop when the mean squared residual is at most "
                                  "this times the noise variance (above 1 stops earlier, smoother; "
                                  "below 1 later, sharper and noisier).", min=0.05, max=20.0,
                             step=0.05, when={"stop": ("discrepancy",)}, advanced=True)
    noise_sigma: float = param(0.0, "Discrepancy: the noise's standard deviation in the input's "
                                    "intensity units; 0 measures the signal-dependent noise "
                                    "(variance a·u + b) on each plane.", min=0.0, max=1e12,
                               when={"stop": ("discrepancy",)}, advanced=True)


# --- the operator --------------------------------------------------------------------------------

def in_focus_plane(psf: np.ndarray) -> tuple[np.ndarray, int | None]:
    """A 2-D PSF from the one given: a 3-D ``(Z, Y, X)`` PSF gives its plane of most energy (sum of
    squares of the non-negative part) and that plane's index; a 2-D one is returned as it is."""
    p = np.squeeze(np.asarray(psf, dtype=np.float64))
    if p.ndim != 3:
        return p, None
    energy = (np.clip(p, 0, None) ** 2).sum(axis=(1, 2))
    z = int(np.argmax(energy))
    return p[z], z


def make_psf(psf, sigma: float, hw: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """The checked, normalised 2-D PSF (the given one, or a Gaussian of ``sigma``) and what to
    record about it; a PSF larger than the plane is refused."""
    if psf is None:
        return gaussian_psf(sigma).astype(np.float64), {"psf": f"gaussian sigma={sigma:g}"}
    plane, z = in_focus_plane(psf)
    if not np.all(np.isfinite(plane)):
        raise ValueError("psf contains NaN or infinite values; replace them (e.g. with 0) first.")
    kernel = check_psf(plane).astype(np.float64)
    if kernel.shape[0] > 2 * hw[0] + 1 or kernel.shape[1] > 2 * hw[1] + 1:
        raise ValueError(f"psf of shape {kernel.shape} is larger than the image planes {hw}; "
                         "crop the PSF to its central part.")
    info: dict = {"psf": f"given {list(kernel.shape)}"}
    if z is not None:
        info["psf_plane"] = z
    return kernel, info


class Blur:
    """Convolution with a PSF on reflect-padded planes ``(C, H, W)``, by FFT.

    Planes are padded by the PSF's radius (reflect) and further, at the far side, up to a fast FFT
    size; the PSF's transfer function for that padded size is computed once.
    """

    def __init__(self, psf: np.ndarray, hw: tuple[int, int]):
        ry, rx = psf.shape[0] // 2, psf.shape[1] // 2
        h, w = hw
        size = (sfft.next_fast_len(h + 2 * ry, real=True), sfft.next_fast_len(w + 2 * rx, real=True))
        self.hw, self.size = (h, w), size
        self.pad = ((ry, size[0] - h - ry), (rx, size[1] - w - rx))
        kernel = np.zeros(size, np.float64)
        kernel[:psf.shape[0], :psf.shape[1]] = psf
        kernel = np.roll(kernel, (-ry, -rx), axis=(0, 1))  # the PSF's centre at the origin
        self.otf = sfft.rfft2(kernel).astype(np.complex64)
        self.otf_conj = np.conj(self.otf)

    def padded(self, y: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` reflect-padded to the FFT size."""
        return np.pad(y, ((0, 0), *self.pad), mode="reflect")

    def crop(self, x: np.ndarray) -> np.ndarray:
        (top, _), (left, _) = self.pad
        return x[:, top:top + self.hw[0], left:left + self.hw[1]]

    def _apply(self, x: np.ndarray, otf: np.ndarray) -> np.ndarray:
        return sfft.irfft2(sfft.rfft2(x, workers=-1) * otf, s=self.size, workers=-1) \
            .astype(np.float32, copy=False)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``Hx``: convolution with the PSF."""
        return self._apply(x, self.otf)

    def adjoint(self, x: np.ndarray) -> np.ndarray:
        """``Hᵀx``: correlation with the PSF."""
        return self._apply(x, self.otf_conj)


# --- the noise level -----------------------------------------------------------------------------

def noise_models(plane: np.ndarray, params: Params, ctx: RunContext) -> np.ndarray:
    """Per channel ``(a, b)`` of the noise variance ``a·u + b`` in normalised units: fitted on the
    plane, or ``(0, (noise_sigma / scale)²)`` when ``noise_sigma`` is set."""
    from ..physics.estimate import channel_noise_models

    try:
        return channel_noise_models([plane], params.noise_sigma, ctx.scale)
    except ValueError:
        raise ValueError(f"Richardson-Lucy: planes of {plane.shape[:2]} pixels are too small to "
                         "measure the noise; set noise_sigma (input units) or "
                         "stop='fixed'.") from None


# --- the iteration -------------------------------------------------------------------------------

def deconvolve_plane(plane: np.ndarray, op: Blur, params: Params, noise: np.ndarray | None, *,
                     step0: int, total: int, label: str, previews: bool):
    """Richardson–Lucy on one ``(H, W, C)`` plane; a generator of Steps returning ``(estimate
    (H, W, C), iterations per channel, discrepancy reached per channel, variance per channel,
    stopped, data residual)``, the last ``mean (H x̂ − y)²`` over the plane (normalised units, for
    the quality block's discrepancy check). A Stop thrown in at a Step returns the estimate so far
    (``stopped`` True)."""
    y = np.clip(np.moveaxis(plane, -1, 0), 0, None).astype(np.float32)  # (C, H, W)
    c = y.shape[0]
    yp = op.padded(y)
    x = np.empty_like(yp)
    x[:] = np.maximum(y.mean(axis=(1, 2)), EPS)[:, None, None]
    hx = op.forward(x)
    active = np.ones(c, bool)
    iters = np.zeros(c, int)
    reached = np.zeros(c, bool)
    variance = np.full(c, np.nan)
    ticker = Ticker()
    stopped = False
    for it in range(1, params.max_iter + 1):
        idx = np.flatnonzero(active)
        ratio = yp[idx] / np.maximum(hx[idx], EPS)
        x[idx] *= op.adjoint(ratio)
        hx[idx] = op.forward(x[idx])
        iters[idx] = it
        residual = None
        if noise is not None:
            fitted = op.crop(hx[idx]).astype(np.float64)
            residual = ((fitted - y[idx]) ** 2).mean(axis=(1, 2))
            var = np.maximum(noise[idx, 0][:, None, None] * fitted + noise[idx, 1][:, None, None],
                             0.0).mean(axis=(1, 2))
            variance[idx] = var
            done = residual <= params.tolerance * var
            reached[idx[done]] = True
            active[idx[done]] = False
        if not active.any():
            break
        if ticker.due():
            msg = f"{label} iteration {it}/{params.max_iter}"
            metrics = {"iteration": float(it)}
            if residual is not None:
                ratio_ = float(np.max(residual / np.maximum(variance[idx], 1e-30)))
                msg += f", residual/noise {ratio_:.3f}"
                metrics["residual_over_noise"] = ratio_
            preview = np.moveaxis(op.crop(x), 0, -1).copy() if previews else None
            try:
                yield Step(step0 + it, total, msg, preview, metrics)
            except StopRequested:
                stopped = True
                break
    data_residual = float(((op.crop(hx).astype(np.float64) - y) ** 2).mean())
    return np.moveaxis(op.crop(x), 0, -1), iters, reached, variance, stopped, data_residual


def run(planes: Planes, params: Params, ctx: RunContext, out: Outputs, psf=None):
    """Deconvolve every plane (Z, T) and channel, plane by plane; each written as it is done.

    A Stop keeps the planes done and the current plane's estimate so far; later planes are
    returned as they were.
    """
    n = len(planes)
    kernel, info = make_psf(psf, params.psf_sigma, planes.hw)
    op = Blur(kernel, planes.hw)
    discrepancy = params.stop == "discrepancy"
    total = n * params.max_iter
    iters, reached, variances, residuals = [], [], [], []
    stopped = False
    for i in range(n):
        plane = planes[i]
        noise = noise_models(plane, params, ctx) if discrepancy else None
        estimate, it, ok, var, stopped, res = yield from deconvolve_plane(
            plane, op, params, noise, step0=i * params.max_iter, total=total,
            label=f"plane {i + 1}/{n}:" if n > 1 else "", previews=ctx.previews)
        out["image"][i] = estimate
        iters.extend(int(k) for k in it)
        reached.extend(bool(r) for r in ok)
        variances.extend(float(v) for v in var)
        residuals.append(res)
        if stopped:
            info["planes_done"] = i + 1
            if i + 1 < n:
                logger.warning("Richardson-Lucy stopped on plane %d/%d: %s returned unrestored",
                               i + 1, n, unrestored(i + 1, n))
            break
        yield Step((i + 1) * params.max_iter, total, f"deconvolved plane {i + 1}/{n} in "
                   f"{int(max(it))} iterations")
    info.update(_report(iters, reached, variances, params, ctx))
    info["stopped"] = stopped
    info["data_residual"] = residuals
    return MethodResult({}, info)


def _report(iters: list[int], reached: list[bool], variances: list[float], params: Params,
            ctx: RunContext) -> dict:
    """Provenance: iterations (one number, or min/median/max over planes and channels), and for
    the discrepancy principle the noise variance (input units², median) and whether it was met."""
    if len(iters) == 1:
        info: dict = {"iterations": iters[0]}
    else:
        info = {"iterations": {"min": int(np.min(iters)), "median": float(np.median(iters)),
                               "max": int(np.max(iters))}}
    if params.stop == "discrepancy":
        info["noise_variance"] = float(np.nanmedian(variances) * ctx.scale ** 2)
        info["discrepancy_reached"] = (reached[0] if len(reached) == 1
                                       else f"{sum(reached)} of {len(reached)}")
    return info


def _demo() -> list[dict]:
    from ..data import blurred_cells

    s = blurred_cells(size=128)
    return [{"image": s["image"], "axes": "YX", "name": s["name"],
             "params": {"psf_sigma": s["psf_sigma"]}}]


SPEC = MethodSpec(
    name="richardson-lucy",
    title="Richardson-Lucy deconvolution (1972/1974), stopped by the discrepancy principle",
    task="deconvolve",
    params=Params,
    run=run,
    function="deconvolve_richardson_lucy",
    outputs=(Output("image", "The deconvolved image, same shape, axes and dtype as the input."),),
    inputs=(ExtraInput("psf", "Point-spread function: 2-D (Y, X), or 3-D (Z, Y, X) of which the "
                              "in-focus plane (most energy) is used; a Gaussian of psf_sigma when "
                              "omitted.", layer_kind="image"),),
    scaling="range",
    demo=_demo,
)

deconvolve_richardson_lucy = public_function(
    SPEC,
    summary="Deconvolve with Richardson–Lucy, stopped by the discrepancy principle.",
    notes="""
    The multiplicative update :math:`x \\leftarrow x \\cdot H^T(y / Hx)` (the EM algorithm for
    Poisson data) starts from a flat image and keeps it non-negative. With ``stop="discrepancy"``
    it ends at the first iteration with :math:`\\|Hx - y\\|^2 / N \\le \\tau\\, \\bar\\sigma^2`,
    where :math:`\\bar\\sigma^2` is the mean of the variance :math:`a\\,Hx + b` fitted to the
    plane's own noise (or ``noise_sigma``\\ ²) and :math:`\\tau` is ``tolerance``. Planes are
    reflect-padded by the PSF's radius, so the FFT convolution does not ring at the edges; data
    are clipped at 0. Each channel and each Z/T plane is deconvolved on its own; a 3-D PSF gives
    its in-focus plane.
    """,
    references="""
    .. [1] W. H. Richardson. Bayesian-Based Iterative Method of Image Restoration. JOSA 62(1),
           55-59, 1972. :DOI:`10.1364/JOSA.62.000055`
    .. [2] L. B. Lucy. An iterative technique for the rectification of observed distributions.
           The Astronomical Journal 79(6), 745-754, 1974. :DOI:`10.1086/111605`
    .. [3] V. A. Morozov. On the solution of functional equations by the method of
           regularization. Soviet Math. Dokl. 7, 414-417, 1966.
    """,
    examples="""
    >>> from napari_ssl_restore import deconvolve_richardson_lucy
    >>> from napari_ssl_restore.data import blurred_cells
    >>> sample = blurred_cells(size=64)
    >>> sharp = deconvolve_richardson_lucy(sample["image"], psf_sigma=2.0)
    >>> sharp.shape, sharp.dtype
    ((64, 64), dtype('uint16'))
    """,
)
