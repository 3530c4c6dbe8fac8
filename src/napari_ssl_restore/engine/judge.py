"""Judging a restoration without ground truth.

* :func:`j_invariant_loss` — the self-supervised loss of Batson & Royer, "Noise2Self: Blind
  Denoising by Self-Supervision", ICML 2019 (the idea behind scikit-image's
  ``calibrate_denoiser``). A grid of pixels (one in ``stride²``) is hidden: each is replaced by the
  mean of its four neighbours, the denoiser runs on that image, and its output at the hidden pixels
  is compared with the noisy input there. The output at a hidden pixel cannot depend on that pixel's
  noise, so for noise independent between pixels and of zero mean the loss is the true mean squared
  error plus the noise variance: ``E‖f_J(x) − x‖² = E‖f_J(x) − y‖² + σ²``. Ranking denoisers by it
  ranks them by their error against the unknown clean image — up to the cost of hiding the pixel,
  which is the same for every candidate.

Pure numpy/scipy: the denoiser is any callable from a float array to one of the same shape.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

DONUT = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], np.float64) / 4.0
"""Mean of the four neighbours, without the centre: what a hidden pixel is replaced by."""
STRIDE = 4
"""Spacing of the hidden grid (Batson & Royer use 4: 16 passes cover every pixel once)."""


def grid_offsets(stride: int = STRIDE, passes: int | None = None) -> list[tuple[int, int]]:
    """The ``(dy, dx)`` offsets of the hidden grids, ``stride²`` of them, or ``passes`` spread
    over them (a subset gives an unbiased estimate from fewer denoiser runs)."""
    every = [(dy, dx) for dy in range(stride) for dx in range(stride)]
    if passes is None or passes >= len(every):
        return every
    if passes < 1:
        raise ValueError(f"passes must be at least 1, got {passes}")
    # row i % stride, column shifted by (stride // 2 + 1) per row and 1 per round: the first
    # ``stride`` grids cover every row and every column once, all stride² cover every pixel once
    k = stride // 2 + 1
    return [(i % stride, (k * i + i // stride) % stride) for i in range(passes)]


def hide(noisy: np.ndarray, offset: tuple[int, int], stride: int = STRIDE) -> tuple[np.ndarray,
                                                                                    np.ndarray]:
    """``noisy`` with the grid at ``offset`` replaced by the mean of each pixel's four neighbours,
    and the boolean ``(H, W)`` grid. ``noisy`` is ``(H, W)`` or ``(H, W, C)``; it is not modified."""
    x = np.asarray(noisy, np.float64)
    mask = np.zeros(x.shape[:2], bool)
    mask[offset[0]::stride, offset[1]::stride] = True
    kernel = DONUT if x.ndim == 2 else DONUT[..., None]
    filled = ndi.correlate(x, kernel, mode="reflect")
    out = x.copy()
    out[mask] = filled[mask]
    return out, mask


def j_invariant_output(noisy: np.ndarray, denoise: Callable[[np.ndarray], np.ndarray], *,
                       stride: int = STRIDE, passes: int | None = None,
                       noise_variance: Callable[[np.ndarray], np.ndarray] | None = None,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The J-invariant output ``f_J(x)`` on the hidden pixels and where it is defined.

    Returns ``(output, seen)``: ``output`` holds, at each pixel of the grids run, the denoiser's
    value when that pixel was hidden; ``seen`` is the ``(H, W)`` mask of those pixels (all of them
    when ``passes`` is ``None``).

    A hidden pixel holds the mean of four neighbours, which carries a quarter of the noise
    variance: a weak denoiser passes that quieter value through and looks better than it is (a
    wavelet strength 4 dB from the best was picked so on our fields). With ``noise_variance``
    (the variance at intensity ``u``, e.g. ``a·u + b``, applied to the hidden values: ``(n,)`` or
    ``(n, C)``) the hidden pixels get fresh Gaussian noise of the missing three quarters, drawn
    from ``seed``, so the denoiser sees noise of the level it is set for. The fresh noise is
    independent of the hidden pixels' own, so the loss keeps its meaning.
    """
    x = np.asarray(noisy, np.float64)
    if x.ndim not in (2, 3) or min(x.shape[:2]) < 2 * stride:
        raise ValueError(f"j_invariant_output needs a 2-D plane (H, W[, C]) of at least "
                         f"{2 * stride} pixels a side; got shape {x.shape}")
    rng = np.random.default_rng(seed)
    output = np.zeros_like(x)
    seen = np.zeros(x.shape[:2], bool)
    for offset in grid_offsets(stride, passes):
        hidden, mask = hide(x, offset, stride)
        if noise_variance is not None:
            u = hidden[mask]
            var = np.maximum(np.asarray(noise_variance(u), np.float64), 0.0)
            hidden[mask] = u + np.sqrt(0.75 * var) * rng.standard_normal(u.shape)
        result = np.asarray(denoise(hidden), np.float64)
        if result.shape != x.shape:
            raise ValueError(f"the denoiser returned shape {result.shape} for an input of shape "
                             f"{x.shape}; it must keep the shape")
        output[mask] = result[mask]
        seen |= mask
    return output, seen


