"""Classical denoising with its strength calibrated on the data itself: the baselines to beat.

Four well-tried denoisers, each run with one setting tied to the noise level ``σ`` measured on the
image (:func:`~napari_ssl_restore.physics.estimate.noise_fit`, the standard deviation at the median
intensity of the signal-dependent model ``a·u + b``, in the normalised units the method sees):

- ``"nl-means"``: non-local means (Buades, Coll & Morel, CVPR 2005; scikit-image's fast mode),
  filtering parameter ``h = 0.8 · strength · σ`` with ``σ`` given (scikit-image's advice,
  ``h ≈ 0.8 σ``, is strength 1);
- ``"wavelet"``: BayesShrink soft thresholding of the wavelet coefficients (Chang, Yu & Vetterli,
  IEEE TIP 2000), noise ``strength · σ``;
- ``"tv"``: total-variation denoising (Rudin, Osher & Fatemi 1992; Chambolle's projection, 2004),
  ``weight = strength · σ``;
- ``"bm3d"``: block matching and 3-D filtering (Dabov, Foi, Katkovnik & Egiazarian, IEEE TIP 2007),
  ``sigma_psd = strength · σ``, from the optional ``bm3d`` package
  (``pip install "napari-ssl-restore[bm3d]"``; its licence allows non-commercial use only).

With ``calibrate`` (the default) the strength is picked from ``strength × (0.5, 0.7, 1, 1.4, 2)``
by the self-supervised J-invariant loss (Batson & Royer, ICML 2019,
:func:`~napari_ssl_restore.engine.judge.j_invariant_loss`) on a central crop of at most 256² of up
to 3 planes spread over the stack, and then every plane is denoised with it. The loss estimates
the mean squared error against the unknown clean image (plus the noise variance), for noise
independent between pixels. It judges the denoiser run with a grid of pixels hidden, each replaced
by the mean of its four neighbours; that mean carries a quarter of the noise variance, so weak
settings would pass it through and look better than they are (wavelets: the weakest strength,
4 dB below the best, on our fields). Here the hidden pixels get fresh noise of the missing three
quarters (from the fitted ``a·u + b``) before the denoiser sees them (``noise_variance`` of
:func:`~napari_ssl_restore.engine.judge.j_invariant_loss`): fresh noise
is independent of the pixels' own, so the loss keeps its meaning, and the pick lands within
0.25 dB of the grid's best on our synthetic fields.

No variance-stabilising transform is applied: Poisson-Gaussian noise is treated as Gaussian of its
median level, and the calibration adapts the strength to it. Channels (RGB) are denoised jointly
(BM3D: channel by channel).
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable
from typing import Literal

import numpy as np

from ..core.params import param
from ..core.progress import Step, StopRequested, unrestored
from ..core.registry import MethodResult, MethodSpec, Output, RunContext
from ..engine.judge import j_invariant_loss
from ..engine.planes import Outputs, Planes
from ..engine.predict import centre_crop
from ._public import public_function

logger = logging.getLogger(__name__)

ALGORITHMS = ("nl-means", "wavelet", "tv", "bm3d")
GRID = (0.5, 0.7, 1.0, 1.4, 2.0)
"""Multipliers of ``strength`` that calibration tries."""
CROP = 256
"""Side of the central crop of each sampled plane that calibration and the noise estimate see."""
CALIBRATION_PLANES = 3
NLM_H = 0.8
"""NL-means ``h`` per unit of strength and σ (scikit-image's advice for the fast mode)."""
BM3D_HINT = ('BM3D needs the optional bm3d package: pip install "napari-ssl-restore[bm3d]" '
             "(licensed for non-commercial use only), or pick algorithm='nl-means', 'wavelet' "
             "or 'tv'.")


@dataclasses.dataclass(frozen=True)
class Params:
    """Classical denoising settings."""

    method_title = "Classical denoising"

    algorithm: Literal["nl-means", "wavelet", "tv", "bm3d"] = param(
        "nl-means", "The denoiser: 'nl-means' (Buades et al. 2005), 'wavelet' (BayesShrink, Chang "
                    "et al. 2000), 'tv' (total variation, Chambolle 2004) or 'bm3d' (Dabov et "
                    "al. 2007; needs pip install \"napari-ssl-restore[bm3d]\", and the bm3d "
                    "package's licence allows non-commercial use only).", choices=ALGORITHMS)
    strength: float = param(1.0, "Denoising strength, a multiple of the noise level measured on the "
                                 "image (sets NL-means' h, the wavelet's sigma, TV's weight, "
                                 "BM3D's sigma_psd); with calibrate, the centre of the grid tried "
                                 "(0.5 to 2 times it).", min=0.05, max=20.0, step=0.05)
    calibrate: bool = param(True, "Pick the strength from 0.5-2 times `strength` by the "
                                  "self-supervised J-invariant loss (Batson & Royer 2019) on up "
                                  "to 3 planes; off uses `strength` as it is.")
    passes: int = param(2, "Calibration: hidden-pixel grids per candidate strength (of 16); more "
                           "is steadier and slower.", min=1, max=16, advanced=True,
                        when={"calibrate": (True,)})
    noise_sigma: float = param(0.0, "The noise's standard deviation in the input's intensity "
                                    "units; 0 measures it on the image.", min=0.0, max=1e12,
                               advanced=True)
    patch_size: int = param(5, "NL-means: side of the compared patches, in pixels.", min=3,
                            max=21, advanced=True, when={"algorithm": ("nl-means",)})
    patch_distance: int = param(6, "NL-means: how far (pixels) to search for similar patches; "
                                   "larger is slower.", min=1, max=50, advanced=True,
                                when={"algorithm": ("nl-means",)})


# --- the denoisers -------------------------------------------------------------------------------

class MissingExtra(ImportError, ValueError):
    """An optional package a setting needs is not installed (a ValueError too, so the CLI reports
    it as a bad setting: one line, exit status 2)."""


def load_bm3d():
    """The ``bm3d`` module, or a :class:`MissingExtra` error that says how to install it."""
    try:
        return importlib.import_module("bm3d")
    except ImportError:
        raise MissingExtra(BM3D_HINT) from None


def denoiser(params: Params, sigma: float) -> Callable[[np.ndarray, float], np.ndarray]:
    """``f(plane (H, W, C), strength) -> plane``: the chosen algorithm with its parameter set from
    ``strength · sigma`` (normalised units)."""
    from skimage import restoration as sk

    def joint(x: np.ndarray):
        return (x[..., 0], None) if x.shape[-1] == 1 else (x, -1)

    def shaped(out, x):
        return np.asarray(out, np.float32).reshape(x.shape)

    if params.algorithm == "nl-means":
        def f(x, s):
            img, axis = joint(x)
            return shaped(sk.denoise_nl_means(img, h=NLM_H * s * sigma, sigma=sigma,
                                              patch_size=params.patch_size,
                                              patch_distance=params.patch_distance,
                                              fast_mode=True, channel_axis=axis), x)
    elif params.algorithm == "wavelet":
        def f(x, s):
            img, axis = joint(x)
            return shaped(sk.denoise_wavelet(img, sigma=s * sigma, method="BayesShrink",
                                             mode="soft", rescale_sigma=True,
                                             channel_axis=axis), x)
    elif params.algorithm == "tv":
        def f(x, s):
            img, axis = joint(x)
            return shaped(sk.denoise_tv_chambolle(img, weight=s * sigma, channel_axis=axis), x)
    else:
        bm3d = load_bm3d()

        def f(x, s):
            return np.stack([np.asarray(bm3d.bm3d(x[..., k], sigma_psd=s * sigma), np.float32)
                             for k in range(x.shape[-1])], axis=-1)
    return f


# --- noise and calibration -----------------------------------------------------------------------

def noise_models(crops: list[np.ndarray], params: Params, ctx: RunContext) -> np.ndarray:
    """Per channel ``(a, b)`` of the noise variance ``a·u + b`` in normalised units: fitted on the
    crops, or ``(0, (noise_sigma / scale)²)`` when ``noise_sigma`` is set."""
    from ..physics.estimate import channel_noise_models

    try:
        return channel_noise_models(crops, params.noise_sigma, ctx.scale)
    except ValueError:
        raise ValueError(f"Classical denoising: planes of {crops[0].shape[:2]} pixels are too "
                         "small to measure the noise; set noise_sigma (input units).") from None


def noise_level(crops: list[np.ndarray], models: np.ndarray) -> float:
    """σ in normalised units: the root mean square over channels of the noise std at the median
    intensity of the crops."""
    from ..physics.estimate import variance_at_median

    sigma = float(np.sqrt(np.mean(variance_at_median(crops, models))))
    if sigma <= 0:
        raise ValueError("Classical denoising: no noise was measured on the image; set "
                         "noise_sigma (input units) if it is noisy.")
    return sigma


def calibrate(crops: list[np.ndarray], f, models: np.ndarray, params: Params, seed: int):
    """A generator of Steps returning ``(strength, grid, losses)``: the strength of the grid with
    the least J-invariant loss summed over the crops (each candidate sees the same fresh noise)."""
    grid = [round(params.strength * g, 6) for g in GRID]
    losses = []
    def variance(u: np.ndarray) -> np.ndarray:
        return models[:, 0] * u + models[:, 1]

    for k, s in enumerate(grid, 1):
        losses.append(sum(j_invariant_loss(c, lambda x, s=s: f(x, s), passes=params.passes,
                                           noise_variance=variance, seed=seed + n)
                          for n, c in enumerate(crops)))
        yield Step(k, len(grid), f"calibrating: strength {s:g} ({k}/{len(grid)})")
    return grid[int(np.argmin(losses))], grid, losses


# --- the generator -------------------------------------------------------------------------------

def run(planes: Planes, params: Params, ctx: RunContext, out: Outputs):
    """Measure the noise, calibrate the strength on up to 3 planes of the whole stack, then
    denoise every plane; one Step per candidate strength and per plane. A Stop during
    calibration ends the run with nothing; later it keeps the planes done."""
    if params.algorithm == "bm3d":
        load_bm3d()  # fail before any work
    n = len(planes)
    whole = planes.whole  # a chunk of a stack uses the whole stack's noise and strength
    picks = whole.source.sample_indices(CALIBRATION_PLANES)
    crops = [centre_crop(whole[i], CROP) for i in picks]
    models = noise_models(crops, params, ctx)
    sigma = noise_level(crops, models)
    f = denoiser(params, sigma)
    info: dict = {"algorithm": params.algorithm, "noise_sigma": sigma * ctx.scale}
    strength = params.strength
    steps = n
    if params.calibrate and min(crops[0].shape[:2]) >= 8:
        cal = calibrate(crops, f, models, params, ctx.seed)
        steps += len(GRID)
        try:
            while True:
                step = next(cal)
                yield Step(step.step, steps, step.message)
        except StopIteration as done:
            strength, grid, losses = done.value
        info["calibration"] = {"strengths": grid, "losses": [v / len(crops) * ctx.scale ** 2
                                                             for v in losses],
                               "planes": len(crops)}
    info["strength"] = strength
    first = steps - n
    for i in range(n):
        out["image"][i] = f(planes[i], strength)
        try:
            yield Step(first + i + 1, steps, f"denoised plane {i + 1}/{n}")
        except StopRequested:
            if i + 1 < n:
                info["stopped"] = True
                logger.warning("Classical denoising stopped after plane %d/%d: %s returned "
                               "undenoised", i + 1, n, unrestored(i + 1, n))
                break
    return MethodResult({}, info)


def _demo() -> list[dict]:
    from ..data import noisy_cells

    return [{**noisy_cells(size=128, sigma=0.1), "params": {}}]


SPEC = MethodSpec(
    name="classic-denoise",
    title="Classical denoising (NL-means, wavelet, TV, BM3D), strength calibrated on the data",
    task="denoise",
    params=Params,
    run=run,
    function="denoise_classic",
    outputs=(Output("image", "The denoised image, same shape, axes and dtype as the input."),),
    scaling="range",
    demo=_demo,
)

denoise_classic = public_function(
    SPEC,
    summary="Denoise with NL-means, wavelets, TV or BM3D, the strength calibrated on the image.",
    notes="""
    The noise level :math:`\\sigma` is measured on the image (Poisson-Gaussian fit, its standard
    deviation at the median intensity). Each algorithm's own parameter is ``strength`` times it
    (NL-means: :math:`h = 0.8\\,s\\,\\sigma`). With ``calibrate`` the strength :math:`s` minimises
    the J-invariant loss :math:`\\|f_J(y) - y\\|^2` over ``strength * (0.5, 0.7, 1, 1.4, 2)``,
    where :math:`f_J` is the denoiser run with a grid of pixels hidden (each replaced by the
    mean of its four neighbours) and read at those pixels; for pixel-independent noise its
    expectation is the error against the clean image plus :math:`\\sigma^2`. It runs on a
    central 256² crop of up to 3 planes; every plane is then denoised with the chosen strength.
    BM3D comes from the optional ``bm3d`` package (non-commercial licence).
    """,
    references="""
    .. [1] A. Buades, B. Coll, J.-M. Morel. A non-local algorithm for image denoising. CVPR 2005.
    .. [2] S. G. Chang, B. Yu, M. Vetterli. Adaptive wavelet thresholding for image denoising and
           compression. IEEE TIP 9(9), 2000.
    .. [3] L. I. Rudin, S. Osher, E. Fatemi. Nonlinear total variation based noise removal
           algorithms. Physica D 60, 1992. A. Chambolle. An algorithm for total variation
           minimization and applications. J. Math. Imaging Vis. 20, 2004.
    .. [4] K. Dabov, A. Foi, V. Katkovnik, K. Egiazarian. Image denoising by sparse 3-D
           transform-domain collaborative filtering. IEEE TIP 16(8), 2007.
    .. [5] J. Batson, L. Royer. Noise2Self: Blind Denoising by Self-Supervision. ICML 2019.
    """,
    examples="""
    >>> from napari_ssl_restore import denoise_classic
    >>> from napari_ssl_restore.data import noisy_cells
    >>> noisy = noisy_cells(size=64, sigma=0.1)["image"]
    >>> denoise_classic(noisy, algorithm="tv").shape
    (64, 64)
    """,
)
