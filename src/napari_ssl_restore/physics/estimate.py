"""What an image is like, from the image alone: noise model, blur width, haze, pair and time statistics.

Pure numpy/scipy estimators behind :func:`napari_ssl_restore.analyse` (they take 2-D float planes,
already cropped; none of them reads files or imports a front end).

* :func:`noise_fit` — signal-dependent noise ``var(u) = a·u + b`` from one image, in the spirit of
  Foi, Trimeche, Katkovnik & Egiazarian, "Practical Poissonian-Gaussian noise modeling and fitting
  for single-image raw-data", IEEE TIP 17(10), 2008: a high-pass residual with unit noise gain,
  local means and variances on blocks, the smoothest blocks only, and a robust line fit.
* :func:`blur_width` — a Gaussian-equivalent PSF width from the fall-off of the radially averaged
  power spectrum above the noise floor.
* :func:`haze_score` — dark-channel statistics (He, Sun & Tang, CVPR 2009).
* :func:`pair_stats`, :func:`similarity` — registration and noise independence of two acquisitions,
  correlation of consecutive frames.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy import stats

IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64) / 6.0
"""Immerkær's (1996) noise-estimation kernel, scaled to unit noise gain (sum of squares 1): it
annihilates constant and linear intensity, so on smooth regions its output is the noise alone."""
WHITE_LAG1 = -4.0 / 6.0
"""Lag-1 autocorrelation (either axis) of :data:`IMMERKAER`'s output for white noise:
``Σ k(i, j)·k(i, j+1) / Σ k² = -24/36``."""
CORRELATION_THRESHOLD = 0.15
"""Noise is reported correlated when the residual's lag-1 autocorrelation differs from
:data:`WHITE_LAG1` by more than this (either axis). Gaussian-filtered noise of width 0.5 px already
moves it by about 0.3; sampling scatter on a 256² crop is below 0.02."""
BLOCK = 8
"""Side of the blocks on which local means and variances are taken (64 residual samples)."""
SMOOTH_FRACTION = 0.5
"""Share of blocks (within each intensity bin) kept as smooth: those of least gradient energy."""
BINS = 12
"""Intensity bins (equal counts) of the variance-versus-mean fit."""
BLUR_MIN = 1.0
"""A fitted Gaussian PSF narrower than this (px) is reported as no blur: a well-sampled image
(Nyquist) already has a PSF of about this width, and deconvolution has little to recover there."""


def residual(plane: np.ndarray) -> np.ndarray:
    """The unit-gain high-pass residual of a 2-D plane (valid part: 2 pixels smaller per axis)."""
    return ndi.correlate(np.asarray(plane, np.float64), IMMERKAER, mode="reflect")[1:-1, 1:-1]


def _blocks(x: np.ndarray, size: int) -> np.ndarray:
    """``(n, size²)`` non-overlapping blocks of a 2-D array (edges cut)."""
    h, w = (x.shape[0] // size) * size, (x.shape[1] // size) * size
    return x[:h, :w].reshape(h // size, size, w // size, size).swapaxes(1, 2).reshape(-1, size * size)


def block_stats(plane: np.ndarray, size: int = BLOCK) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                               np.ndarray]:
    """Per block of a 2-D plane: intensity mean, residual variance, gradient energy of the
    1-px-smoothed plane (structure), and residual lag-1 products ``(x, y)`` summed over the block
    (for the autocorrelation) — the last as a ``(n, 3)`` array ``[Σ r_x r_x+1, Σ r_y r_y+1, n]``."""
    p = np.asarray(plane, np.float64)
    r = residual(p)
    inner = p[1:-1, 1:-1]
    smooth = ndi.gaussian_filter(inner, 1.0)
    gy, gx = np.gradient(smooth)
    rb = _blocks(r, size)
    mean = _blocks(inner, size).mean(axis=1)
    var = rb.var(axis=1, ddof=1)
    energy = _blocks(gx * gx + gy * gy, size).mean(axis=1)
    lx = np.zeros_like(r)
    lx[:, :-1] = r[:, :-1] * r[:, 1:]
    ly = np.zeros_like(r)
    ly[:-1] = r[:-1] * r[1:]
    lag = np.stack([_blocks(lx, size).sum(axis=1), _blocks(ly, size).sum(axis=1),
                    (rb * rb).sum(axis=1)], axis=1)
    return mean, var, energy, lag


def noise_fit(planes: list[np.ndarray]) -> dict:
    """Fit ``var(u) = a·u + b`` (the input's units) to 2-D planes of one image.

    Blocks of :data:`BLOCK`² pixels give a local mean (of the image) and a variance (of the
    :func:`residual`); the blocks are split into :data:`BINS` intensity bins of equal count and, in
    each, the :data:`SMOOTH_FRACTION` of least gradient energy are kept (edges and texture leak into
    the residual; noise does not depend on them). Each bin gives its median mean and its median
    variance (divided by the χ² median-to-mean ratio for the block's degrees of freedom, so a bin
    of pure noise is unbiased); the line is fitted to the bins with Theil–Sen. ``a`` is kept when
    the 95 % lower bound of the Theil–Sen slope is above zero and the signal-dependent part
    ``a·median`` is at least 10 % of the variance there (``model = "poisson-gaussian"``); otherwise
    the model is Gaussian with ``b`` the median of the bin variances.

    Limits: clipping at 0 or saturation biases the end bins (reported separately as ``clipped``);
    a sharp image without smooth regions over-estimates the noise; correlated noise is
    under-estimated (the high-pass filter removes its low frequencies) and is flagged by
    ``correlated`` (lag-1 autocorrelation of the residual against :data:`WHITE_LAG1`, threshold
    :data:`CORRELATION_THRESHOLD`).
    """
    stats_ = [block_stats(p) for p in planes if min(p.shape) >= BLOCK + 2]
    if not stats_:
        raise ValueError(f"the image is too small to estimate noise; give planes of at least "
                         f"{BLOCK + 2}x{BLOCK + 2} pixels.")
    mean = np.concatenate([s[0] for s in stats_])
    var = np.concatenate([s[1] for s in stats_])
    energy = np.concatenate([s[2] for s in stats_])
    lag = np.concatenate([s[3] for s in stats_])
    order = np.argsort(mean, kind="stable")
    bins = np.array_split(order, min(BINS, max(len(order) // 4, 1)))
    df = BLOCK * BLOCK - 1
    unbias = df / stats.chi2.median(df)
    mu, v, keep = [], [], []
    for idx in bins:
        if idx.size == 0:
            continue
        sel = idx[energy[idx] <= np.quantile(energy[idx], SMOOTH_FRACTION)]
        mu.append(float(np.median(mean[sel])))
        v.append(float(np.median(var[sel])) * unbias)
        keep.append(sel)
    mu_a, v_a = np.asarray(mu), np.asarray(v)
    med = float(np.median(mean))
    a, b = 0.0, float(np.median(v_a))
    if len(mu_a) >= 3 and np.ptp(mu_a) > 0:
        slope, intercept, low, _high = stats.theilslopes(v_a, mu_a, 0.95)
        if low > 0 and slope * med >= 0.1 * (slope * med + intercept):
            a, b = float(slope), float(intercept)
    sel_all = np.concatenate(keep)
    s = lag[sel_all].sum(axis=0)
    rho = (s[0] / s[2], s[1] / s[2]) if s[2] > 0 else (WHITE_LAG1, WHITE_LAG1)
    correlated = bool(max(abs(r - WHITE_LAG1) for r in rho) > CORRELATION_THRESHOLD)
    sigma = float(np.sqrt(max(a * med + b, 0.0)))
    return {"model": "poisson-gaussian" if a > 0 else "gaussian", "a": a, "b": b, "sigma": sigma,
            "correlated": correlated, "lag1": [float(rho[0]), float(rho[1])]}


def channel_noise_models(planes: list[np.ndarray], noise_sigma: float = 0.0,
                         scale: float = 1.0) -> np.ndarray:
    """Per channel ``(a, b)`` of the noise variance ``a·u + b`` of ``(H, W, C)`` planes in their
    units: :func:`noise_fit` on each channel, or ``(0, (noise_sigma / scale)²)`` for every channel
    when a user gave ``noise_sigma`` (input units; ``scale`` maps them to the planes'). Raises
    ``ValueError`` when the planes are too small to measure the noise."""
    c = planes[0].shape[-1]
    if noise_sigma > 0:
        return np.tile([0.0, (noise_sigma / scale) ** 2], (c, 1))
    models = np.empty((c, 2))
    for k in range(c):
        fit = noise_fit([p[..., k] for p in planes])
        models[k] = fit["a"], fit["b"]
    return models


def variance_at_median(planes: list[np.ndarray], models: np.ndarray) -> np.ndarray:
    """Per channel, the noise variance ``a·u + b`` (:func:`channel_noise_models`) at the median
    intensity ``u`` of ``(H, W, C)`` planes, clipped at 0: one Gaussian level per channel."""
    med = [float(np.median(np.concatenate([p[..., k].ravel() for p in planes])))
           for k in range(len(models))]
    return np.array([max(a * m + b, 0.0) for (a, b), m in zip(models, med, strict=True)])


def radial_spectrum(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a Hann-windowed 2-D plane: ``(k, P(k))``, ``k`` in
    cycles/pixel (0 < k ≤ 0.5), normalised so white noise of variance v has ``P ≈ v``."""
    p = np.asarray(plane, np.float64)
    p = p - p.mean()
    h, w = p.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    f = np.abs(np.fft.fft2(p * win)) ** 2 / (win * win).sum()
    ky, kx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    k = np.hypot(ky, kx)
    step = 1.0 / min(h, w)
    ring = np.rint(k / step).astype(int)
    n = int(0.5 / step)
    counts = np.bincount(ring.ravel(), minlength=n + 1)[1:n + 1]
    sums = np.bincount(ring.ravel(), f.ravel(), minlength=n + 1)[1:n + 1]
    good = counts > 0
    return (np.arange(1, n + 1) * step)[good], (sums / np.maximum(counts, 1))[good]


def blur_width(planes: list[np.ndarray], noise_variance: float,
               minimum: float = BLUR_MIN) -> float | None:
    """Gaussian-equivalent PSF sigma (px) of 2-D planes, or None when not blurred beyond
    ``minimum`` (:data:`BLUR_MIN`; 0 reads a sharp field's own width, as the benchmark does).

    Model of the radially averaged power spectrum: ``P(k) = c·k^-α·exp(-4π²σ²k²) + N`` (a scene
    with a power-law spectrum, a Gaussian OTF squared, white noise of variance ``N``). ``N`` comes
    from the noise fit; ``log(P − N)`` is fitted by least squares on ``[1, log k, k²]`` over the
    frequencies where ``P > 4N`` (the signal stands clear of the noise) and ``k ≥ 0.02`` (clear of
    the window's leakage around DC). Limits: correlated noise, strong periodic structure or a scene
    far from a power law bias the width; a non-Gaussian PSF gets its Gaussian-equivalent width.
    """
    ks, ps = [], []
    for plane in planes:
        k, p = radial_spectrum(plane)
        ks.append(k)
        ps.append(p)
    n = min(len(k) for k in ks)
    k = ks[0][:n]
    p = np.median(np.stack([q[:n] for q in ps]), axis=0)
    floor = max(noise_variance, 1e-12 * float(p.max()))
    use = (k >= 0.02) & (p > 4 * floor)
    # stop at the first frequency where the signal sinks into the noise: beyond it P - N is noise
    below = np.flatnonzero((k >= 0.02) & ~use)
    if below.size:
        use &= k < k[below[0]]
    if use.sum() < 5:
        return None
    y = np.log(p[use] - floor)
    design = np.stack([np.ones(use.sum()), np.log(k[use]), k[use] ** 2], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    s2 = -coef[2] / (4 * np.pi ** 2)
    if not np.isfinite(s2) or s2 <= minimum ** 2:
        return None
    return float(np.sqrt(s2))


def haze_score(planar: np.ndarray, patch_size: int = 15) -> dict:
    """Haze from the dark channel of a ``(C, H, W)`` plane scaled to [0, 1].

    He et al. (2009) observed that in haze-free scenes most patches hold a pixel near 0 in some
    channel; haze lifts this dark channel towards the airlight ``A``. The score is the median dark
    channel over the airlight's mean, clipped to [0, 1]: about 0 for a clear image, about 1 for a
    scene lost in haze. Limits: the prior is about colour; with one channel the dark channel is a
    plain minimum filter, so a bright background (a grey sky, a fluorescence offset) reads as haze.
    The score is a ratio, so the plane's scale does not matter.
    """
    from .haze import dark_channel, estimate_airlight

    x = np.asarray(planar, np.float32)
    dark = dark_channel(x, min(patch_size, *x.shape[1:]))
    air = estimate_airlight(x, dark, 0.001)
    level = float(np.mean(air))
    score = float(np.clip(np.median(dark) / level, 0.0, 1.0)) if level > 0 else 0.0
    return {"score": score, "airlight": [float(v) for v in air]}


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two planes (1 for identical, 0 for unrelated)."""
    x = np.asarray(a, np.float64).ravel()
    y = np.asarray(b, np.float64).ravel()
    x = x - x.mean()
    y = y - y.mean()
    d = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / d) if d > 0 else 0.0


INDEPENDENT_MAX = 0.2
"""Two acquisitions' noise is independent when their residuals correlate less than this on the
smooth blocks (identical noise gives 1; edges left in the residual add a little)."""


def pair_stats(first: np.ndarray, second: np.ndarray) -> dict:
    """Registration and noise independence of two 2-D acquisitions of one scene: the shift found by
    phase correlation (``registered`` when under half a pixel) and the correlation of their
    :func:`residual` on the first's smoother half of blocks (``independent_noise`` under
    :data:`INDEPENDENT_MAX`)."""
    from skimage.registration import phase_cross_correlation

    a = np.asarray(first, np.float64)
    b = np.asarray(second, np.float64)
    shift, _err, _ph = phase_cross_correlation(a, b, upsample_factor=10, normalization=None)
    _mean, _var, energy, _lag = block_stats(a)
    ra, rb = _blocks(residual(a), BLOCK), _blocks(residual(b), BLOCK)
    smooth = energy <= np.median(energy)
    corr = similarity(ra[smooth], rb[smooth])
    return {"registered": bool(np.hypot(*shift) < 0.5),
            "independent_noise": bool(corr < INDEPENDENT_MAX),
            "shift_px": [float(s) for s in shift], "residual_correlation": corr}