def j_invariant_loss(noisy: np.ndarray, denoise: Callable[[np.ndarray], np.ndarray], *,
                     stride: int = STRIDE, passes: int | None = None,
                     noise_variance: Callable[[np.ndarray], np.ndarray] | None = None,
                     seed: int = 0) -> float:
    """Mean squared difference between the J-invariant output and the noisy input (Batson &
    Royer 2019): an estimate of the denoiser's MSE against the clean image plus the noise variance.

    Lower is better. ``passes`` runs the denoiser on that many of the ``stride²`` grids (spread
    evenly) instead of all of them, for expensive denoisers: the loss is then taken over those
    grids' pixels only, an unbiased estimate with more scatter. ``noise_variance`` and ``seed``:
    fresh noise at the hidden pixels, see :func:`j_invariant_output`.
    """
    x = np.asarray(noisy, np.float64)
    output, seen = j_invariant_output(x, denoise, stride=stride, passes=passes,
                                      noise_variance=noise_variance, seed=seed)
    return float(np.mean((output[seen] - x[seen]) ** 2))


# --- the quality block of a run --------------------------------------------------------------------

QUALITY_CROP = 512
"""Largest side (input pixels) of the centre crop of each plane :func:`residual_quality` reads."""
HIGH_PASS_SIGMA = 2.0
"""Width (px) of the Gaussian whose difference from the output is its high-pass (edges, texture)."""
COARSE_SCALES = (2.0, 4.0)
"""Scales (Gaussian σ, px) at which the residual's coarse power is compared with white noise's."""
COARSE_MAX = 1.3
"""The residual holds structure when its power at one of :data:`COARSE_SCALES` is above this many
times what white noise of its variance has there (``coarse_power``; white noise: 1). What a
denoiser leaves of the noise has lost its fine part and sits below 1; removed structure is coarse.
Measured (``benchmarks/quality_thresholds.py``: six synthetic 256² fields, Gaussian noise of σ
0.05-0.15, Poisson-Gaussian, correlated): DnCNN 0.12-0.54; a Gaussian blur of σ 4 1.63-6.85 (σ 3:
0.96-4.43); a mild blur (σ ≤ 1) of pure noise 0.01-0.03. 1.3 leaves room above white noise's 1
for the scatter of the estimate on small crops (about 15 % at σ 4 on 128²)."""
SIGNAL_MIN = 0.1
"""...and the residual correlates with the output's high-pass by more than this
(``signal_correlation``): coarse residual that does not follow the image's edges is correlated
noise or a pattern, not removed signal. Measured as above: a Gaussian blur of σ 3-4 0.22-0.48.
Alone the correlation does not judge: noise left in the output correlates with the residual too
(a Gaussian of σ 0.7 on pure noise gives 0.61, DnCNN 0.11-0.44)."""
NOISE_LOW = 0.5
"""A noise-like residual with less than this fraction of the input's estimated noise variance
(``noise_ratio``): much of the noise is still in the output."""
PHYSICS_LOW, PHYSICS_HIGH = 0.7, 1.5
"""The discrepancy principle's band: ``‖H x̂ − y‖² / (n σ²)`` in it is consistent with the data;
below, the estimate fits the noise too; above, it does not explain the data. The width allows for
the noise estimate's error (noise_fit: about 10 % on the synthetic fields) and a method's own
choice of τ (physics-gan aims at 1.05² ≈ 1.1)."""
DENOISE_TASKS = ("denoise",)
"""Tasks whose output should differ from the input by noise alone."""
EXPECTED = {"dehaze": "dehazing removes the haze", "deconv": "deconvolution sharpens",
            "deconvolve": "deconvolution sharpens",
            "sr": "super-resolution adds detail", "inpaint": "inpainting fills missing pixels",
            "decompose": "a decomposition keeps part of the image",
            "deblur": "deblurring sharpens", "restore": "the restoration changes the image"}
"""Tasks whose residual is expected to hold structure, and why (for the verdict)."""


def white_gain(sigma: float) -> float:
    """The variance a 2-D Gaussian filter of ``sigma`` leaves of unit white noise (``Σ g²``)."""
    delta = np.zeros((8 * int(np.ceil(sigma)) + 1,) * 2)
    delta[delta.shape[0] // 2, delta.shape[1] // 2] = 1.0
    return float((ndi.gaussian_filter(delta, sigma) ** 2).sum())


def _crop(plane: np.ndarray, side: int) -> tuple[slice, slice]:
    h, w = plane.shape[:2]
    sy, sx = min(h, side), min(w, side)
    return slice((h - sy) // 2, (h - sy) // 2 + sy), slice((w - sx) // 2, (w - sx) // 2 + sx)


def block_mean(plane: np.ndarray, zoom: int) -> np.ndarray:
    """``(H·zoom, W·zoom, C)`` back to ``(H, W, C)`` by the mean of each ``zoom``² block: a
    super-resolved output on its input's grid."""
    if zoom == 1:
        return plane
    h, w = plane.shape[0] // zoom, plane.shape[1] // zoom
    return plane[:h * zoom, :w * zoom].reshape(h, zoom, w, zoom, -1).mean(axis=(1, 3))


def residual_stats(inputs, outputs, *, zoom: int = 1) -> dict:
    """Sums over the centre crops of paired ``(H, W, C)`` planes (``outputs`` ``zoom`` times
    larger) behind :func:`residual_quality`: the residual ``r = input − output`` (the output on the
    input's grid), its lag-1 products, its correlation with the output's high-pass, and the
    input's crops (one 2-D array per channel, for the noise fit) and mean level."""
    n = s = ss = lag_x = lag_y = rr = hh = rh = 0.0
    coarse = np.zeros(len(COARSE_SCALES))
    crops: list[np.ndarray] = []
    level: list[float] = []
    for x, y in zip(inputs, outputs, strict=True):
        x = np.asarray(x, np.float64)
        x = x if x.ndim == 3 else x[..., None]
        ys, xs = _crop(x, QUALITY_CROP)
        x = x[ys, xs]
        y = np.asarray(y, np.float64)
        y = y if y.ndim == 3 else y[..., None]
        y = block_mean(y[ys.start * zoom:ys.stop * zoom, xs.start * zoom:xs.stop * zoom], zoom)
        r = x - y
        n, s, ss = n + r.size, s + float(r.sum()), ss + float((r * r).sum())
        rc = r - r.mean(axis=(0, 1))
        lag_x += float((rc[:, :-1] * rc[:, 1:]).sum())
        lag_y += float((rc[:-1] * rc[1:]).sum())
        rr += float((rc * rc).sum())
        for k, sigma in enumerate(COARSE_SCALES):
            coarse[k] += float((ndi.gaussian_filter(rc, (sigma, sigma, 0)) ** 2).sum())
        hp = y - ndi.gaussian_filter(y, (HIGH_PASS_SIGMA, HIGH_PASS_SIGMA, 0))
        hp -= hp.mean(axis=(0, 1))
        hh, rh = hh + float((hp * hp).sum()), rh + float((rc * hp).sum())
        crops.extend(x[..., c] for c in range(x.shape[-1]))
        level.append(float(x.mean()))
    return {"n": n, "sum": s, "sumsq": ss, "lag": (lag_x, lag_y), "rr": rr, "hh": hh, "rh": rh,
            "coarse": coarse, "crops": crops, "level": float(np.mean(level))}


def residual_quality(inputs, outputs, *, task: str = "denoise", zoom: int = 1,
                     scale: float = 1.0, physics_mse: float | None = None,
                     physics_ratio: float | None = None,
                     forward: Callable[[np.ndarray], np.ndarray] | None = None,
                     held_out: tuple[float, float] | None = None) -> dict:
    """Judge a restoration without ground truth from its residual ``input − output``.

    Parameters
    ----------
    inputs, outputs : sequences of ndarray, shape (H, W[, C]) and (H·zoom, W·zoom[, C])
        A few planes of the input and of the output, in the same (normalised) units. Only the
        centre crop of at most :data:`QUALITY_CROP`² input pixels of each is read.
    task : str
        What the method did: ``"denoise"`` (the residual should be noise), or one of
        :data:`EXPECTED` (the residual holds structure by design).
    zoom : int
        Super-resolution factor: the output is brought back to the input's grid by block means.
    scale : float
        Input units per normalised unit, for ``residual_mean`` and ``residual_std``.
    physics_mse, physics_ratio : float, optional
        The method's own data term ``mean (H x̂ − y)²`` in normalised units (divided here by the
        input's estimated noise variance), or the ratio already taken against its own noise
        estimate.
    forward : callable, optional
        The forward operator ``H`` on ``(H, W, C)`` arrays, to compute ``physics_mse`` here on the
        crops (when the method did not report it).
    held_out : (float, float), optional
        A video method's held-out loss before fine-tuning and for the weights it kept.

    Returns
    -------
    dict
        JSON-serialisable: ``residual_mean``, ``residual_std`` (input units), ``whiteness``,
        ``signal_correlation``, ``coarse_power``, ``noise_ratio``, ``physics_residual`` (when
        known), ``task``, ``planes`` and ``verdict`` (one sentence).

    Notes
    -----
    Buades, Coll & Morel (2005) call the residual of a denoiser its *method noise*: for a good
    denoiser it looks like noise, white and free of the image's structure, while edges and texture
    in it are signal the method removed. Here: ``whiteness`` is the residual's lag-1
    autocorrelation (the larger of ``|ρ_x|``, ``|ρ_y|``; 0 for white noise); ``signal_correlation``
    its Pearson correlation with the output's high-pass ``x̂ − G_2 * x̂`` (positive when edges went
    into the residual, but also when noise is left in the output); ``coarse_power`` the largest
    ratio, over :data:`COARSE_SCALES`, of the residual's variance after a Gaussian of that scale
    to what white noise of its variance keeps (1 for white noise, below 1 for the high-passed
    noise a denoiser removes, above for structure); ``noise_ratio`` its variance over the input's
    noise variance (:func:`~napari_ssl_restore.physics.estimate.noise_fit`, Foi et al. 2008):
    about 1 when just the noise was removed. For operator methods the discrepancy principle
    (Morozov 1966) asks ``‖H x̂ − y‖² / σ² ≈ 1`` per pixel: ``physics_residual``.

    The verdict of a denoiser: structure when ``coarse_power`` > :data:`COARSE_MAX` and
    ``signal_correlation`` > :data:`SIGNAL_MIN`; noise left when ``noise_ratio`` <
    :data:`NOISE_LOW`; noise otherwise. Other tasks: by ``physics_residual`` against
    :data:`PHYSICS_LOW` and :data:`PHYSICS_HIGH`.

    References
    ----------
    .. [1] A. Buades, B. Coll, J.-M. Morel. A review of image denoising algorithms, with a new
       one. Multiscale Modeling & Simulation 4(2), 2005.
    .. [2] V. A. Morozov. On the solution of functional equations by the method of
       regularization. Soviet Math. Dokl. 7, 1966.
    .. [3] A. Foi, M. Trimeche, V. Katkovnik, K. Egiazarian. Practical Poissonian-Gaussian noise
       modeling and fitting for single-image raw-data. IEEE TIP 17(10), 2008.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage as ndi
    >>> noisy = np.random.default_rng(0).normal(0.5, 0.1, (128, 128))
    >>> q = residual_quality([noisy], [ndi.gaussian_filter(noisy, 1.0)])
    >>> q["verdict"].startswith("The residual looks like noise")
    True
    """
    from ..physics.estimate import noise_fit

    inputs, outputs = list(inputs), list(outputs)
    st = residual_stats(inputs, outputs, zoom=zoom)
    mean = st["sum"] / st["n"]
    var = max(st["sumsq"] / st["n"] - mean * mean, 0.0)
    rr = max(st["rr"], 1e-300)
    white = max(abs(v) / rr for v in st["lag"])
    corr = st["rh"] / np.sqrt(rr * st["hh"]) if st["hh"] > 0 else 0.0
    coarse = max(c / (rr * white_gain(sigma)) for c, sigma in zip(st["coarse"], COARSE_SCALES,
                                                                    strict=True))
    try:
        fit = noise_fit(st["crops"])
    except ValueError:  # planes too small for the block statistics
        fit = {"a": 0.0, "b": 0.0, "correlated": False}
    noise_var = fit["a"] * st["level"] + fit["b"]
    q: dict = {"task": task, "planes": len(inputs), "residual_mean": float(mean * scale),
               "residual_std": float(np.sqrt(var) * scale), "whiteness": round(float(white), 4),
               "signal_correlation": round(float(corr), 4),
         "coarse_power": round(float(coarse), 4)}
    if noise_var > 0:
        q["noise_ratio"] = round(float(var / noise_var), 4)
        q["noise_correlated"] = bool(fit["correlated"])  # then its variance is under-estimated
    if forward is not None and physics_mse is None:
        physics_mse = _forward_mse(inputs, outputs, forward)
    if physics_ratio is None and physics_mse is not None and noise_var > 0:
        physics_ratio = physics_mse / noise_var
    if physics_ratio is not None and np.isfinite(physics_ratio):
        q["physics_residual"] = round(float(physics_ratio), 4)
    if held_out is not None:
        q["held_out_loss"] = {"start": float(held_out[0]), "kept": float(held_out[1])}
    q["verdict"] = verdict(q)
    return q


def _forward_mse(inputs, outputs, forward) -> float:
    """``mean (H x̂ − y)²`` over the centre crops (``H`` applied to the output's crop)."""
    total, n = 0.0, 0
    for x, y in zip(inputs, outputs, strict=True):
        x = np.asarray(x, np.float64)
        x = x if x.ndim == 3 else x[..., None]
        y = np.asarray(y, np.float64)
        y = y if y.ndim == 3 else y[..., None]
        ys, xs = _crop(x, QUALITY_CROP)
        z = y.shape[0] // x.shape[0]
        seen = np.asarray(forward(y[ys.start * z:ys.stop * z, xs.start * z:xs.stop * z]))
        d = seen.reshape(x[ys, xs].shape) - x[ys, xs]
        total, n = total + float((d * d).sum()), n + d.size
    return total / max(n, 1)


def verdict(q: dict) -> str:
    """One plain sentence from the numbers of :func:`residual_quality` (thresholds: the module's
    constants), and one on the held-out loss when there is one."""
    held = q.get("held_out_loss")
    text = _verdict(q)
    if held and held["start"] > 0:
        change = held["kept"] / held["start"] - 1
        text += (f" The held-out loss of the training went from {held['start']:.4g} to "
                 f"{held['kept']:.4g} ({change:+.1%}).")
    return text


def _verdict(q: dict) -> str:
    task = q.get("task", "denoise")
    if task in DENOISE_TASKS:
        ratio = q.get("noise_ratio")
        var = f"; {ratio:.2f}x the estimated noise variance" if ratio is not None else ""
        if q["coarse_power"] > COARSE_MAX and q["signal_correlation"] > SIGNAL_MIN:
            return ("The residual holds structure: signal was removed along with the noise "
                    f"(coarse power {q['coarse_power']:.2f}x white noise's, correlation with the "
                    f"image's edges {q['signal_correlation']:.2f}{var}).")
        if q["coarse_power"] > COARSE_MAX:
            return (f"The residual is not white (coarse power {q['coarse_power']:.2f}x white "
                    "noise's) but does not follow the image's edges: correlated noise was "
                    "removed, or the method left a pattern.")
        if ratio is not None and ratio < NOISE_LOW:
            return (f"The residual looks like noise but holds only {ratio:.2f}x the estimated "
                    "noise variance: much of the noise is still in the result.")
        return ("The residual looks like noise: no structure was removed"
                + (f" ({ratio:.2f}x the estimated noise variance)." if ratio is not None else "."))
    why = EXPECTED.get(task, f"task {task!r} changes the image")
    head = f"The residual is expected to hold structure ({why}), so it is not judged by its look"
    phys = q.get("physics_residual")
    if phys is None:
        return head + "; no physics residual is known for this method: compare by eye."
    if phys < PHYSICS_LOW:
        tail = "the result fits the noise too (over-fitted)"
    elif phys > PHYSICS_HIGH:
        tail = "the result does not explain the data"
    else:
        tail = "the result is consistent with the data"
    return f"{head}; the physics residual is {phys:.2f}x the noise variance: {tail}."
